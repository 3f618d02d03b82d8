//! The connection client (HTTP requests to ClickHouse, one batcher per table) and the sink.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;

use super::batch::{Batcher, Writer};
use super::config::{Batching, Endpoint, Settings};
use crate::connection::{Client, Connection};
use crate::outbound::{HttpClient, USER_AGENT_VALUE, error_chain, refused_in, request_uri};
use crate::sink::{Event, Payload, Sink, SinkError};

/// How long one request to ClickHouse (a CREATE TABLE or an INSERT) may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Error answers are read up to this size.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Error texts are cut to this many characters.
const MAX_ERROR_TEXT: usize = 300;

/// ClickHouse error codes that say "not now" rather than "never": timeouts, overload, limits,
/// read-only or busy tables, network trouble between servers.
const TRANSIENT_CODES: &[u32] = &[
    159, // TIMEOUT_EXCEEDED
    173, // CANNOT_ALLOCATE_MEMORY
    201, // QUOTA_EXPIRED / QUOTA_EXCEEDED
    202, // TOO_MANY_SIMULTANEOUS_QUERIES
    203, // NO_FREE_CONNECTION
    209, // SOCKET_TIMEOUT
    210, // NETWORK_ERROR
    236, // ABORTED
    241, // MEMORY_LIMIT_EXCEEDED
    242, // TABLE_IS_READ_ONLY
    243, // NOT_ENOUGH_SPACE
    252, // TOO_MANY_PARTS
    285, // TOO_FEW_LIVE_REPLICAS
    319, // UNKNOWN_STATUS_OF_INSERT
    394, // QUERY_WAS_CANCELLED
    425, // SYSTEM_ERROR
    439, // CANNOT_SCHEDULE_TASK
    473, // DEADLOCK_AVOIDED
    999, // KEEPER_EXCEPTION
];

/// What may stand unescaped in a query-string value.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The client of one `clickhouse` connection: where to send, as whom, and one batcher per
/// table, created on first use and shared by every webhook writing that table through it.
pub struct ClickHouseClient {
    http: Arc<Http>,
    batchers: Mutex<HashMap<String, Arc<Batcher>>>,
}

/// What every request of a connection shares.
struct Http {
    client: HttpClient,
    endpoint: Endpoint,
    /// `scheme://host:port`, the only form of the address errors show.
    label: String,
    auth: Vec<(HeaderName, HeaderValue)>,
}

impl std::fmt::Debug for ClickHouseClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseClient")
            .field("endpoint", &self.http.endpoint)
            .finish_non_exhaustive()
    }
}

impl ClickHouseClient {
    /// A client for `endpoint` over `client`. Touches no network.
    pub(crate) fn new(endpoint: Endpoint, client: HttpClient) -> Result<Self, String> {
        // Check that the address makes a URI now, not at the first delivery.
        let (_, authority) = request_uri(endpoint.scheme, &endpoint.host, Some(endpoint.port), "/")
            .map_err(|why| format!("the clickhouse host {why}"))?;
        let mut auth = Vec::new();
        let user = HeaderValue::from_bytes(endpoint.user.as_bytes())
            .map_err(|_| "the clickhouse 'user' cannot be sent in an HTTP header".to_owned())?;
        auth.push((HeaderName::from_static("x-clickhouse-user"), user));
        if !endpoint.password.is_empty() {
            let mut key = HeaderValue::from_bytes(endpoint.password.as_bytes()).map_err(|_| {
                "the clickhouse 'password' cannot be sent in an HTTP header".to_owned()
            })?;
            key.set_sensitive(true);
            auth.push((HeaderName::from_static("x-clickhouse-key"), key));
        }
        Ok(Self {
            http: Arc::new(Http {
                client,
                label: format!("{}://{authority}", endpoint.scheme),
                endpoint,
                auth,
            }),
            batchers: Mutex::default(),
        })
    }

    /// The address and account this client writes to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.http.endpoint
    }

    /// The batcher of `table`, created with `batching` on first use (later callers share it,
    /// whatever batching they asked for).
    fn batcher(&self, table: &str, batching: Batching) -> Arc<Batcher> {
        let mut map = self.batchers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = map.get(table) {
            return b.clone();
        }
        let writer = Arc::new(TableWriter {
            http: self.http.clone(),
            table: table.to_owned(),
            created: AtomicBool::new(false),
        });
        let b = Arc::new(Batcher::new(writer, batching));
        map.insert(table.to_owned(), b.clone());
        b
    }

    /// The batching of `table`'s batcher, if it was created.
    pub fn batching_of(&self, table: &str) -> Option<Batching> {
        self.batchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(table)
            .map(|b| b.batching())
    }

    /// Queue `row` for `table` and wait until its batch was written (or failed).
    pub(crate) async fn submit(
        &self,
        table: &str,
        batching: Batching,
        row: Bytes,
    ) -> Result<(), SinkError> {
        self.batcher(table, batching).submit(row).await
    }

    /// Run one statement that returns nothing (a `CREATE TABLE`), outside any batcher.
    pub(crate) async fn execute(&self, sql: String) -> Result<(), SinkError> {
        self.http
            .post(None, Bytes::from(sql), "text/plain; charset=utf-8")
            .await
    }

    /// Send `body` (newline-terminated JSONEachRow rows) to `table` in one INSERT, outside any
    /// batcher. The table must exist.
    pub(crate) async fn insert_rows(&self, table: &str, body: Bytes) -> Result<(), SinkError> {
        let sql = insert_sql(&self.http.endpoint.database, table);
        self.http
            .post(Some(&sql), body, "application/x-ndjson")
            .await
    }
}

