//! Black-box tests of `{$vault:path#field}` references: the real `cwm-receiver` against the test
//! kit's fake Vault (KV v2 over HTTP; no real Vault runs here), with the file backend and with a
//! real etcd.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use cwm_testkit::{FAKE_VAULT_ROOT_TOKEN, FakeVault};
use cwm_tests::{Etcd, Receiver, binary, eventually, rejection_reason};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

const ADMIN: &str = "adm";
const MOUNT: &str = "webhooks";
const TOKEN_V1: &str = "vault_auth_token_v1";
const TOKEN_V2: &str = "vault_auth_token_v2";
const HMAC_V1: &str = "vault-hmac-secret-v1";
const HMAC_V2: &str = "vault-hmac-secret-v2";
const LEGACY: &str = "legacy_env_token_789";
const W: Duration = Duration::from_secs(5);

fn vault() -> FakeVault {
    let v = FakeVault::start_with("127.0.0.1:0", MOUNT, FAKE_VAULT_ROOT_TOKEN);
    v.put("app/auth", "webhook_token", TOKEN_V1);
    v.put("app/auth", "hmac_secret", HMAC_V1);
    v
}

fn webhooks() -> serde_json::Value {
    json!({
        "vault_auth": {"module": "log", "authorization": "Bearer {$vault:app/auth#webhook_token}"},
        "vault_hmac": {"module": "log", "hmac": {"secret": "{$vault:app/auth#hmac_secret}"}},
        "legacy_env": {"module": "log", "authorization": "Bearer {$LEGACY_ENV_TOKEN}"},
        "with_default": {"module": "log", "authorization": "Bearer {$vault:missing/path#f:dflt}"},
        "broken": {"module": "log", "authorization": "Bearer {$vault:missing/path#f}"},
    })
}

