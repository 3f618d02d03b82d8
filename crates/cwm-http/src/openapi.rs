//! `GET /openapi.json`: an OpenAPI 3.0 document of the configured webhooks, in the Python
//! gateway's shape, built from the compiled webhooks ([`cwm_modules::openapi::OpenApiInfo`]).
//!
//! The document is built once at startup and rebuilt by a background task each time the
//! provider publishes a new configuration ([`cwm_config::ConfigProvider::subscribe`]), a burst
//! of changes coalesced into one rebuild. A request only clones the serialized bytes.
//!
//! What it lists: `POST /webhook/{id}` for every webhook of the default namespace, then (etcd
//! backend) `POST /webhook/{namespace}/{id}` for the webhooks of the other namespaces, at most
//! [`MAX_OPERATIONS`] in all; ids are percent-escaped in paths. Where the Python gateway's
//! document breaks the OpenAPI rules, this one does not: no undeclared path parameter, unique
//! operation ids, one security requirement naming every check (all must pass), and an `oauth1`
//! scheme of a valid type.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use cwm_config::Snapshot;
use cwm_modules::CompiledWebhook;
use cwm_modules::openapi::SecurityScheme;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value, json};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::Provider;

/// Most operations one document lists; the rest are counted in `info.description`.
pub const MAX_OPERATIONS: usize = 10_000;

/// How long a rebuild waits after a change, so that a burst of changes costs one rebuild.
const COALESCE: Duration = Duration::from_millis(200);

/// Everything but the unreserved characters is escaped in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The served document, kept current by a background task.
pub(crate) struct OpenApi {
    current: Arc<ArcSwap<Bytes>>,
    /// Stops the rebuild task when the receiver is dropped.
    _stop: DropGuard,
}

impl OpenApi {
    /// Build the document from `provider`'s snapshot now, and (inside a Tokio runtime) start the
    /// task that rebuilds it on every published change. Outside a runtime it stays as built.
    pub(crate) fn start(provider: &Provider, root_path: &str) -> Self {
        // Subscribe first: a change published during the first build still triggers a rebuild.
        let mut changes = provider.subscribe();
        let current = Arc::new(ArcSwap::from_pointee(generate(
            &provider.snapshot(),
            root_path,
        )));
        let stop = CancellationToken::new();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (provider, current, stop, root) = (
                provider.clone(),
                current.clone(),
                stop.clone(),
                Arc::<str>::from(root_path),
            );
            runtime.spawn(async move {
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        changed = changes.changed() => if changed.is_err() { break },
                    }
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(COALESCE) => {}
                    }
                    changes.borrow_and_update();
                    let snapshot = arc_swap::Guard::into_inner(provider.snapshot());
                    let root = root.clone();
                    match tokio::task::spawn_blocking(move || generate(&snapshot, &root)).await {
                        Ok(doc) => current.store(Arc::new(doc)),
                        Err(e) => {
                            tracing::warn!(error = %e, "rebuilding the OpenAPI document failed")
                        }
                    }
                }
            });
        }
        Self {
            current,
            _stop: stop.drop_guard(),
        }
    }

    /// The current document, serialized.
    pub(crate) fn document(&self) -> Bytes {
        Bytes::clone(&self.current.load())
    }
}

/// The document for `snapshot`, serialized. `root_path` is the proxy prefix (`ROOT_PATH`).
pub(crate) fn generate(snapshot: &Snapshot<CompiledWebhook>, root_path: &str) -> Bytes {
    let default_ns = snapshot.default_namespace();
    let mut doc = Document::default();
    let total = snapshot.webhook_count();
    'all: for ns in std::iter::once(default_ns.to_owned()).chain(
        snapshot
            .namespaces()
            .into_iter()
            .filter(|n| n != default_ns),
    ) {
        let namespace = (ns != default_ns).then_some(ns.as_str());
        for (id, hook) in snapshot.webhooks_in(&ns) {
            if doc.paths.len() >= MAX_OPERATIONS {
                break 'all;
            }
            doc.add(namespace, &id, &hook);
        }
    }
    let mut description = String::from(
        "Dynamic webhook API documentation generated from configuration. \
         Each webhook endpoint accepts POST requests with JSON or blob payloads.",
    );
    if doc.paths.len() < total {
        description.push_str(&format!(
            " This document lists {} of the {total} configured webhooks.",
            doc.paths.len()
        ));
    }
    let server = root_path.trim_end_matches('/');
    let document = json!({
        "openapi": "3.0.0",
        "info": {
            "title": "Core Webhook Module API",
            "version": "1.0.0",
            "description": description,
        },
        "servers": [{
            "url": if server.is_empty() { "/" } else { server },
            "description": "Current server",
        }],
        "paths": doc.paths,
        "components": {
            "securitySchemes": doc.schemes,
            "responses": responses(),
            "schemas": {
                "Detail": {
                    "type": "object",
                    "properties": {"detail": {"type": "string"}},
                },
            },
        },
    });
    serde_json::to_vec(&document).map_or_else(|_| Bytes::new(), Bytes::from)
}

