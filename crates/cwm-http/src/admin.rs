//! `GET /admin/config-status` and `POST /admin/reload-config`, behind CONFIG_RELOAD_ADMIN_TOKEN.
//!
//! Unlike the upstream, authentication runs first, so an unauthenticated caller learns nothing
//! about the state, and the body's booleans must be booleans (`"false"` is not true).

use cwm_config::{Diff, ReloadRequest, snapshot::now_rfc3339};
use http::request::Parts;
use http::{Response, StatusCode};
use serde_json::{Value, json};

use crate::auth::{AdminDenied, check_admin};
use crate::body;
use crate::response::{self, Body};
use crate::{Inner, RequestBody};

/// Admin request bodies are tiny; anything larger is refused.
const MAX_ADMIN_BODY: usize = 64 * 1024;

/// `Some(response)` when the request is refused.
fn refuse(inner: &Inner, parts: &Parts) -> Option<Response<Body>> {
    let header = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let denied = check_admin(inner.settings.admin_token.as_deref(), header).err()?;
    Some(match denied {
        AdminDenied::Disabled => response::detail(
            StatusCode::FORBIDDEN,
            "Admin API disabled. Set CONFIG_RELOAD_ADMIN_TOKEN environment variable.",
        ),
        AdminDenied::Unauthorized(msg) => response::detail(StatusCode::UNAUTHORIZED, msg),
    })
}

pub(crate) fn config_status(inner: &Inner, parts: &Parts) -> Response<Body> {
    if let Some(r) = refuse(inner, parts) {
        return r;
    }
    let status = inner.provider.status();
    let (pools, deprecated) = match &inner.modules {
        Some(m) => (m.connections().status(), m.connections().retired_count()),
        None => (Vec::new(), 0),
    };
    let active = pools.iter().filter(|p| p.kind.is_some()).count();
    let details: serde_json::Map<String, Value> = pools
        .into_iter()
        .map(|p| (p.connection_name.clone(), json!(p)))
        .collect();
    let watching = status
        .details
        .get("file_watching_enabled")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    response::json(
        StatusCode::OK,
        &json!({
            "last_reload": status.last_reload,
            "reload_in_progress": false,
            "webhooks_count": status.total_webhooks,
            "connections_count": status.connections_count,
            "connection_pools": {"active": active, "deprecated": deprecated},
            "pool_details": details,
            "file_watching_enabled": watching,
            "provider": status,
        }),
    )
}

fn flag(body: &serde_json::Map<String, Value>, key: &str, default: bool) -> Result<bool, String> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("'{key}' must be a boolean")),
    }
}

fn diff_details(kind: &str, d: &Diff) -> Value {
    json!({
        format!("{kind}_added"): d.added,
        format!("{kind}_removed"): d.removed,
        format!("{kind}_modified"): d.modified,
        format!("total_{kind}"): d.total,
        format!("{kind}_rejected"): d.rejected,
    })
}

/// The body of an admin request, at most [`MAX_ADMIN_BODY`] bytes; otherwise the answer to send.
pub(crate) async fn read_admin_body<B: RequestBody>(
    inner: &Inner,
    body: &mut Option<B>,
) -> Result<bytes::Bytes, Response<Body>> {
    let Some(body) = body.take() else {
        return Err(response::internal_error());
    };
    body::read(body, MAX_ADMIN_BODY, inner.settings.body_idle_timeout)
        .await
        .map_err(|e| {
            e.answer(response::detail(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large",
            ))
        })
}

pub(crate) async fn reload<B>(inner: &Inner, parts: &Parts, body: &mut Option<B>) -> Response<Body>
where
    B: RequestBody,
{
    if let Some(r) = refuse(inner, parts) {
        return r;
    }
    let body = match read_admin_body(inner, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    // A missing, non-JSON or non-object body means "reload both", as upstream.
    let opts = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let parsed = (|| {
        Ok::<_, String>((
            flag(&opts, "reload_webhooks", true)?,
            flag(&opts, "reload_connections", true)?,
            flag(&opts, "validate_only", false)?,
        ))
    })();
    let (webhooks, connections, validate_only) = match parsed {
        Ok(t) => t,
        Err(msg) => return response::detail(StatusCode::BAD_REQUEST, &msg),
    };
    if validate_only {
        return response::json(
            StatusCode::OK,
            &json!({"status": "validation_not_implemented", "message": "Validate-only mode is provided by `cwmctl validate`"}),
        );
    }
    if !webhooks && !connections {
        return response::json(
            StatusCode::OK,
            &json!({"status": "error", "error": "No reload operation specified"}),
        );
    }
    match inner
        .provider
        .reload(ReloadRequest {
            webhooks,
            connections,
        })
        .await
    {
        Ok(report) => {
            let mut details = serde_json::Map::new();
            if let Some(d) = &report.webhooks {
                details.insert("webhooks".into(), diff_details("webhooks", d));
            }
            if let Some(d) = &report.connections {
                details.insert("connections".into(), diff_details("connections", d));
            }
            response::json(
                StatusCode::OK,
                &json!({
                    "status": "success",
                    "reloaded": {"webhooks": webhooks, "connections": connections},
                    "details": details,
                    "timestamp": now_rfc3339(),
                }),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "admin reload failed; previous configuration kept");
            response::json(
                StatusCode::BAD_REQUEST,
                &json!({
                    "status": "error",
                    "error": "Processing error occurred in reload_config",
                    "details": null,
                    "timestamp": now_rfc3339(),
                }),
            )
        }
    }
}
