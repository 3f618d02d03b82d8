//! Black-box tests of `cwm-receiver` with CONFIG_BACKEND=etcd against a real etcd started here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use cwm_testkit::{TlsEtcd, make_certs};
use cwm_tests::{Etcd, Receiver, eventually, seed_etcd};
use serde_json::json;

/// Propagation deadline for one etcd change (the catalog's ≤W is 1 s; generous for a loaded CI box).
const W: Duration = Duration::from_secs(5);
const LOG: &str = r#"{"data_type":"json","module":"log"}"#;

fn token(t: &str) -> String {
    json!({"module": "log", "authorization": format!("Bearer {t}")}).to_string()
}

fn start(etcd: &Etcd, extra: &[(&str, &str)]) -> Receiver {
    let port = etcd.port().to_string();
    let mut env = vec![
        ("CONFIG_BACKEND", "etcd"),
        ("ETCD_HOST", "127.0.0.1"),
        ("ETCD_PORT", port.as_str()),
        ("ETCD_RECONNECT_INITIAL_MS", "100"),
        ("ETCD_RECONNECT_MAX_MS", "500"),
        ("CONFIG_RELOAD_ADMIN_TOKEN", "adm"),
    ];
    env.extend_from_slice(extra);
    Receiver::start(&[], &env)
}

fn status(rx: &Receiver) -> serde_json::Value {
    rx.request(
        "GET",
        "/admin/config-status",
        &[("authorization", "Bearer adm")],
        None,
    )
    .json()
}

