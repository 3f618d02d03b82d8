//! What the background task needs from etcd, behind a small trait: a session (a connected,
//! authenticated client), a range read at a revision, the read of one prefix, and a watch stream.
//!
//! [`RealEtcd`] wraps `etcd_client`; the unit tests drive the worker with an in-memory fake
//! (paused time, no network). The types here carry only what the worker looks at, so the fake can
//! build them.

use std::future::Future;

use etcd_client::{
    Client, EventType, GetOptions, KvClient, WatchClient, WatchOptions, WatchStream,
};

use super::client::{Failure, connect, is_compacted, is_too_large, tls_hint};
use super::settings::EtcdSettings;
use crate::error::ConfigError;

/// Largest gRPC message accepted from etcd. Pages shrink on their own when a response is larger
/// (huge values), so this only has to exceed one value plus overhead (etcd caps a request at
/// 1.5 MiB by default).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// One key, its value and the revision of its last change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Kv {
    pub(crate) key: Vec<u8>,
    pub(crate) value: Vec<u8>,
    pub(crate) mod_revision: i64,
}

impl From<etcd_client::KeyValue> for Kv {
    fn from(kv: etcd_client::KeyValue) -> Self {
        let mod_revision = kv.mod_revision();
        let (key, value) = kv.into_key_value();
        Self {
            key,
            value,
            mod_revision,
        }
    }
}

/// The answer to one range request.
#[derive(Debug)]
pub(crate) struct RangePage {
    /// The revision in the response header, when there is one.
    pub(crate) header_revision: Option<i64>,
    /// More keys follow in the range.
    pub(crate) more: bool,
    /// Keys in the whole range at the read revision.
    pub(crate) count: i64,
    pub(crate) kvs: Vec<Kv>,
}

/// Why a range request failed, as far as a listing cares.
#[derive(Debug)]
pub(crate) enum RangeError {
    /// The requested revision has been compacted.
    Compacted(Failure),
    /// The answer did not fit in one gRPC message.
    TooLarge(Failure),
    Other(Failure),
}

impl RangeError {
    pub(crate) fn into_failure(self) -> Failure {
        match self {
            Self::Compacted(f) | Self::TooLarge(f) | Self::Other(f) => f,
        }
    }
}

impl From<etcd_client::Error> for RangeError {
    fn from(e: etcd_client::Error) -> Self {
        if is_compacted(&e) {
            Self::Compacted(e.into())
        } else if is_too_large(&e) {
            Self::TooLarge(e.into())
        } else {
            Self::Other(e.into())
        }
    }
}

/// One watch event.
#[derive(Debug, Clone)]
pub(crate) struct WatchEvent {
    pub(crate) kind: EventType,
    pub(crate) kv: Option<Kv>,
}

/// One message of a watch stream.
#[derive(Debug, Clone, Default)]
pub(crate) struct WatchMsg {
    pub(crate) created: bool,
    pub(crate) canceled: bool,
    pub(crate) cancel_reason: String,
    /// Non-zero when the watch was cancelled because its start revision is compacted.
    pub(crate) compact_revision: i64,
    pub(crate) header_revision: Option<i64>,
    pub(crate) events: Vec<WatchEvent>,
}

/// Connects sessions. Timeouts are the caller's.
pub(crate) trait EtcdIo: Send + Sync + 'static {
    type Session: Session + 'static;

    /// A new session (a new client, authenticated afresh when credentials are set).
    fn connect(
        &self,
        settings: &EtcdSettings,
    ) -> impl Future<Output = Result<Self::Session, ConfigError>> + Send;

    /// Why a plain-text connection may have failed (see [`tls_hint`]).
    fn tls_hint(&self, settings: &EtcdSettings) -> impl Future<Output = Option<String>> + Send;
}

/// One connected client. Dropping it closes the connection and its streams.
pub(crate) trait Session: Send + Sync {
    type Reader: RangeRead + 'static;
    type Watch: WatchEvents + 'static;

