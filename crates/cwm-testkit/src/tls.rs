//! TLS test material made with `openssl`, and an etcd that speaks TLS only.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, require_binary, wait_for_port};

/// Run `openssl` with `args` in `dir`; a failure fails the test with openssl's message.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(require_binary("openssl", "openssl"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// In `dir`: a CA (`ca.pem`, `ca.key`) and, signed by it for 127.0.0.1, a server (`server.pem`,
/// `server.key`) and a client (`client.pem`, `client.key`) certificate, all PEM, valid one day.
pub fn make_certs(dir: &Path) {
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let run = |cmd: &str| openssl(dir, &cmd.split_whitespace().collect::<Vec<_>>());
    run(&format!(
        "req -x509 {ec} -keyout ca.key -out ca.pem -subj /CN=cwm-test-ca -days 1"
    ));
    for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!("subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n"),
        )
        .unwrap();
        run(&format!(
            "req {ec} -keyout {name}.key -out {name}.csr -subj /CN={name}"
        ));
        run(&format!(
            "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {name}.pem \
             -days 1 -extfile {name}.ext"
        ));
    }
}

/// An etcd that speaks TLS only, with the certificates of [`make_certs`] in [`TlsEtcd::dir`].
/// Killed on drop.
pub struct TlsEtcd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl TlsEtcd {
    /// Start it; with `client_cert_auth`, clients must present a certificate signed by the CA.
    pub fn start(client_cert_auth: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        make_certs(dir.path());
        let (port, peer) = (free_port(), free_port());
        let p = |f: &str| dir.path().join(f).display().to_string();
        let (client_url, peer_url) = (
            format!("https://127.0.0.1:{port}"),
            format!("http://127.0.0.1:{peer}"),
        );
        let mut cmd = Command::new(require_binary("etcd", "etcd-server"));
        cmd.arg("--name=tls")
            .arg(format!("--data-dir={}", p("data")))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=tls={peer_url}"))
            .arg(format!("--cert-file={}", p("server.pem")))
            .arg(format!("--key-file={}", p("server.key")))
            .arg("--log-level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if client_cert_auth {
            cmd.arg(format!("--trusted-ca-file={}", p("ca.pem")))
                .arg("--client-cert-auth");
        }
        let child = cmd.spawn().expect("start etcd");
        assert!(
            wait_for_port(port, Duration::from_secs(20)),
            "TLS etcd did not listen"
        );
        Self { child, port, dir }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where the certificates are (`ca.pem`, `server.pem`, `client.pem`, ...).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
