//! A fake HashiCorp Vault: a small HTTP server on a free loopback port implementing the few
//! endpoints cwm's Vault client calls (no Vault server can be installed where the tests run).
//!
//! - `GET /v1/{mount}/data/{path}`: KV v2 read (`X-Vault-Token` checked: 403 on a wrong
//!   token, 404 on a missing path or mount);
//! - `POST|PUT /v1/{mount}/data/{path}` with `{"data": {...}}`: KV v2 write (replaces the
//!   secret, bumps its version), so shell scripts seed it as they seed a real Vault;
//! - `GET /v1/{mount}/{path}` on a KV v1 mount ([`FakeVault::add_kv1_mount`]): KV v1 read;
//! - `POST /v1/sys/mounts/{mount}`: enables a mount (any options accepted);
//! - `POST /v1/auth/approle/login` with `{"role_id", "secret_id"}`: returns a client token
//!   ([`FakeVault::enable_approle`]);
//! - `GET /v1/auth/token/lookup-self`.
//!
//! Every request is logged ([`FakeVault::requests`]) so tests can assert caching. The server
//! stops when the handle drops.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};

/// The root token [`FakeVault::start`] accepts.
pub const FAKE_VAULT_ROOT_TOKEN: &str = "fake-vault-root-token";

#[derive(Default)]
struct State {
    mounts: BTreeSet<String>,
    /// KV v1 mounts (read only, seeded with [`FakeVault::put_in`]).
    kv1_mounts: BTreeSet<String>,
    tokens: BTreeSet<String>,
    approle: Option<(String, String)>,
    issued: u64,
    /// `mount/path` → (fields, version).
    secrets: BTreeMap<String, (Map<String, Value>, u64)>,
    log: Vec<String>,
    /// Reads still to fail with 503.
    unavailable: u32,
}

/// A fake Vault on a free loopback port; stopped on drop. See the module docs.
pub struct FakeVault {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl FakeVault {
    /// Start with the KV v2 mount `secret` and the root token [`FAKE_VAULT_ROOT_TOKEN`].
    pub fn start() -> Self {
        Self::start_with("127.0.0.1:0", "secret", FAKE_VAULT_ROOT_TOKEN)
    }

