//! Server-Sent Events `GET /connect/stream/{channel}/sse`: `connected` first, then a `webhook`
//! event per message and a `heartbeat` whenever nothing was sent for the heartbeat interval.
//! Acks go through `POST /connect/ack`. The stream ends when the manager closes the connection;
//! a client that goes away drops the body, which drops the connection (its in-flight messages
//! are requeued).

use std::net::IpAddr;

use bytes::Bytes;
use cwm_relay::cloud::{
    ChannelManager, ConnectError, ConnectRequest, Connection, Outgoing, Protocol,
};
use cwm_relay::protocol::{ServerFrame, now};
use futures_util::StreamExt as _;
use http::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};

use super::{authenticate, connector_id};
use crate::response::{self, Body};

const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

pub(super) fn stream(
    manager: &ChannelManager,
    parts: &Parts,
    channel: &str,
    remote_ip: Option<IpAddr>,
) -> Response<Body> {
    if let Err(r) = authenticate(manager, parts, channel) {
        return r;
    }
    let request = ConnectRequest {
        protocol: Protocol::Sse,
        connector_id: connector_id(parts),
        remote_ip,
        max_messages: None,
    };
    let body = match manager.connect(channel, request) {
        Ok(conn) => events(conn, manager.settings().heartbeat_interval),
        // The Python gateway registers the connection once the stream has started: the answer
        // is a 200 carrying one error event.
        Err(ConnectError::MaxConnections) => Body::new(
            ServerFrame::Error {
                error: "max_connections_reached".to_owned(),
            }
            .to_sse(),
        ),
        Err(e @ ConnectError::ChannelNotFound) => {
            return response::detail(StatusCode::NOT_FOUND, &e.to_string());
        }
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if parts.version < http::Version::HTTP_2 {
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive"));
    }
    h.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
    r
}

/// The event stream of `conn`.
fn events(conn: Connection, heartbeat: std::time::Duration) -> Body {
    let connected = ServerFrame::Connected {
        connection_id: conn.id().to_owned(),
        channel: conn.channel().to_owned(),
        timestamp: now(),
    };
    let first = futures_util::stream::once(std::future::ready(Bytes::from(connected.to_sse())));
    let rest = futures_util::stream::unfold(conn, move |mut conn| async move {
        let frame = match tokio::time::timeout(heartbeat, conn.next()).await {
            Err(_) => ServerFrame::Heartbeat {
                timestamp: now(),
                server_time: None,
            },
            Ok(Some(Outgoing::Webhook(m))) => ServerFrame::Webhook(m.as_ref().clone()),
            // Closed by the manager (evicted, disconnected, shutting down): the stream ends.
            Ok(Some(Outgoing::Close { .. }) | None) => return None,
        };
        Some((Bytes::from(frame.to_sse()), conn))
    });
    Body::stream(first.chain(rest))
}
