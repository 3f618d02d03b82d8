//! The three stream transports and the reconnect loop around them.
//!
//! | Protocol | Request | Acks |
//! |---|---|---|
//! | websocket | `GET {cloud_url as ws(s)}/connect/stream/{channel}` (upgrade) | `ack` / `nack` frames |
//! | sse | `GET {cloud_url}/connect/stream/{channel}/sse` | `POST /connect/ack` |
//! | long_poll | `GET {cloud_url}/connect/stream/{channel}/poll?timeout=30&max_messages=10` | `POST /connect/ack` |
//!
//! Every request carries `Authorization: Bearer <token>` and, when set, `X-Connector-ID`. Any
//! event counts as liveness: a WebSocket or SSE stream silent for `heartbeat_timeout` is closed
//! and reconnected; a WebSocket is also pinged every `heartbeat_timeout` and closed when the pong
//! does not come within half of it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cwm_relay::protocol::{
    self, CONNECTOR_ID_HEADER, ClientFrame, PollResponse, ServerFrame, WebhookMessage,
};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::config::{ConnectorConfig, Protocol};
use crate::process::{Acker, HttpAcker, Processor};
use crate::sse::SseParser;
use crate::tls::{HttpClient, TlsConfigs};

/// Long-poll request parameters and client timeout.
const POLL_QUERY: &str = "timeout=30&max_messages=10";
const POLL_CLIENT_TIMEOUT: Duration = Duration::from_secs(35);
/// Pause after a long-poll answer other than 200, 204, 401 and 404.
const POLL_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    /// The connection could not be made.
    #[error("connect failed: {0}")]
    Connect(String),
    /// The connection attempt took longer than `connection_timeout`.
    #[error("connect timed out")]
    ConnectTimeout,
    /// The receiver answered with an error status.
    #[error("receiver answered HTTP {0}")]
    Status(u16),
    /// The receiver closed the stream.
    #[error("stream closed by the receiver: {0}")]
    Closed(String),
    /// Nothing arrived for `heartbeat_timeout`, or a ping got no pong.
    #[error("stream stale: {0}")]
    Stale(&'static str),
    /// Reading or writing failed.
    #[error("stream error: {0}")]
    Io(String),
}

/// What every session needs.
pub(crate) struct Ctx {
    pub(crate) config: Arc<ConnectorConfig>,
    pub(crate) tls: TlsConfigs,
    pub(crate) cloud: HttpClient,
    pub(crate) processor: Processor,
    pub(crate) stop: CancellationToken,
}

impl Ctx {
    fn token(&self) -> &str {
        self.config.token.expose()
    }

    fn heartbeat_timeout(&self) -> Duration {
        secs(self.config.heartbeat_timeout, Duration::from_secs(60))
    }

    fn get(&self, uri: &str, accept_sse: bool) -> Result<http::Request<Full<Bytes>>, StreamError> {
        let mut builder = http::Request::get(uri).header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", self.token()),
        );
        if accept_sse {
            builder = builder
                .header(http::header::ACCEPT, "text/event-stream")
                .header(http::header::CACHE_CONTROL, "no-cache");
        }
        if let Some(id) = &self.config.connector_id {
            builder = builder.header(CONNECTOR_ID_HEADER, id.as_str());
        }
        builder
            .body(Full::new(Bytes::new()))
            .map_err(|e| StreamError::Connect(e.to_string()))
    }

    fn acker(&self, connection_id: &str) -> Acker {
        Acker::Http(Arc::new(HttpAcker {
            client: self.cloud.clone(),
            cloud_url: self.config.cloud_url.clone(),
            token: self.token().to_owned(),
            connection_id: connection_id.to_owned(),
        }))
    }
}

fn secs(s: f64, fallback: Duration) -> Duration {
    protocol::seconds(s).unwrap_or(fallback)
}

/// The reconnect delays: `d + uniform(0, 0.3 d)`, `d` starting at `base` and multiplied up to
/// `max` after every wait, back to `base` after a successful connect (the Python connector's).
#[derive(Debug, Clone)]
struct Backoff {
    base: Duration,
    max: Duration,
    multiplier: f64,
    delay: Duration,
}

impl Backoff {
    fn new(base: Duration, max: Duration, multiplier: f64) -> Self {
        Self {
            base,
            max: max.max(base),
            multiplier: multiplier.max(1.0),
            delay: base,
        }
    }

