//! Black-box tests of the `cwm-connector` binary: settings errors and startup failures exit 1
//! with a message on stderr, `--help` documents every variable, SIGTERM stops it with exit 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use cwm_tests::binary;

/// Every variable the Python gateway's connector reads.
const ENV_VARS: &[&str] = &[
    "CONNECTOR_CLOUD_URL",
    "CONNECTOR_CHANNEL",
    "CONNECTOR_TOKEN",
    "CONNECTOR_PROTOCOL",
    "CONNECTOR_RECONNECT_DELAY",
    "CONNECTOR_MAX_RECONNECT_DELAY",
    "CONNECTOR_HEARTBEAT_TIMEOUT",
    "CONNECTOR_CONNECTION_TIMEOUT",
    "CONNECTOR_MAX_CONCURRENT_REQUESTS",
    "CONNECTOR_ACK_TIMEOUT",
    "CONNECTOR_LOG_LEVEL",
    "CONNECTOR_VERIFY_SSL",
    "CONNECTOR_CA_CERT_PATH",
    "CONNECTOR_CLIENT_CERT_PATH",
    "CONNECTOR_CLIENT_KEY_PATH",
    "CONNECTOR_ID",
    "CONNECTOR_TARGET_URL",
    "CONNECTOR_TARGET_METHOD",
    "CONNECTOR_TARGET_TIMEOUT",
    "CONNECTOR_WEBHOOKS_CONFIG",
    "CONNECTOR_CONNECTIONS_CONFIG",
    "CONNECTOR_ETCD_HOST",
    "CONNECTOR_ETCD_PORT",
    "CONNECTOR_ETCD_PREFIX",
    "CONNECTOR_NAMESPACE",
];

fn connector(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(binary("cwm-connector"));
    cmd.current_dir(dir).env_clear().args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_documents_every_setting_and_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = connector(dir.path(), &["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for var in ENV_VARS {
        assert!(help.contains(var), "{var} missing from --help:\n{help}");
    }
    for flag in [
        "--config",
        "--cloud-url",
        "--channel",
        "--token",
        "--target-url",
        "--protocol",
        "--log-level",
        "--connector-id",
        "--no-verify-ssl",
        "--webhooks-config",
        "--connections-config",
        "--etcd-host",
        "--etcd-port",
        "--etcd-prefix",
        "--namespace",
        "--vault-addr",
        "--vault-token",
        "SECRETS_BACKEND",
        "VAULT_ROLE_ID",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn invalid_settings_exit_1_listing_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = connector(dir.path(), &[], &[("CONNECTOR_CHANNEL", "bad..channel")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    for part in [
        "cloud_url is required",
        "channel \"bad..channel\" is invalid",
        "token is required",
        "Either default_target/targets, webhooks_config, or etcd_host must be configured",
    ] {
        assert!(err.contains(part), "{part} missing from: {err}");
    }

    let out = connector(
        dir.path(),
        &[
            "--target-url",
            "http://127.0.0.1:9/",
            "--etcd-host",
            "localhost",
        ],
        &[
            ("CONNECTOR_CLOUD_URL", "http://127.0.0.1:9"),
            ("CONNECTOR_CHANNEL", "c"),
            ("CONNECTOR_TOKEN", "secret-token-value"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("Only one delivery mode allowed"), "{err}");
    assert!(!err.contains("secret-token-value"), "{err}");
}

#[test]
fn bad_files_exit_1_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.json"),
        r#"{"cloud_url": "http://127.0.0.1:9", "channel": "c", "token": "t", "heartbeat_timeout": "often"}"#,
    )
    .unwrap();
    let out = connector(dir.path(), &["-c", "c.json"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("heartbeat_timeout"),
        "{}",
        stderr(&out)
    );

    let out = connector(dir.path(), &["-c", "missing.yaml"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("missing.yaml"), "{}", stderr(&out));

    // Module mode: the webhooks file must be readable at start.
    let out = connector(
        dir.path(),
        &["--webhooks-config", "nope.json"],
        &[
            ("CONNECTOR_CLOUD_URL", "http://127.0.0.1:9"),
            ("CONNECTOR_CHANNEL", "c"),
            ("CONNECTOR_TOKEN", "t"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("nope.json"), "{}", stderr(&out));
}

#[test]
fn incomplete_vault_settings_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = connector(
        dir.path(),
        &["--webhooks-config", "w.json"],
        &[
            ("CONNECTOR_CLOUD_URL", "http://127.0.0.1:9"),
            ("CONNECTOR_CHANNEL", "c"),
            ("CONNECTOR_TOKEN", "t"),
            ("SECRETS_BACKEND", "vault"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("VAULT_ADDR is required"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn etcd_unreachable_at_start_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let port = cwm_testkit::free_port().to_string();
    let out = connector(
        dir.path(),
        &[],
        &[
            ("CONNECTOR_CLOUD_URL", "http://127.0.0.1:9"),
            ("CONNECTOR_CHANNEL", "c"),
            ("CONNECTOR_TOKEN", "t"),
            ("CONNECTOR_ETCD_HOST", "127.0.0.1"),
            ("CONNECTOR_ETCD_PORT", &port),
            ("CONNECTOR_CONNECTION_TIMEOUT", "1"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("etcd"), "{}", stderr(&out));
}

#[test]
fn sigterm_stops_it_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let dead = format!("http://127.0.0.1:{}", cwm_testkit::free_port());
    let mut child = Command::new(binary("cwm-connector"))
        .current_dir(dir.path())
        .env_clear()
        .env("CONNECTOR_CLOUD_URL", &dead)
        .env("CONNECTOR_CHANNEL", "c")
        .env("CONNECTOR_TOKEN", "t")
        .env("CONNECTOR_TARGET_URL", &dead)
        .env("CONNECTOR_PROTOCOL", "sse")
        .env("CONNECTOR_RECONNECT_DELAY", "0.1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The signal handlers are installed before "connector starting" is logged.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("no startup log line");
        if line.contains("connector starting") {
            break;
        }
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}
