//! The API key of `header_auth` and `query_auth`: `api_key` (a non-blank string) and
//! `case_sensitive` (false by default). Unless case-sensitive, both sides are lower-cased before
//! they are compared (the configured key once, at load); the comparison is constant-time.

use super::config::Fields;
use super::validator::{ValidatorError, ct_eq};

pub(super) struct ApiKey {
    /// The key, lower-cased unless `case_sensitive`.
    key: Box<[u8]>,
    case_sensitive: bool,
}

impl ApiKey {
    /// Read `api_key` and `case_sensitive`; `what` names the check in messages (`Header auth`).
    pub(super) fn from_config(fields: &Fields<'_>, what: &str) -> Result<Self, ValidatorError> {
        let key = fields
            .non_blank("api_key")
            .map_err(|_| fields.error(format!("{what} API key must be a string")))?
            .ok_or_else(|| {
                fields.error(format!(
                    "{what} API key not configured: 'api_key' is missing or blank"
                ))
            })?;
        let case_sensitive = fields.boolean("case_sensitive", false)?;
        let key = if case_sensitive {
            key.to_owned()
        } else {
            key.to_lowercase()
        };
        Ok(Self {
            key: key.into_bytes().into(),
            case_sensitive,
        })
    }

    /// Whether `given` is the key; a blank value never is.
    pub(super) fn matches(&self, given: &str) -> bool {
        if given.trim().is_empty() {
            return false;
        }
        if self.case_sensitive {
            ct_eq(given.as_bytes(), &self.key)
        } else {
            ct_eq(given.to_lowercase().as_bytes(), &self.key)
        }
    }
}
