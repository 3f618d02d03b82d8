//! Black-box tests of `cwmctl` (import, export, validate) against a real etcd, and the migration
//! path end to end: files -> etcd -> a receiver that answers as the file backend did.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};
use std::time::Duration;

use cwm_tests::{Etcd, Receiver, binary, eventually};
use serde_json::Value;

const WEBHOOKS: &str = r#"{
  "hook_a": {"module": "log", "authorization": "Bearer {$MIGRATED_TOKEN}"},
  "hook_b": {"module": "save_to_disk", "module-config": {"path": "out"}, "connection": "redis_main"}
}"#;
const CONNECTIONS: &str =
    r#"{"redis_main": {"type": "redis-rq", "host": "localhost", "port": "{$REDIS_PORT:6379}"}}"#;

struct Ctl {
    dir: tempfile::TempDir,
    port: u16,
}

impl Ctl {
    fn new(etcd: &Etcd) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("webhooks.json"), WEBHOOKS).unwrap();
        std::fs::write(dir.path().join("connections.json"), CONNECTIONS).unwrap();
        Self {
            dir,
            port: etcd.port(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(binary("cwmctl"))
            .current_dir(self.dir.path())
            .env_clear()
            .env("ETCD_HOST", "127.0.0.1")
            .env("ETCD_PORT", self.port.to_string())
            .env("MIGRATED_TOKEN", "tok")
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cwmctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn keys(etcd: &Etcd) -> String {
    etcd.ctl_ok(&["get", "--prefix", "/cwm/", "--keys-only"])
}

#[test]
fn import_dry_run_no_overwrite_and_force() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    let out = ctl.ok(&["import", "--namespace", "team-a", "--dry-run"]);
    assert!(out.contains("dry run"), "{out}");
    assert!(out.contains("3 would be created"), "{out}");
    assert!(keys(&etcd).trim().is_empty(), "dry run writes nothing");

    let out = ctl.ok(&["import", "--namespace", "team-a"]);
    assert!(out.contains("3 created"), "{out}");
    let k = keys(&etcd);
    for key in [
        "/cwm/team-a/webhooks/hook_a",
        "/cwm/team-a/webhooks/hook_b",
        "/cwm/global/connections/redis_main",
    ] {
        assert!(k.contains(key), "{key} in {k}");
    }
    // Raw values: the placeholder is stored, not the local environment's value.
    let v = etcd.ctl_ok(&["get", "/cwm/team-a/webhooks/hook_a", "--print-value-only"]);
    assert!(v.contains("{$MIGRATED_TOKEN}"), "{v}");

    etcd.put("/cwm/team-a/webhooks/hook_a", r#"{"module":"log"}"#);
    let out = ctl.ok(&["import", "--namespace", "team-a"]);
    assert!(
        out.contains("1 skipped") && out.contains("2 unchanged"),
        "{out}"
    );
    assert_eq!(
        etcd.ctl_ok(&["get", "/cwm/team-a/webhooks/hook_a", "--print-value-only"])
            .trim(),
        r#"{"module":"log"}"#
    );
    let out = ctl.ok(&["import", "--namespace", "team-a", "--force"]);
    assert!(out.contains("1 overwritten"), "{out}");
    assert!(
        etcd.ctl_ok(&["get", "/cwm/team-a/webhooks/hook_a", "--print-value-only"])
            .contains("MIGRATED_TOKEN")
    );

    let bad = ctl.run(&["import", "--namespace", "bad namespace!"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn invalid_entries_block_the_import_and_fail_validation() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    std::fs::write(
        ctl.dir.path().join("webhooks.json"),
        r#"{"ok":{"module":"log"},"bad":{"module":"no_such_module"},"admin":{"module":"log"}}"#,
    )
    .unwrap();
    let out = ctl.run(&["import"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("webhooks/bad") && text.contains("unknown module"),
        "{text}"
    );
    assert!(text.contains("webhooks/admin"), "{text}");
    assert!(keys(&etcd).trim().is_empty(), "nothing imported");

    let out = ctl.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 invalid"));

    std::fs::write(ctl.dir.path().join("webhooks.json"), WEBHOOKS).unwrap();
    assert!(
        ctl.ok(&["validate"])
            .contains("3 entries checked, 0 invalid")
    );

    etcd.put("/cwm/ns/webhooks/good", r#"{"module":"log"}"#);
    etcd.put("/cwm/ns/webhooks/broken", "not json");
    etcd.put(
        "/cwm/global/connections/meta",
        r#"{"type":"redis-rq","host":"169.254.169.254","port":6379}"#,
    );
    let out = ctl.run(&["validate", "--etcd"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/cwm/ns/webhooks/broken") && text.contains("/cwm/global/connections/meta"),
        "{text}"
    );
    assert!(text.contains("3 entries checked, 2 invalid"), "{text}");
}

#[test]
fn export_round_trips() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    ctl.ok(&["import", "--namespace", "prod"]);
    let out = ctl.ok(&[
        "export",
        "--namespace",
        "prod",
        "--webhooks",
        "w.json",
        "--connections",
        "c.json",
    ]);
    assert!(out.contains("2 webhooks"), "{out}");
    let read = |n: &str| {
        serde_json::from_str::<Value>(&std::fs::read_to_string(ctl.dir.path().join(n)).unwrap())
            .unwrap()
    };
    assert_eq!(
        read("w.json"),
        serde_json::from_str::<Value>(WEBHOOKS).unwrap()
    );
    assert_eq!(
        read("c.json"),
        serde_json::from_str::<Value>(CONNECTIONS).unwrap()
    );
    let again = ctl.run(&[
        "export",
        "--namespace",
        "prod",
        "--webhooks",
        "w.json",
        "--connections",
        "c.json",
    ]);
    assert_eq!(again.status.code(), Some(1), "no overwrite without --force");
}

#[test]
fn migrated_config_answers_like_the_file_backend() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    let probe = |rx: &Receiver, path: &str| {
        [
            rx.post_with(path, &[("authorization", "Bearer tok")], "{}")
                .status,
            rx.post_with(path, &[("authorization", "Bearer wrong")], "{}")
                .status,
        ]
    };
    let env = [("MIGRATED_TOKEN", "tok")];
    let file_rx = Receiver::start(
        &[
            ("webhooks.json", WEBHOOKS),
            ("connections.json", CONNECTIONS),
        ],
        &env,
    );
    let file_answers: Vec<_> = ["/webhook/hook_a", "/webhook/hook_b"]
        .iter()
        .map(|p| probe(&file_rx, p))
        .collect();
    assert_eq!(file_answers, vec![[200, 401], [200, 200]]);

    ctl.ok(&["import"]);
    let port = etcd.port().to_string();
    let etcd_rx = Receiver::start(
        &[],
        &[
            ("CONFIG_BACKEND", "etcd"),
            ("ETCD_HOST", "127.0.0.1"),
            ("ETCD_PORT", &port),
            ("MIGRATED_TOKEN", "tok"),
        ],
    );
    assert!(eventually(Duration::from_secs(10), || etcd_rx
        .get("/health")
        .status
        == 200));
    for (i, id) in ["hook_a", "hook_b"].iter().enumerate() {
        assert_eq!(
            probe(&etcd_rx, &format!("/webhook/{id}")),
            file_answers[i],
            "{id}"
        );
        assert_eq!(
            probe(&etcd_rx, &format!("/webhook/default/{id}")),
            file_answers[i],
            "default/{id}"
        );
    }
}

/// `cwmctl` without ETCD_* variables: only flags say where etcd is.
fn bare_ctl(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(binary("cwmctl"))
        .current_dir(dir)
        .env_clear()
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn etcd_flags_go_before_or_after_the_subcommand() {
    let etcd = Etcd::start();
    etcd.put("/cwm/ns/webhooks/h", r#"{"module":"log"}"#);
    let dir = tempfile::tempdir().unwrap();
    let port = etcd.port().to_string();
    let flags = ["--etcd-host", "127.0.0.1", "--etcd-port", &port];
    let after = [&["validate", "--etcd"][..], &flags].concat();
    let before = [&flags[..], &["validate", "--etcd"]].concat();
    for args in [after, before] {
        let out = bare_ctl(dir.path(), &args);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{args:?}: {stdout}{stderr}");
        assert!(stdout.contains("1 entries checked, 0 invalid"), "{stdout}");
    }
    // A flag after the subcommand wins over the variable, as before it.
    let out = Command::new(binary("cwmctl"))
        .current_dir(dir.path())
        .env_clear()
        .env("ETCD_ENDPOINTS", "127.0.0.1:1")
        .args([
            "export",
            "--namespace",
            "ns",
            "--etcd-endpoints",
            &etcd.endpoint(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(dir.path().join("webhooks.json").is_file());

    for sub in ["import", "export", "validate"] {
        let out = bare_ctl(dir.path(), &[sub, "--help"]);
        let (help, _) = text(&out);
        for flag in [
            "--etcd-host",
            "--etcd-port",
            "--etcd-endpoints",
            "--etcd-prefix",
            "--etcd-ca-cert",
            "--etcd-cert",
            "--etcd-key",
        ] {
            assert!(help.contains(flag), "`cwmctl {sub} --help` lists {flag}");
        }
    }
}

#[test]
fn validate_names_keys_that_fit_no_layout() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    etcd.put("/cwm/default/webhooks/good", r#"{"module":"log"}"#);
    let misplaced = [
        "/cwm/default/webhook/x",
        "/cwm/global/connection/y",
        "/cwm/x",
    ];
    for key in misplaced {
        etcd.put(key, r#"{"module":"log"}"#);
    }
    let out = ctl.run(&["validate", "--etcd"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    for key in misplaced {
        assert!(
            stdout.contains(&format!(
                "  invalid  {key}: fits neither /cwm/{{namespace}}/webhooks/{{id}} nor \
                 /cwm/global/connections/{{name}}; receivers ignore it"
            )),
            "{key}: {stdout}"
        );
    }
    assert!(!stdout.contains("webhooks/good"), "{stdout}");
    assert!(stdout.contains("4 entries checked, 3 invalid"), "{stdout}");
}

#[test]
fn export_of_an_empty_namespace_fails() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    ctl.ok(&["import", "--namespace", "prod"]);
    let out = ctl.run(&[
        "export",
        "--namespace",
        "prd",
        "--webhooks",
        "w.json",
        "--connections",
        "c.json",
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(
        stderr.trim(),
        "cwmctl: namespace \"prd\" has no webhooks in etcd (no key under /cwm/prd/webhooks/); \
         nothing written"
    );
    assert!(stdout.is_empty(), "{stdout}");
    assert!(!ctl.dir.path().join("w.json").exists());
    assert!(!ctl.dir.path().join("c.json").exists());
}

#[test]
fn tls_files_that_do_not_parse_are_bad_usage() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    cwm_testkit::make_certs(d);
    std::fs::write(d.join("ca.pem"), "not a certificate\n").unwrap();
    let ca = d.join("ca.pem").display().to_string();
    let out = bare_ctl(d, &["validate", "--etcd", "--etcd-ca-cert", &ca]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "CA certificate (ETCD_CA_CERT) {ca}: is not a PEM certificate"
        )),
        "{stderr}"
    );
    let key = d.join("client.key").display().to_string();
    let out = bare_ctl(
        d,
        &[
            "import",
            "--etcd-cert",
            &key,
            "--etcd-key",
            &key,
            "--dry-run",
        ],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "client certificate (ETCD_CERT) {key}: holds a private key, not a certificate"
        )),
        "{stderr}"
    );
}

#[test]
fn plain_endpoint_against_a_tls_etcd_says_tls_is_needed() {
    let etcd = cwm_testkit::TlsEtcd::start(false);
    let d = etcd.dir();
    let port = etcd.port();
    let port = port.to_string();
    let out = bare_ctl(
        d,
        &[
            "validate",
            "--etcd",
            "--etcd-host",
            "127.0.0.1",
            "--etcd-port",
            &port,
        ],
    );
    drop(etcd);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "; the server at 127.0.0.1:{port} answered with TLS: set ETCD_CA_CERT or use an \
             https:// endpoint"
        )),
        "{stderr}"
    );
}
