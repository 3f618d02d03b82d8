//! What the generated OpenAPI document says about one webhook, captured when the webhook is
//! compiled so the document can be rebuilt from compiled webhooks alone (no config is kept).
//!
//! [`OpenApiInfo::capture`] reads the parts of a webhook config the document shows: the request
//! body schema (`json_schema`), the security schemes its checks stand for, and a short list of
//! its security features (rate limit, IP allow-list, ...). It never copies a secret: tokens,
//! HMAC secrets, passwords and client credentials stay in the validators. Only names that a
//! sender must know anyway (header and query parameter names, scopes, a public token URL) are
//! kept.
//!
//! A webhook without checks and without a schema captures nothing ([`OpenApiInfo::capture`]
//! returns `None`), so the common case costs one null pointer per webhook.

use cwm_config::WebhookConfig;
use serde_json::Value;

use crate::validators::Validators;

/// Deepest `json_schema` shown in the document; a deeper one is replaced by a generic object
/// schema (the Python gateway's limit).
pub const MAX_SCHEMA_DEPTH: usize = 20;

/// Longest `json_schema` shown, as JSON text in bytes; a larger one is replaced by a generic
/// object schema, so one webhook cannot make the document huge.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;

/// The OpenAPI view of one webhook.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenApiInfo {
    /// The webhook's `json_schema`, when it is an object nested at most [`MAX_SCHEMA_DEPTH`]
    /// deep whose JSON text is at most [`MAX_SCHEMA_BYTES`] long.
    pub schema: Option<Box<Value>>,
    /// The security schemes of its checks, in the Python gateway's order.
    pub security: Box<[SecurityScheme]>,
    /// Its security features as `(name, text)` lines for the operation's description
    /// (unescaped; the generator escapes them).
    pub features: Box<[(&'static str, Box<str>)]>,
}

/// A way a sender authenticates to one webhook, as an OpenAPI security scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecurityScheme {
    /// `authorization: "Bearer <token>"`: an HTTP bearer token.
    Bearer,
    /// `authorization: "<value>"` without `Bearer `: the whole `Authorization` header value.
    AuthorizationHeader,
    /// `basic_auth`.
    Basic,
    /// `jwt`: a bearer JWT.
    Jwt,
    /// `digest_auth`.
    Digest,
    /// `oauth1`: the `Authorization: OAuth ...` header.
    OAuth1,
    /// `oauth2`: a bearer token, checked by introspection or as a JWT.
    OAuth2 {
        /// The introspection URL, only when it is a public http(s) URL without credentials.
        token_url: Option<Box<str>>,
        /// `required_scope`.
        scopes: Box<[Box<str>]>,
    },
    /// `hmac`: a signature header.
    Hmac {
        /// The header carrying the signature.
        header: Box<str>,
        /// The digest, upper case (`SHA256`).
        algorithm: Box<str>,
    },
    /// `header_auth`: an API key header.
    Header {
        /// The header name.
        name: Box<str>,
    },
    /// `query_auth`: an API key query parameter.
    Query {
        /// The parameter name.
        name: Box<str>,
    },
}