fn health_etcd(rx: &Receiver) -> String {
    rx.get("/health").json()["components"]["etcd"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

fn bearer(rx: &Receiver, path: &str, t: &str) -> u16 {
    rx.post_with(path, &[("authorization", &format!("Bearer {t}"))], "{}")
        .status
}

#[test]
fn namespaces_route_and_isolate() {
    let etcd = Etcd::start();
    etcd.put("/cwm/ns_alpha/webhooks/hook1", &token("t_alpha"));
    etcd.put("/cwm/ns_alpha/webhooks/hook2", LOG);
    etcd.put("/cwm/ns_beta/webhooks/hook1", &token("t_beta"));
    etcd.put("/cwm/default/webhooks/fallback_hook", LOG);
    etcd.put("/cwm/my-ns_1/webhooks/h", LOG);
    etcd.put(
        "/cwm/global/connections/redis_main",
        r#"{"type":"redis-rq","host":"localhost","port":6379}"#,
    );
    let rx = start(&etcd, &[]);
    assert!(eventually(W, || rx.get("/health").status == 200));

    assert_eq!(bearer(&rx, "/webhook/ns_alpha/hook1", "t_alpha"), 200);
    assert_eq!(bearer(&rx, "/webhook/ns_alpha/hook1", "t_beta"), 401);
    assert_eq!(bearer(&rx, "/webhook/ns_beta/hook1", "t_beta"), 200);
    assert_eq!(bearer(&rx, "/webhook/ns_beta/hook1", "t_alpha"), 401);
    assert_eq!(rx.post("/webhook/ns_alpha/hook2", "{}").status, 200);
    assert_eq!(rx.post("/webhook/ns_beta/hook2", "{}").status, 404);
    assert_eq!(rx.post("/webhook/no_such_ns/hook1", "{}").status, 404);
    assert_eq!(rx.post("/webhook/my-ns_1/h", "{}").status, 200);
    // The flat route uses ETCD_NAMESPACE (default `default`).
    assert_eq!(rx.post("/webhook/fallback_hook", "{}").status, 200);
    assert_eq!(rx.post("/webhook/default/fallback_hook", "{}").status, 200);
    assert_eq!(rx.post("/webhook/hook2", "{}").status, 404);
    // Bad namespaces and ids.
    assert_eq!(rx.post("/webhook/bad%20namespace/hook1", "{}").status, 400);
    assert_eq!(
        rx.post(&format!("/webhook/{}/hook1", "a".repeat(65)), "{}")
            .status,
        400
    );
    assert_eq!(rx.post("/webhook/abc%0A/hook1", "{}").status, 400);
    assert_ne!(rx.post("/webhook/../../etc/hook1", "{}").status, 200);
    for id in ["admin", "a--b", "_x"] {
        assert_eq!(
            rx.post(&format!("/webhook/ns_alpha/{id}"), "{}").status,
            400,
            "{id}"
        );
    }

    let h = rx.get("/health");
    assert_eq!(h.status, 200);
    assert_eq!(
        h.json()["components"],
        json!({"config_manager":"healthy","etcd":"healthy","connections":{"redis_main":"idle"}})
    );
    let s = status(&rx);
    let p = &s["provider"];
    assert_eq!(p["backend"], "etcd");
    assert_eq!(p["connected"], true);
    assert_eq!(p["total_webhooks"], 5);
    assert_eq!(p["connections_count"], 1);
    assert_eq!(p["namespaces_count"], 4);
    assert!(p["revision"].as_i64().unwrap() > 0);
    assert_eq!(p["prefix"], "/cwm/");
    let m = rx.get("/metrics").body;
    assert!(m.contains("cwm_config_etcd_connected 1"), "{m}");
    assert!(m.contains("cwm_config_webhooks 5"));
}

#[test]
fn etcd_namespace_setting_and_per_namespace_catch_all() {
    let etcd = Etcd::start();
    etcd.put("/cwm/production/webhooks/github_events", LOG);
    etcd.put("/cwm/default/webhooks/other_id", LOG);
    etcd.put("/cwm/ns_a/webhooks/default", LOG);
    let rx = start(&etcd, &[("ETCD_NAMESPACE", "production")]);
    assert!(eventually(W, || rx
        .post("/webhook/github_events", "{}")
        .status
        == 200));
    assert_eq!(rx.post("/webhook/other_id", "{}").status, 404);
    assert_eq!(rx.post("/webhook/ns_a/anything", "{}").status, 200);
    assert_eq!(rx.post("/webhook/production/anything", "{}").status, 404);
}

#[test]
fn live_add_update_delete_and_rejected_keys() {
    let etcd = Etcd::start();
    etcd.put("/cwm/ns/webhooks/keep", LOG);
    let rx = start(&etcd, &[]);
    assert!(eventually(W, || rx.post("/webhook/ns/keep", "{}").status == 200));

    etcd.put("/cwm/ns/webhooks/new_hook", LOG);
    assert!(
        eventually(W, || rx.post("/webhook/ns/new_hook", "{}").status == 200),
        "live add"
    );
    etcd.put("/cwm/ns/webhooks/new_hook", &token("t2"));
    assert!(
        eventually(W, || bearer(&rx, "/webhook/ns/new_hook", "t2") == 200),
        "live update"
    );
    assert_eq!(rx.post("/webhook/ns/new_hook", "{}").status, 401);
    etcd.del("/cwm/ns/webhooks/new_hook");
    assert!(
        eventually(W, || rx.post("/webhook/ns/new_hook", "{}").status == 404),
        "live delete"
    );

    // Each bad value is rejected alone; the last good value keeps serving.
    for (i, bad) in [
        "not-json",
        r#""a string""#,
        "[1,2,3]",
        r#"{"module":"no_such_module"}"#,
    ]
    .iter()
    .enumerate()
    {
        etcd.put("/cwm/ns/webhooks/keep", bad);
        etcd.put(
            "/cwm/ns/webhooks/marker",
            &format!(r#"{{"module":"log","n":{i}}}"#),
        );
        assert!(
            eventually(W, || status(&rx)["provider"]["rejected"]
                .as_array()
                .is_some_and(|r| r
                    .iter()
                    .any(|x| x["key"] == "/cwm/ns/webhooks/keep"))),
            "{bad} listed"
        );
        assert_eq!(
            rx.post("/webhook/ns/keep", "{}").status,
            200,
            "{bad}: last good value serves"
        );
    }
    etcd.put("/cwm/bad namespace!/webhooks/h", LOG);
    etcd.put("/cwm/ns/webhooks/fresh_bad", "{oops");
    etcd.put("/cwm/ns/webhooks/after", LOG);
    assert!(eventually(W, || rx.post("/webhook/ns/after", "{}").status == 200));
    assert_eq!(rx.post("/webhook/ns/fresh_bad", "{}").status, 404);
    assert_eq!(health_etcd(&rx), "healthy");
    let m = rx.get("/metrics").body;
    assert!(!m.contains("cwm_config_rejected_keys 0"), "{m}");
}

#[test]
fn etcd_killed_under_traffic_then_restarted() {
    let mut etcd = Etcd::start();
    etcd.put("/cwm/default/webhooks/steady", LOG);
    let rx = Arc::new(start(&etcd, &[]));
    assert!(eventually(W, || rx.post("/webhook/steady", "{}").status == 200));

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let traffic = {
        let (rx, stop, sent, failed) = (rx.clone(), stop.clone(), sent.clone(), failed.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if rx.post("/webhook/steady", "{}").status != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                sent.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    etcd.kill();
    assert!(
        eventually(Duration::from_secs(20), || health_etcd(&rx)
            == "disconnected"),
        "health shows the outage"
    );
    let h = rx.get("/health");
    assert_eq!(
        (h.status, h.json()["status"].as_str().unwrap().to_owned()),
        (200, "healthy".to_owned())
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rx.post("/webhook/unknown_one", "{}").status, 404);

    etcd.restart();
    etcd.put("/cwm/default/webhooks/after_restart", LOG);
    assert!(
        eventually(Duration::from_secs(20), || rx
            .post("/webhook/after_restart", "{}")
            .status
            == 200),
        "write after restart served"
    );
    assert!(eventually(W, || health_etcd(&rx) == "healthy"));
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
    assert!(sent.load(Ordering::Relaxed) > 50, "traffic flowed");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed during the outage"
    );
}

#[test]
fn starts_while_etcd_is_down_then_loads() {
    let mut etcd = Etcd::start();
    etcd.put("/cwm/default/webhooks/late", LOG);
    etcd.kill();
    let rx = start(&etcd, &[]);
    let h = rx.get("/health");
    assert_eq!(h.status, 503);
    assert_eq!(h.json()["components"]["etcd"], "connecting");
    let r = rx.post("/webhook/late", "{}");
    assert_eq!(
        (r.status, r.json()),
        (503, json!({"detail":"configuration not loaded"}))
    );
    assert!(r.header("retry-after").is_some());
    etcd.restart();
    assert!(eventually(Duration::from_secs(20), || rx
        .post("/webhook/late", "{}")
        .status
        == 200));
    assert_eq!(rx.get("/health").status, 200);
}

#[test]
fn authenticated_etcd() {
    let etcd = Etcd::start();
    etcd.ctl_ok(&["user", "add", "root:rootpw"]);
    etcd.ctl_ok(&["user", "add", "cwm:cwmpw"]);
    etcd.ctl_ok(&["role", "add", "cwm-read"]);
    etcd.ctl_ok(&[
        "role",
        "grant-permission",
        "cwm-read",
        "--prefix=true",
        "read",
        "/cwm/",
    ]);
    etcd.ctl_ok(&["user", "grant-role", "cwm", "cwm-read"]);
    etcd.ctl_ok(&["auth", "enable"]);
    let root = |args: &[&str]| {
        let mut a = vec!["--user=root:rootpw"];
        a.extend_from_slice(args);
        etcd.ctl_ok(&a);
    };
    root(&["put", "/cwm/default/webhooks/authed", LOG]);
    let rx = start(
        &etcd,
        &[("ETCD_USERNAME", "cwm"), ("ETCD_PASSWORD", "cwmpw")],
    );
    assert!(eventually(W, || rx.post("/webhook/authed", "{}").status == 200));
    root(&["put", "/cwm/default/webhooks/live", LOG]);
    assert!(eventually(W, || rx.post("/webhook/live", "{}").status == 200));
    let s = rx
        .request(
            "GET",
            "/admin/config-status",
            &[("authorization", "Bearer adm")],
            None,
        )
        .body;
    assert!(!s.contains("cwmpw"), "password never shown");
    assert!(!rx.get("/health").body.contains("cwmpw"));

    let wrong = start(
        &etcd,
        &[("ETCD_USERNAME", "cwm"), ("ETCD_PASSWORD", "nope")],
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(wrong.get("/health").status, 503);
    assert!(!wrong.stderr().contains("nope"), "password not logged");
}

#[test]
fn admin_reload_relists() {
    let etcd = Etcd::start();
    etcd.put("/cwm/default/webhooks/a", LOG);
    let rx = start(&etcd, &[]);
    assert!(eventually(W, || rx.post("/webhook/a", "{}").status == 200));
    let r = rx.reload_config("adm");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "success");
    let s = status(&rx);
    assert_eq!(s["provider"]["resyncs"]["admin"], 1, "{s}");
}

/// Scale: 25,000 webhooks (5,000 namespaces x 5, values of about 250 bytes, `log` module) seeded
/// in etcd before the receiver starts; every one of them answers 200 to a POST with its token,
/// and an id of one namespace is 404 in another.
#[test]
fn twenty_five_thousand_webhooks_all_served() {
    const NAMESPACES: usize = 5_000;
    const PER_NAMESPACE: usize = 5;
    const SENDERS: usize = 4;
    let ns = |i: usize| format!("ns{i:04}");
    // Ids are unique across namespaces, so a wrong namespace cannot find a same-named webhook.
    let id = |i: usize, j: usize| format!("hook{j}-{i}");
    let token = |i: usize, j: usize| format!("tok-{i}-{j}-5f2c9a7e41d0");
    let value = |i: usize, j: usize| {
        json!({
            "data_type": "json",
            "module": "log",
            "module-config": {"pretty_print": false, "redact_sensitive": true},
            "authorization": format!("Bearer {}", token(i, j)),
            "ack": "delivery",
            "retry": {"enabled": true, "max_attempts": 3, "max_delay": 30},
            "description": format!("orders of {}", ns(i)),
        })
        .to_string()
    };

    let etcd = Etcd::start();
    let started = std::time::Instant::now();
    let pairs: Vec<(String, String)> = (0..NAMESPACES)
        .flat_map(|i| (0..PER_NAMESPACE).map(move |j| (i, j)))
        .map(|(i, j)| (format!("/cwm/{}/webhooks/{}", ns(i), id(i, j)), value(i, j)))
        .collect();
    let keys = pairs.len();
    let average = pairs.iter().map(|(_, v)| v.len()).sum::<usize>() / keys;
    assert!((230..=270).contains(&average), "{average}-byte values");
    seed_etcd(&etcd.endpoint(), pairs);
    let seeded = started.elapsed();

    let started = std::time::Instant::now();
    let rx = start(&etcd, &[]);
    let (last_i, last_j) = (NAMESPACES - 1, PER_NAMESPACE - 1);
    let last = format!("/webhook/{}/{}", ns(last_i), id(last_i, last_j));
    assert!(
        eventually(Duration::from_secs(60), || bearer(
            &rx,
            &last,
            &token(last_i, last_j)
        ) == 200),
        "the last webhook is served"
    );
    let serving = started.elapsed();
    assert_eq!(rx.get("/health").status, 200);
    let p = status(&rx)["provider"].clone();
    assert_eq!(
        (p["total_webhooks"].as_u64(), p["namespaces_count"].as_u64()),
        (Some(keys as u64), Some(NAMESPACES as u64)),
        "{p}"
    );

    // Every webhook, each sender on one keep-alive connection.
    let started = std::time::Instant::now();
    let rx = Arc::new(rx);
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let rx = rx.clone();
            std::thread::spawn(move || {
                let mut conn = rx.connect();
                let mut failures = Vec::new();
                for i in (s..NAMESPACES).step_by(SENDERS) {
                    for j in 0..PER_NAMESPACE {
                        let path = format!("/webhook/{}/{}", ns(i), id(i, j));
                        let status = keep_alive_post(&mut conn, &path, &token(i, j));
                        if status != 200 {
                            failures.push(format!("{path}: {status}"));
                        }
                    }
                    // Namespace isolation: this namespace's id asked in the next namespace.
                    if i % 50 == 0 {
                        let other = ns((i + 1) % NAMESPACES);
                        let path = format!("/webhook/{other}/{}", id(i, 0));
                        let status = keep_alive_post(&mut conn, &path, &token(i, 0));
                        if status != 404 {
                            failures.push(format!("{path}: {status}, expected 404"));
                        }
                    }
                }
                failures
            })
        })
        .collect();
    let failures: Vec<String> = senders
        .into_iter()
        .flat_map(|s| s.join().unwrap())
        .collect();
    let posted = started.elapsed();
    assert!(
        failures.is_empty(),
        "{} failed, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    // Every accepted event reached the sink: one line each on stdout, plus the POST that first
    // found the last webhook served.
    assert!(
        eventually(Duration::from_secs(10), || rx.stdout().lines().count()
            == keys + 1),
        "{} log lines for {} events",
        rx.stdout().lines().count(),
        keys + 1
    );
    eprintln!(
        "{keys} keys of {average} bytes: seeded in {seeded:?}, served {serving:?} after start, \
         all POSTed in {posted:?}"
    );
}

/// POST `{}` on an open keep-alive connection; the status.
fn keep_alive_post(conn: &mut std::net::TcpStream, path: &str, token: &str) -> u16 {
    use std::io::Write;
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         authorization: Bearer {token}\r\ncontent-length: 2\r\n\r\n{{}}"
    );
    conn.write_all(request.as_bytes()).unwrap();
    cwm_tests::read_reply(conn).status
}

#[test]
fn a_key_whose_check_cannot_work_is_rejected_and_the_good_value_keeps_serving() {
    let etcd = Etcd::start();
    etcd.put("/cwm/ns/webhooks/guarded", LOG);
    let rx = start(&etcd, &[]);
    assert!(eventually(W, || rx
        .post("/webhook/ns/guarded", "{}")
        .status
        == 200));

    // An `hmac` without its secret could check nothing: rejected at load, never served.
    let hmac = r#"{"module":"log","hmac":{"header":"X-HMAC-Signature"}}"#;
    etcd.put("/cwm/ns/webhooks/guarded", hmac);
    etcd.put("/cwm/ns/webhooks/fresh_hmac", hmac);
    etcd.put("/cwm/ns/webhooks/plain", LOG);
    assert!(eventually(W, || rx.post("/webhook/ns/plain", "{}").status == 200));
    let listed = |key: &str| {
        status(&rx)["provider"]["rejected"]
            .as_array()
            .and_then(|r| r.iter().find(|x| x["key"] == key).cloned())
    };
    let reason = "'hmac': HMAC secret not configured: 'secret' is missing or blank";
    assert!(eventually(W, || listed("/cwm/ns/webhooks/fresh_hmac")
        .is_some_and(
            |r| r["reason"] == reason && r["serving_previous"] == false
        )));
    let guarded = listed("/cwm/ns/webhooks/guarded").unwrap();
    assert_eq!(guarded["reason"], reason);
    assert_eq!(guarded["serving_previous"], true);
    // No credentials: the new key is not served at all, the old value of the other keeps serving.
    assert_eq!(rx.post("/webhook/ns/fresh_hmac", "{}").status, 404);
    assert_eq!(rx.post("/webhook/ns/guarded", "{}").status, 200);
    assert_eq!(health_etcd(&rx), "healthy");
}

// ------------------------------------------------------------------------------------------------
// TLS to etcd: files that do not parse, and a plain endpoint that meets a TLS server.
// ------------------------------------------------------------------------------------------------

/// Run the receiver with `env` until it exits on its own (killed and failed if it still runs
/// after 30 s, which means it started instead of refusing its settings).
fn exit_of(dir: &std::path::Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(cwm_tests::binary("cwm-receiver"))
        .current_dir(dir)
        .env_clear()
        .env("HOST", "127.0.0.1")
        .env("PORT", cwm_tests::free_port().to_string())
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("cwm-receiver started with {env:?}; it should have refused to");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn tls_files_that_do_not_parse_stop_startup_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_certs(d);
    std::fs::write(d.join("garbage.pem"), "not PEM at all\n").unwrap();
    let path = |f: &str| d.join(f).display().to_string();
    let (ca, cert, key, garbage) = (
        path("ca.pem"),
        path("server.pem"),
        path("server.key"),
        path("garbage.pem"),
    );
    /// What, the TLS variables, the file the error names, what it says.
    type Case<'a> = (&'a str, [(&'a str, &'a str); 3], &'a str, &'a str);
    let cases: [Case; 5] = [
        (
            "bad CA file",
            [
                ("ETCD_CA_CERT", &garbage),
                ("ETCD_CERT", &cert),
                ("ETCD_KEY", &key),
            ],
            &garbage,
            "CA certificate (ETCD_CA_CERT)",
        ),
        (
            "a key as the CA",
            [
                ("ETCD_CA_CERT", &key),
                ("ETCD_CERT", &cert),
                ("ETCD_KEY", &key),
            ],
            &key,
            "holds a private key, not a certificate",
        ),
        (
            "bad certificate",
            [
                ("ETCD_CA_CERT", &ca),
                ("ETCD_CERT", &garbage),
                ("ETCD_KEY", &key),
            ],
            &garbage,
            "client certificate (ETCD_CERT)",
        ),
        (
            "bad key",
            [
                ("ETCD_CA_CERT", &ca),
                ("ETCD_CERT", &cert),
                ("ETCD_KEY", &garbage),
            ],
            &garbage,
            "client key (ETCD_KEY)",
        ),
        (
            "key given as the certificate",
            [
                ("ETCD_CA_CERT", &ca),
                ("ETCD_CERT", &key),
                ("ETCD_KEY", &key),
            ],
            &key,
            "holds a private key, not a certificate (are ETCD_CERT and ETCD_KEY swapped?)",
        ),
    ];
    for (what, tls, named, problem) in cases {
        let mut env = vec![
            ("CONFIG_BACKEND", "etcd"),
            ("ETCD_HOST", "127.0.0.1"),
            ("ETCD_PORT", "2379"),
        ];
        env.extend_from_slice(&tls);
        let (code, stderr) = exit_of(d, &env);
        assert_eq!(code, Some(2), "{what}: {stderr}");
        assert!(
            stderr.contains(named) && stderr.contains(problem),
            "{what}: stderr should name {named} and say {problem:?}: {stderr}"
        );
    }
    // The certificate given as the key.
    let (code, stderr) = exit_of(
        d,
        &[
            ("CONFIG_BACKEND", "etcd"),
            ("ETCD_CA_CERT", &ca),
            ("ETCD_CERT", &cert),
            ("ETCD_KEY", &cert),
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "client key (ETCD_KEY) {cert}: holds a certificate"
        )),
        "{stderr}"
    );
}

