//! The whole connector ([`crate::run`]) against small fake receivers speaking the wire protocol
//! on loopback ports, one per transport, delivering to a local HTTP target.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cwm_relay::protocol::{ClientFrame, PollResponse, ServerFrame, WebhookMessage};
use futures_util::{SinkExt, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::config::{ConnectorConfig, Protocol, Secret, Target};
use crate::process::{Acker, Delivery, Processor};

type Body = BoxBody<Bytes, Infallible>;
type Handler =
    Arc<dyn Fn(http::request::Parts, Bytes) -> http::Response<Body> + Send + Sync + 'static>;

/// An HTTP server on a free port answering with `handler`; aborted on drop.
struct Server {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(handler: Handler) -> Server {
    let port = cwm_testkit::free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let handler = handler.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        Ok::<_, Infallible>(handler(parts, body))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Server { port, task }
}

fn full(status: u16, body: impl Into<Bytes>) -> http::Response<Body> {
    http::Response::builder()
        .status(status)
        .body(Full::new(body.into()).boxed())
        .unwrap()
}

/// A target recording the bodies it received, answering 200.
async fn target() -> (Server, Arc<Mutex<Vec<Bytes>>>) {
    let bodies: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let b = bodies.clone();
    let server = serve(Arc::new(move |_, body| {
        b.lock().unwrap().push(body);
        full(200, "")
    }))
    .await;
    (server, bodies)
}

fn message(id: &str, webhook: Option<&str>) -> WebhookMessage {
    WebhookMessage {
        message_id: id.into(),
        sequence: 1,
        webhook_id: webhook.map(str::to_owned),
        timestamp: cwm_relay::protocol::now(),
        headers: BTreeMap::from([("content-type".into(), "application/json".into())]),
        payload: serde_json::json!({"id": id}),
        payload_encoding: None,
    }
}

fn config(port: u16, protocol: Protocol, target_port: u16) -> ConnectorConfig {
    let mut c = ConnectorConfig {
        cloud_url: format!("http://127.0.0.1:{port}/"),
        channel: "test-channel".into(),
        token: Secret::new("channel_secret_token_123"),
        protocol,
        reconnect_delay: 0.05,
        max_reconnect_delay: 0.2,
        heartbeat_timeout: 5.0,
        connector_id: Some("conn-1".into()),
        default_target: Some(Target::new(format!("http://127.0.0.1:{target_port}/in"))),
        ..ConnectorConfig::default()
    };
    c.validate().unwrap();
    c
}

/// Acks as `(query, connection id)` recorded by the fake `POST /connect/ack`.
type Acks = Arc<Mutex<Vec<(String, String)>>>;

fn record_ack(acks: &Acks, parts: &http::request::Parts) -> http::Response<Body> {
    assert_eq!(
        parts.headers["authorization"],
        "Bearer channel_secret_token_123"
    );
    let conn = parts
        .headers
        .get("x-connection-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    acks.lock()
        .unwrap()
        .push((parts.uri.query().unwrap_or_default().to_owned(), conn));
    full(200, r#"{"status":"ok"}"#)
}

async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..500 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}")
}

#[tokio::test]
async fn websocket_delivers_acks_and_nacks_then_stops_on_shutdown() {
    let (target_server, bodies) = target().await;
    let port = cwm_testkit::free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let (frames_tx, mut frames_rx) = mpsc::unbounded_channel::<ClientFrame>();
    let (headers_tx, headers_rx) = oneshot::channel::<http::HeaderMap>();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut headers_tx = Some(headers_tx);
        let callback = |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
            assert_eq!(req.uri().path(), "/connect/stream/test-channel");
            if let Some(tx) = headers_tx.take() {
                let _ = tx.send(req.headers().clone());
            }
            Ok(resp)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(stream, callback)
            .await
            .unwrap();
        let connected = ServerFrame::Connected {
            connection_id: "wsc_1_1".into(),
            channel: "test-channel".into(),
            timestamp: cwm_relay::protocol::now(),
        };
        let heartbeat = ServerFrame::Heartbeat {
            timestamp: cwm_relay::protocol::now(),
            server_time: None,
        };
        for frame in [
            connected,
            ServerFrame::Webhook(message("msg_1", Some("w"))),
            ServerFrame::Webhook(message("msg_2", None)),
            ServerFrame::Webhook(message("", Some("w"))),
            heartbeat,
        ] {
            ws.send(Message::text(serde_json::to_string(&frame).unwrap()))
                .await
                .unwrap();
        }
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                let _ = frames_tx.send(serde_json::from_str(t.as_str()).unwrap());
            }
        }
    });
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let connector = tokio::spawn(crate::run(
        config(port, Protocol::Websocket, target_server.port),
        None,
        async {
            let _ = stop_rx.await;
        },
    ));
    let headers = tokio::time::timeout(Duration::from_secs(10), headers_rx)
        .await
        .expect("the connector did not connect")
        .unwrap();
    assert_eq!(headers["authorization"], "Bearer channel_secret_token_123");
    assert_eq!(headers["x-connector-id"], "conn-1");
    let mut got = Vec::new();
    while got.len() < 3 {
        let frame = tokio::time::timeout(Duration::from_secs(10), frames_rx.recv())
            .await
            .unwrap()
            .unwrap();
        got.push(frame);
    }
    assert!(got.contains(&ClientFrame::Ack {
        message_id: "msg_1".into()
    }));
    assert!(got.contains(&ClientFrame::Nack {
        message_id: "msg_2".into(),
        retry: false
    }));
    assert!(
        got.iter()
            .any(|f| matches!(f, ClientFrame::Heartbeat { timestamp: Some(_) }))
    );
    assert_eq!(
        bodies.lock().unwrap().len(),
        1,
        "the message without id is dropped"
    );
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), connector)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
}