    /// The next wait with `jitter` (0.0 ..= 0.3) of the current delay added; the delay grows.
    fn next(&mut self, jitter: f64) -> Duration {
        let wait = self.delay + self.delay.mul_f64(jitter.clamp(0.0, 0.3));
        self.delay = self.delay.mul_f64(self.multiplier).min(self.max);
        wait
    }

    fn reset(&mut self) {
        self.delay = self.base;
    }
}

/// Connect, stream, reconnect with [`Backoff`] until `ctx.stop` is cancelled.
pub(crate) async fn run(ctx: &Ctx) {
    let mut backoff = Backoff::new(
        secs(ctx.config.reconnect_delay, Duration::from_secs(1)),
        secs(ctx.config.max_reconnect_delay, Duration::from_secs(60)),
        ctx.config.reconnect_backoff_multiplier,
    );
    while !ctx.stop.is_cancelled() {
        let mut connected = false;
        let result = match ctx.config.protocol {
            Protocol::Websocket => websocket(ctx, &mut connected).await,
            Protocol::Sse => sse(ctx, &mut connected).await,
            Protocol::LongPoll => long_poll(ctx, &mut connected).await,
        };
        if connected {
            backoff.reset();
        }
        if ctx.stop.is_cancelled() {
            break;
        }
        match result {
            Ok(()) => tracing::info!("stream ended"),
            Err(e) => tracing::warn!(error = %e, "stream failed"),
        }
        let wait = backoff.next(rand::random_range(0.0..=0.3));
        tracing::info!(wait = ?wait, "reconnecting");
        tokio::select! {
            () = ctx.stop.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// `cloud_url` with `http` → `ws`, `https` → `wss`, plus the stream path.
pub(crate) fn websocket_url(cloud_url: &str, channel: &str) -> String {
    let base = if let Some(rest) = cloud_url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = cloud_url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        cloud_url.to_owned()
    };
    format!("{base}{}", protocol::stream_path(channel))
}

/// Liveness of one stream: any event counts.
struct Liveness {
    last: Instant,
    timeout: Duration,
}

impl Liveness {
    fn new(timeout: Duration) -> Self {
        Self {
            last: Instant::now(),
            timeout,
        }
    }

    fn touch(&mut self) {
        self.last = Instant::now();
    }

    fn stale(&self) -> bool {
        self.last.elapsed() > self.timeout
    }

    /// Ticks every half timeout, the first after half a timeout.
    fn checker(&self) -> tokio::time::Interval {
        let period = self.timeout / 2;
        tokio::time::interval_at(Instant::now() + period, period)
    }
}

async fn websocket(ctx: &Ctx, connected: &mut bool) -> Result<(), StreamError> {
    let config = &ctx.config;
    let url = websocket_url(&config.cloud_url, &config.channel);
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| StreamError::Connect(e.to_string()))?;
    let headers = request.headers_mut();
    let bearer = http::HeaderValue::from_str(&format!("Bearer {}", ctx.token()))
        .map_err(|_| StreamError::Connect("the token is not a valid header value".into()))?;
    headers.insert(http::header::AUTHORIZATION, bearer);
    if let Some(id) = &config.connector_id {
        let value = http::HeaderValue::from_str(id)
            .map_err(|_| StreamError::Connect("connector_id is not a valid header value".into()))?;
        headers.insert(CONNECTOR_ID_HEADER, value);
    }
    let connector = if url.starts_with("wss://") {
        tokio_tungstenite::Connector::Rustls(ctx.tls.cloud.clone())
    } else {
        tokio_tungstenite::Connector::Plain
    };
    tracing::info!(url = %url, "connecting (websocket)");
    let connect =
        tokio_tungstenite::connect_async_tls_with_config(request, None, true, Some(connector));
    let timeout = secs(config.connection_timeout, Duration::from_secs(30));
    let (ws, _) = tokio::select! {
        () = ctx.stop.cancelled() => return Ok(()),
        r = tokio::time::timeout(timeout, connect) => match r {
            Err(_) => return Err(StreamError::ConnectTimeout),
            Ok(Err(tungstenite::Error::Http(response))) => {
                return Err(StreamError::Status(response.status().as_u16()));
            }
            Ok(Err(e)) => return Err(StreamError::Connect(e.to_string())),
            Ok(Ok(ws)) => ws,
        },
    };
    *connected = true;
    tracing::info!(channel = %config.channel, "connected (websocket)");
    let (mut sink, mut stream) = ws.split();
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<ClientFrame>();
    let acker = Acker::Ws(ack_tx.clone());
    let hb = ctx.heartbeat_timeout();
    let mut live = Liveness::new(hb);
    let mut check = live.checker();
    let mut ping = tokio::time::interval_at(Instant::now() + hb, hb);
    let mut ping_sent: Option<Instant> = None;
    let send = |frame: &ClientFrame| -> Message {
        Message::text(serde_json::to_string(frame).unwrap_or_default())
    };
    loop {
        tokio::select! {
            () = ctx.stop.cancelled() => {
                let _ = sink.send(Message::Close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "connector stopping".into(),
                }))).await;
                return Ok(());
            }
            Some(frame) = ack_rx.recv() => {
                sink.send(send(&frame)).await.map_err(|e| StreamError::Io(e.to_string()))?;
            }
            message = stream.next() => {
                let message = match message {
                    None => return Err(StreamError::Closed("connection ended".into())),
                    Some(Err(e)) => return Err(StreamError::Io(e.to_string())),
                    Some(Ok(m)) => m,
                };
                live.touch();
                match message {
                    Message::Text(text) => match serde_json::from_str::<ServerFrame>(text.as_str()) {
                        Ok(ServerFrame::Heartbeat { .. }) => {
                            let reply = ClientFrame::Heartbeat { timestamp: Some(protocol::now()) };
                            sink.send(send(&reply)).await.map_err(|e| StreamError::Io(e.to_string()))?;
                        }
                        Ok(frame) => on_frame(ctx, frame, &acker),
                        Err(e) => tracing::warn!(error = %e, "unreadable frame ignored"),
                    },
                    Message::Pong(_) => ping_sent = None,
                    Message::Close(frame) => {
                        let why = frame.map_or_else(
                            || "no close code".to_owned(),
                            |f| format!("code {} {}", u16::from(f.code), f.reason),
                        );
                        return Err(StreamError::Closed(why));
                    }
                    Message::Ping(_) | Message::Binary(_) | Message::Frame(_) => {}
                }
            }
            _ = ping.tick() => {
                sink.send(Message::Ping(Bytes::new())).await.map_err(|e| StreamError::Io(e.to_string()))?;
                ping_sent.get_or_insert_with(Instant::now);
            }
            _ = check.tick() => {
                if live.stale() {
                    return Err(StreamError::Stale("nothing received within heartbeat_timeout"));
                }
                if ping_sent.is_some_and(|t| t.elapsed() > hb / 2) {
                    return Err(StreamError::Stale("no pong within half of heartbeat_timeout"));
                }
            }
        }
    }
}

