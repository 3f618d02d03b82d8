//! The etcd key layout (the Python gateway's):
//!
//! ```text
//! {prefix}{namespace}/webhooks/{webhook_id}   -> webhook config JSON
//! {prefix}global/connections/{name}           -> connection config JSON
//! ```

use crate::names::is_valid_namespace;

/// The namespace that holds connections.
pub const GLOBAL: &str = "global";

/// What one etcd key addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef<'a> {
    /// `{prefix}{namespace}/webhooks/{id}`.
    Webhook {
        /// The namespace segment.
        namespace: &'a str,
        /// The webhook id.
        id: &'a str,
    },
    /// `{prefix}global/connections/{name}`.
    Connection {
        /// The connection name.
        name: &'a str,
    },
}

/// Why a key under the prefix is ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key does not start with the prefix.
    #[error("key is not under the prefix")]
    OutsidePrefix,
    /// The key is not valid UTF-8.
    #[error("key is not valid UTF-8")]
    NotUtf8,
    /// The namespace segment breaks the namespace rules ([`crate::names::is_valid_namespace`]).
    #[error("invalid namespace {0:?}")]
    InvalidNamespace(String),
    /// The webhook id or connection name is empty.
    #[error("empty webhook id or connection name")]
    EmptyName,
    /// The key fits neither layout.
    #[error("key does not match {{ns}}/webhooks/{{id}} or global/connections/{{name}}")]
    Unrecognised,
}

/// Parse a full key. `prefix` must be normalised (one trailing `/`).
///
/// The webhook rule is tested first, so `global/webhooks/x` is a webhook in namespace `global`.
/// Unlike the upstream, an empty id or name is refused.
pub fn parse_key<'a>(prefix: &str, key: &'a [u8]) -> Result<KeyRef<'a>, KeyError> {
    let rel = key
        .strip_prefix(prefix.as_bytes())
        .ok_or(KeyError::OutsidePrefix)?;
    let rel = std::str::from_utf8(rel).map_err(|_| KeyError::NotUtf8)?;
    let mut parts = rel.split('/');
    let (Some(a), Some(b), Some(c), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(KeyError::Unrecognised);
    };
    if b == "webhooks" {
        if !is_valid_namespace(a) {
            return Err(KeyError::InvalidNamespace(a.to_owned()));
        }
        if c.is_empty() {
            return Err(KeyError::EmptyName);
        }
        return Ok(KeyRef::Webhook {
            namespace: a,
            id: c,
        });
    }
    if a == GLOBAL && b == "connections" {
        if c.is_empty() {
            return Err(KeyError::EmptyName);
        }
        return Ok(KeyRef::Connection { name: c });
    }
    Err(KeyError::Unrecognised)
}

/// `{prefix}{namespace}/webhooks/{id}`
pub fn webhook_key(prefix: &str, namespace: &str, id: &str) -> String {
    format!("{prefix}{namespace}/webhooks/{id}")
}

/// `{prefix}global/connections/{name}`
pub fn connection_key(prefix: &str, name: &str) -> String {
    format!("{prefix}{GLOBAL}/connections/{name}")
}

/// `{prefix}{namespace}/webhooks/`: the range of one namespace's webhooks.
pub fn namespace_webhooks_prefix(prefix: &str, namespace: &str) -> String {
    format!("{prefix}{namespace}/webhooks/")
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/cwm/";

    #[test]
    fn recognised_keys() {
        assert_eq!(
            parse_key(P, b"/cwm/ns1/webhooks/hook1"),
            Ok(KeyRef::Webhook {
                namespace: "ns1",
                id: "hook1"
            })
        );
        assert_eq!(
            parse_key(P, b"/cwm/global/connections/redis_main"),
            Ok(KeyRef::Connection { name: "redis_main" })
        );
        assert_eq!(
            parse_key(P, b"/cwm/global/webhooks/x"),
            Ok(KeyRef::Webhook {
                namespace: "global",
                id: "x"
            })
        );
    }

    #[test]
    fn ignored_keys() {
        for k in [
            "/cwm/something/else",
            "/cwm/random/unknown",
            "/cwm/bad/ns/webhooks/hook",
            "/cwm/ns/webhooks/a/b",
            "/cwm/ns/hooks/x",
            "/cwm/global/connections",
            "/cwm/ns/connections/x",
            "/cwm/ns/webhooks",
        ] {
            assert_eq!(
                parse_key(P, k.as_bytes()),
                Err(KeyError::Unrecognised),
                "{k}"
            );
        }
        assert!(matches!(
            parse_key(P, b"/cwm//webhooks/x"),
            Err(KeyError::InvalidNamespace(_))
        ));
        assert!(matches!(
            parse_key(P, b"/cwm/bad namespace!/webhooks/hook1"),
            Err(KeyError::InvalidNamespace(_))
        ));
        assert_eq!(parse_key(P, b"/cwm/ns/webhooks/"), Err(KeyError::EmptyName));
        assert_eq!(
            parse_key(P, b"/other/ns/webhooks/x"),
            Err(KeyError::OutsidePrefix)
        );
        assert_eq!(
            parse_key(P, b"/cwm/ns/webhooks/\xff"),
            Err(KeyError::NotUtf8)
        );
    }

    #[test]
    fn builders_round_trip() {
        let k = webhook_key(P, "team-a", "orders");
        assert_eq!(k, "/cwm/team-a/webhooks/orders");
        assert_eq!(
            parse_key(P, k.as_bytes()),
            Ok(KeyRef::Webhook {
                namespace: "team-a",
                id: "orders"
            })
        );
        assert_eq!(
            connection_key(P, "kafka_main"),
            "/cwm/global/connections/kafka_main"
        );
    }
}