#[tokio::test]
async fn sse_delivers_and_acks_over_http_with_the_connection_id() {
    let (target_server, bodies) = target().await;
    let acks: Acks = Arc::default();
    let a = acks.clone();
    let cloud = serve(Arc::new(move |parts, _| {
        match (parts.method.as_str(), parts.uri.path()) {
            ("GET", "/connect/stream/test-channel/sse") => {
                assert_eq!(parts.headers["accept"], "text/event-stream");
                assert_eq!(
                    parts.headers["authorization"],
                    "Bearer channel_secret_token_123"
                );
                let text = format!(
                    "{}{}",
                    ServerFrame::Connected {
                        connection_id: "sse_1_1".into(),
                        channel: "test-channel".into(),
                        timestamp: String::new(),
                    }
                    .to_sse(),
                    ServerFrame::Webhook(message("msg_1", Some("w"))).to_sse()
                );
                let stream = futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(
                    Bytes::from(text),
                ))])
                .chain(futures_util::stream::pending());
                http::Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(BodyExt::boxed(StreamBody::new(stream)))
                    .unwrap()
            }
            ("POST", "/connect/ack") => record_ack(&a, &parts),
            _ => full(404, ""),
        }
    }))
    .await;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let connector = tokio::spawn(crate::run(
        config(cloud.port, Protocol::Sse, target_server.port),
        None,
        async {
            let _ = stop_rx.await;
        },
    ));
    let ack = wait_for("the ack", || acks.lock().unwrap().first().cloned()).await;
    assert_eq!(
        ack,
        (
            "message_id=msg_1&status=ack".to_owned(),
            "sse_1_1".to_owned()
        )
    );
    assert_eq!(&bodies.lock().unwrap()[0][..], br#"{"id":"msg_1"}"#);
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), connector)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn long_poll_delivers_acks_and_polls_again() {
    let (target_server, bodies) = target().await;
    let acks: Acks = Arc::default();
    let polls = Arc::new(Mutex::new(0usize));
    let (a, p) = (acks.clone(), polls.clone());
    let cloud = serve(Arc::new(move |parts, _| {
        match (parts.method.as_str(), parts.uri.path()) {
            ("GET", "/connect/stream/test-channel/poll") => {
                assert_eq!(parts.uri.query(), Some("timeout=30&max_messages=10"));
                let n = {
                    let mut p = p.lock().unwrap();
                    *p += 1;
                    *p
                };
                match n {
                    1 => full(
                        200,
                        serde_json::to_string(&PollResponse {
                            messages: vec![message("msg_1", Some("w"))],
                            connection_id: "poll_conn-1_1".into(),
                            channel: "test-channel".into(),
                            timestamp: String::new(),
                        })
                        .unwrap(),
                    ),
                    2 => full(503, r#"{"detail":"Max connections reached"}"#),
                    _ => full(204, ""),
                }
            }
            ("POST", "/connect/ack") => record_ack(&a, &parts),
            _ => full(404, ""),
        }
    }))
    .await;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let connector = tokio::spawn(crate::run(
        config(cloud.port, Protocol::LongPoll, target_server.port),
        None,
        async {
            let _ = stop_rx.await;
        },
    ));
    let ack = wait_for("the ack", || acks.lock().unwrap().first().cloned()).await;
    assert_eq!(
        ack,
        (
            "message_id=msg_1&status=ack".to_owned(),
            "poll_conn-1_1".to_owned()
        )
    );
    wait_for("polls after a 503", || {
        (*polls.lock().unwrap() >= 4).then_some(())
    })
    .await;
    assert_eq!(bodies.lock().unwrap().len(), 1);
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), connector)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn refused_streams_are_retried_with_backoff() {
    let hits = Arc::new(Mutex::new(0usize));
    let h = hits.clone();
    let cloud = serve(Arc::new(move |_, _| {
        *h.lock().unwrap() += 1;
        full(401, r#"{"detail":"Invalid channel token"}"#)
    }))
    .await;
    let (target_server, _) = target().await;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let connector = tokio::spawn(crate::run(
        config(cloud.port, Protocol::Sse, target_server.port),
        None,
        async {
            let _ = stop_rx.await;
        },
    ));
    wait_for("three attempts", || {
        (*hits.lock().unwrap() >= 3).then_some(())
    })
    .await;
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), connector)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn processor_rules_and_shutdown_abandons_without_ack() {
    let (target_server, _) = target().await;
    let c = config(1, Protocol::Websocket, target_server.port);
    let tls = crate::tls::TlsConfigs::load(&c).await.unwrap();
    let delivery = Delivery::Http(Box::new(crate::http_mode::HttpDelivery::new(
        crate::tls::http_client(tls.targets),
        c.default_target.clone(),
        BTreeMap::new(),
    )));
    let p = Processor::new(delivery, 2);
    let (tx, mut rx) = mpsc::unbounded_channel();
    p.handle(message("", Some("w")), Acker::Record(tx.clone()));
    p.handle(message("m_none", None), Acker::Record(tx.clone()));
    p.handle(message("m_ok", Some("w")), Acker::Record(tx.clone()));
    let mut got = vec![rx.recv().await.unwrap(), rx.recv().await.unwrap()];
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [
            (
                "m_none".to_owned(),
                cwm_relay::protocol::AckStatus::Nack { retry: false }
            ),
            ("m_ok".to_owned(), cwm_relay::protocol::AckStatus::Ack),
        ]
    );
    p.stop().await;
    p.handle(message("late", Some("w")), Acker::Record(tx));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(rx.try_recv().is_err(), "nothing is taken after stop");
}
