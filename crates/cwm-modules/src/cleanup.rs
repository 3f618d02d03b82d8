//! Credential cleanup, as upstream: what sinks receive has credentials masked or removed,
//! unless a webhook turns it off with `"credential_cleanup": {"enabled": false}`.

use std::sync::LazyLock;

use serde_json::Value;

use cwm_config::WebhookConfig;

use crate::words::WordSet;

const MASK: &str = "***REDACTED***";
const MAX_DEPTH: usize = 100;

const DEFAULT_FIELDS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "access_token",
    "refresh_token",
    "authorization",
    "auth",
    "credential",
    "credentials",
    "private_key",
    "privatekey",
    "api_secret",
    "client_secret",
    "bearer",
    "x-api-key",
    "x-auth-token",
    "x-access-token",
    "session_id",
    "sessionid",
    "session_token",
    "csrf_token",
    "csrf",
    "oauth_token",
    "oauth_secret",
    "consumer_secret",
    "token_secret",
];
const CONTAINS: &[&str] = &["password", "secret", "token", "key", "credential", "auth"];

/// The default lists as checked per name: `CONTAINS` as one automaton, and only those
/// `DEFAULT_FIELDS` it does not already match (`passwd`, `pwd`, `bearer`, ...), compared exactly.
struct Lists {
    contained: WordSet,
    exact: Vec<&'static str>,
}

static LISTS: LazyLock<Lists> = LazyLock::new(|| {
    let contained = WordSet::new(CONTAINS);
    let exact = DEFAULT_FIELDS
        .iter()
        .copied()
        .filter(|f| !contained.found_in(f.as_bytes()))
        .collect();
    Lists { contained, exact }
});

/// The parsed `credential_cleanup` setting of one webhook, built once at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialCleanup {
    enabled: bool,
    remove: bool,
    extra_fields: Vec<String>,
}

impl Default for CredentialCleanup {
    /// On, mask mode, the default field list only (what a webhook without
    /// `credential_cleanup` gets; analytics rows always use it).
    fn default() -> Self {
        Self {
            enabled: true,
            remove: false,
            extra_fields: Vec::new(),
        }
    }
}

impl CredentialCleanup {
    /// Read `credential_cleanup` from a webhook config; on by default, mask mode.
    pub fn from_config(config: &WebhookConfig) -> Result<Self, String> {
        let mut c = Self::default();
        let Some(v) = config.extra.get("credential_cleanup") else {
            return Ok(c);
        };
        let Some(obj) = v.as_object() else {
            return if v.is_null() {
                Ok(c)
            } else {
                Err("'credential_cleanup' must be an object".into())
            };
        };
        if let Some(e) = obj.get("enabled") {
            c.enabled = e
                .as_bool()
                .ok_or("'credential_cleanup.enabled' must be a boolean")?;
        }
        if let Some(m) = obj.get("mode") {
            c.remove = match m.as_str().map(str::to_ascii_lowercase).as_deref() {
                Some("mask") => false,
                Some("remove") => true,
                _ => return Err("'credential_cleanup.mode' must be \"mask\" or \"remove\"".into()),
            };
        }
        if let Some(Value::Array(fields)) = obj.get("fields") {
            c.extra_fields = fields
                .iter()
                .filter_map(Value::as_str)
                .map(|s| s.trim().to_ascii_lowercase())
                .collect();
        }
        Ok(c)
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether a field or header name is a credential: the trimmed name, ignoring ASCII case, is
    /// a listed field or contains one of the `CONTAINS` words. (Upstream also flags `x-*-key`,
    /// `x-*-token` and `x-*-secret`; those contain `key`, `token` or `secret` already.)
    pub fn is_credential(&self, name: &str) -> bool {
        let n = name.trim();
        let lists = &*LISTS;
        lists.contained.found_in(n.as_bytes())
            || lists.exact.iter().any(|f| n.eq_ignore_ascii_case(f))
            || self.extra_fields.iter().any(|f| n.eq_ignore_ascii_case(f))
    }

    /// Clean a JSON payload in place. Objects under a credential key are recursed into, not masked.
    pub fn clean_payload(&self, value: &mut Value) {
        if self.enabled {
            self.walk(value, 0);
        }
    }

    fn walk(&self, value: &mut Value, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        match value {
            Value::Object(map) => {
                if self.remove {
                    map.retain(|k, v| v.is_object() || v.is_array() || !self.is_credential(k));
                }
                for (k, v) in map.iter_mut() {
                    if v.is_object() || v.is_array() {
                        self.walk(v, depth + 1);
                    } else if self.is_credential(k) {
                        *v = Value::String(MASK.into());
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.walk(v, depth + 1)),
            _ => {}
        }
    }

    /// Clean request headers in place.
    pub fn clean_headers(&self, headers: &mut Vec<(String, String)>) {
        if !self.enabled {
            return;
        }
        if self.remove {
            headers.retain(|(k, _)| !self.is_credential(k));
        } else {
            for (k, v) in headers.iter_mut() {
                if self.is_credential(k) {
                    *v = MASK.into();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cleanup(v: Value) -> CredentialCleanup {
        let cfg = WebhookConfig::from_value(v, &|_: &str| None).unwrap();
        CredentialCleanup::from_config(&cfg).unwrap()
    }

    #[test]
    fn masks_by_default() {
        let c = cleanup(json!({"module":"log"}));
        let mut p = json!({"user":"bob","password":"x","nested":{"api_key":"k","ok":1},"tokens":[{"secret":"s"}],"auth":{"inner":"v"}});
        c.clean_payload(&mut p);
        assert_eq!(
            p,
            json!({"user":"bob","password":MASK,"nested":{"api_key":MASK,"ok":1},"tokens":[{"secret":MASK}],"auth":{"inner":"v"}})
        );
        let mut h = vec![
            ("authorization".into(), "Bearer x".into()),
            ("x-custom-key".into(), "k".into()),
            ("accept".into(), "*/*".into()),
        ];
        c.clean_headers(&mut h);
        assert_eq!(h[0].1, MASK);
        assert_eq!(h[1].1, MASK);
        assert_eq!(h[2].1, "*/*");
    }

    #[test]
    fn every_default_field_is_a_credential() {
        let c = cleanup(json!({"module":"log"}));
        for f in DEFAULT_FIELDS {
            assert!(c.is_credential(f), "{f}");
            assert!(
                c.is_credential(&format!(" {} ", f.to_ascii_uppercase())),
                "{f}"
            );
        }
        assert_eq!(
            LISTS.exact,
            ["passwd", "pwd", "bearer", "session_id", "sessionid", "csrf"]
        );
        for name in ["user", "passwd2", "x-request-id", "content-type", "pw"] {
            assert!(!c.is_credential(name), "{name}");
        }
    }

    #[test]
    fn remove_mode_extra_fields_and_off() {
        let c = cleanup(json!({"credential_cleanup":{"mode":"REMOVE","fields":["ssn"]}}));
        let mut p = json!({"ssn":"1","name":"n","password":"p"});
        c.clean_payload(&mut p);
        assert_eq!(p, json!({"name":"n"}));
        let off = cleanup(json!({"credential_cleanup":{"enabled":false}}));
        let mut p = json!({"password":"p"});
        off.clean_payload(&mut p);
        assert_eq!(p, json!({"password":"p"}));
        let cfg =
            WebhookConfig::from_value(json!({"credential_cleanup":{"mode":"zap"}}), &|_: &str| {
                None
            })
            .unwrap();
        assert!(CredentialCleanup::from_config(&cfg).is_err());
    }
}
