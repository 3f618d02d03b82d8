//! The `http_webhook` sink: one request per event through the shared client.

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body as _;

use super::config::{Settings, filter_header};
use crate::outbound::{ConnectGuardError, HttpClient, USER_AGENT_VALUE, error_chain, refused_in};
use crate::sink::{Event, Payload, Sink, SinkError};

/// Response bodies are read (to keep the connection reusable) up to this size, then dropped.
const MAX_DRAIN: usize = 64 * 1024;

/// Delivers events to one checked destination.
pub(crate) struct HttpSink {
    pub(crate) client: HttpClient,
    pub(crate) settings: Settings,
}

#[async_trait]
impl Sink for HttpSink {
    fn module(&self) -> &'static str {
        "http_webhook"
    }

    async fn deliver(&self, event: &Event) -> Result<(), SinkError> {
        let (body, default_type) = match &event.payload {
            Payload::Json(v) => (
                v.to_json_bytes()
                    .map_err(|e| SinkError::Rejected(e.to_string()))?,
                "application/json",
            ),
            Payload::Blob(b) => (b.clone(), "application/octet-stream"),
        };
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = self.settings.method.clone();
        *req.uri_mut() = self.settings.target.uri.clone();
        let headers = req.headers_mut();
        if self.settings.forward {
            for (name, value) in &event.headers {
                if let Some((n, v)) =
                    filter_header(name, value, self.settings.allowed_headers.as_deref())
                {
                    headers.insert(n, v);
                }
            }
        }
        if let Some(auth) = &self.settings.target.basic_auth {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        for (n, v) in &self.settings.custom {
            headers.insert(n.clone(), v.clone());
        }
        if !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(default_type));
        }
        if !headers.contains_key(USER_AGENT) {
            headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        }
        match tokio::time::timeout(self.settings.timeout, self.exchange(req)).await {
            Ok(result) => result,
            Err(_) => Err(SinkError::Timeout),
        }
    }
}

impl HttpSink {
    async fn exchange(&self, req: Request<Full<Bytes>>) -> Result<(), SinkError> {
        let resp = self.client.request(req).await.map_err(|e| {
            if refused_in(&e) {
                // Not retryable: the next resolution will most likely say the same.
                return SinkError::Config(format!(
                    "{}: refused to connect: {}",
                    self.settings.target.label,
                    ConnectGuardError::Refused
                ));
            }
            SinkError::Unavailable(format!(
                "{}: {}",
                self.settings.target.label,
                self.settings.target.scrub(&error_chain(&e))
            ))
        })?;
        let status = resp.status();
        let body = resp.into_body();
        if !body.is_end_stream() {
            // The verdict is in the status; read the body off the request's clock so the
            // connection returns to the pool.
            let limit = self.settings.timeout;
            tokio::spawn(async move {
                let _ = tokio::time::timeout(limit, Limited::new(body, MAX_DRAIN).collect()).await;
            });
        }
        classify(status, &self.settings.target.label)
    }
}

/// The delivery outcome of the destination's answer: 2xx is `Ok`, 5xx and 429 retryable, any
/// other status (3xx included: redirects are not followed) a rejection.
pub(super) fn classify(status: StatusCode, label: &str) -> Result<(), SinkError> {
    if status.is_success() {
        Ok(())
    } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        Err(SinkError::Unavailable(format!("{label} answered {status}")))
    } else {
        Err(SinkError::Rejected(format!("{label} answered {status}")))
    }
}
