//! HTTP mode: each event is sent to `targets[webhook_id]`, else `default_target`, with retries.
//!
//! | Attempt result | Action |
//! |---|---|
//! | 2xx | ack |
//! | 4xx | no more attempts, nack without retry (the receiver dead-letters it) |
//! | 3xx, 5xx, timeout, connection error | another attempt, up to `retry_max_attempts` in all |
//! | attempts exhausted | nack, retry unless the last status was 4xx |

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use cwm_relay::protocol::{AckStatus, WebhookMessage};
use http::{HeaderName, HeaderValue, Method};
use http_body_util::{BodyExt, Full};

use crate::config::Target;
use crate::tls::HttpClient;

/// Longest sleep between two attempts.
const MAX_RETRY_SLEEP: Duration = Duration::from_secs(60);

/// Sends events to HTTP targets.
pub(crate) struct HttpDelivery {
    client: HttpClient,
    default_target: Option<Target>,
    targets: BTreeMap<String, Target>,
}

/// The result of one attempt.
enum Attempt {
    Status(u16),
    Failed(String),
}

impl HttpDelivery {
    pub(crate) fn new(
        client: HttpClient,
        default_target: Option<Target>,
        targets: BTreeMap<String, Target>,
    ) -> Self {
        Self {
            client,
            default_target,
            targets,
        }
    }

    pub(crate) async fn deliver(&self, message: &WebhookMessage, webhook_id: &str) -> AckStatus {
        let id = message.message_id.as_str();
        let Some(target) = self
            .targets
            .get(webhook_id)
            .or(self.default_target.as_ref())
        else {
            tracing::warn!(
                message_id = id,
                webhook_id,
                "no target for this webhook: nack without retry"
            );
            return AckStatus::Nack { retry: false };
        };
        let body = match message.body_bytes() {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                // The payload can never be delivered: retrying cannot help.
                tracing::error!(message_id = id, webhook_id, error = %e, "undecodable payload: nack without retry");
                return AckStatus::Nack { retry: false };
            }
        };
        let method = match Method::from_bytes(target.method.to_ascii_uppercase().as_bytes()) {
            Ok(m) => m,
            Err(_) => return AckStatus::Nack { retry: true },
        };
        let attempts = target.retry_max_attempts.max(1);
        let mut delay = target.retry_delay_seconds.max(0.0);
        let mut last_status: Option<u16> = None;
        for attempt in 1..=attempts {
            match self
                .attempt(target, &method, message, webhook_id, attempt, body.clone())
                .await
            {
                Attempt::Status(s) if (200..300).contains(&s) => {
                    tracing::debug!(
                        message_id = id,
                        webhook_id,
                        attempt,
                        status = s,
                        "delivered"
                    );
                    return AckStatus::Ack;
                }
                Attempt::Status(s) if (400..500).contains(&s) => {
                    tracing::warn!(
                        message_id = id,
                        webhook_id,
                        attempt,
                        status = s,
                        "target refused the event: nack without retry"
                    );
                    return AckStatus::Nack { retry: false };
                }
                Attempt::Status(s) => {
                    tracing::warn!(
                        message_id = id,
                        webhook_id,
                        attempt,
                        status = s,
                        "target failed"
                    );
                    last_status = Some(s);
                }
                Attempt::Failed(e) => {
                    tracing::warn!(message_id = id, webhook_id, attempt, error = %e, "delivery attempt failed");
                }
            }
            if attempt < attempts && target.retry_enabled {
                let sleep = Duration::try_from_secs_f64(delay)
                    .unwrap_or(MAX_RETRY_SLEEP)
                    .min(MAX_RETRY_SLEEP);
                tokio::time::sleep(sleep).await;
                delay =
                    (delay * target.retry_backoff_multiplier).min(MAX_RETRY_SLEEP.as_secs_f64());
            }
        }
        let retry = !last_status.is_some_and(|s| (400..500).contains(&s));
        tracing::warn!(
            message_id = id,
            webhook_id,
            attempts,
            retry,
            "attempts exhausted: nack"
        );
        AckStatus::Nack { retry }
    }

    async fn attempt(
        &self,
        target: &Target,
        method: &Method,
        message: &WebhookMessage,
        webhook_id: &str,
        attempt: u32,
        body: Bytes,
    ) -> Attempt {
        let request = match build_request(target, method, message, webhook_id, attempt, body) {
            Ok(r) => r,
            Err(e) => return Attempt::Failed(e),
        };
        let timeout =
            Duration::try_from_secs_f64(target.timeout_seconds).unwrap_or(Duration::from_secs(30));
        let result = tokio::time::timeout(timeout, async {
            let response = self.client.request(request).await?;
            let status = response.status().as_u16();
            let _ = response.into_body().collect().await;
            Ok::<_, hyper_util::client::legacy::Error>(status)
        })
        .await;
        match result {
            Ok(Ok(status)) => Attempt::Status(status),
            Ok(Err(e)) => Attempt::Failed(cwm_modules::error_chain(&e)),
            Err(_) => Attempt::Failed(format!("timed out after {timeout:?}")),
        }
    }
}