/// A frame other than a WebSocket heartbeat.
fn on_frame(ctx: &Ctx, frame: ServerFrame, acker: &Acker) {
    match frame {
        ServerFrame::Connected {
            connection_id,
            channel,
            ..
        } => tracing::info!(%connection_id, %channel, "stream open"),
        ServerFrame::Heartbeat { .. } => tracing::trace!("heartbeat"),
        ServerFrame::Webhook(message) => deliver(ctx, message, acker),
        ServerFrame::Error { error } => tracing::warn!(%error, "receiver reported an error"),
        ServerFrame::Unknown => tracing::warn!("unknown frame type ignored"),
    }
}

fn deliver(ctx: &Ctx, message: WebhookMessage, acker: &Acker) {
    tracing::debug!(message_id = %message.message_id, webhook_id = ?message.webhook_id, sequence = message.sequence, "message received");
    ctx.processor.handle(message, acker.clone());
}

async fn sse(ctx: &Ctx, connected: &mut bool) -> Result<(), StreamError> {
    let config = &ctx.config;
    let uri = format!(
        "{}{}",
        config.cloud_url,
        protocol::sse_path(&config.channel)
    );
    let request = ctx.get(&uri, true)?;
    tracing::info!(url = %uri, "connecting (sse)");
    let timeout = secs(config.connection_timeout, Duration::from_secs(30));
    let response = tokio::select! {
        () = ctx.stop.cancelled() => return Ok(()),
        r = tokio::time::timeout(timeout, ctx.cloud.request(request)) => match r {
            Err(_) => return Err(StreamError::ConnectTimeout),
            Ok(Err(e)) => return Err(StreamError::Connect(e.to_string())),
            Ok(Ok(r)) => r,
        },
    };
    if response.status() != http::StatusCode::OK {
        return Err(StreamError::Status(response.status().as_u16()));
    }
    *connected = true;
    tracing::info!(channel = %config.channel, "connected (sse)");
    let mut body = response.into_body();
    let mut parser = SseParser::default();
    let mut acker = ctx.acker("");
    let mut live = Liveness::new(ctx.heartbeat_timeout());
    let mut check = live.checker();
    loop {
        tokio::select! {
            () = ctx.stop.cancelled() => return Ok(()),
            frame = body.frame() => {
                let data = match frame {
                    None => return Err(StreamError::Closed("event stream ended".into())),
                    Some(Err(e)) => return Err(StreamError::Io(e.to_string())),
                    Some(Ok(f)) => match f.into_data() {
                        Ok(d) => d,
                        Err(_) => continue,
                    },
                };
                live.touch();
                for event in parser.feed(&data) {
                    match ServerFrame::from_sse(&event.name, &event.data) {
                        Some(ServerFrame::Connected { connection_id, channel, .. }) => {
                            tracing::info!(%connection_id, %channel, "stream open");
                            acker = ctx.acker(&connection_id);
                        }
                        Some(frame) => on_frame(ctx, frame, &acker),
                        None => tracing::debug!(event = %event.name, "event ignored"),
                    }
                }
            }
            _ = check.tick() => {
                if live.stale() {
                    return Err(StreamError::Stale("nothing received within heartbeat_timeout"));
                }
            }
        }
    }
}

