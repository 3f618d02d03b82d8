//! WebSocket `GET /connect/stream/{channel}`.
//!
//! The handshake is answered here (101 with `Sec-WebSocket-Accept`); a wrong token or an unknown
//! channel rejects it with HTTP 401 `{"detail":"Invalid channel token"}`, which connectors treat
//! as a failure to reconnect from, like the close codes 4001/4002 of an accepted socket. Once
//! upgraded, the socket runs in its own task: the connection is opened (close 4003 past the
//! channel's `max_connections`), `connected` is sent, then webhooks as they come and a heartbeat
//! every heartbeat interval; client acks, nacks and heartbeats are applied as they arrive, and
//! every client frame counts as liveness. A client frame that is not JSON closes the socket with
//! 1003. When the socket ends the connection is dropped and its in-flight messages requeued.

use std::net::IpAddr;
use std::time::Duration;

use cwm_relay::cloud::{
    ChannelManager, ConnectError, ConnectRequest, Connection, Outgoing, Protocol,
};
use cwm_relay::protocol::{
    AckStatus, CLOSE_CHANNEL_NOT_FOUND, CLOSE_MAX_CONNECTIONS, ClientFrame, ServerFrame, now,
};
use futures_util::{SinkExt as _, StreamExt as _};
use http::header::{
    CONNECTION, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION,
    UPGRADE,
};
use http::request::Parts;
use http::{Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use super::{bearer, connector_id, header, param, query};
use crate::response::{self, Body};

/// Client frames are acks and heartbeats: small.
const MAX_CLIENT_MESSAGE: usize = 1024 * 1024;
/// How long a closing socket waits for the client's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Answer the handshake and start the socket's task.
pub(super) fn handshake(
    manager: &ChannelManager,
    parts: &Parts,
    channel: String,
    remote_ip: Option<IpAddr>,
) -> Response<Body> {
    let has_token = |name, token: &str| {
        parts.headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let key = parts.headers.get(SEC_WEBSOCKET_KEY);
    let on_upgrade = parts.extensions.get::<OnUpgrade>().cloned();
    let (Some(key), Some(on_upgrade), true, true, Some("13")) = (
        key,
        on_upgrade,
        has_token(UPGRADE, "websocket"),
        has_token(CONNECTION, "upgrade"),
        header(parts, SEC_WEBSOCKET_VERSION).map(str::trim),
    ) else {
        let mut r = response::detail(StatusCode::BAD_REQUEST, "WebSocket upgrade required");
        r.headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return r;
    };
    // The `Authorization` header without `Bearer `, else `?token=`.
    let mut token = header(parts, http::header::AUTHORIZATION)
        .map(bearer)
        .unwrap_or("")
        .to_owned();
    if token.is_empty() {
        token = param(&query(parts), "token")
            .unwrap_or("")
            .trim()
            .to_owned();
    }
    if let Err(e) = manager.authenticate(&channel, &token) {
        return response::detail(StatusCode::UNAUTHORIZED, &e.to_string());
    }
    let accept = derive_accept_key(key.as_bytes());
    let Ok(accept) = HeaderValue::from_str(&accept) else {
        return response::internal_error();
    };
    let request = ConnectRequest {
        protocol: Protocol::Websocket,
        connector_id: connector_id(parts),
        remote_ip,
        max_messages: None,
    };
    let manager = manager.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade failed");
                return;
            }
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_CLIENT_MESSAGE))
            .max_frame_size(Some(MAX_CLIENT_MESSAGE));
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        run(ws, &manager, &channel, request).await;
    });
    let mut r = Response::new(Body::default());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(SEC_WEBSOCKET_ACCEPT, accept);
    r
}

/// Why the socket's loop ended.
enum End {
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// The socket is closed or broken: nothing more to send.
    Gone,
}

/// Serve one upgraded socket until it ends.
async fn run<S>(
    mut ws: WebSocketStream<S>,
    manager: &ChannelManager,
    channel: &str,
    request: ConnectRequest,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let conn = match manager.connect(channel, request) {
        Ok(c) => c,
        Err(e) => {
            let code = match e {
                ConnectError::MaxConnections => CLOSE_MAX_CONNECTIONS,
                ConnectError::ChannelNotFound => CLOSE_CHANNEL_NOT_FOUND,
            };
            let reason = match e {
                ConnectError::MaxConnections => "Max connections reached",
                ConnectError::ChannelNotFound => "Channel not found",
            };
            close(&mut ws, code, reason).await;
            return;
        }
    };
    let heartbeat = manager.settings().heartbeat_interval;
    match serve(&mut ws, conn, heartbeat).await {
        End::Close(code, reason) => close(&mut ws, code, reason).await,
        End::Gone => {}
    }
}

/// The socket's loop; the connection is dropped (in-flight messages requeued) when it returns.
async fn serve<S>(ws: &mut WebSocketStream<S>, mut conn: Connection, heartbeat: Duration) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // A client that does not read for this long is given up on.
    let send_timeout = heartbeat.saturating_mul(3);
    let connected = ServerFrame::Connected {
        connection_id: conn.id().to_owned(),
        channel: conn.channel().to_owned(),
        timestamp: now(),
    };
    if send(ws, &connected, send_timeout).await.is_err() {
        return End::Gone;
    }
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            out = conn.next() => {
                let frame = match out {
                    Some(Outgoing::Webhook(m)) => ServerFrame::Webhook(m.as_ref().clone()),
                    Some(Outgoing::Close { code, reason }) => return End::Close(code, reason),
                    None => return End::Close(u16::from(CloseCode::Away), "Server shutting down"),
                };
                if send(ws, &frame, send_timeout).await.is_err() {
                    return End::Gone;
                }
            }
            _ = ticker.tick() => {
                let t = now();
                let frame = ServerFrame::Heartbeat { timestamp: t.clone(), server_time: Some(t) };
                if send(ws, &frame, send_timeout).await.is_err() {
                    return End::Gone;
                }
            }
            msg = ws.next() => {
                let msg = match msg {
                    Some(Ok(m)) => m,
                    None | Some(Err(_)) => return End::Gone,
                };
                // Any frame is liveness.
                conn.heartbeat();
                let data = match &msg {
                    Message::Text(t) => t.as_bytes(),
                    Message::Binary(b) => b.as_ref(),
                    // The close reply is sent by the next read, which then ends the stream.
                    Message::Close(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                };
                let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
                    return End::Close(u16::from(CloseCode::Unsupported), "Invalid JSON frame");
                };
                // JSON that is no known frame (no `type`, no `message_id`) is ignored.
                match serde_json::from_value::<ClientFrame>(value) {
                    Ok(ClientFrame::Ack { message_id }) => {
                        conn.acknowledge(&message_id, AckStatus::Ack).await;
                    }
                    Ok(ClientFrame::Nack { message_id, retry }) => {
                        conn.acknowledge(&message_id, AckStatus::Nack { retry }).await;
                    }
                    Ok(ClientFrame::Heartbeat { .. } | ClientFrame::Unknown) | Err(_) => {}
                }
            }
        }
    }
}

/// Send one frame as JSON text.
async fn send<S>(
    ws: &mut WebSocketStream<S>,
    frame: &ServerFrame,
    timeout: Duration,
) -> Result<(), ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let text = serde_json::to_string(frame).map_err(|_| ())?;
    match tokio::time::timeout(timeout, ws.send(Message::text(text))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Send a close frame, then wait (briefly) for the client's, so that it reads ours.
async fn close<S>(ws: &mut WebSocketStream<S>, code: u16, reason: &'static str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        if ws.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}