    /// A reader for the range requests of one listing.
    fn reader(&self) -> Self::Reader;

    /// Every key under `prefix` in one request.
    fn read_prefix(&self, prefix: &[u8]) -> impl Future<Output = Result<Vec<Kv>, Failure>> + Send;

    /// Watch every key under `prefix` from `start_revision`, with progress notifications.
    fn watch(
        &self,
        prefix: &[u8],
        start_revision: i64,
    ) -> impl Future<Output = Result<Self::Watch, Failure>> + Send;
}

/// Range requests of a listing.
pub(crate) trait RangeRead: Send {
    /// Keys in `[start, end)`, at most `limit`, at `revision` (0: the current one).
    fn range(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: i64,
        revision: i64,
    ) -> impl Future<Output = Result<RangePage, RangeError>> + Send;
}

/// The responses of a watch.
pub(crate) trait WatchEvents: Send {
    /// The next response; `None` when the stream ended.
    fn message(&mut self) -> impl Future<Output = Result<Option<WatchMsg>, Failure>> + Send;
}

/// etcd through `etcd_client`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RealEtcd;

impl EtcdIo for RealEtcd {
    type Session = Client;

    async fn connect(&self, settings: &EtcdSettings) -> Result<Client, ConfigError> {
        connect(settings).await
    }

    async fn tls_hint(&self, settings: &EtcdSettings) -> Option<String> {
        tls_hint(settings).await
    }
}

impl Session for Client {
    type Reader = KvReader;
    type Watch = RealWatch;

    fn reader(&self) -> KvReader {
        KvReader::new(self)
    }

    async fn read_prefix(&self, prefix: &[u8]) -> Result<Vec<Kv>, Failure> {
        let mut kv = self.kv_client();
        let mut resp = kv
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await?;
        Ok(resp.take_kvs().into_iter().map(Kv::from).collect())
    }

    async fn watch(&self, prefix: &[u8], start_revision: i64) -> Result<RealWatch, Failure> {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(start_revision)
            .with_progress_notify();
        let mut client = self
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let stream = client.watch(prefix, Some(options)).await?;
        Ok(RealWatch {
            _client: client,
            stream,
        })
    }
}

/// The key-value client of one listing.
pub(crate) struct KvReader {
    kv: KvClient,
}

impl KvReader {
    pub(crate) fn new(client: &Client) -> Self {
        Self {
            kv: client
                .kv_client()
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        }
    }
}

impl RangeRead for KvReader {
    async fn range(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: i64,
        revision: i64,
    ) -> Result<RangePage, RangeError> {
        let mut options = GetOptions::new().with_range(end).with_limit(limit);
        if revision != 0 {
            options = options.with_revision(revision);
        }
        let mut resp = self.kv.get(start, Some(options)).await?;
        Ok(RangePage {
            header_revision: resp.header().map(|h| h.revision()),
            more: resp.more(),
            count: resp.count(),
            kvs: resp.take_kvs().into_iter().map(Kv::from).collect(),
        })
    }
}

/// A watch stream and the client it was opened with.
pub(crate) struct RealWatch {
    _client: WatchClient,
    stream: WatchStream,
}

impl WatchEvents for RealWatch {
    async fn message(&mut self) -> Result<Option<WatchMsg>, Failure> {
        let Some(resp) = self.stream.message().await? else {
            return Ok(None);
        };
        Ok(Some(WatchMsg {
            created: resp.created(),
            canceled: resp.canceled(),
            cancel_reason: resp.cancel_reason().to_owned(),
            compact_revision: resp.compact_revision(),
            header_revision: resp.header().map(|h| h.revision()),
            events: resp
                .events()
                .iter()
                .map(|e| WatchEvent {
                    kind: e.event_type(),
                    kv: e.kv().map(|kv| Kv {
                        key: kv.key().to_vec(),
                        value: kv.value().to_vec(),
                        mod_revision: kv.mod_revision(),
                    }),
                })
                .collect(),
        }))
    }
}
