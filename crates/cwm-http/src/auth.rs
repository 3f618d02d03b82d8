//! The `authorization` validator (pipeline.md 3.1) and the admin token check (1.5), both
//! compared in constant time.

use subtle::ConstantTimeEq;

/// Longest `Authorization` header the validator looks at.
const MAX_HEADER_CHARS: usize = 8192;

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Check a webhook's `authorization` setting against the request header. `Err` is the 401 detail.
pub fn check_webhook(config: &str, header: Option<&[u8]>) -> Result<(), String> {
    let expected = config.trim();
    if expected.is_empty() {
        return Ok(());
    }
    let raw = header.unwrap_or_default();
    if raw.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err("Invalid header format: contains forbidden character".into());
    }
    let header = String::from_utf8_lossy(raw);
    let n = header.chars().count();
    if n > MAX_HEADER_CHARS {
        return Err(format!("Header too long: {n} characters (max: 8192)"));
    }
    let header = header.trim();
    if let Some(token) = expected.strip_prefix("Bearer ") {
        let Some(given) = header.strip_prefix("Bearer ") else {
            return Err("Invalid Bearer token format: must start with 'Bearer '".into());
        };
        if given.starts_with(char::is_whitespace) {
            return Err("Invalid Bearer token format: token cannot start with whitespace".into());
        }
        if ct_eq(given.trim_end().as_bytes(), token.trim_end().as_bytes()) {
            return Ok(());
        }
        return Err("Unauthorized".into());
    }
    if ct_eq(header.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err("Unauthorized".into())
    }
}

/// Why an admin request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminDenied {
    /// No admin token configured: 403.
    Disabled,
    /// 401 with this detail.
    Unauthorized(&'static str),
}

/// Check the admin token (`Bearer T` or a bare `T`).
pub fn check_admin(configured: Option<&str>, header: Option<&[u8]>) -> Result<(), AdminDenied> {
    let Some(expected) = configured.map(str::trim).filter(|t| !t.is_empty()) else {
        return Err(AdminDenied::Disabled);
    };
    let raw = match header {
        Some(h) if !h.is_empty() => h,
        _ => return Err(AdminDenied::Unauthorized("Authentication required")),
    };
    if raw.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(AdminDenied::Unauthorized("Invalid authentication header"));
    }
    let header = String::from_utf8_lossy(raw);
    let token = header.strip_prefix("Bearer ").unwrap_or(&header).trim();
    if token.is_empty() || !ct_eq(token.as_bytes(), expected.as_bytes()) {
        return Err(AdminDenied::Unauthorized("Invalid authentication token"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer() {
        let c = "Bearer s3cret";
        assert_eq!(check_webhook(c, Some(b"Bearer s3cret")), Ok(()));
        assert_eq!(check_webhook(c, Some(b"  Bearer s3cret  ")), Ok(()));
        assert_eq!(
            check_webhook(c, Some(b"Bearer wrong")).unwrap_err(),
            "Unauthorized"
        );
        assert!(
            check_webhook(c, None)
                .unwrap_err()
                .contains("must start with 'Bearer '")
        );
        assert!(
            check_webhook(c, Some(b"Bearer  s3cret"))
                .unwrap_err()
                .contains("whitespace")
        );
        assert!(check_webhook(c, Some(b"s3cret")).is_err());
        assert!(
            check_webhook(c, Some(b"Bearer s3cret\n"))
                .unwrap_err()
                .contains("forbidden")
        );
        let long = format!("Bearer {}", "a".repeat(9000));
        assert!(
            check_webhook(c, Some(long.as_bytes()))
                .unwrap_err()
                .contains("too long")
        );
    }

    #[test]
    fn static_token_and_blank_config() {
        assert_eq!(check_webhook("secret", Some(b"secret")), Ok(()));
        assert!(check_webhook("secret", Some(b"Bearer secret")).is_err());
        assert!(check_webhook("secret", None).is_err());
        assert_eq!(check_webhook("   ", None), Ok(()));
    }

    #[test]
    fn admin() {
        assert_eq!(check_admin(None, Some(b"x")), Err(AdminDenied::Disabled));
        assert_eq!(
            check_admin(Some("   "), Some(b"x")),
            Err(AdminDenied::Disabled)
        );
        assert_eq!(
            check_admin(Some("T"), None),
            Err(AdminDenied::Unauthorized("Authentication required"))
        );
        assert_eq!(
            check_admin(Some("T"), Some(b"wrong")),
            Err(AdminDenied::Unauthorized("Invalid authentication token"))
        );
        assert_eq!(
            check_admin(Some("T"), Some(b"T\n")),
            Err(AdminDenied::Unauthorized("Invalid authentication header"))
        );
        assert_eq!(check_admin(Some("T"), Some(b"Bearer T")), Ok(()));
        assert_eq!(check_admin(Some("T"), Some(b"T")), Ok(()));
    }
}
