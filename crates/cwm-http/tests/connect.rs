//! Webhook Connect over real sockets: a receiver served by `cwm_http::serve` on a loopback
//! port with a memory-buffered channel manager, driven by WebSocket, SSE, long-poll and admin
//! clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cwm_config::StaticProvider;
use cwm_config::{Snapshot, Store};
use cwm_http::{HttpSettings, Receiver};
use cwm_relay::cloud::{ChannelManager, ChannelSpec, ManagerSettings, MemoryBuffer};
use cwm_relay::protocol::{ClientFrame, PollResponse, ServerFrame, WebhookMessage};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const TOKEN: &str = "channel_secret_token_123";
const ADMIN: &str = "admin-secret";
const WAIT: Duration = Duration::from_secs(10);

/// A receiver served on a loopback port; stopped on drop.
struct Server {
    addr: SocketAddr,
    manager: Option<ChannelManager>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn spec(name: &str, max_connections: usize) -> ChannelSpec {
    ChannelSpec {
        name: name.into(),
        webhook_id: "cloud-webhook".into(),
        token: TOKEN.to_owned(),
        ttl: Duration::from_secs(3600),
        max_queue_size: 1000,
        max_connections,
        max_in_flight: 100,
        ack_timeout: Duration::from_secs(30),
    }
}

async fn start(manager: Option<ChannelManager>) -> Server {
    let store = Store::new(Snapshot::empty("default", true));
    store.mark_loaded();
    let mut receiver = Receiver::new(
        Arc::new(StaticProvider(Arc::new(store))),
        HttpSettings::default(),
    );
    if let Some(m) = &manager {
        receiver = receiver.with_connect(m.clone());
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(cwm_http::serve(listener, receiver, async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        manager,
        stop: Some(stop),
        client: Client::builder(TokioExecutor::new()).build_http(),
    }
}

/// A server whose manager has the channels `ch` (max 10 connections) and `one` (max 1).
async fn start_connect(heartbeat: Duration) -> Server {
    let manager = ChannelManager::new(
        Arc::new(MemoryBuffer::new()),
        ManagerSettings {
            heartbeat_interval: heartbeat,
            admin_token: ADMIN.to_owned(),
            ..ManagerSettings::default()
        },
    );
    manager.register(spec("ch", 10));
    manager.register(spec("one", 1));
    start(Some(manager)).await
}

impl Server {
    fn manager(&self) -> &ChannelManager {
        self.manager.as_ref().unwrap()
    }

    async fn publish(&self, channel: &str, n: u64) {
        self.manager()
            .publish(
                channel,
                "cloud-webhook",
                BTreeMap::from([("content-type".to_owned(), "application/json".to_owned())]),
                json!({ "n": n }),
                false,
            )
            .await
            .unwrap();
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> http::Response<Incoming> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        tokio::time::timeout(WAIT, self.client.request(req))
            .await
            .unwrap()
            .unwrap()
    }

    /// Status and JSON body (`null` when empty).
    async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, Value) {
        let resp = self.send(method, path, headers, body).await;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&bytes)))
        };
        (status, value)
    }

    async fn admin(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let auth = format!("Bearer {ADMIN}");
        self.call(
            method,
            &format!("/admin/webhook-connect{path}"),
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await
    }

    async fn ws(
        &self,
        channel: &str,
        token: &str,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let mut req = format!("ws://{}/connect/stream/{channel}", self.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        req.headers_mut()
            .insert("x-connector-id", "test-connector".parse().unwrap());
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .unwrap()?;
        Ok(ws)
    }

    async fn sse(&self, channel: &str, token: &str) -> Sse {
        let auth = format!("Bearer {token}");
        let resp = self
            .send(
                "GET",
                &format!("/connect/stream/{channel}/sse"),
                &[("authorization", auth.as_str())],
                "",
            )
            .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        assert_eq!(resp.headers()["cache-control"], "no-cache");
        assert_eq!(resp.headers()["x-accel-buffering"], "no");
        Sse {
            body: resp.into_body(),
            buf: String::new(),
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next server frame that is not a heartbeat (or a close, as `Err(code)`).
async fn frame(ws: &mut Ws, skip_heartbeats: bool) -> Result<ServerFrame, u16> {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time");
        match msg {
            Some(Ok(Message::Text(t))) => {
                let f: ServerFrame = serde_json::from_str(&t).unwrap();
                if skip_heartbeats && matches!(f, ServerFrame::Heartbeat { .. }) {
                    continue;
                }
                return Ok(f);
            }
            Some(Ok(Message::Close(c))) => return Err(c.map_or(1005, |c| u16::from(c.code))),
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

async fn webhook(ws: &mut Ws) -> WebhookMessage {
    match frame(ws, true).await {
        Ok(ServerFrame::Webhook(m)) => m,
        other => panic!("expected a webhook, got {other:?}"),
    }
}

async fn reply(ws: &mut Ws, f: &ClientFrame) {
    ws.send(Message::text(serde_json::to_string(f).unwrap()))
        .await
        .unwrap();
}

struct Sse {
    body: Incoming,
    buf: String,
}

impl Sse {
    /// The next event: its name and parsed data. `None` when the stream ended.
    async fn event(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..end + 2).collect();
                let mut name = String::new();
                let mut data = String::new();
                for line in raw.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                return Some((name, serde_json::from_str(&data).unwrap()));
            }
            let frame = tokio::time::timeout(WAIT, self.body.frame())
                .await
                .expect("an event in time")?
                .unwrap();
            if let Ok(data) = frame.into_data() {
                self.buf.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }

    async fn event_named(&mut self, name: &str) -> Value {
        loop {
            let (n, data) = self.event().await.expect("stream open");
            if n == name {
                return data;
            }
            assert_eq!(n, "heartbeat", "unexpected event {n}: {data}");
        }
    }
}

async fn dead_letter_ids(server: &Server, channel: &str) -> Vec<String> {
    let (status, body) = server
        .admin("GET", &format!("/channels/{channel}/dead-letters"), "")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["channel"], channel);
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn websocket_delivers_and_applies_acks_and_nacks() {
    let server = start_connect(Duration::from_secs(30)).await;
    let mut ws = server.ws("ch", TOKEN).await.unwrap();
    let Ok(ServerFrame::Connected {
        connection_id,
        channel,
        ..
    }) = frame(&mut ws, false).await
    else {
        panic!("first frame is not `connected`")
    };
    assert!(connection_id.starts_with("wsc_"), "{connection_id}");
    assert_eq!(channel, "ch");

    server.publish("ch", 1).await;
    server.publish("ch", 2).await;
    let m1 = webhook(&mut ws).await;
    let m2 = webhook(&mut ws).await;
    assert_eq!(m1.payload, json!({"n": 1}));
    assert_eq!(m1.webhook_id.as_deref(), Some("cloud-webhook"));
    assert_eq!(m2.payload, json!({"n": 2}));

    // Ack removes; nack with retry comes back; nack without retry is dead-lettered.
    reply(
        &mut ws,
        &ClientFrame::Ack {
            message_id: m1.message_id.clone(),
        },
    )
    .await;
    reply(
        &mut ws,
        &ClientFrame::Nack {
            message_id: m2.message_id.clone(),
            retry: true,
        },
    )
    .await;
    let again = webhook(&mut ws).await;
    assert_eq!(again.message_id, m2.message_id);
    reply(
        &mut ws,
        &ClientFrame::Nack {
            message_id: m2.message_id.clone(),
            retry: false,
        },
    )
    .await;
    let mut dead = Vec::new();
    for _ in 0..100 {
        dead = dead_letter_ids(&server, "ch").await;
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead, vec![m2.message_id.clone()]);

    // An unacknowledged message comes back on the next connection when the socket closes;
    // the acknowledged one does not.
    server.publish("ch", 3).await;
    let m3 = webhook(&mut ws).await;
    reply(&mut ws, &ClientFrame::Heartbeat { timestamp: None }).await;
    ws.close(None).await.unwrap();
    drop(ws);
    let mut ws = server.ws("ch", TOKEN).await.unwrap();
    assert!(matches!(
        frame(&mut ws, false).await,
        Ok(ServerFrame::Connected { .. })
    ));
    let back = webhook(&mut ws).await;
    assert_eq!(back.message_id, m3.message_id);

    // The connection shows in the admin API, with its connector id.
    let (status, detail) = server.admin("GET", "/channels/ch", "").await;
    assert_eq!(status, 200, "{detail}");
    let clients = detail["connected_clients"].as_array().unwrap();
    assert_eq!(clients.len(), 1, "{detail}");
    assert_eq!(clients[0]["connector_id"], "test-connector");
    assert_eq!(clients[0]["protocol"], "websocket");
}

#[tokio::test]
async fn websocket_heartbeats_and_closes() {
    let server = start_connect(Duration::from_millis(200)).await;
    let mut ws = server.ws("ch", TOKEN).await.unwrap();
    assert!(matches!(
        frame(&mut ws, false).await,
        Ok(ServerFrame::Connected { .. })
    ));
    match frame(&mut ws, false).await {
        Ok(ServerFrame::Heartbeat {
            timestamp,
            server_time,
        }) => {
            assert!(!timestamp.is_empty());
            assert!(server_time.is_some());
        }
        other => panic!("expected a heartbeat, got {other:?}"),
    }
    // A frame that is not JSON closes the socket with 1003.
    ws.send(Message::text("not json")).await.unwrap();
    assert_eq!(frame(&mut ws, true).await.unwrap_err(), 1003);

    // Past max_connections: close 4003.
    let mut first = server.ws("one", TOKEN).await.unwrap();
    assert!(matches!(
        frame(&mut first, false).await,
        Ok(ServerFrame::Connected { .. })
    ));
    let mut second = server.ws("one", TOKEN).await.unwrap();
    assert_eq!(frame(&mut second, false).await.unwrap_err(), 4003);

    // An operator's disconnect closes the socket.
    let (_, detail) = server.admin("GET", "/channels/one", "").await;
    let id = detail["connected_clients"][0]["connection_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = server
        .admin("DELETE", &format!("/channels/ch/connections/{id}"), "")
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["detail"], "Connection not on this channel");
    let (status, body) = server
        .admin("DELETE", &format!("/channels/one/connections/{id}"), "")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "disconnected", "connection_id": id}));
    assert!(frame(&mut first, true).await.is_err());
    let (status, _) = server
        .admin("DELETE", &format!("/channels/one/connections/{id}"), "")
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn wrong_tokens_are_refused_on_every_transport() {
    let server = start_connect(Duration::from_secs(30)).await;
    for (channel, token) in [("ch", "wrong"), ("nope", TOKEN), ("ch", "")] {
        match server.ws(channel, token).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 401);
                let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
                assert_eq!(body, json!({"detail": "Invalid channel token"}));
            }
            other => panic!("{channel}/{token}: {:?}", other.map(|_| ())),
        }
    }
    // `?token=` when there is no Authorization header.
    let (ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/connect/stream/ch?token={TOKEN}",
        server.addr
    ))
    .await
    .unwrap();
    drop(ws);

    for path in [
        "/connect/stream/ch/sse",
        "/connect/stream/ch/poll?timeout=1",
    ] {
        let (status, body) = server.call("GET", path, &[], "").await;
        assert_eq!(status, 401, "{path}");
        assert_eq!(body["detail"], "Missing authorization token");
        let (status, body) = server
            .call("GET", path, &[("authorization", "Bearer wrong")], "")
            .await;
        assert_eq!(status, 401, "{path}");
        assert_eq!(body["detail"], "Invalid channel token");
        // The header overrides the query token.
        let with_query = format!(
            "{path}{}token={TOKEN}",
            if path.contains('?') { "&" } else { "?" }
        );
        let (status, _) = server
            .call("GET", &with_query, &[("authorization", "Bearer wrong")], "")
            .await;
        assert_eq!(status, 401, "{with_query}");
    }
    let (status, body) = server.call("GET", "/connect/status/ch", &[], "").await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = server
        .call(
            "GET",
            "/connect/status/ch",
            &[("authorization", "Bearer wrong")],
            "",
        )
        .await;
    assert_eq!((status, body), (401, json!({"detail": "Invalid token"})));
    let auth = format!("Bearer {TOKEN}");
    let (status, body) = server
        .call(
            "GET",
            "/connect/status/ch",
            &[("authorization", auth.as_str())],
            "",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["channel"], "ch");
    assert_eq!(body["connected"], true);
    assert_eq!(body["stats"]["channel"], "ch");
    assert!(body["server_time"].is_string());
}