/// The parts of the document that grow per webhook.
#[derive(Default)]
struct Document {
    paths: Map<String, Value>,
    schemes: Map<String, Value>,
    /// Scheme definition (serialized) to the name it was given.
    scheme_names: HashMap<String, String>,
    operation_ids: HashSet<String>,
}

impl Document {
    fn add(&mut self, namespace: Option<&str>, id: &str, hook: &CompiledWebhook) {
        let (path, shown) = match namespace {
            Some(ns) => (
                format!(
                    "/webhook/{}/{}",
                    utf8_percent_encode(ns, SEGMENT),
                    utf8_percent_encode(id, SEGMENT)
                ),
                format!("{ns}/{id}"),
            ),
            None => (
                format!("/webhook/{}", utf8_percent_encode(id, SEGMENT)),
                id.to_owned(),
            ),
        };
        let info = hook.openapi.as_deref();
        let escaped = escape(&shown);
        let mut description = format!(
            "Webhook endpoint: {escaped}\nModule: {}",
            escape(hook.sink.module())
        );
        if id == cwm_config::CATCH_ALL_ID {
            description.push_str("\nCatch-all: also answers ids that are not configured.");
        }
        if let Some(info) = info.filter(|i| !i.features.is_empty()) {
            description.push_str("\n\n**Security Features:**");
            for (name, value) in &info.features {
                description.push_str(&format!("\n- {}: {}", escape(name), escape(value)));
            }
        }
        let mut requirement = Map::new();
        for scheme in info.map(|i| &*i.security).unwrap_or_default() {
            let (name, scopes) = self.scheme(scheme);
            requirement.insert(name, scopes);
        }
        let security = if requirement.is_empty() {
            json!([])
        } else {
            json!([requirement])
        };
        let blob = hook.config.data_type == cwm_config::DataType::Blob;
        let content = if blob {
            json!({"application/octet-stream": {"schema": {
                "type": "string", "format": "binary", "description": "Binary blob data",
            }}})
        } else {
            let schema = info
                .and_then(|i| i.schema.as_deref())
                .cloned()
                .unwrap_or_else(|| {
                    json!({"type": "object", "description": "JSON payload", "additionalProperties": true})
                });
            json!({"application/json": {"schema": schema}})
        };
        let tag = namespace.unwrap_or("webhooks");
        let operation = json!({
            "tags": [tag],
            "summary": format!("Send webhook to {escaped}"),
            "description": description,
            "operationId": self.operation_id(&shown),
            "requestBody": {
                "required": true,
                "description": format!("Webhook payload ({} format)", if blob { "blob" } else { "json" }),
                "content": content,
            },
            "responses": {
                "200": {"$ref": "#/components/responses/Accepted"},
                "400": {"$ref": "#/components/responses/BadRequest"},
                "401": {"$ref": "#/components/responses/Unauthorized"},
                "403": {"$ref": "#/components/responses/Forbidden"},
                "404": {"$ref": "#/components/responses/NotFound"},
                "413": {"$ref": "#/components/responses/PayloadTooLarge"},
                "429": {"$ref": "#/components/responses/RateLimited"},
                "500": {"$ref": "#/components/responses/InternalError"},
                "503": {"$ref": "#/components/responses/Unavailable"},
            },
            "security": security,
        });
        self.paths.insert(path, json!({ "post": operation }));
    }

    /// `post_webhook_<id>` with every character outside `[A-Za-z0-9_]` turned into `_` (and
    /// `webhook_` before an id that does not start with a letter), as the Python gateway; a
    /// number is added when two ids give the same operation id.
    fn operation_id(&mut self, shown: &str) -> String {
        let mut safe: String = shown
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if !safe.starts_with(|c: char| c.is_ascii_alphabetic()) {
            safe.insert_str(0, "webhook_");
        }
        let base = format!("post_webhook_{safe}");
        let mut n = 1;
        let mut candidate = base.clone();
        while !self.operation_ids.insert(candidate.clone()) {
            n += 1;
            candidate = format!("{base}_{n}");
        }
        candidate
    }

    /// The name of `scheme` in `components.securitySchemes` (added on first use) and the scopes
    /// a requirement names. Schemes of one kind that differ (two HMAC headers) get `_2`, `_3`...
    fn scheme(&mut self, scheme: &SecurityScheme) -> (String, Value) {
        let (base, definition, scopes) = definition(scheme);
        let key = format!("{base}\n{definition}");
        if let Some(name) = self.scheme_names.get(&key) {
            return (name.clone(), scopes);
        }
        let mut name = base.to_owned();
        let mut n = 1;
        while self.schemes.contains_key(&name) {
            n += 1;
            name = format!("{base}_{n}");
        }
        self.schemes.insert(name.clone(), definition);
        self.scheme_names.insert(key, name.clone());
        (name, scopes)
    }
}