#[async_trait]
impl Client for ClickHouseClient {
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }

    /// Write every queued row and stop the batch tasks.
    async fn close(&self) {
        let batchers: Vec<Arc<Batcher>> = self
            .batchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for b in batchers {
            b.close().await;
        }
    }
}

/// Quote an identifier for ClickHouse SQL.
pub(crate) fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('`');
    for c in name.chars() {
        match c {
            '`' => out.push_str("\\`"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('`');
    out
}

/// The statement creating `table` when it does not exist, valid on 18.16 and current servers.
pub(crate) fn create_table_sql(database: &str, table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {}.{} (id String, webhook_id String, timestamp DateTime, \
         payload String, headers String, created_at DateTime DEFAULT now()) ENGINE = MergeTree() \
         PARTITION BY toYYYYMM(timestamp) ORDER BY (webhook_id, timestamp)",
        quote_ident(database),
        quote_ident(table)
    )
}

/// The statement the rows of a batch follow.
pub(crate) fn insert_sql(database: &str, table: &str) -> String {
    format!(
        "INSERT INTO {}.{} (id, webhook_id, timestamp, payload, headers) FORMAT JSONEachRow",
        quote_ident(database),
        quote_ident(table)
    )
}

/// Writes the batches of one table: creates the table before the first INSERT (again after a
/// failed attempt), then sends each batch as one INSERT.
struct TableWriter {
    http: Arc<Http>,
    table: String,
    created: AtomicBool,
}

#[async_trait]
impl Writer for TableWriter {
    async fn write(&self, body: Bytes, rows: usize) -> Result<(), SinkError> {
        let db = &self.http.endpoint.database;
        if !self.created.load(Ordering::Acquire) {
            let ddl = create_table_sql(db, &self.table);
            self.http
                .post(None, Bytes::from(ddl), "text/plain; charset=utf-8")
                .await
                .map_err(|e| match e {
                    SinkError::Timeout => SinkError::Timeout,
                    e => SinkError::Unavailable(format!(
                        "cannot create table {}.{}: {}",
                        db,
                        self.table,
                        reason(&e)
                    )),
                })?;
            self.created.store(true, Ordering::Release);
        }
        let result = self
            .http
            .post(
                Some(&insert_sql(db, &self.table)),
                body,
                "application/x-ndjson",
            )
            .await;
        if let Err(e) = &result {
            tracing::warn!(
                table = %self.table,
                rows,
                error = %e,
                "ClickHouse insert failed"
            );
        }
        result
    }
}

/// The text of an error without its kind's prefix.
fn reason(e: &SinkError) -> String {
    match e {
        SinkError::Unavailable(m) | SinkError::Rejected(m) | SinkError::Config(m) => m.clone(),
        SinkError::Timeout => "timed out".into(),
    }
}

impl Http {
    /// POST `body` to the HTTP interface: as the statement itself when `query` is `None`,
    /// otherwise as the data of `query`.
    async fn post(
        &self,
        query: Option<&str>,
        body: Bytes,
        content_type: &'static str,
    ) -> Result<(), SinkError> {
        let mut tail = String::from("/?wait_end_of_query=1");
        if let Some(q) = query {
            tail.push_str("&query=");
            tail.extend(utf8_percent_encode(q, QUERY_VALUE));
        }
        let e = &self.endpoint;
        let (uri, _) = request_uri(e.scheme, &e.host, Some(e.port), &tail)
            .map_err(|why| SinkError::Config(format!("{}: the request URI {why}", self.label)))?;
        match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(uri, body, content_type)).await {
            Ok(result) => result,
            Err(_) => Err(SinkError::Timeout),
        }
    }

    async fn exchange(
        &self,
        uri: Uri,
        body: Bytes,
        content_type: &'static str,
    ) -> Result<(), SinkError> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri;
        let headers = req.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        for (n, v) in &self.auth {
            headers.insert(n.clone(), v.clone());
        }
        let resp = self.client.request(req).await.map_err(|e| {
            if refused_in(&e) {
                SinkError::Config(format!(
                    "{}: refused to connect: {}",
                    self.label,
                    crate::outbound::ConnectGuardError::Refused
                ))
            } else {
                SinkError::Unavailable(format!("{}: {}", self.label, error_chain(&e)))
            }
        })?;
        let status = resp.status();
        let code_header = resp
            .headers()
            .get("x-clickhouse-exception-code")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok());
        let body = Limited::new(resp.into_body(), MAX_ERROR_BODY)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if status.is_success() {
            return Ok(());
        }
        Err(classify(
            status,
            code_header,
            &String::from_utf8_lossy(&body),
            &self.label,
        ))
    }
}