#[tokio::test]
async fn sse_delivers_and_acks_through_post() {
    let server = start_connect(Duration::from_millis(300)).await;
    let mut sse = server.sse("ch", TOKEN).await;
    let connected = sse.event_named("connected").await;
    let connection_id = connected["connection_id"].as_str().unwrap().to_owned();
    assert!(connection_id.starts_with("sse_"), "{connected}");
    assert_eq!(connected["channel"], "ch");

    // Idle: a heartbeat.
    let (name, data) = sse.event().await.unwrap();
    assert_eq!(name, "heartbeat");
    assert!(data["timestamp"].is_string());

    server.publish("ch", 1).await;
    server.publish("ch", 2).await;
    let m1 = sse.event_named("webhook").await;
    let m2 = sse.event_named("webhook").await;
    assert_eq!(m1["type"], "webhook");
    assert_eq!(m1["payload"], json!({"n": 1}));
    let id1 = m1["message_id"].as_str().unwrap();
    let id2 = m2["message_id"].as_str().unwrap();

    let auth = format!("Bearer {TOKEN}");
    let headers = [
        ("authorization", auth.as_str()),
        ("x-connection-id", connection_id.as_str()),
    ];
    let ack = |id: &str, rest: &str| format!("/connect/ack?message_id={id}{rest}");
    let (status, body) = server.call("POST", &ack(id1, ""), &headers, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "ok", "message_id": id1}));
    let (status, body) = server.call("POST", &ack(id1, ""), &headers, "").await;
    assert_eq!(
        (status, body),
        (404, json!({"detail": "Message not in flight"}))
    );
    // Nack with retry: delivered again on the stream.
    let (status, _) = server
        .call("POST", &ack(id2, "&status=nack&retry=true"), &headers, "")
        .await;
    assert_eq!(status, 200);
    let again = sse.event_named("webhook").await;
    assert_eq!(again["message_id"], id2);

    // The checks of POST /connect/ack.
    let (status, _) = server.call("POST", &ack(id2, ""), &headers[..1], "").await;
    assert_eq!(status, 422, "no X-Connection-ID");
    let (status, _) = server.call("POST", &ack(id2, ""), &headers[1..], "").await;
    assert_eq!(status, 422, "no Authorization");
    let (status, _) = server.call("POST", "/connect/ack", &headers, "").await;
    assert_eq!(status, 422, "no message_id");
    let (status, _) = server
        .call("POST", &ack(id2, "&retry=maybe"), &headers, "")
        .await;
    assert_eq!(status, 422, "retry not a boolean");
    let (status, body) = server
        .call(
            "POST",
            &ack(id2, ""),
            &[
                ("authorization", "Bearer wrong"),
                ("x-connection-id", connection_id.as_str()),
            ],
            "",
        )
        .await;
    assert_eq!((status, body), (401, json!({"detail": "Invalid token"})));
    let (status, body) = server
        .call(
            "POST",
            &ack(id2, ""),
            &[
                ("authorization", auth.as_str()),
                ("x-connection-id", "sse_0_0"),
            ],
            "",
        )
        .await;
    assert_eq!(
        (status, body),
        (404, json!({"detail": "Connection not found"}))
    );
    let (status, _) = server.call("GET", &ack(id2, ""), &headers, "").await;
    assert_eq!(status, 405);

    // Past max_connections: one error event, then the stream ends.
    let mut first = server.sse("one", TOKEN).await;
    first.event_named("connected").await;
    let mut second = server.sse("one", TOKEN).await;
    let (name, data) = second.event().await.unwrap();
    assert_eq!(name, "error");
    assert_eq!(data, json!({"error": "max_connections_reached"}));
    assert!(second.event().await.is_none());

    // A client that goes away frees its place.
    drop(first);
    let mut ok = false;
    for _ in 0..100 {
        let mut again = server.sse("one", TOKEN).await;
        if again.event().await.unwrap().0 == "connected" {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "the dropped stream's connection was not removed");
}