/// A scheme's base name, its definition and the scopes a requirement of it names.
fn definition(scheme: &SecurityScheme) -> (&'static str, Value, Value) {
    let none = json!([]);
    match scheme {
        SecurityScheme::Bearer => (
            "bearerAuth",
            json!({"type": "http", "scheme": "bearer", "description": "Bearer token authentication"}),
            none,
        ),
        SecurityScheme::AuthorizationHeader => (
            "authorizationHeader",
            json!({"type": "apiKey", "in": "header", "name": "Authorization",
                   "description": "A static token: the whole Authorization header value"}),
            none,
        ),
        SecurityScheme::Basic => (
            "basicAuth",
            json!({"type": "http", "scheme": "basic", "description": "HTTP Basic Authentication"}),
            none,
        ),
        SecurityScheme::Jwt => (
            "jwtAuth",
            json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                   "description": "JWT token authentication"}),
            none,
        ),
        SecurityScheme::Digest => (
            "digestAuth",
            json!({"type": "http", "scheme": "digest", "description": "HTTP Digest Authentication"}),
            none,
        ),
        SecurityScheme::OAuth1 => (
            "oauth1",
            json!({"type": "http", "scheme": "OAuth",
                   "description": "OAuth 1.0 authentication (signed Authorization: OAuth header)"}),
            none,
        ),
        SecurityScheme::OAuth2 { token_url, scopes } => {
            let listed: Map<String, Value> = scopes
                .iter()
                .map(|s| {
                    (
                        escape(s),
                        Value::String(format!("Required scope: {}", escape(s))),
                    )
                })
                .collect();
            match token_url {
                Some(url) => (
                    "oauth2",
                    json!({"type": "oauth2", "description": "OAuth 2.0 authentication",
                           "flows": {"clientCredentials": {"tokenUrl": url, "scopes": listed}}}),
                    Value::Array(listed.keys().cloned().map(Value::String).collect()),
                ),
                // The introspection endpoint is not public: a bearer token, without its URL.
                None => {
                    let mut description = String::from("OAuth 2.0 access token (bearer)");
                    if !listed.is_empty() {
                        let names: Vec<&str> = listed.keys().map(String::as_str).collect();
                        description.push_str(&format!("; required scopes: {}", names.join(", ")));
                    }
                    (
                        "oauth2",
                        json!({"type": "http", "scheme": "bearer", "description": description}),
                        none,
                    )
                }
            }
        }
        SecurityScheme::Hmac { header, algorithm } => (
            "hmacAuth",
            json!({"type": "apiKey", "in": "header", "name": header,
                   "description": format!("HMAC signature authentication (header: {}, {})",
                                          escape(header), escape(algorithm))}),
            none,
        ),
        SecurityScheme::Header { name } => (
            "headerAuth",
            json!({"type": "apiKey", "in": "header", "name": name,
                   "description": format!("API key in header: {}", escape(name))}),
            none,
        ),
        SecurityScheme::Query { name } => (
            "queryAuth",
            json!({"type": "apiKey", "in": "query", "name": name,
                   "description": format!("API key in query parameter: {}", escape(name))}),
            none,
        ),
    }
}

/// The shared responses every operation refers to.
fn responses() -> Value {
    let detail = |description: &str, example: &str| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": {
                "type": "object",
                "properties": {"detail": {"type": "string", "example": example}},
            }}},
        })
    };
    json!({
        "Accepted": {
            "description": "Webhook accepted (delivered to its sink, or queued with \"ack\": \"receive\")",
            "content": {"application/json": {"schema": {
                "type": "object",
                "properties": {"message": {"type": "string", "example": "200 OK"}},
            }}},
        },
        "BadRequest": detail("Bad Request - Invalid payload or validation error", "Invalid JSON payload"),
        "Unauthorized": detail("Unauthorized - Authentication failed", "Unauthorized"),
        "Forbidden": detail("Forbidden - Client address not allowed", "IP address not allowed"),
        "NotFound": detail("Not Found - Unknown webhook", "Webhook not found"),
        "PayloadTooLarge": detail("Payload Too Large - Request payload exceeds size limit", "Payload too large"),
        "RateLimited": detail("Too Many Requests - Rate limit exceeded (see Retry-After)", "Rate limit exceeded"),
        "InternalError": detail("Internal Server Error", "An error occurred while processing the request"),
        "Unavailable": detail("Service Unavailable - The sink did not take the event; retry later (see Retry-After)", "Service temporarily unavailable"),
    })
}

/// HTML-escape `text` (as Python's `html.escape`) and drop control characters.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}