#[test]
fn plain_endpoint_against_a_tls_etcd_says_tls_is_needed() {
    let etcd = TlsEtcd::start(false);
    let endpoint = format!("127.0.0.1:{}", etcd.port());
    let hint = format!(
        "the server at {endpoint} answered with TLS: set ETCD_CA_CERT or use an https:// endpoint"
    );
    let port = etcd.port().to_string();
    let rx = Receiver::start(
        &[],
        &[
            ("CONFIG_BACKEND", "etcd"),
            ("ETCD_HOST", "127.0.0.1"),
            ("ETCD_PORT", &port),
            ("ETCD_RECONNECT_INITIAL_MS", "100"),
            ("ETCD_RECONNECT_MAX_MS", "500"),
            ("CONFIG_RELOAD_ADMIN_TOKEN", "adm"),
        ],
    );
    assert!(
        eventually(W, || rx.stderr().contains(&hint)),
        "{}",
        rx.stderr()
    );
    assert_eq!(rx.get("/health").status, 503);
    assert_eq!(health_etcd(&rx), "connecting");
    let last_error = status(&rx)["provider"]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(last_error.contains(&hint), "{last_error}");

    // Doing what the hint says works.
    let ca = etcd.dir().join("ca.pem").display().to_string();
    let https = format!("https://{endpoint}");
    let rx = Receiver::start(
        &[],
        &[
            ("CONFIG_BACKEND", "etcd"),
            ("ETCD_ENDPOINTS", &https),
            ("ETCD_CA_CERT", &ca),
        ],
    );
    assert!(eventually(W, || rx.get("/health").status == 200));
    assert!(
        !rx.stderr().contains("answered with TLS"),
        "{}",
        rx.stderr()
    );
}
