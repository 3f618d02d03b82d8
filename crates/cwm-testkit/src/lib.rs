//! Test support: real servers started on free loopback ports with their own data directories,
//! stopped when the handle drops. A missing server binary is a test failure with a clear message,
//! never a silent skip.
#![forbid(unsafe_code)]
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod clickhouse;
pub use clickhouse::ClickHouse;
mod tls;
pub use tls::{TlsEtcd, make_certs, openssl};
mod redis;
pub use redis::Redis;
mod rabbitmq;
pub use rabbitmq::RabbitMq;
mod vault;
pub use vault::{FAKE_VAULT_ROOT_TOKEN, FakeVault};

/// A free TCP port on 127.0.0.1 (bound once, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// Panics with an installation hint when `bin` is not on PATH.
pub fn require_binary(bin: &str, debian_package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(bin);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{bin}` is not installed: this test needs a real server. Run `make test` (it installs the \
         Debian package `{debian_package}`), or `apt-get install {debian_package}`."
    );
}

/// Wait until something accepts TCP connections on `port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A single-member etcd cluster on free ports. Stopped (and its data removed) on drop.
pub struct Etcd {
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    data: tempfile::TempDir,
    extra_args: Vec<String>,
}

impl Etcd {
    /// Start etcd and wait until it answers.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Start etcd with extra command-line flags (e.g. `--auth-token=simple`).
    pub fn start_with(extra_args: &[&str]) -> Self {
        require_binary("etcd", "etcd-server");
        let mut etcd = Self {
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            data: tempfile::tempdir().expect("etcd data dir"),
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
        };
        etcd.spawn();
        etcd
    }

    fn spawn(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.data.path().join("etcd.log")).expect("etcd log");
        let child = Command::new("etcd")
            .arg("--name=test")
            .arg(format!(
                "--data-dir={}",
                self.data.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--initial-cluster-state=new")
            .arg("--log-level=error")
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        assert!(
            wait_for_port(self.client_port, Duration::from_secs(20)),
            "etcd did not open its client port; see {}",
            self.data.path().join("etcd.log").display()
        );
        // The port opens before the member is ready to serve; wait for a successful read.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.ctl(&["get", "/__ready"]).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd did not become ready");
    }

    /// `127.0.0.1:port` of the client endpoint.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn port(&self) -> u16 {
        self.client_port
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// Run `etcdctl` against this member (API v3) and return its output.
    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        require_binary("etcdctl", "etcd-client");
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()))
            .args(args)
            .output()
            .expect("run etcdctl")
    }

    /// `etcdctl` that must succeed; returns stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn put(&self, key: &str, value: &str) {
        self.ctl_ok(&["put", key, value]);
    }

    pub fn del(&self, key: &str) {
        self.ctl_ok(&["del", key]);
    }

    /// Kill the server (SIGKILL); data stays for [`Etcd::restart`].
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same ports with the same data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn_existing();
    }

    fn spawn_existing(&mut self) {
        // A restarted member must not re-bootstrap the cluster.
        self.extra_args
            .retain(|a| a != "--initial-cluster-state=existing");
        self.extra_args
            .push("--initial-cluster-state=existing".into());
        self.spawn();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_starts_restarts_and_keeps_data() {
        let mut etcd = Etcd::start();
        etcd.put("/k", "v");
        assert!(
            etcd.ctl_ok(&["get", "/k", "--print-value-only"])
                .contains('v')
        );
        etcd.restart();
        assert!(
            etcd.ctl_ok(&["get", "/k", "--print-value-only"])
                .contains('v')
        );
    }

    #[test]
    fn two_etcds_run_side_by_side() {
        let a = Etcd::start();
        let b = Etcd::start();
        a.put("/x", "a");
        assert!(
            b.ctl_ok(&["get", "/x", "--print-value-only"])
                .trim()
                .is_empty()
        );
    }
}