fn vault_env(v: &FakeVault) -> Vec<(String, String)> {
    [
        ("CONFIG_RELOAD_ADMIN_TOKEN", ADMIN.to_owned()),
        ("LEGACY_ENV_TOKEN", LEGACY.to_owned()),
        ("SECRETS_BACKEND", "vault".to_owned()),
        ("VAULT_ADDR", v.addr()),
        ("VAULT_MOUNT_POINT", MOUNT.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn bearer(rx: &Receiver, id: &str, token: Option<&str>) -> u16 {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    rx.post_json(&format!("/webhook/{id}"), &headers, "{}")
        .status
}

fn signed(rx: &Receiver, secret: &str, body: &str) -> u16 {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(body.as_bytes());
    let sig: String = m
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    rx.post_json("/webhook/vault_hmac", &[("X-HMAC-Signature", &sig)], body)
        .status
}

fn reload(rx: &Receiver) {
    let r = rx.reload_config(ADMIN);
    assert_eq!(r.status, 200, "{}", r.body);
}

/// No secret value in stderr, stdout, config-status, metrics, health or stats.
fn assert_never_shown(rx: &Receiver, secrets: &[&str]) {
    // Each page must really be served: an error page would show no secret either.
    let page = |reply: cwm_tests::Reply, what: &str| {
        assert!(
            reply.status == 200 || (what == "health" && reply.status == 503),
            "{what} answered {}: {}",
            reply.status,
            reply.body
        );
        assert!(!reply.body.is_empty(), "{what} is empty");
        reply.body
    };
    let status = page(
        rx.request(
            "GET",
            "/admin/config-status",
            &[("authorization", &format!("Bearer {ADMIN}"))],
            None,
        ),
        "config-status",
    );
    let metrics = page(rx.get("/metrics"), "metrics");
    let health = page(rx.get("/health"), "health");
    let stats = page(rx.get("/stats"), "stats");
    for (what, text) in [
        ("stderr", rx.stderr()),
        ("stdout", rx.stdout()),
        ("config-status", status),
        ("metrics", metrics),
        ("health", health),
        ("stats", stats),
    ] {
        for s in secrets {
            assert!(!text.contains(s), "{what} shows a secret value: {text}");
        }
    }
}

#[test]
fn file_backend_bearer_and_hmac_from_vault_with_token() {
    let v = vault();
    let mut env = vault_env(&v);
    env.push(("VAULT_TOKEN".into(), FAKE_VAULT_ROOT_TOKEN.into()));
    let rx = Receiver::start(&[("webhooks.json", &webhooks().to_string())], &refs(&env));

    // I01: Bearer from Vault.
    assert_eq!(bearer(&rx, "vault_auth", None), 401);
    assert_eq!(bearer(&rx, "vault_auth", Some("wrong")), 401);
    assert_eq!(bearer(&rx, "vault_auth", Some(TOKEN_V1)), 200);
    // I02: HMAC secret from Vault.
    let body = r#"{"event":"good_hmac"}"#;
    let r = rx.post_json(
        "/webhook/vault_hmac",
        &[("X-HMAC-Signature", "deadbeef")],
        body,
    );
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(signed(&rx, HMAC_V1, body), 200);
    // I03: env placeholders beside them.
    assert_eq!(bearer(&rx, "legacy_env", Some(LEGACY)), 200);
    // An unresolved reference with a default takes it; without one, that webhook alone is
    // rejected, named by its reference, never by a value.
    assert_eq!(bearer(&rx, "with_default", Some("dflt")), 200);
    assert_eq!(bearer(&rx, "broken", Some("anything")), 404);
    let provider = rx.config_status(ADMIN);
    let reason = rejection_reason(&provider, "broken");
    assert!(reason.contains("missing/path#f"), "{reason}");
    assert_eq!(provider["total_webhooks"], 4, "{provider}");
    // One read per path (and one for the missing path); none on the request path.
    assert_eq!(v.reads("app/auth"), 1, "{:?}", v.requests());
    let before = v.requests().len();
    for _ in 0..3 {
        assert_eq!(bearer(&rx, "vault_auth", Some(TOKEN_V1)), 200);
    }
    assert_eq!(v.requests().len(), before, "requests never reach Vault");

    // Rotation: served after an admin reload (the cache is bypassed), not before.
    v.put("app/auth", "webhook_token", TOKEN_V2);
    v.put("app/auth", "hmac_secret", HMAC_V2);
    assert_eq!(bearer(&rx, "vault_auth", Some(TOKEN_V2)), 401);
    reload(&rx);
    assert_eq!(bearer(&rx, "vault_auth", Some(TOKEN_V1)), 401);
    assert_eq!(bearer(&rx, "vault_auth", Some(TOKEN_V2)), 200);
    assert_eq!(signed(&rx, HMAC_V1, body), 401);
    assert_eq!(signed(&rx, HMAC_V2, body), 200);
    assert_eq!(v.reads("app/auth"), 2);

    // Vault loses the secret: the webhooks keep their last good values.
    v.delete("app/auth");
    reload(&rx);
    assert_eq!(bearer(&rx, "vault_auth", Some(TOKEN_V2)), 200);
    let provider = rx.config_status(ADMIN);
    let reason = rejection_reason(&provider, "vault_auth");
    assert!(reason.contains("app/auth#webhook_token"), "{reason}");

    assert_never_shown(
        &rx,
        &[TOKEN_V1, TOKEN_V2, HMAC_V1, HMAC_V2, FAKE_VAULT_ROOT_TOKEN],
    );
}

#[test]
fn approle_login_and_wrong_credentials() {
    let v = vault();
    v.enable_approle("cwm-role", "cwm-secret-id");
    let mut env = vault_env(&v);
    env.push(("VAULT_ROLE_ID".into(), "cwm-role".into()));
    env.push(("VAULT_SECRET_ID".into(), "cwm-secret-id".into()));
    env.push(("VAULT_ENABLED".into(), "yes".into()));
    env.retain(|(k, _)| k != "SECRETS_BACKEND");
    let rx = Receiver::start(&[("webhooks.json", &webhooks().to_string())], &refs(&env));
    assert_eq!(bearer(&rx, "vault_auth", Some(TOKEN_V1)), 200);
    assert!(
        v.requests()
            .contains(&"POST /v1/auth/approle/login".to_owned()),
        "{:?}",
        v.requests()
    );
    assert_never_shown(&rx, &[TOKEN_V1, HMAC_V1, "cwm-secret-id"]);
    drop(rx);

    // A wrong secret id: every reference without a default is unresolved; the receiver still
    // starts and serves the rest.
    let mut env = vault_env(&v);
    env.push(("VAULT_ROLE_ID".into(), "cwm-role".into()));
    env.push(("VAULT_SECRET_ID".into(), "not-the-secret-id".into()));
    let rx = Receiver::start(&[("webhooks.json", &webhooks().to_string())], &refs(&env));
    assert_eq!(bearer(&rx, "legacy_env", Some(LEGACY)), 200);
    assert_eq!(bearer(&rx, "vault_auth", Some(TOKEN_V1)), 404);
    let reason = rejection_reason(&rx.config_status(ADMIN), "vault_auth");
    assert!(reason.contains("AppRole login failed"), "{reason}");
    assert_never_shown(&rx, &[TOKEN_V1, HMAC_V1, "not-the-secret-id"]);
}

#[test]
fn vault_off_uses_inline_defaults_only() {
    let doc = json!({
        "fallback": {"module": "log", "authorization": "Bearer {$vault:a/b#c:fallback}"},
        "no_default": {"module": "log", "authorization": "Bearer {$vault:a/b#c}"},
    });
    let rx = Receiver::start(
        &[("webhooks.json", &doc.to_string())],
        &[("CONFIG_RELOAD_ADMIN_TOKEN", ADMIN)],
    );
    // I06.
    assert_eq!(bearer(&rx, "fallback", Some("fallback")), 200);
    assert_eq!(bearer(&rx, "no_default", Some("x")), 404);
    let reason = rejection_reason(&rx.config_status(ADMIN), "no_default");
    assert!(
        reason.contains("a/b#c") && reason.contains("not enabled"),
        "{reason}"
    );
}

#[test]
fn incomplete_vault_settings_stop_startup() {
    for (env, needle) in [
        (vec![("SECRETS_BACKEND", "vault")], "VAULT_ADDR"),
        (
            vec![
                ("VAULT_ENABLED", "true"),
                ("VAULT_ADDR", "http://127.0.0.1:1"),
            ],
            "VAULT_TOKEN",
        ),
        (
            vec![
                ("VAULT_ENABLED", "on"),
                ("VAULT_ADDR", "vault:8200"),
                ("VAULT_TOKEN", "t"),
            ],
            "VAULT_ADDR",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(binary("cwm-receiver"))
            .current_dir(dir.path())
            .env_clear()
            .env("PORT", cwm_tests::free_port().to_string())
            .envs(env)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
    }
}

#[test]
fn etcd_rotation_served_after_the_key_is_put_again() {
    let v = vault();
    let etcd = Etcd::start();
    let docs = webhooks();
    for id in ["vault_auth", "vault_hmac", "legacy_env", "broken"] {
        etcd.put(
            &format!("/cwm/default/webhooks/{id}"),
            &docs[id].to_string(),
        );
    }
    let port = etcd.port().to_string();
    let mut env = vault_env(&v);
    env.push(("VAULT_TOKEN".into(), FAKE_VAULT_ROOT_TOKEN.into()));
    env.push(("VAULT_CACHE_TTL_SECONDS".into(), "1".into()));
    for (k, val) in [
        ("CONFIG_BACKEND", "etcd"),
        ("ETCD_HOST", "127.0.0.1"),
        ("ETCD_PORT", port.as_str()),
    ] {
        env.push((k.into(), val.into()));
    }
    let rx = Receiver::start(&[], &refs(&env));
    assert!(eventually(W, || rx.get("/health").status == 200));

    assert_eq!(bearer(&rx, "vault_auth", Some(TOKEN_V1)), 200);
    assert_eq!(bearer(&rx, "default/vault_auth", Some(TOKEN_V1)), 200);
    assert_eq!(signed(&rx, HMAC_V1, r#"{"event":"good_hmac"}"#), 200);
    assert_eq!(bearer(&rx, "legacy_env", Some(LEGACY)), 200);
    // I05: the key with an unresolved reference alone is left out; etcd stays healthy.
    assert_eq!(bearer(&rx, "broken", Some("x")), 404);
    let provider = rx.config_status(ADMIN);
    let key = "/cwm/default/webhooks/broken";
    let rejected = cwm_tests::rejection(&provider, key).expect("broken is listed");
    assert!(
        rejected["reason"]
            .as_str()
            .unwrap()
            .contains("missing/path#f"),
        "{rejected}"
    );
    assert_eq!(
        rx.get("/health").json()["components"]["etcd"],
        "healthy",
        "{provider}"
    );

    // I04: rotate in Vault, wait out the 1 s cache, put the keys again.
    v.put("app/auth", "webhook_token", TOKEN_V2);
    v.put("app/auth", "hmac_secret", HMAC_V2);
    std::thread::sleep(Duration::from_millis(1100));
    for id in ["vault_auth", "vault_hmac"] {
        etcd.put(
            &format!("/cwm/default/webhooks/{id}"),
            &docs[id].to_string(),
        );
    }
    assert!(eventually(W, || bearer(&rx, "vault_auth", Some(TOKEN_V2)) == 200));
    assert_eq!(bearer(&rx, "vault_auth", Some(TOKEN_V1)), 401);
    assert!(eventually(W, || signed(
        &rx,
        HMAC_V2,
        r#"{"event":"good_hmac"}"#
    ) == 200));
    // The watch still delivers: a new key loads.
    etcd.put(
        "/cwm/default/webhooks/later",
        &docs["vault_auth"].to_string(),
    );
    assert!(eventually(W, || bearer(&rx, "later", Some(TOKEN_V2)) == 200));

    // An admin reload re-resolves too (cache cleared).
    v.put("app/auth", "webhook_token", "vault_auth_token_v3");
    reload(&rx);
    assert_eq!(bearer(&rx, "vault_auth", Some("vault_auth_token_v3")), 200);

    assert_never_shown(
        &rx,
        &[
            TOKEN_V1,
            TOKEN_V2,
            HMAC_V1,
            HMAC_V2,
            "vault_auth_token_v3",
            FAKE_VAULT_ROOT_TOKEN,
        ],
    );
}

/// `cwmctl validate` with the receiver's variables gives the receiver's verdict: with Vault off
/// every reference without a default is invalid; with Vault on only the missing one is, and no
/// secret value is printed. The same through `--etcd`.
#[test]
fn cwmctl_validate_fetches_references_like_a_receiver() {
    let v = vault();
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let docs = webhooks();
    std::fs::write(dir.path().join("webhooks.json"), docs.to_string()).unwrap();
    for (id, doc) in docs.as_object().unwrap() {
        etcd.put(&format!("/cwm/default/webhooks/{id}"), &doc.to_string());
    }
    let port = etcd.port().to_string();
    let ctl = |vault_on: bool, args: &[&str]| {
        let mut cmd = Command::new(binary("cwmctl"));
        cmd.current_dir(dir.path())
            .env_clear()
            .env("ETCD_HOST", "127.0.0.1")
            .env("ETCD_PORT", &port)
            .env("LEGACY_ENV_TOKEN", LEGACY)
            .args(args);
        if vault_on {
            cmd.env("SECRETS_BACKEND", "vault")
                .env("VAULT_ADDR", v.addr())
                .env("VAULT_MOUNT_POINT", MOUNT)
                .env("VAULT_TOKEN", FAKE_VAULT_ROOT_TOKEN);
        }
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for secret in [TOKEN_V1, HMAC_V1] {
            assert!(!text.contains(secret), "a secret value was printed: {text}");
        }
        (out.status.code(), text)
    };
    for args in [&["validate"][..], &["validate", "--etcd"][..]] {
        let (code, text) = ctl(false, args);
        assert_eq!(code, Some(1), "{text}");
        assert!(text.contains("5 entries checked, 3 invalid"), "{text}");
        assert!(text.contains("Vault is not enabled"), "{text}");

        let (code, text) = ctl(true, args);
        assert_eq!(code, Some(1), "{text}");
        assert!(text.contains("5 entries checked, 1 invalid"), "{text}");
        assert!(text.contains("missing/path#f"), "{text}");
        assert!(!text.contains("vault_auth:"), "{text}");
    }
    // Vault on without an address is bad usage, before anything is read.
    let out = Command::new(binary("cwmctl"))
        .current_dir(dir.path())
        .env_clear()
        .env("SECRETS_BACKEND", "vault")
        .arg("validate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("VAULT_ADDR is required"));
}
