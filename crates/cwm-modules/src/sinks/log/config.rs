//! The `log` sink's `module-config`.

use serde::Deserialize;

use crate::opts;

/// `module-config` of a `log` webhook. Both options read any value as the Python gateway did
/// (Python truthiness; strings such as `"false"`, `"0"`, `"no"`, `"off"` are false), so none is
/// ever an error; `null` means the default.
#[derive(Debug, Clone, Deserialize)]
pub struct LogConfig {
    /// The multi-line block instead of one JSON line (default false).
    #[serde(default, deserialize_with = "opts::truthy_or_false")]
    pub pretty_print: bool,
    /// Replace the values of sensitive headers and payload keys (default true).
    #[serde(default = "opts::yes", deserialize_with = "opts::truthy_or_true")]
    pub redact_sensitive: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            pretty_print: false,
            redact_sensitive: true,
        }
    }
}
