//! Message processing shared by every transport: the common rules (drop without id, nack without
//! webhook id), one task per message under a concurrency limit, and the ack or nack afterwards.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cwm_relay::protocol::{ACK_PATH, AckStatus, ClientFrame, WebhookMessage};
use http_body_util::{BodyExt, Full};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http_mode::HttpDelivery;
use crate::module_mode::ModuleDelivery;
use crate::tls::HttpClient;

/// How long one `POST /connect/ack` may take.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the ack or nack of a message goes: the WebSocket it came on, or `POST /connect/ack`
/// with the connection id of the stream or poll that delivered it.
#[derive(Clone)]
pub(crate) enum Acker {
    /// Frames for the WebSocket writer.
    Ws(mpsc::UnboundedSender<ClientFrame>),
    /// `POST {cloud_url}/connect/ack`.
    Http(Arc<HttpAcker>),
    /// Tests: the outcomes, in order.
    #[cfg(test)]
    Record(mpsc::UnboundedSender<(String, AckStatus)>),
}

/// What an SSE or long-poll ack needs.
pub(crate) struct HttpAcker {
    pub(crate) client: HttpClient,
    pub(crate) cloud_url: String,
    pub(crate) token: String,
    pub(crate) connection_id: String,
}

impl Acker {
    /// Send the outcome of `message_id`. Failures are logged only.
    pub(crate) async fn send(&self, message_id: &str, status: AckStatus) {
        match self {
            Self::Ws(tx) => {
                let frame = match status {
                    AckStatus::Ack => ClientFrame::Ack {
                        message_id: message_id.to_owned(),
                    },
                    AckStatus::Nack { retry } => ClientFrame::Nack {
                        message_id: message_id.to_owned(),
                        retry,
                    },
                };
                if tx.send(frame).is_err() {
                    tracing::warn!(
                        message_id,
                        ?status,
                        "connection closed before the ack could be sent"
                    );
                }
            }
            Self::Http(h) => h.send(message_id, status).await,
            #[cfg(test)]
            Self::Record(tx) => {
                let _ = tx.send((message_id.to_owned(), status));
            }
        }
    }
}

impl HttpAcker {
    async fn send(&self, message_id: &str, status: AckStatus) {
        let uri = format!("{}{ACK_PATH}?{}", self.cloud_url, status.query(message_id));
        let request = http::Request::post(&uri)
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .header(
                cwm_relay::protocol::CONNECTION_ID_HEADER,
                self.connection_id.as_str(),
            )
            .body(Full::new(Bytes::new()));
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(message_id, error = %e, "cannot build the ack request");
                return;
            }
        };
        let result = tokio::time::timeout(ACK_TIMEOUT, async {
            let response = self.client.request(request).await?;
            let status = response.status();
            // Read the (small) answer so the connection goes back to the pool.
            let _ = response.into_body().collect().await;
            Ok::<_, hyper_util::client::legacy::Error>(status)
        })
        .await;
        match result {
            Ok(Ok(code)) if code == http::StatusCode::OK => {
                tracing::debug!(message_id, ?status, "acknowledged");
            }
            Ok(Ok(code)) => {
                tracing::warn!(
                    message_id,
                    ?status,
                    http_status = code.as_u16(),
                    "ack refused by the receiver"
                );
            }
            Ok(Err(e)) => tracing::warn!(message_id, ?status, error = %e, "ack failed"),
            Err(_) => tracing::warn!(message_id, ?status, "ack timed out"),
        }
    }
}

/// Where events are delivered.
pub(crate) enum Delivery {
    /// HTTP targets.
    Http(Box<HttpDelivery>),
    /// Sink modules (file or etcd configs).
    Modules(ModuleDelivery),
}

impl Delivery {
    /// Deliver one message; the answer is its ack or nack.
    pub(crate) async fn deliver(&self, message: &WebhookMessage, webhook_id: &str) -> AckStatus {
        match self {
            Self::Http(h) => h.deliver(message, webhook_id).await,
            Self::Modules(m) => m.deliver(message, webhook_id).await,
        }
    }
}

/// Runs one task per message, at most `max_concurrent` deliveries at once.
#[derive(Clone)]
pub(crate) struct Processor {
    delivery: Arc<Delivery>,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Processor {
    pub(crate) fn new(delivery: Delivery, max_concurrent: usize) -> Self {
        Self {
            delivery: Arc::new(delivery),
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            tracker: TaskTracker::new(),
            cancel: CancellationToken::new(),
        }
    }

    /// Take one message: dropped without `message_id`, nacked without retry without
    /// `webhook_id`, otherwise delivered by a task of its own and acked after it.
    pub(crate) fn handle(&self, message: WebhookMessage, acker: Acker) {
        if self.cancel.is_cancelled() {
            return;
        }
        if message.message_id.is_empty() {
            tracing::warn!("message without message_id dropped");
            return;
        }
        let this = self.clone();
        self.tracker.spawn(async move {
            let id = message.message_id.clone();
            let work = async {
                let Some(webhook_id) = message.webhook_id.as_deref().filter(|w| !w.is_empty())
                else {
                    tracing::warn!(message_id = %id, "message without webhook_id: nack without retry");
                    return AckStatus::Nack { retry: false };
                };
                let Ok(_permit) = this.permits.acquire().await else {
                    return AckStatus::Nack { retry: true };
                };
                this.delivery.deliver(&message, webhook_id).await
            };
            let status = tokio::select! {
                () = this.cancel.cancelled() => {
                    tracing::debug!(message_id = %id, "delivery abandoned at shutdown (not acked)");
                    return;
                }
                status = work => status,
            };
            if this.cancel.is_cancelled() {
                return;
            }
            acker.send(&id, status).await;
        });
    }

    /// Flush the sinks of module and etcd modes (at most `timeout`) and stop the etcd watch.
    pub(crate) async fn shutdown_sinks(&self, timeout: Duration) {
        if let Delivery::Modules(m) = &*self.delivery {
            m.shutdown(timeout).await;
        }
    }

    /// Stop: new messages are ignored and running deliveries are abandoned without an ack (the
    /// receiver redelivers them). Waits for the tasks to end.
    pub(crate) async fn stop(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}