impl OpenApiInfo {
    /// Capture what the document shows of `config`, whose checks compiled to `validators`.
    /// `None` when there is nothing beyond the defaults (no check, no schema).
    pub fn capture(config: &WebhookConfig, validators: &Validators) -> Option<Box<Self>> {
        let configured = |key: &str| validators.names().any(|n| n == key);
        let section = |key: &str| config.extra.get(key).and_then(Value::as_object);
        let text = |key: &str, field: &str| {
            section(key)
                .and_then(|o| o.get(field))
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };

        let mut security = Vec::new();
        if configured("authorization") {
            let bearer = config
                .authorization
                .as_deref()
                .is_some_and(|a| a.trim().starts_with("Bearer "));
            security.push(if bearer {
                SecurityScheme::Bearer
            } else {
                SecurityScheme::AuthorizationHeader
            });
        }
        if configured("basic_auth") {
            security.push(SecurityScheme::Basic);
        }
        if configured("jwt") {
            security.push(SecurityScheme::Jwt);
        }
        if configured("oauth2") {
            let token_url = text("oauth2", "introspection_endpoint")
                .filter(|u| is_public_url(u))
                .map(Box::from);
            let scopes = match section("oauth2").and_then(|o| o.get("required_scope")) {
                Some(Value::String(s)) => s.split_whitespace().map(Box::from).collect(),
                Some(Value::Array(a)) => {
                    a.iter().filter_map(Value::as_str).map(Box::from).collect()
                }
                _ => Box::default(),
            };
            security.push(SecurityScheme::OAuth2 { token_url, scopes });
        }
        if configured("oauth1") {
            security.push(SecurityScheme::OAuth1);
        }
        let hmac = configured("hmac").then(|| {
            let stripe = text("hmac", "format").is_some_and(|f| f.eq_ignore_ascii_case("stripe"));
            let default = if stripe {
                "Stripe-Signature"
            } else {
                "X-HMAC-Signature"
            };
            let header: Box<str> = text("hmac", "header").unwrap_or(default).into();
            let algorithm: Box<str> = text("hmac", "algorithm")
                .unwrap_or("sha256")
                .to_ascii_uppercase()
                .into();
            (header, algorithm)
        });
        if let Some((header, algorithm)) = &hmac {
            security.push(SecurityScheme::Hmac {
                header: header.clone(),
                algorithm: algorithm.clone(),
            });
        }
        if configured("header_auth") {
            let name = text("header_auth", "header_name").unwrap_or("X-API-Key");
            security.push(SecurityScheme::Header { name: name.into() });
        }
        if configured("query_auth") {
            let name = text("query_auth", "parameter_name").unwrap_or("api_key");
            security.push(SecurityScheme::Query { name: name.into() });
        }
        if configured("digest_auth") {
            security.push(SecurityScheme::Digest);
        }

        let mut features: Vec<(&'static str, Box<str>)> = Vec::new();
        if configured("rate_limit") {
            let field = |f: &str| {
                section("rate_limit")
                    .and_then(|o| o.get(f))
                    .map(scalar)
                    .filter(|s| !s.is_empty())
            };
            let max = field("max_requests").unwrap_or_else(|| "100".into());
            let window = field("window_seconds").unwrap_or_else(|| "60".into());
            features.push((
                "Rate Limiting",
                format!("{max} requests per {window} seconds").into(),
            ));
        }
        if configured("ip_whitelist") {
            let shown = match config.extra.get("ip_whitelist") {
                Some(Value::Array(list)) => format!("{} allowed IP address(es)", list.len()),
                _ => "Enabled".to_owned(),
            };
            features.push(("IP Whitelist", shown.into()));
        }
        if let Some((header, algorithm)) = hmac {
            features.push((
                "HMAC Verification",
                format!("{algorithm} signature in {header} header").into(),
            ));
        }
        if configured("recaptcha") {
            let version = text("recaptcha", "version").unwrap_or("v3");
            let min_score = section("recaptcha")
                .and_then(|o| o.get("min_score"))
                .map(scalar);
            let shown = match min_score {
                Some(score) if !score.is_empty() => format!("{version} with minimum score {score}"),
                _ => version.to_owned(),
            };
            features.push(("reCAPTCHA", shown.into()));
        }
        if let Some(cleanup) = section("credential_cleanup")
            && cleanup.get("enabled") == Some(&Value::Bool(true))
        {
            let mode = cleanup
                .get("mode")
                .and_then(Value::as_str)
                .unwrap_or("mask")
                .to_ascii_lowercase();
            features.push((
                "Credential Cleanup",
                format!("Enabled ({mode} mode)").into(),
            ));
        }
        if configured("json_schema") {
            features.push(("JSON Schema Validation", "Enabled".into()));
        }

        let schema = config
            .extra
            .get("json_schema")
            .filter(|s| s.is_object() && depth(s) <= MAX_SCHEMA_DEPTH)
            .filter(|s| serde_json::to_vec(s).is_ok_and(|text| text.len() <= MAX_SCHEMA_BYTES))
            .map(|s| Box::new(s.clone()));

        if schema.is_none() && security.is_empty() && features.is_empty() {
            return None;
        }
        Some(Box::new(Self {
            schema,
            security: security.into(),
            features: features.into(),
        }))
    }
}

/// A number or string config value as text (`""` for other kinds).
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// Nesting depth of a JSON value: a scalar is 0, `{}` is 1.
fn depth(v: &Value) -> usize {
    // Iterative, so a pathological schema cannot exhaust the stack.
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        deepest = deepest.max(d);
        if d > MAX_SCHEMA_DEPTH {
            break;
        }
        match v {
            Value::Object(o) => stack.extend(o.values().map(|c| (c, d + 1))),
            Value::Array(a) => stack.extend(a.iter().map(|c| (c, d + 1))),
            _ => {}
        }
    }
    deepest
}

