//! Black-box test support: start the built `cwm-receiver` on a free port with its own working
//! directory and talk HTTP to it, the way an operator or a sender would.
#![forbid(unsafe_code)]
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use cwm_testkit::{Etcd, free_port};
use serde_json::Value;

/// Path of a workspace binary built by `cargo build --bins` (which `make test` runs first).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, which `make test` does)",
        bin.display()
    );
    bin
}

/// A running receiver, killed on drop.
pub struct Receiver {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

/// An HTTP response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `detail` of a JSON error answer; empty when it has none.
    pub fn detail(&self) -> String {
        self.json()["detail"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Receiver {
    /// Write the given files into a fresh working directory and start the receiver there.
    pub fn start(files: &[(&str, &str)], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("receiver dir");
        for (name, content) in files {
            let path = dir.path().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).unwrap();
            }
            std::fs::write(path, content).unwrap();
        }
        Self::start_in(dir, env)
    }

    pub fn start_in(dir: tempfile::TempDir, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut rx = Self {
            child: None,
            port,
            dir,
        };
        rx.spawn(env);
        rx
    }

    /// Like [`Receiver::start`], with stdout a pipe that nobody reads until the returned handle
    /// is read or dropped: a blocked stdout, as a stuck log collector makes it.
    pub fn start_with_stdout_pipe(
        files: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> (Self, std::process::ChildStdout) {
        let dir = tempfile::tempdir().expect("receiver dir");
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let mut rx = Self {
            child: None,
            port: free_port(),
            dir,
        };
        rx.spawn_with(env, Stdio::piped());
        let pipe = rx
            .child
            .as_mut()
            .unwrap()
            .stdout
            .take()
            .expect("stdout pipe");
        (rx, pipe)
    }

    fn spawn(&mut self, env: &[(&str, &str)]) {
        let stdout = std::fs::File::create(self.dir.path().join("stdout.log")).unwrap();
        self.spawn_with(env, stdout.into());
    }

    fn spawn_with(&mut self, env: &[(&str, &str)], stdout: Stdio) {
        let stderr = std::fs::File::create(self.dir.path().join("stderr.log")).unwrap();
        let mut cmd = Command::new(binary("cwm-receiver"));
        cmd.current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", self.port.to_string())
            .env("CONFIG_RELOAD_DEBOUNCE_SECONDS", "0.2")
            .env("LOG_LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("start cwm-receiver"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("cwm-receiver exited early ({status}): {}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("cwm-receiver did not listen within 20 s: {}", self.stderr());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// The process id of the running receiver.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Open file descriptors of the receiver process (Linux).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Resident memory of the receiver process in KiB (Linux).
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Send SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// SIGKILL the receiver (a crash) and wait for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start the receiver again, on the same port and in the same directory, after [`kill`]
    /// or an exit.
    ///
    /// [`kill`]: Receiver::kill
    pub fn restart(&mut self, env: &[(&str, &str)]) {
        self.kill();
        self.spawn(env);
    }

    /// Wait for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "cwm-receiver did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], None)
    }

    pub fn post(&self, path: &str, body: &str) -> Reply {
        self.request(
            "POST",
            path,
            &[("content-type", "application/json")],
            Some(body.as_bytes()),
        )
    }

    pub fn post_with(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        self.request("POST", path, headers, Some(body.as_bytes()))
    }

    /// [`Receiver::post`] with more headers.
    pub fn post_json(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.post_with(path, &all, body)
    }

    /// The `provider` part of `GET /admin/config-status`, asked with the admin token `token`.
    /// `POST /admin/reload-config` with the admin `token`; the reply, whatever its status.
    pub fn reload_config(&self, token: &str) -> Reply {
        self.request(
            "POST",
            "/admin/reload-config",
            &[("authorization", &format!("Bearer {token}"))],
            Some(b"{}"),
        )
    }

    pub fn config_status(&self, token: &str) -> Value {
        let r = self.request(
            "GET",
            "/admin/config-status",
            &[("authorization", &format!("Bearer {token}"))],
            None,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["provider"].clone()
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let uri = self.url(path);
        let result = if let Some(body) = body {
            let mut req = match method {
                "POST" => agent.post(&uri),
                "PUT" => agent.put(&uri),
                other => panic!("unsupported method with body: {other}"),
            };
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.send(body)
        } else {
            let mut req = match method {
                "GET" => agent.get(&uri),
                "DELETE" => agent.delete(&uri),
                other => panic!("unsupported method without body: {other}"),
            };
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.call()
        };
        let mut resp = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Open a raw connection (for tests that control the body's pace).
    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Read one HTTP/1.1 response from a raw stream: its body is `Content-Length` bytes or, without
/// that header, everything until the server closes. Chunked bodies are refused.
pub fn read_reply(stream: &mut TcpStream) -> Reply {
    try_read_reply(stream).unwrap_or_else(|e| panic!("reading a response: {e}"))
}

/// [`read_reply`] that reports a closed or broken connection instead of panicking.
pub fn try_read_reply(stream: &mut TcpStream) -> io::Result<Reply> {
    let invalid = |msg: &str| io::Error::new(io::ErrorKind::InvalidData, msg.to_owned());
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut closed = false;
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut lines = head.lines();
            let status = lines
                .next()
                .and_then(|l| l.split(' ').nth(1))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| invalid("bad status line"))?;
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect();
            let header = |name: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_str())
            };
            if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
                return Err(invalid("chunked responses are not supported"));
            }
            let body_end = match header("content-length") {
                Some(v) => Some(
                    end + 4
                        + v.parse::<usize>()
                            .map_err(|_| invalid("bad content-length"))?,
                ),
                None => closed.then_some(buf.len()),
            };
            if let Some(body_end) = body_end.filter(|&e| buf.len() >= e) {
                let body = String::from_utf8_lossy(&buf[end + 4..body_end]).into_owned();
                return Ok(Reply {
                    status,
                    headers,
                    body,
                });
            }
        }
        if closed {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed before a full response: {:?}",
                    String::from_utf8_lossy(&buf)
                ),
            ));
        }
        let n = stream.read(&mut chunk)?;
        closed = n == 0;
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The entry of a config-status `provider`'s `rejected` list for config key `key`
/// (`webhooks/<id>`), when it is listed.
pub fn rejection(provider: &Value, key: &str) -> Option<Value> {
    provider["rejected"]
        .as_array()?
        .iter()
        .find(|r| r["key"] == key)
        .cloned()
}