#[tokio::test]
async fn long_poll_answers_batches_that_stay_ackable() {
    let server = start_connect(Duration::from_secs(30)).await;
    let auth = format!("Bearer {TOKEN}");
    let headers = [("authorization", auth.as_str())];
    let poll = |q: &str| format!("/connect/stream/ch/poll?{q}");

    for q in [
        "timeout=0",
        "timeout=61",
        "timeout=abc",
        "max_messages=0",
        "max_messages=101",
        "max_messages=1.5",
    ] {
        let (status, body) = server.call("GET", &poll(q), &headers, "").await;
        assert_eq!(status, 422, "{q}: {body}");
        assert!(body["detail"].is_array(), "{body}");
    }

    // Nothing queued: 204 after the timeout.
    let (status, body) = server.call("GET", &poll("timeout=1"), &headers, "").await;
    assert_eq!((status, body), (204, Value::Null));

    for n in 1..=3 {
        server.publish("ch", n).await;
    }
    let (status, body) = server
        .call("GET", &poll("timeout=5&max_messages=2"), &headers, "")
        .await;
    assert_eq!(status, 200, "{body}");
    let answer: PollResponse = serde_json::from_value(body).unwrap();
    assert_eq!(answer.channel, "ch");
    assert!(answer.connection_id.starts_with("poll_"));
    assert_eq!(answer.messages.len(), 2);
    assert_eq!(answer.messages[0].payload, json!({"n": 1}));
    assert_eq!(answer.messages[1].payload, json!({"n": 2}));

    // The poll's messages are still ackable after the answer.
    let ack_headers = [
        ("authorization", auth.as_str()),
        ("x-connection-id", answer.connection_id.as_str()),
    ];
    for m in &answer.messages {
        let (status, body) = server
            .call(
                "POST",
                &format!("/connect/ack?message_id={}&status=ack", m.message_id),
                &ack_headers,
                "",
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    // The third message next, and acked messages do not come back.
    let (status, body) = server
        .call("GET", &poll("timeout=5&max_messages=10"), &headers, "")
        .await;
    assert_eq!(status, 200, "{body}");
    let answer: PollResponse = serde_json::from_value(body).unwrap();
    assert_eq!(answer.messages.len(), 1);
    assert_eq!(answer.messages[0].payload, json!({"n": 3}));
    let (status, _) = server
        .call(
            "POST",
            &format!(
                "/connect/ack?message_id={}&status=nack&retry=false",
                answer.messages[0].message_id
            ),
            &[
                ("authorization", auth.as_str()),
                ("x-connection-id", answer.connection_id.as_str()),
            ],
            "",
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        dead_letter_ids(&server, "ch").await,
        vec![answer.messages[0].message_id.clone()]
    );
    let (status, _) = server.call("GET", &poll("timeout=1"), &headers, "").await;
    assert_eq!(status, 204);

    // Past max_connections: 503 while another poll waits.
    let waiting = {
        let addr = server.addr;
        let auth = auth.clone();
        tokio::spawn(async move {
            let client: Client<HttpConnector, Full<Bytes>> =
                Client::builder(TokioExecutor::new()).build_http();
            let req =
                http::Request::get(format!("http://{addr}/connect/stream/one/poll?timeout=3"))
                    .header("authorization", auth)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
            client.request(req).await.unwrap().status().as_u16()
        })
    };
    // Once the waiting poll holds the channel's one place, another poll is refused.
    let mut registered = false;
    for _ in 0..100 {
        let (_, detail) = server.admin("GET", "/channels/one", "").await;
        if detail["connected_clients"]
            .as_array()
            .is_some_and(|c| c.len() == 1)
        {
            registered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(registered);
    let (status, body) = server
        .call("GET", "/connect/stream/one/poll?timeout=1", &headers, "")
        .await;
    assert_eq!(
        (status, body),
        (503, json!({"detail": "Max connections reached"}))
    );
    assert_eq!(waiting.await.unwrap(), 204);
}

#[tokio::test]
async fn admin_api_checks_the_admin_token() {
    let server = start_connect(Duration::from_secs(30)).await;
    let (status, body) = server
        .call("GET", "/admin/webhook-connect/health", &[], "")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["channels_count"], 2);

    let (status, body) = server
        .call("GET", "/admin/webhook-connect/channels", &[], "")
        .await;
    assert_eq!(
        (status, body),
        (401, json!({"detail": "Missing authorization header"}))
    );
    let (status, body) = server
        .call(
            "GET",
            "/admin/webhook-connect/channels",
            &[("authorization", "Bearer nope")],
            "",
        )
        .await;
    assert_eq!(
        (status, body),
        (401, json!({"detail": "Invalid admin token"}))
    );

    let (status, body) = server.admin("GET", "/channels", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.as_array().unwrap().len(), 2);
    let (status, body) = server.admin("GET", "/overview", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total_channels"], 2);
    server.publish("ch", 1).await;
    let (status, body) = server.admin("GET", "/channels/ch/webhook-stats", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"channel": "ch", "webhooks": {"cloud-webhook": {"pending": 1}}})
    );
    let (status, body) = server.admin("GET", "/channels/ch/stats", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["channel"], "ch");
    for path in [
        "/channels/nope",
        "/channels/nope/stats",
        "/channels/nope/webhook-stats",
        "/channels/nope/dead-letters",
    ] {
        let (status, body) = server.admin("GET", path, "").await;
        assert_eq!(
            (status, body),
            (404, json!({"detail": "Channel not found"})),
            "{path}"
        );
    }
    let (status, _) = server
        .admin("GET", "/channels/ch/dead-letters?limit=x", "")
        .await;
    assert_eq!(status, 422);
    let (status, _) = server.admin("GET", "/channels/ch/rotate-token", "").await;
    assert_eq!(status, 405);

    // Rotation: a body is required; the old token keeps working for the grace period.
    let (status, _) = server.admin("POST", "/channels/ch/rotate-token", "").await;
    assert_eq!(status, 422);
    let (status, _) = server
        .admin(
            "POST",
            "/channels/ch/rotate-token",
            r#"{"grace_period_seconds": "soon"}"#,
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = server
        .admin("POST", "/channels/nope/rotate-token", "{}")
        .await;
    assert_eq!(status, 404);
    let (status, rotation) = server
        .admin(
            "POST",
            "/channels/ch/rotate-token",
            r#"{"grace_period_seconds": 600}"#,
        )
        .await;
    assert_eq!(status, 200, "{rotation}");
    let new_token = rotation["new_token"].as_str().unwrap().to_owned();
    assert!(new_token.starts_with("ch_tok_"), "{rotation}");
    assert_eq!(
        rotation["message"],
        "Old token valid for 600 seconds grace period"
    );
    for token in [TOKEN, new_token.as_str()] {
        let auth = format!("Bearer {token}");
        let (status, _) = server
            .call(
                "GET",
                "/connect/stream/ch/poll?timeout=1",
                &[("authorization", auth.as_str())],
                "",
            )
            .await;
        assert!(matches!(status, 200 | 204), "{token}: {status}");
    }
    // No grace: only the new token.
    let (status, rotation) = server
        .admin(
            "POST",
            "/channels/ch/rotate-token",
            r#"{"grace_period_seconds": 0}"#,
        )
        .await;
    assert_eq!(status, 200);
    let newest = rotation["new_token"].as_str().unwrap();
    assert!(server.ws("ch", &new_token).await.is_err());
    assert!(server.ws("ch", newest).await.is_ok());

    // An empty admin token disables the admin API (health excepted).
    let manager = ChannelManager::new(Arc::new(MemoryBuffer::new()), ManagerSettings::default());
    let disabled = start(Some(manager)).await;
    let (status, body) = disabled
        .call(
            "GET",
            "/admin/webhook-connect/channels",
            &[("authorization", "Bearer x")],
            "",
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(
        body["detail"],
        "Admin API disabled. Set WEBHOOK_CONNECT_ADMIN_TOKEN environment variable."
    );
    let (status, _) = disabled
        .call("GET", "/admin/webhook-connect/health", &[], "")
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn routes_answer_503_without_webhook_connect() {
    let server = start(None).await;
    let auth = format!("Bearer {TOKEN}");
    let headers = [("authorization", auth.as_str()), ("x-connection-id", "c")];
    for (method, path) in [
        ("GET", "/connect/stream/ch"),
        ("GET", "/connect/stream/ch/sse"),
        ("GET", "/connect/stream/ch/poll"),
        ("POST", "/connect/ack?message_id=m"),
        ("GET", "/connect/status/ch"),
        ("GET", "/admin/webhook-connect/health"),
    ] {
        let (status, body) = server.call(method, path, &headers, "").await;
        assert_eq!(
            (status, body),
            (503, json!({"detail": "Webhook Connect not initialized"})),
            "{method} {path}"
        );
    }
    match server.ws("ch", TOKEN).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 503),
        other => panic!("{:?}", other.map(|_| ())),
    }
    let (status, _) = server
        .call("GET", "/admin/webhook-connect/channels", &headers, "")
        .await;
    assert_eq!(status, 403);
    let (status, _) = server.call("GET", "/connect/nothing", &headers, "").await;
    assert_eq!(status, 404);
}
