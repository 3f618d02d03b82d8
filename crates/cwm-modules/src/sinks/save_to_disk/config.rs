//! The `save_to_disk` sink's `module-config`.

use std::path::Path;

use serde::Deserialize;

use super::jail::{Jail, JailError};
use crate::opts;
use crate::sink::BuildError;

/// `module-config` of a `save_to_disk` webhook, as written. [`SaveToDiskConfig::resolve`] checks
/// it against the jail rules.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SaveToDiskConfig {
    /// The target directory (default `"."`): relative to `base_dir`, or absolute inside it.
    #[serde(default, deserialize_with = "opts::opt_string")]
    pub path: Option<String>,
    /// The jail root (default: the process working directory; a relative one is taken from
    /// there).
    #[serde(default, deserialize_with = "opts::opt_string")]
    pub base_dir: Option<String>,
}

impl SaveToDiskConfig {
    /// The jail of these settings, with `cwd` as the default base: the lexical rules, then the
    /// filesystem ones as far as the directories exist (missing ones are made on write).
    pub(super) fn resolve(&self, cwd: &Path) -> Result<Jail, BuildError> {
        let path = self.path.as_deref().unwrap_or(".");
        let jail = Jail::new(self.base_dir.as_deref(), path, cwd)?;
        // Catch symlink escapes and system directories now.
        match jail.resolve(false) {
            Ok(_) => {}
            Err(JailError::Config(msg)) => return Err(BuildError::Invalid(msg)),
            Err(JailError::Io(e)) => {
                tracing::warn!(error = %e, "save_to_disk: target directory not checkable yet");
            }
        }
        Ok(jail)
    }
}
