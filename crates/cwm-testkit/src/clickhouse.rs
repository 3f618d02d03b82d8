//! A ClickHouse server on free loopback ports, with its own data directory, stopped on drop.
//!
//! The server gets a minimal `config.xml` and `users.xml` written into a temporary directory
//! (the Debian 18.16 server needs both), listens on 127.0.0.1 only, logs to files in that
//! directory and keeps `system.query_log` (flushed every 100 ms) so tests can count queries.
//! It runs as the current user; ClickHouse 18.16 does not refuse to run as root.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, require_binary};

/// A running `clickhouse-server`. Killed, and its directory removed, on drop.
pub struct ClickHouse {
    child: Option<Child>,
    http_port: u16,
    tcp_port: u16,
    interserver_port: u16,
    dir: tempfile::TempDir,
}

/// An answer of the HTTP interface: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryReply {
    /// The HTTP status (200 when the query succeeded).
    pub status: u16,
    /// The result, or ClickHouse's error text.
    pub body: String,
}

impl ClickHouse {
    /// Start a server and wait until `GET /ping` answers `Ok.`.
    pub fn start() -> Self {
        require_binary("clickhouse-server", "clickhouse-server");
        let mut ch = Self {
            child: None,
            http_port: free_port(),
            tcp_port: free_port(),
            interserver_port: free_port(),
            dir: tempfile::tempdir().expect("clickhouse dir"),
        };
        ch.write_config();
        ch.spawn();
        ch
    }

    fn write_config(&self) {
        let d = self.dir.path().display();
        let config = format!(
            r#"<?xml version="1.0"?>
<yandex>
  <logger>
    <level>information</level>
    <log>{d}/server.log</log>
    <errorlog>{d}/server.err.log</errorlog>
    <console>0</console>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http}</http_port>
  <tcp_port>{tcp}</tcp_port>
  <interserver_http_port>{inter}</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>users.xml</users_config>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <query_log>
    <database>system</database>
    <table>query_log</table>
    <flush_interval_milliseconds>100</flush_interval_milliseconds>
  </query_log>
</yandex>
"#,
            http = self.http_port,
            tcp = self.tcp_port,
            inter = self.interserver_port,
        );
        let users = r#"<?xml version="1.0"?>
<yandex>
  <profiles>
    <default>
      <log_queries>1</log_queries>
    </default>
  </profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>::/0</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas>
    <default>
      <interval>
        <duration>3600</duration>
        <queries>0</queries>
        <errors>0</errors>
        <result_rows>0</result_rows>
        <read_rows>0</read_rows>
        <execution_time>0</execution_time>
      </interval>
    </default>
  </quotas>
</yandex>
"#;
        std::fs::write(self.dir.path().join("config.xml"), config).expect("write config.xml");
        std::fs::write(self.dir.path().join("users.xml"), users).expect("write users.xml");
    }

    fn spawn(&mut self) {
        let out = std::fs::File::create(self.dir.path().join("console.log")).expect("console log");
        let err = out.try_clone().expect("console log");
        let child = Command::new("clickhouse-server")
            .arg(format!(
                "--config-file={}",
                self.dir.path().join("config.xml").display()
            ))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start clickhouse-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(r) = self.http("GET", "/ping", "")
                && r.status == 200
                && r.body.trim() == "Ok."
            {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("clickhouse-server exited early ({status}): {}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "clickhouse-server did not answer /ping within 60 s: {}",
            self.logs()
        );
    }

    /// The console and error logs, for failure messages.
    pub fn logs(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "console: {}\nerrors: {}",
            read("console.log"),
            read("server.err.log")
        )
    }

    /// The HTTP interface's port.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The native protocol's port.
    pub fn tcp_port(&self) -> u16 {
        self.tcp_port
    }

    /// `http://127.0.0.1:<http_port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The server's directory (config, logs, data).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Run `sql` over HTTP and return the answer whatever its status.
    pub fn try_query(&self, sql: &str) -> QueryReply {
        self.http("POST", "/", sql)
            .unwrap_or_else(|e| panic!("ClickHouse HTTP request failed: {e}"))
    }

    /// Run `sql` over HTTP; panics unless the server answers 200. Returns the body.
    pub fn query(&self, sql: &str) -> String {
        let r = self.try_query(sql);
        assert_eq!(r.status, 200, "query {sql:?} failed: {}", r.body);
        r.body
    }

    /// Write `system.query_log` now (otherwise it is written every 100 ms).
    pub fn flush_logs(&self) {
        self.query("SYSTEM FLUSH LOGS");
    }

    /// Kill the server (SIGKILL); data stays for [`ClickHouse::restart`].
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same ports with the same data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// One HTTP/1.0 exchange (the server closes the connection after the answer).
    fn http(&self, method: &str, path: &str, body: &str) -> std::io::Result<QueryReply> {
        let mut s = TcpStream::connect(("127.0.0.1", self.http_port))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        s.set_write_timeout(Some(Duration::from_secs(60)))?;
        let head = format!(
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes())?;
        s.write_all(body.as_bytes())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "no end of headers")
        })?;
        let status = head
            .lines()
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad status"))?;
        Ok(QueryReply {
            status,
            body: body.to_owned(),
        })
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clickhouse_starts_answers_and_restarts_with_its_data() {
        let mut ch = ClickHouse::start();
        assert_eq!(ch.query("SELECT 1 + 1").trim(), "2");
        ch.query("CREATE TABLE t (x UInt8) ENGINE = MergeTree() ORDER BY x");
        ch.query("INSERT INTO t VALUES (7)");
        let bad = ch.try_query("SELECT * FROM nowhere");
        assert_ne!(bad.status, 200);
        assert!(bad.body.contains("nowhere"), "{}", bad.body);
        ch.restart();
        assert_eq!(ch.query("SELECT x FROM t").trim(), "7");
    }
}