/// The request of one attempt: target headers, `X-Original-<name>` for every original header,
/// `Content-Type: application/json` unless the target sets one, and the `X-Webhook-*` headers.
fn build_request(
    target: &Target,
    method: &Method,
    message: &WebhookMessage,
    webhook_id: &str,
    attempt: u32,
    body: Bytes,
) -> Result<http::Request<Full<Bytes>>, String> {
    let mut builder = http::Request::builder()
        .method(method.clone())
        .uri(target.url.as_str());
    let mut has_content_type = false;
    for (name, value) in &target.headers {
        has_content_type |= name.eq_ignore_ascii_case("content-type");
        builder = builder.header(name.as_str(), value.as_str());
    }
    for (name, value) in &message.headers {
        let header = HeaderName::try_from(format!("X-Original-{name}"));
        let value = HeaderValue::from_str(value);
        match (header, value) {
            (Ok(h), Ok(v)) => builder = builder.header(h, v),
            _ => tracing::debug!(header = %name, "original header not forwardable; skipped"),
        }
    }
    if !has_content_type {
        builder = builder.header(http::header::CONTENT_TYPE, "application/json");
    }
    builder = builder
        .header("X-Webhook-Message-ID", message.message_id.as_str())
        .header("X-Webhook-ID", webhook_id)
        .header("X-Webhook-Attempt", attempt.to_string());
    builder
        .body(Full::new(body))
        .map_err(|e| format!("invalid request: {e}"))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use hyper::body::Incoming;
    use hyper_util::rt::TokioIo;

    use super::*;

    type Seen = Arc<std::sync::Mutex<Vec<(http::HeaderMap, Bytes)>>>;

    /// A local server answering each request with `plan[n]` (status, delay), the last entry
    /// repeating; it records the requests.
    struct Server {
        url: String,
        hits: Arc<AtomicUsize>,
        seen: Seen,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn server(plan: Vec<(u16, u64)>) -> Server {
        let port = cwm_testkit::free_port();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let seen: Seen = Arc::default();
        let (h, s) = (hits.clone(), seen.clone());
        let plan = Arc::new(plan);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (h, s, plan) = (h.clone(), s.clone(), plan.clone());
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: http::Request<Incoming>| {
                            let (h, s, plan) = (h.clone(), s.clone(), plan.clone());
                            async move {
                                let n = h.fetch_add(1, Ordering::SeqCst);
                                let (status, delay) = plan[n.min(plan.len() - 1)];
                                let (parts, body) = req.into_parts();
                                let body = body.collect().await.unwrap().to_bytes();
                                s.lock().unwrap().push((parts.headers, body));
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                                Ok::<_, Infallible>(
                                    http::Response::builder()
                                        .status(status)
                                        .body(Full::new(Bytes::new()))
                                        .unwrap(),
                                )
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Server {
            url: format!("http://127.0.0.1:{port}/hook"),
            hits,
            seen,
            task,
        }
    }

    fn target(url: &str) -> Target {
        Target {
            timeout_seconds: 0.5,
            retry_delay_seconds: 0.01,
            ..Target::new(url)
        }
    }

    fn delivery(default: Option<Target>, targets: BTreeMap<String, Target>) -> HttpDelivery {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        HttpDelivery::new(crate::tls::http_client(Arc::new(tls)), default, targets)
    }

    fn message() -> WebhookMessage {
        serde_json::from_str(
            r#"{"message_id":"msg_0000000000000001","webhook_id":"orders","headers":{"content-type":"application/json","x-trace":"abc"},"payload":{"a":1}}"#,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn success_acks_with_the_documented_headers() {
        let s = server(vec![(200, 0)]).await;
        let mut t = target(&s.url);
        t.headers.insert("X-Api-Key".into(), "k".into());
        let d = delivery(Some(t), BTreeMap::new());
        assert_eq!(d.deliver(&message(), "orders").await, AckStatus::Ack);
        let seen = s.seen.lock().unwrap();
        let (headers, body) = &seen[0];
        assert_eq!(&body[..], br#"{"a":1}"#);
        assert_eq!(headers["x-api-key"], "k");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["x-original-x-trace"], "abc");
        assert_eq!(headers["x-webhook-message-id"], "msg_0000000000000001");
        assert_eq!(headers["x-webhook-id"], "orders");
        assert_eq!(headers["x-webhook-attempt"], "1");
    }

    #[tokio::test]
    async fn a_4xx_stops_after_one_attempt_and_nacks_without_retry() {
        let s = server(vec![(400, 0)]).await;
        let d = delivery(Some(target(&s.url)), BTreeMap::new());
        assert_eq!(
            d.deliver(&message(), "orders").await,
            AckStatus::Nack { retry: false }
        );
        assert_eq!(s.hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_5xx_is_tried_three_times_then_nacked_with_retry() {
        let s = server(vec![(503, 0)]).await;
        let d = delivery(Some(target(&s.url)), BTreeMap::new());
        assert_eq!(
            d.deliver(&message(), "orders").await,
            AckStatus::Nack { retry: true }
        );
        assert_eq!(s.hits.load(Ordering::SeqCst), 3);
        let seen = s.seen.lock().unwrap();
        assert_eq!(seen[2].0["x-webhook-attempt"], "3");
    }

    #[tokio::test]
    async fn timeouts_are_retried_then_nacked_with_retry() {
        let s = server(vec![(200, 2_000)]).await;
        let mut t = target(&s.url);
        t.timeout_seconds = 0.1;
        let d = delivery(Some(t), BTreeMap::new());
        assert_eq!(
            d.deliver(&message(), "orders").await,
            AckStatus::Nack { retry: true }
        );
        assert_eq!(s.hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn success_on_the_second_attempt_acks() {
        let s = server(vec![(500, 0), (201, 0)]).await;
        let d = delivery(Some(target(&s.url)), BTreeMap::new());
        assert_eq!(d.deliver(&message(), "orders").await, AckStatus::Ack);
        assert_eq!(s.hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn connection_errors_are_retried_and_routing_prefers_targets() {
        let port = cwm_testkit::free_port();
        let dead = format!("http://127.0.0.1:{port}/");
        let d = delivery(Some(target(&dead)), BTreeMap::new());
        assert_eq!(
            d.deliver(&message(), "orders").await,
            AckStatus::Nack { retry: true }
        );
        let s = server(vec![(200, 0)]).await;
        let d = delivery(
            Some(target(&dead)),
            BTreeMap::from([("orders".to_owned(), target(&s.url))]),
        );
        assert_eq!(d.deliver(&message(), "orders").await, AckStatus::Ack);
    }

    #[tokio::test]
    async fn no_target_nacks_without_retry() {
        let s = server(vec![(200, 0)]).await;
        let d = delivery(None, BTreeMap::from([("other".to_owned(), target(&s.url))]));
        assert_eq!(
            d.deliver(&message(), "orders").await,
            AckStatus::Nack { retry: false }
        );
        assert_eq!(s.hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn blob_payloads_are_sent_raw_and_strings_as_text() {
        let s = server(vec![(200, 0)]).await;
        let d = delivery(Some(target(&s.url)), BTreeMap::new());
        let mut m = message();
        m.payload = serde_json::Value::from("AAEC");
        m.payload_encoding = Some(cwm_relay::protocol::PayloadEncoding::Base64);
        assert_eq!(d.deliver(&m, "orders").await, AckStatus::Ack);
        m.payload = serde_json::Value::from("plain text");
        m.payload_encoding = None;
        assert_eq!(d.deliver(&m, "orders").await, AckStatus::Ack);
        let seen = s.seen.lock().unwrap();
        assert_eq!(&seen[0].1[..], &[0u8, 1, 2]);
        assert_eq!(&seen[1].1[..], b"plain text");
    }
}