    /// Start on `addr` (`127.0.0.1:0` for a free port) with KV v2 mount `mount` and `token`.
    pub fn start_with(addr: &str, mount: &str, token: &str) -> Self {
        let listener = TcpListener::bind(addr).expect("bind the fake Vault");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(Mutex::new(State::default()));
        {
            let mut s = state.lock().unwrap();
            s.mounts.insert(mount.trim_matches('/').to_owned());
            s.tokens.insert(token.to_owned());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &st);
                });
            }
        });
        Self { port, state, stop }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:{port}`, for VAULT_ADDR.
    pub fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Set `field` of the secret at `path` in mount `mount` (other fields are kept).
    pub fn put_in(&self, mount: &str, path: &str, field: &str, value: &str) {
        let mut s = self.state.lock().unwrap();
        let key = format!("{}/{}", mount.trim_matches('/'), path.trim_matches('/'));
        let entry = s.secrets.entry(key).or_insert_with(|| (Map::new(), 0));
        entry
            .0
            .insert(field.to_owned(), Value::String(value.to_owned()));
        entry.1 += 1;
    }

    /// Add a KV version 1 mount `mount`: `GET /v1/{mount}/{path}` answers its secrets (seed them
    /// with [`FakeVault::put_in`]).
    pub fn add_kv1_mount(&self, mount: &str) {
        let mut s = self.state.lock().unwrap();
        s.kv1_mounts.insert(mount.trim_matches('/').to_owned());
    }

    /// [`FakeVault::put_in`] the first mount it started with.
    pub fn put(&self, path: &str, field: &str, value: &str) {
        let mount = self.state.lock().unwrap().mounts.iter().next().cloned();
        self.put_in(&mount.unwrap_or_default(), path, field, value);
    }

    /// Delete the secret at `path` in every mount.
    pub fn delete(&self, path: &str) {
        let suffix = format!("/{}", path.trim_matches('/'));
        self.state
            .lock()
            .unwrap()
            .secrets
            .retain(|k, _| !k.ends_with(&suffix));
    }

    /// Accept AppRole logins with this role id and secret id.
    pub fn enable_approle(&self, role_id: &str, secret_id: &str) {
        self.state.lock().unwrap().approle = Some((role_id.to_owned(), secret_id.to_owned()));
    }

    /// Revoke every token AppRole logins issued (as if they expired); the root token stays.
    pub fn revoke_issued_tokens(&self) {
        let mut s = self.state.lock().unwrap();
        s.tokens.retain(|t| !t.starts_with("fake-approle-token-"));
    }

    /// Answer the next `n` KV reads with 503 (a transient failure).
    pub fn fail_next_reads(&self, n: u32) {
        self.state.lock().unwrap().unavailable = n;
    }

    /// Every request so far, as `METHOD /path` (no headers, no bodies).
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    /// Number of KV reads of `path` so far (any mount).
    pub fn reads(&self, path: &str) -> usize {
        let needle = format!("/data/{}", path.trim_matches('/'));
        self.requests()
            .iter()
            .filter(|r| r.starts_with("GET ") && r.ends_with(&needle))
            .count()
    }

    /// Forget the request log.
    pub fn clear_requests(&self) {
        self.state.lock().unwrap().log.clear();
    }
}

impl Drop for FakeVault {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One connection: requests until the client closes it.
fn serve(conn: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, target) = match (parts.next(), parts.next()) {
            (Some(m), Some(t)) => (m.to_owned(), t.to_owned()),
            _ => return Ok(()),
        };
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        let path = target.split('?').next().unwrap_or_default().to_owned();
        let (status, reply) = handle(state, &method, &path, &headers, &body);
        let text = reply.map(|v| v.to_string()).unwrap_or_default();
        let reason = match status {
            200 => "OK",
            204 => "No Content",
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            _ => "Service Unavailable",
        };
        write!(
            out,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        )?;
        out.flush()?;
    }
}

fn errors(status: u16, messages: &[&str]) -> (u16, Option<Value>) {
    (status, Some(json!({ "errors": messages })))
}

fn envelope(data: Value, auth: Value) -> Value {
    json!({
        "request_id": "00000000-0000-0000-0000-000000000000",
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": data,
        "wrap_info": null,
        "warnings": null,
        "auth": auth,
    })
}

fn handle(
    state: &Mutex<State>,
    method: &str,
    path: &str,
    headers: &BTreeMap<String, String>,
    body: &[u8],
) -> (u16, Option<Value>) {
    let mut s = state.lock().unwrap();
    s.log.push(format!("{method} {path}"));
    let Some(rest) = path.strip_prefix("/v1/") else {
        return errors(404, &[]);
    };
    let token_ok = headers
        .get("x-vault-token")
        .is_some_and(|t| s.tokens.contains(t));
    if rest == "auth/approle/login" && method == "POST" {
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let given = (
            body["role_id"].as_str().unwrap_or_default(),
            body["secret_id"].as_str().unwrap_or_default(),
        );
        return match &s.approle {
            Some((r, sid)) if (r.as_str(), sid.as_str()) == given => {
                s.issued += 1;
                let token = format!("fake-approle-token-{}", s.issued);
                s.tokens.insert(token.clone());
                let auth = json!({
                    "client_token": token,
                    "accessor": "fake-accessor",
                    "policies": ["default"],
                    "token_policies": ["default"],
                    "metadata": {"role_name": "cwm"},
                    "lease_duration": 3600,
                    "renewable": true,
                    "entity_id": "fake-entity",
                    "token_type": "service",
                    "orphan": true,
                });
                (200, Some(envelope(Value::Null, auth)))
            }
            _ => errors(400, &["invalid role or secret ID"]),
        };
    }
    if !token_ok {
        return errors(403, &["permission denied"]);
    }
    if rest == "auth/token/lookup-self" {
        let data = json!({"policies": ["root"], "ttl": 0, "renewable": false});
        return (200, Some(envelope(data, Value::Null)));
    }
    if let Some(mount) = rest.strip_prefix("sys/mounts/") {
        if method != "POST" && method != "PUT" {
            return errors(405, &[]);
        }
        s.mounts.insert(mount.trim_matches('/').to_owned());
        return (204, None);
    }
    if let Some((mount, secret)) = rest.split_once('/')
        && s.kv1_mounts.contains(mount)
    {
        if method != "GET" {
            return errors(405, &[]);
        }
        let key = format!("{mount}/{}", secret.trim_matches('/'));
        return match s.secrets.get(&key) {
            None => errors(404, &[]),
            Some((fields, _)) => (
                200,
                Some(envelope(Value::Object(fields.clone()), Value::Null)),
            ),
        };
    }
    let Some((mount, secret)) = rest.split_once("/data/") else {
        return errors(404, &[]);
    };
    if !s.mounts.contains(mount) {
        return errors(404, &["no handler for route"]);
    }
    let key = format!("{mount}/{}", secret.trim_matches('/'));
    match method {
        "GET" => {
            if s.unavailable > 0 {
                s.unavailable -= 1;
                return errors(503, &["Vault is sealed"]);
            }
            match s.secrets.get(&key) {
                None => errors(404, &[]),
                Some((fields, version)) => {
                    let data = json!({
                        "data": fields,
                        "metadata": {
                            "created_time": "2026-01-01T00:00:00Z",
                            "custom_metadata": null,
                            "deletion_time": "",
                            "destroyed": false,
                            "version": version,
                        },
                    });
                    (200, Some(envelope(data, Value::Null)))
                }
            }
        }
        "POST" | "PUT" => {
            let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let Some(fields) = body["data"].as_object().cloned() else {
                return errors(400, &["no data provided"]);
            };
            let entry = s.secrets.entry(key).or_insert_with(|| (Map::new(), 0));
            entry.0 = fields;
            entry.1 += 1;
            let data = json!({"version": entry.1, "created_time": "2026-01-01T00:00:00Z",
                "deletion_time": "", "destroyed": false, "custom_metadata": null});
            (200, Some(envelope(data, Value::Null)))
        }
        _ => errors(405, &[]),
    }
}
