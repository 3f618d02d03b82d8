//! Long-poll `GET /connect/stream/{channel}/poll?timeout=30&max_messages=10`: one request is one
//! connection. It waits up to `timeout` seconds for a message, then gathers what else arrives
//! within [`GATHER`], up to `max_messages`. The messages answered stay ackable through `POST /connect/ack`
//! with the answer's `connection_id` for the channel's ack timeout (the Python gateway dropped
//! the connection before answering, so every polled message came back).

use std::net::IpAddr;
use std::time::Duration;

use cwm_relay::cloud::{ChannelManager, ConnectError, ConnectRequest, Outgoing, Protocol};
use cwm_relay::protocol::{POLL_MAX_MESSAGES_RANGE, POLL_TIMEOUT_RANGE, PollResponse, now};
use http::request::Parts;
use http::{Response, StatusCode};

use super::{authenticate, connector_id, int_param, query};
use crate::response::{self, Body};

const DEFAULT_TIMEOUT: i64 = 30;
const DEFAULT_MAX_MESSAGES: i64 = 10;

pub(super) async fn poll(
    manager: &ChannelManager,
    parts: &Parts,
    channel: &str,
    remote_ip: Option<IpAddr>,
) -> Response<Body> {
    let query = query(parts);
    let timeout = match int_param(
        &query,
        "timeout",
        DEFAULT_TIMEOUT,
        range_i64(*POLL_TIMEOUT_RANGE.start(), *POLL_TIMEOUT_RANGE.end()),
    ) {
        Ok(t) => Duration::from_secs(t.unsigned_abs()),
        Err(r) => return r,
    };
    let max_messages = match int_param(
        &query,
        "max_messages",
        DEFAULT_MAX_MESSAGES,
        range_i64(
            *POLL_MAX_MESSAGES_RANGE.start() as u64,
            *POLL_MAX_MESSAGES_RANGE.end() as u64,
        ),
    ) {
        Ok(n) => usize::try_from(n).unwrap_or(1),
        Err(r) => return r,
    };
    if let Err(r) = authenticate(manager, parts, channel) {
        return r;
    }
    let request = ConnectRequest {
        protocol: Protocol::LongPoll,
        connector_id: connector_id(parts),
        remote_ip,
        max_messages: Some(max_messages),
    };
    let mut conn = match manager.connect(channel, request) {
        Ok(c) => c,
        Err(e @ ConnectError::MaxConnections) => {
            return response::detail(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
        }
        Err(e @ ConnectError::ChannelNotFound) => {
            return response::detail(StatusCode::NOT_FOUND, &e.to_string());
        }
    };
    let mut messages = Vec::new();
    if let Ok(Some(Outgoing::Webhook(first))) = tokio::time::timeout(timeout, conn.next()).await {
        messages.push(first.as_ref().clone());
        // A backlog reaches the connection in the buffer's batches: wait briefly for the rest.
        let gather = tokio::time::Instant::now() + GATHER;
        while messages.len() < max_messages {
            match tokio::time::timeout_at(gather, conn.next()).await {
                Ok(Some(Outgoing::Webhook(m))) => messages.push(m.as_ref().clone()),
                _ => break,
            }
        }
    }
    if messages.is_empty() {
        drop(conn);
        let mut r = Response::new(Body::default());
        *r.status_mut() = StatusCode::NO_CONTENT;
        return r;
    }
    let answer = PollResponse {
        messages,
        connection_id: conn.id().to_owned(),
        channel: conn.channel().to_owned(),
        timestamp: now(),
    };
    let r = response::json(StatusCode::OK, &answer);
    conn.finish_poll();
    r
}

/// After the first message, how long a poll keeps collecting before it answers.
const GATHER: Duration = Duration::from_millis(50);

fn range_i64(start: u64, end: u64) -> std::ops::RangeInclusive<i64> {
    let to = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    to(start)..=to(end)
}
