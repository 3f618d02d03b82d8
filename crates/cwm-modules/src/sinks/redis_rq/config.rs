//! The `redis_rq` sink's `module-config`: the job's function and its queue.

use serde::Deserialize;

use crate::sink::{BuildError, SinkContext};

/// The queue RQ uses when none is named.
pub const DEFAULT_QUEUE: &str = "default";

/// `module-config` of a `redis_rq` webhook, as written. [`RedisRqConfig::resolve`] checks it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RedisRqConfig {
    /// Dotted path of the Python callable the worker runs (`module.function`).
    #[serde(default)]
    pub function: Option<String>,
    /// RQ queue name (default `default`).
    #[serde(default)]
    pub queue_name: Option<String>,
}

/// The checked settings a `redis_rq` sink enqueues with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The checked, trimmed function path.
    pub function: String,
    /// The checked queue name.
    pub queue_name: String,
}

impl RedisRqConfig {
    /// Read and check the `module-config` of `cx`.
    pub fn resolve(cx: &SinkContext<'_>) -> Result<Resolved, BuildError> {
        let config: Self = cx.module_config()?;
        let function = config
            .function
            .ok_or_else(|| BuildError::option("function", "a function is required"))?;
        let function =
            validate_function(&function).map_err(|e| BuildError::option("function", e))?;
        let queue_name = config
            .queue_name
            .unwrap_or_else(|| DEFAULT_QUEUE.to_owned());
        validate_queue_name(&queue_name).map_err(|e| BuildError::option("queue_name", e))?;
        Ok(Resolved {
            function,
            queue_name,
        })
    }
}

/// Characters a function path may not hold (shell and Python syntax).
const FORBIDDEN_CHARS: &[char] = &[
    ';', '|', '&', '$', '`', '(', ')', '[', ']', '{', '}', '<', '>', '?', '*', '!',
];

/// Builtins a job may not name.
const BLOCKED_NAMES: &[&str] = &[
    "eval",
    "exec",
    "compile",
    "__import__",
    "open",
    "file",
    "input",
    "raw_input",
    "execfile",
    "reload",
    "getattr",
    "setattr",
    "delattr",
    "hasattr",
    "globals",
    "locals",
    "vars",
    "dir",
    "help",
    "breakpoint",
];

/// The Python gateway's function checks: trimmed, 1 to 255 characters, no NUL, `..`, `/` or
/// `\`, no shell or Python syntax characters, not `os.*`, `subprocess.*`, a dunder name or a
/// dangerous builtin, and of the form `ident`, `ident.ident` or `ident.ident.ident`. Returns
/// the trimmed path.
pub fn validate_function(raw: &str) -> Result<String, String> {
    let f = raw.trim();
    if f.is_empty() {
        return Err("the function name cannot be empty".into());
    }
    let len = f.chars().count();
    if len > 255 {
        return Err(format!(
            "function name too long: {len} characters (max: 255)"
        ));
    }
    if f.contains('\0') {
        return Err("the function name contains a NUL byte".into());
    }
    for pattern in ["..", "/", "\\"] {
        if f.contains(pattern) {
            return Err(format!(
                "the function name contains the forbidden pattern '{pattern}'"
            ));
        }
    }
    if let Some(c) = f.chars().find(|c| FORBIDDEN_CHARS.contains(c)) {
        return Err(format!(
            "the function name contains the forbidden character '{c}'"
        ));
    }
    if f.starts_with("os.") || f.starts_with("subprocess.") {
        return Err(format!(
            "function '{f}' is blocked (os and subprocess are not allowed)"
        ));
    }
    if f.len() >= 4 && f.starts_with("__") && f.ends_with("__") {
        return Err(format!(
            "function '{f}' is blocked (dunder names are not allowed)"
        ));
    }
    if BLOCKED_NAMES.contains(&f) {
        return Err(format!("function '{f}' is blocked"));
    }
    let parts: Vec<&str> = f.split('.').collect();
    if parts.len() > 3 || !parts.iter().all(|p| is_identifier(p)) {
        return Err(format!(
            "invalid function name '{f}': expected 'function', 'module.function' or \
             'package.module.function'"
        ));
    }
    Ok(f.to_owned())
}

/// `[A-Za-z_][A-Za-z0-9_]*`
fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Queue names: 1 to 255 characters of letters, digits, `_`, `.`, `:` and `-`.
pub fn validate_queue_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the queue name cannot be empty".into());
    }
    if name.len() > 255 {
        return Err(format!(
            "queue name too long: {} characters (max: 255)",
            name.len()
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
    {
        return Err(format!(
            "invalid queue name '{name}': only letters, digits, '_', '.', ':' and '-' are allowed"
        ));
    }
    Ok(())
}
