//! `POST /connect/ack` (acks of SSE and long-poll connectors) and `GET /connect/status/{channel}`.

use cwm_relay::cloud::{AckError, ChannelManager};
use cwm_relay::protocol::{AckStatus, CONNECTION_ID_HEADER, now};
use http::request::Parts;
use http::{Response, StatusCode};
use serde_json::json;

use super::{bearer, bool_param, header, missing, param, query};
use crate::response::{self, Body};

/// `POST /connect/ack?message_id=&status=ack|nack&retry=true|false`, with `X-Connection-ID` and
/// `Authorization: Bearer <channel token>`.
pub(super) async fn ack(manager: &ChannelManager, parts: &Parts) -> Response<Body> {
    let query = query(parts);
    let Some(message_id) = param(&query, "message_id") else {
        return missing("query", "message_id");
    };
    // Any status but `ack` is a nack, as in the Python gateway.
    let nack = param(&query, "status").is_some_and(|s| s != "ack");
    let retry = match bool_param(&query, "retry", true) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Some(connection_id) = header(parts, CONNECTION_ID_HEADER) else {
        return missing("header", "x-connection-id");
    };
    let Some(authorization) = parts.headers.get(http::header::AUTHORIZATION) else {
        return missing("header", "authorization");
    };
    let token = String::from_utf8_lossy(authorization.as_bytes());
    let status = if nack {
        AckStatus::Nack { retry }
    } else {
        AckStatus::Ack
    };
    match manager
        .ack(connection_id.trim(), bearer(&token), message_id, status)
        .await
    {
        Ok(()) => response::json(
            StatusCode::OK,
            &json!({"status": "ok", "message_id": message_id}),
        ),
        Err(e) => {
            let code = match e {
                AckError::ConnectionNotFound | AckError::NotInFlight => StatusCode::NOT_FOUND,
                AckError::InvalidToken => StatusCode::UNAUTHORIZED,
                AckError::Failed => StatusCode::INTERNAL_SERVER_ERROR,
            };
            response::detail(code, &e.to_string())
        }
    }
}

/// `GET /connect/status/{channel}`: the channel's figures, for its token holder.
pub(super) async fn status(
    manager: &ChannelManager,
    parts: &Parts,
    channel: &str,
) -> Response<Body> {
    let Some(authorization) = parts.headers.get(http::header::AUTHORIZATION) else {
        return missing("header", "authorization");
    };
    let token = String::from_utf8_lossy(authorization.as_bytes());
    if manager.authenticate(channel, bearer(&token)).is_err() {
        return response::detail(StatusCode::UNAUTHORIZED, "Invalid token");
    }
    match manager.stats(channel).await {
        Some(stats) => response::json(
            StatusCode::OK,
            &json!({
                "channel": channel,
                "connected": true,
                "stats": stats,
                "server_time": now(),
            }),
        ),
        None => response::detail(StatusCode::NOT_FOUND, "Channel not found"),
    }
}