/// The error of a non-2xx answer. ClickHouse's exception code (the
/// `X-ClickHouse-Exception-Code` header of current servers, or the `Code: N` the body starts
/// with) decides when there is one: a transient code is retryable, any other is a rejection
/// (18.16 answers 500 to a wrong column, for instance). Without a code: 5xx and 429 are
/// retryable, other statuses are rejections.
pub(crate) fn classify(
    status: StatusCode,
    code_header: Option<u32>,
    body: &str,
    label: &str,
) -> SinkError {
    let code = code_header.or_else(|| body_code(body));
    let text = error_text(body);
    let message = match code {
        Some(c) => format!("{label} answered {status}: ClickHouse error {c}: {text}"),
        None => format!("{label} answered {status}: {text}"),
    };
    let retryable = match code {
        Some(c) => TRANSIENT_CODES.contains(&c),
        None => status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS,
    };
    if retryable {
        SinkError::Unavailable(message)
    } else {
        SinkError::Rejected(message)
    }
}

/// `N` of a body starting with `Code: N`.
fn body_code(body: &str) -> Option<u32> {
    let rest = body.trim_start().strip_prefix("Code:")?.trim_start();
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The first line of an error body, cut short.
fn error_text(body: &str) -> String {
    let line = body.trim().lines().next().unwrap_or_default().trim();
    let mut text: String = line.chars().take(MAX_ERROR_TEXT).collect();
    if line.chars().count() > MAX_ERROR_TEXT {
        text.push_str("...");
    }
    if text.is_empty() {
        text.push_str("(no message)");
    }
    text
}

/// One row as JSONEachRow writes it.
#[derive(Serialize)]
struct Row<'a> {
    id: String,
    webhook_id: &'a str,
    timestamp: String,
    payload: &'a str,
    headers: String,
}

/// `YYYY-MM-DD hh:mm:ss` in UTC.
pub(crate) fn format_timestamp(t: SystemTime) -> String {
    // `2024-01-02T03:04:05Z`
    let rfc = humantime::format_rfc3339_seconds(t).to_string();
    rfc.trim_end_matches('Z').replacen('T', " ", 1)
}

/// The JSONEachRow line (newline-terminated) of `event`.
pub(crate) fn row(
    event: &Event,
    include_headers: bool,
    now: SystemTime,
) -> Result<Bytes, SinkError> {
    let webhook_id = match &event.namespace {
        Some(ns) => format!("{ns}/{}", event.webhook_id),
        None => event.webhook_id.to_string(),
    };
    let payload = match &event.payload {
        Payload::Json(v) => {
            let bytes = v
                .to_json_bytes()
                .map_err(|e| SinkError::Rejected(e.to_string()))?;
            String::from_utf8(bytes.to_vec())
                .map_err(|_| SinkError::Rejected("the JSON payload is not UTF-8".into()))?
        }
        Payload::Blob(b) => STANDARD.encode(b),
    };
    let headers = if include_headers {
        let map: serde_json::Map<String, serde_json::Value> = event
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        serde_json::Value::Object(map).to_string()
    } else {
        "{}".to_owned()
    };
    let row = Row {
        id: uuid::Uuid::new_v4().to_string(),
        webhook_id: &webhook_id,
        timestamp: format_timestamp(now),
        payload: &payload,
        headers,
    };
    let mut line = serde_json::to_vec(&row).map_err(|e| SinkError::Rejected(e.to_string()))?;
    line.push(b'\n');
    Ok(Bytes::from(line))
}

/// A `clickhouse` webhook: one row per event into its table, through its connection's client.
pub struct ClickHouseSink {
    /// The webhook's connection; its current client is read at each delivery.
    pub(crate) connection: Arc<Connection>,
    /// The checked `module-config`.
    pub(crate) settings: Settings,
}

#[async_trait]
impl Sink for ClickHouseSink {
    fn module(&self) -> &'static str {
        "clickhouse"
    }

    async fn deliver(&self, event: &Event) -> Result<(), SinkError> {
        let lease = self.connection.client::<ClickHouseClient>()?;
        let result = match row(event, self.settings.include_headers, SystemTime::now()) {
            Ok(line) => {
                lease
                    .submit(&self.settings.table, self.settings.batching, line)
                    .await
            }
            Err(e) => Err(e),
        };
        Connection::report(&lease, &result);
        result
    }
}
