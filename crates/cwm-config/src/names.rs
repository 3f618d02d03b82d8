//! Validation of the names that appear in routes and etcd keys.

/// Longest namespace and webhook id accepted.
pub const MAX_NAME_LEN: usize = 64;

/// Why a webhook id is refused. `Display` gives the upstream's client-facing message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookIdError {
    /// Empty or only whitespace.
    #[error("Webhook ID cannot be empty or whitespace-only")]
    Empty,
    /// Longer than [`MAX_NAME_LEN`] characters (the length is given).
    #[error("Webhook ID too long: {0} characters (max: 64)")]
    TooLong(usize),
    /// Does not start with an ASCII letter or digit, or holds a character other than those,
    /// `_` and `-`.
    #[error(
        "Invalid webhook ID format. Must start with alphanumeric and contain only alphanumeric, underscore, and hyphen characters"
    )]
    Format,
    /// A reserved id such as `stats` or `health` (any case).
    #[error("Webhook ID '{0}' is reserved and cannot be used")]
    Reserved(String),
    /// Starts with a reserved prefix.
    #[error("Webhook ID cannot start with reserved prefix '{0}'")]
    ReservedPrefix(&'static str),
    /// Ends with a reserved suffix.
    #[error("Webhook ID cannot end with reserved suffix '{0}'")]
    ReservedSuffix(&'static str),
    /// Holds `__` or `--`.
    #[error("Webhook ID cannot contain consecutive underscores or hyphens")]
    Consecutive,
}

const RESERVED_IDS: &[&str] = &[
    "stats",
    "health",
    "docs",
    "openapi.json",
    "redoc",
    "api",
    "admin",
    "root",
    "system",
    "internal",
    "favicon.ico",
    "robots.txt",
];
const RESERVED_PREFIXES: &[&str] = &["__", "_", "internal_", "system_", "admin_"];
const RESERVED_SUFFIXES: &[&str] = &["_internal", "_system", "_admin"];

/// `^[a-zA-Z0-9_-]{1,64}$`, matched exactly (a trailing newline does not pass).
pub fn is_valid_namespace(ns: &str) -> bool {
    !ns.is_empty()
        && ns.len() <= MAX_NAME_LEN
        && ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The webhook id rules of the upstream, checked on the trimmed value.
pub fn validate_webhook_id(id: &str) -> Result<(), WebhookIdError> {
    let id = id.trim();
    if id.is_empty() {
        return Err(WebhookIdError::Empty);
    }
    let chars = id.chars().count();
    if chars > MAX_NAME_LEN {
        return Err(WebhookIdError::TooLong(chars));
    }
    let bytes = id.as_bytes();
    if !bytes[0].is_ascii_alphanumeric()
        || !bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
    {
        return Err(WebhookIdError::Format);
    }
    if RESERVED_IDS.iter().any(|r| r.eq_ignore_ascii_case(id)) {
        return Err(WebhookIdError::Reserved(id.to_owned()));
    }
    if let Some(p) = RESERVED_PREFIXES
        .iter()
        .find(|p| bytes.len() >= p.len() && bytes[..p.len()].eq_ignore_ascii_case(p.as_bytes()))
    {
        return Err(WebhookIdError::ReservedPrefix(p));
    }
    if let Some(s) = RESERVED_SUFFIXES.iter().find(|s| {
        bytes.len() >= s.len() && bytes[bytes.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
    }) {
        return Err(WebhookIdError::ReservedSuffix(s));
    }
    if id.contains("--") || id.contains("__") {
        return Err(WebhookIdError::Consecutive);
    }
    Ok(())
}

/// Module names: `^[a-zA-Z0-9][a-zA-Z0-9_-]*$`, at most 64 characters.
pub fn is_valid_module_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
}

/// etcd prefix normalisation: strip every trailing `/`, then add exactly one.
pub fn normalize_prefix(prefix: &str) -> String {
    let mut p = prefix.trim_end_matches('/').to_owned();
    p.push('/');
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces() {
        for ok in ["default", "staging", "ns-1", "my_namespace", "A", "A123"] {
            assert!(is_valid_namespace(ok), "{ok}");
        }
        assert!(is_valid_namespace(&"a".repeat(64)));
        for bad in [
            "",
            "my namespace",
            "ns/sub",
            "ns..sub",
            "ns@sub",
            "has.dot",
            "abc\n",
            "ünï",
        ] {
            assert!(!is_valid_namespace(bad), "{bad:?}");
        }
        assert!(!is_valid_namespace(&"a".repeat(65)));
    }

    #[test]
    fn webhook_ids() {
        assert_eq!(validate_webhook_id("github_events"), Ok(()));
        assert_eq!(validate_webhook_id("  "), Err(WebhookIdError::Empty));
        assert_eq!(
            validate_webhook_id(&"a".repeat(65)),
            Err(WebhookIdError::TooLong(65))
        );
        assert_eq!(validate_webhook_id("a.b"), Err(WebhookIdError::Format));
        assert_eq!(validate_webhook_id("-a"), Err(WebhookIdError::Format));
        assert!(matches!(
            validate_webhook_id("ADMIN"),
            Err(WebhookIdError::Reserved(_))
        ));
        assert_eq!(
            validate_webhook_id("admin_x"),
            Err(WebhookIdError::ReservedPrefix("admin_"))
        );
        assert_eq!(
            validate_webhook_id("x_internal"),
            Err(WebhookIdError::ReservedSuffix("_internal"))
        );
        assert_eq!(
            validate_webhook_id("a--b"),
            Err(WebhookIdError::Consecutive)
        );
        assert_eq!(
            validate_webhook_id("my__hook"),
            Err(WebhookIdError::Consecutive)
        );
    }

    #[test]
    fn prefixes() {
        assert_eq!(normalize_prefix("/cwm"), "/cwm/");
        assert_eq!(normalize_prefix("/cwm//"), "/cwm/");
        assert_eq!(normalize_prefix("/"), "/");
        assert_eq!(normalize_prefix("cwm"), "cwm/");
    }
}
