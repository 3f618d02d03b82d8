//! The admin token check (`CONFIG_RELOAD_ADMIN_TOKEN`, also `STATS_AUTH_TOKEN`), compared in
//! constant time. Webhook checks are validators in `cwm-modules`.

use subtle::ConstantTimeEq;

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
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