/// Why webhook `id` is rejected, by a config-status `provider`; panics when it is not listed.
pub fn rejection_reason(provider: &Value, id: &str) -> String {
    rejection(provider, &format!("webhooks/{id}"))
        .unwrap_or_else(|| panic!("{id} not listed as rejected: {provider}"))["reason"]
        .as_str()
        .expect("a rejection has a reason")
        .to_owned()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// Puts per seeding transaction (etcd's default `--max-txn-ops`).
pub const SEED_TXN_OPS: usize = 128;
/// Seeding transactions in flight at once.
pub const SEED_TXNS_IN_FLIGHT: usize = 16;

/// Put `(key, value)` pairs into etcd fast: transactions of [`SEED_TXN_OPS`] puts,
/// [`SEED_TXNS_IN_FLIGHT`] in flight.
pub fn seed_etcd(endpoint: &str, pairs: Vec<(String, String)>) {
    let endpoint = endpoint.to_owned();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(async move {
            let client = etcd_client::Client::connect([endpoint], None)
                .await
                .expect("connect to etcd");
            let mut ops = pairs
                .into_iter()
                .map(|(k, v)| etcd_client::TxnOp::put(k, v, None));
            let mut in_flight = tokio::task::JoinSet::new();
            loop {
                while in_flight.len() < SEED_TXNS_IN_FLIGHT {
                    let batch: Vec<_> = ops.by_ref().take(SEED_TXN_OPS).collect();
                    if batch.is_empty() {
                        break;
                    }
                    let mut kv = client.kv_client();
                    in_flight.spawn(async move {
                        let txn = etcd_client::Txn::new().and_then(batch);
                        let resp = kv.txn(txn).await.expect("seed transaction");
                        assert!(resp.succeeded(), "seed transaction refused");
                    });
                }
                match in_flight.join_next().await {
                    Some(done) => done.expect("seed task"),
                    None => break,
                }
            }
        });
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Write all of `data`, ignoring a reset by the peer (it may answer early and close).
pub fn write_lossy(stream: &mut TcpStream, data: &[u8]) -> bool {
    stream.write_all(data).is_ok()
}

/// Poll `f` every 25 ms for up to `timeout`.
#[must_use = "assert the result: a condition that never held is a failure"]
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