/// Whether `url` may be shown as an OAuth 2.0 token URL: http(s), a host, no user info (it may
/// hold a password), no query, and a host that passes the outbound host rules (not private,
/// loopback, link-local, multicast, reserved, localhost or a cloud metadata name).
fn is_public_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    let scheme_ok = uri
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"));
    let Some(authority) = uri.authority() else {
        return false;
    };
    if !scheme_ok || authority.as_str().contains('@') || uri.query().is_some() {
        return false;
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    crate::outbound::ssrf::check_host(&host, None).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModuleContext;
    use crate::Registry;

    fn capture(doc: &str) -> Option<Box<OpenApiInfo>> {
        let registry =
            Registry::with_builtin_sinks(ModuleContext::with_log_target(Box::new(std::io::sink())));
        let hook =
            cwm_config::compile_webhook_json(&registry, &|_: &str| None, "hook", doc.as_bytes())
                .unwrap();
        hook.openapi.clone()
    }

    #[test]
    fn plain_webhooks_capture_nothing() {
        assert_eq!(capture(r#"{"module":"log"}"#), None);
    }

    #[test]
    fn checks_become_schemes_without_their_secrets() {
        let info = capture(
            r#"{"module":"log","authorization":"Bearer s3cret-token",
                "hmac":{"secret":"hmac-s3cret","header":"X-Hub-Signature-256","algorithm":"sha256"},
                "header_auth":{"header_name":"X-Key","api_key":"k3y-s3cret"},
                "query_auth":{"api_key":"q-s3cret"},
                "basic_auth":{"username":"u","password":"basic-s3cret"},
                "rate_limit":{"max_requests":5,"window_seconds":10},
                "ip_whitelist":["10.0.0.1","10.0.0.2"],
                "json_schema":{"type":"object","required":["a"]}}"#,
        )
        .unwrap();
        assert_eq!(
            &*info.security,
            [
                SecurityScheme::Bearer,
                SecurityScheme::Basic,
                SecurityScheme::Hmac {
                    header: "X-Hub-Signature-256".into(),
                    algorithm: "SHA256".into()
                },
                SecurityScheme::Header {
                    name: "X-Key".into()
                },
                SecurityScheme::Query {
                    name: "api_key".into()
                },
            ]
        );
        assert_eq!(
            info.schema.as_deref(),
            Some(&serde_json::json!({"type": "object", "required": ["a"]}))
        );
        let shown = format!("{info:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        let names: Vec<_> = info.features.iter().map(|f| f.0).collect();
        assert_eq!(
            names,
            [
                "Rate Limiting",
                "IP Whitelist",
                "HMAC Verification",
                "JSON Schema Validation"
            ]
        );
        assert_eq!(&*info.features[0].1, "5 requests per 10 seconds");
    }

    #[test]
    fn deep_schemas_are_not_shown_and_token_urls_only_when_public() {
        let mut schema = String::from(r#"{"type":"object"}"#);
        for _ in 0..MAX_SCHEMA_DEPTH {
            schema = format!(r#"{{"type":"object","properties":{{"a":{schema}}}}}"#);
        }
        let info = capture(&format!(r#"{{"module":"log","json_schema":{schema}}}"#)).unwrap();
        assert_eq!(info.schema, None);
        for (url, shown) in [
            ("https://auth.example.com/introspect", true),
            ("https://user:pw@auth.example.com/introspect", false),
            ("http://10.1.2.3/introspect", false),
            ("http://127.0.0.1/introspect", false),
            ("http://169.254.169.254/latest", false),
            ("http://[::1]/x", false),
            ("http://localhost/x", false),
            ("https://metadata.google.internal/x", false),
            ("ftp://auth.example.com/x", false),
            ("http://0x7f000001/x", false),
            ("http://[fd00::1]/x", false),
            ("https://auth.example.com/x?token=1", false),
        ] {
            assert_eq!(is_public_url(url), shown, "{url}");
        }
    }
}
