//! A fake destination for tests: a sink whose outcomes a test scripts and whose deliveries it
//! reads back. Register it under any module name with [`FakeBuilder`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::sink::{BuildError, Event, Payload, Sink, SinkBuilder, SinkContext, SinkError};

/// What the next delivery does.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Accept the event.
    Ok,
    /// Fail with this error.
    Fail(SinkError),
    /// Never answer (until the caller's deadline).
    Hang,
    /// Wait, then accept.
    Delay(Duration),
}

/// The fake sink. Clones share the script and the record.
#[derive(Debug, Clone, Default)]
pub struct FakeSink {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    script: Mutex<VecDeque<Outcome>>,
    delivered: Mutex<Vec<Event>>,
    attempts: AtomicUsize,
}

impl FakeSink {
    /// A sink that accepts everything until told otherwise.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queue outcomes for the next deliveries; once they are used up, deliveries succeed.
    pub fn push(&self, outcomes: impl IntoIterator<Item = Outcome>) {
        self.inner
            .script
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(outcomes);
    }

    /// Events accepted so far.
    pub fn delivered(&self) -> Vec<Event> {
        self.inner
            .delivered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Deliveries attempted so far (accepted or not).
    pub fn attempts(&self) -> usize {
        self.inner.attempts.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Sink for FakeSink {
    fn module(&self) -> &'static str {
        "fake"
    }

    async fn deliver(&self, event: &Event) -> Result<(), SinkError> {
        self.inner.attempts.fetch_add(1, Ordering::SeqCst);
        let next = self
            .inner
            .script
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
            .unwrap_or(Outcome::Ok);
        match next {
            Outcome::Ok => {}
            Outcome::Fail(e) => return Err(e),
            Outcome::Hang => std::future::pending::<()>().await,
            Outcome::Delay(d) => tokio::time::sleep(d).await,
        }
        self.inner
            .delivered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event.clone());
        Ok(())
    }
}

/// Registers a [`FakeSink`] under `name`: every webhook naming the module delivers to it.
#[derive(Debug, Clone)]
pub struct FakeBuilder {
    /// The module name it registers under.
    pub name: &'static str,
    /// The sink every build returns (clones share its script and record).
    pub sink: FakeSink,
}

impl SinkBuilder for FakeBuilder {
    fn name(&self) -> &'static str {
        self.name
    }

    fn build(&self, _: &SinkContext<'_>) -> Result<Arc<dyn Sink>, BuildError> {
        Ok(Arc::new(self.sink.clone()))
    }
}

/// An event with a JSON payload, for tests.
pub fn event(payload: serde_json::Value) -> Event {
    Event {
        namespace: None,
        webhook_id: "hook".into(),
        payload: Payload::Json(crate::payload::JsonPayload::from(payload)),
        headers: vec![("content-type".into(), "application/json".into())],
        received_at: SystemTime::now(),
    }
}

/// An event with `payload` and `headers` (lower-case names), for tests.
pub fn event_with(payload: Payload, headers: &[(&str, &str)]) -> Event {
    Event {
        namespace: None,
        webhook_id: "hook".into(),
        payload,
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        received_at: SystemTime::now(),
    }
}