async fn long_poll(ctx: &Ctx, connected: &mut bool) -> Result<(), StreamError> {
    let config = &ctx.config;
    let uri = format!(
        "{}{}?{POLL_QUERY}",
        config.cloud_url,
        protocol::poll_path(&config.channel)
    );
    *connected = true;
    tracing::info!(url = %uri, "polling (long_poll)");
    loop {
        let request = ctx.get(&uri, false)?;
        let answer = async {
            let response = ctx.cloud.request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, body))
        };
        let result = tokio::select! {
            () = ctx.stop.cancelled() => return Ok(()),
            r = tokio::time::timeout(POLL_CLIENT_TIMEOUT, answer) => r,
        };
        let (status, body) = match result {
            Err(_) => {
                tracing::debug!("poll timed out; polling again");
                continue;
            }
            Ok(Err(e)) => return Err(StreamError::Io(e.to_string())),
            Ok(Ok(answer)) => answer,
        };
        match status.as_u16() {
            200 => match serde_json::from_slice::<PollResponse>(&body) {
                Ok(poll) => {
                    let acker = ctx.acker(&poll.connection_id);
                    for message in poll.messages {
                        deliver(ctx, message, &acker);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "unreadable poll answer ignored"),
            },
            204 => {}
            code @ (401 | 404) => return Err(StreamError::Status(code)),
            code => {
                tracing::warn!(status = code, "poll failed; polling again in 1 s");
                tokio::select! {
                    () = ctx.stop.cancelled() => return Ok(()),
                    () = tokio::time::sleep(POLL_ERROR_PAUSE) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000), 2.0);
        let waits: Vec<Duration> = (0..6).map(|_| b.next(0.0)).collect();
        assert_eq!(
            waits,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        // The jitter adds up to 30% of the current delay, never more.
        assert_eq!(b.next(0.3), ms(1300));
        assert_eq!(b.next(5.0), ms(1300));
        b.reset();
        assert_eq!(b.next(0.3), ms(130));
        assert_eq!(b.next(0.0), ms(200));
        // A multiplier below 1 does not shrink the delay; a cap below the base is the base.
        let mut flat = Backoff::new(ms(500), ms(100), 0.5);
        assert_eq!((flat.next(0.0), flat.next(0.0)), (ms(500), ms(500)));
    }

    #[test]
    fn websocket_urls() {
        assert_eq!(
            websocket_url("https://relay.example.com", "a b"),
            "wss://relay.example.com/connect/stream/a%20b"
        );
        assert_eq!(
            websocket_url("http://127.0.0.1:8000", "ch"),
            "ws://127.0.0.1:8000/connect/stream/ch"
        );
    }
}
