#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cwm_testkit::{FAKE_VAULT_ROOT_TOKEN, FakeVault};
use serde_json::json;

use super::*;
use crate::ConfigProvider;
use crate::file::FileProvider;
use crate::provider::PassThrough;

const SECRET: &str = "s3cr3t-VALUE-never-shown";

/// An in-memory store: `path` → fields; counts reads; fails the next `fail` reads transiently.
#[derive(Default)]
struct MemStore {
    data: Mutex<BTreeMap<String, BTreeMap<String, SecretValue>>>,
    reads: AtomicUsize,
    fail: AtomicUsize,
}

impl MemStore {
    fn with(path: &str, field: &str, value: &str) -> Arc<Self> {
        let store = Arc::new(Self::default());
        store.put(path, field, value);
        store
    }

    fn put(&self, path: &str, field: &str, value: &str) {
        self.data
            .lock()
            .unwrap()
            .entry(path.into())
            .or_default()
            .insert(field.into(), SecretValue::new(value));
    }
}

#[async_trait]
impl SecretStore for MemStore {
    async fn read(&self, path: &str) -> Result<BTreeMap<String, SecretValue>, SecretError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(SecretError::Transient("unavailable".into()));
        }
        self.data
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .ok_or(SecretError::NotFound)
    }
}

fn refs(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn resolver(store: Arc<MemStore>, ttl: Duration, max_size: usize) -> SecretResolver {
    let mut r = SecretResolver::new(store, CacheSettings { ttl, max_size });
    r.retry_delay = Duration::from_millis(1);
    r
}

#[test]
fn reference_parsing() {
    let r = SecretRef::parse("app/auth#webhook_token").unwrap();
    assert_eq!(
        (r.path.as_str(), r.field.as_str()),
        ("app/auth", "webhook_token")
    );
    assert_eq!(r.to_string(), "app/auth#webhook_token");
    assert!(SecretRef::parse("a.b/c-d_e#f.g-h_i").is_ok());
    for bad in [
        "no-field", "#field", "path#", "../etc#x", "a/../b#x", "a b#x", "a#b c", "a#b/c", "a$#b",
    ] {
        assert!(SecretRef::parse(bad).is_err(), "{bad}");
    }
    assert!(SecretRef::parse(&format!("{}#f", "a".repeat(512))).is_ok());
    assert!(SecretRef::parse(&format!("{}#f", "a".repeat(513))).is_err());
    assert!(SecretRef::parse(&format!("p#{}", "f".repeat(129))).is_err());
}

#[test]
fn references_are_found_as_substitution_finds_them() {
    let doc = json!({
        "authorization": "Bearer {$vault:app/auth#webhook_token}",
        "{$vault:keys/are#ignored}": 1,
        "hmac": {"secret": "{$vault:app/auth#hmac_secret:fallback:with}colons}"},
        "list": ["{$vault:a#b}{$vault:c#d:x}", "{$ENV_VAR}"],
    });
    let mut found = BTreeSet::new();
    crate::subst::vault_references(&doc, &mut found);
    assert_eq!(
        found,
        refs(&[
            "a#b",
            "app/auth#hmac_secret",
            "app/auth#webhook_token",
            "c#d"
        ])
    );
    let mut from_text = BTreeSet::new();
    references_in_json(doc.to_string().as_bytes(), &mut from_text);
    assert_eq!(from_text, found);
    // An escaped spelling is found too; a document without references costs no parse.
    let mut escaped = BTreeSet::new();
    references_in_json(br#"{"a":"{$\u0076ault:x#y}"}"#, &mut escaped);
    assert_eq!(escaped, refs(&["x#y"]));
    let mut none = BTreeSet::new();
    references_in_json(br#"{"a":"{$TOKEN}"}"#, &mut none);
    assert!(none.is_empty());
}

#[tokio::test]
async fn cache_ttl_and_invalidate() {
    let store = MemStore::with("app/auth", "t", "v1");
    let r = resolver(store.clone(), Duration::from_millis(300), 10);
    let want = refs(&["app/auth#t"]);
    assert_eq!(
        r.resolve(&want).await.get("app/auth#t").unwrap().expose(),
        "v1"
    );
    store.put("app/auth", "t", "v2");
    // Cached: the store is not asked again within the TTL.
    assert_eq!(
        r.resolve(&want).await.get("app/auth#t").unwrap().expose(),
        "v1"
    );
    assert_eq!(store.reads.load(Ordering::SeqCst), 1);
    // Invalidated: asked again.
    r.invalidate();
    assert_eq!(
        r.resolve(&want).await.get("app/auth#t").unwrap().expose(),
        "v2"
    );
    assert_eq!(store.reads.load(Ordering::SeqCst), 2);
    // Expired: asked again.
    store.put("app/auth", "t", "v3");
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        r.resolve(&want).await.get("app/auth#t").unwrap().expose(),
        "v3"
    );
    assert_eq!(store.reads.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn ttl_zero_turns_the_cache_off_and_one_read_serves_a_path() {
    let store = MemStore::with("p", "a", "1");
    store.put("p", "b", "2");
    let r = resolver(store.clone(), Duration::ZERO, 10);
    let got = r.resolve(&refs(&["p#a", "p#b"])).await;
    assert_eq!(got.get("p#a").unwrap().expose(), "1");
    assert_eq!(got.get("p#b").unwrap().expose(), "2");
    assert_eq!(store.reads.load(Ordering::SeqCst), 1, "one read per path");
    r.resolve(&refs(&["p#a"])).await;
    assert_eq!(store.reads.load(Ordering::SeqCst), 2);
    assert_eq!(r.cached(), 0);
}

#[tokio::test]
async fn cache_size_is_bounded_oldest_first() {
    let store = Arc::new(MemStore::default());
    for p in ["p1", "p2", "p3"] {
        store.put(p, "f", p);
    }
    let r = resolver(store.clone(), Duration::from_secs(60), 2);
    r.resolve(&refs(&["p1#f"])).await;
    r.resolve(&refs(&["p2#f"])).await;
    r.resolve(&refs(&["p3#f"])).await;
    assert_eq!(r.cached(), 2);
    // p1 was evicted: reading it asks the store; p3 is still cached.
    let before = store.reads.load(Ordering::SeqCst);
    r.resolve(&refs(&["p3#f"])).await;
    assert_eq!(store.reads.load(Ordering::SeqCst), before);
    r.resolve(&refs(&["p1#f"])).await;
    assert_eq!(store.reads.load(Ordering::SeqCst), before + 1);
}

#[tokio::test]
async fn one_retry_on_a_transient_failure() {
    let store = MemStore::with("p", "f", "v");
    let r = resolver(store.clone(), Duration::ZERO, 10);
    store.fail.store(1, Ordering::SeqCst);
    assert_eq!(
        r.resolve(&refs(&["p#f"]))
            .await
            .get("p#f")
            .unwrap()
            .expose(),
        "v"
    );
    assert_eq!(store.reads.load(Ordering::SeqCst), 2);
    store.fail.store(2, Ordering::SeqCst);
    let got = r.resolve(&refs(&["p#f"])).await;
    assert_eq!(got.get("p#f").unwrap_err(), "unavailable");
    assert_eq!(store.reads.load(Ordering::SeqCst), 4, "retried once only");
    // Not found is not retried.
    let got = r.resolve(&refs(&["missing#f", "p#nope", "../x#f"])).await;
    assert_eq!(got.get("missing#f").unwrap_err(), "secret not found");
    assert_eq!(got.get("p#nope").unwrap_err(), "field not found");
    assert!(
        got.get("../x#f")
            .unwrap_err()
            .starts_with("invalid reference")
    );
    assert_eq!(store.reads.load(Ordering::SeqCst), 6);
}

#[test]
fn values_are_redacted_in_debug() {
    let v = SecretValue::new(SECRET);
    assert!(!format!("{v:?}").contains(SECRET));
    let mut s = Secrets::new();
    s.insert("a#b", Ok(v));
    assert!(!format!("{s:?}").contains(SECRET));
    let auth = VaultAuth::Token(SECRET.into());
    let settings = VaultSettings::new("http://127.0.0.1:1", auth);
    assert!(!format!("{settings:?}").contains(SECRET));
    let approle = VaultAuth::AppRole {
        role_id: "role".into(),
        secret_id: SECRET.into(),
    };
    assert!(!format!("{approle:?}").contains(SECRET));
}

#[test]
fn substitution_uses_fetched_values_then_defaults() {
    let mut secrets = Secrets::new();
    secrets.insert("app/auth#t", Ok(SecretValue::new(SECRET)));
    secrets.insert("app/gone#t", Err("secret not found".into()));
    let env = |_: &str| None;
    let on = SecretEnv {
        env: &env,
        secrets: Some(&secrets),
    };
    let sub = |s: &str, e: &SecretEnv<'_>| crate::subst::substitute_str(s, e);
    assert_eq!(
        sub("Bearer {$vault:app/auth#t}", &on).unwrap(),
        format!("Bearer {SECRET}")
    );
    assert_eq!(sub("{$vault:app/gone#t:dflt}", &on).unwrap(), "dflt");
    let err = sub("{$vault:app/gone#t}", &on).unwrap_err().to_string();
    assert!(
        err.contains("app/gone#t") && err.contains("secret not found"),
        "{err}"
    );
    // Vault off: only the inline default.
    let off = SecretEnv {
        env: &env,
        secrets: None,
    };
    assert_eq!(sub("{$vault:a/b#c:fallback}", &off).unwrap(), "fallback");
    let err = sub("{$vault:app/auth#t}", &off).unwrap_err().to_string();
    assert!(
        err.contains("not enabled") && !err.contains(SECRET),
        "{err}"
    );
}

/// A file-backed load: the webhook whose reference cannot be resolved is rejected alone (with
/// a reason naming the reference, not a value), the others load with their secrets.
#[tokio::test]
async fn unresolved_reference_rejects_that_entry_only() {
    let dir = tempfile::tempdir().unwrap();
    let webhooks = dir.path().join("webhooks.json");
    let connections = dir.path().join("connections.json");
    let doc = json!({
        "good": {"module": "log", "authorization": "Bearer {$vault:app/auth#token}"},
        "bad": {"module": "log", "authorization": "{$vault:missing/path#f}"},
        "field": {"module": "log", "authorization": "{$vault:app/auth#nope}"},
        "plain": {"module": "log", "authorization": "{$vault:missing/path#f:dflt}"},
    });
    std::fs::write(&webhooks, doc.to_string()).unwrap();
    std::fs::write(&connections, "{}").unwrap();
    let store = MemStore::with("app/auth", "token", SECRET);
    store.put("app/auth", "other", "other-secret-value");
    let r = Arc::new(resolver(store.clone(), Duration::from_secs(60), 10));
    let env: Arc<dyn crate::Env + Send + Sync> = Arc::new(|_: &str| None);
    let p = FileProvider::start(
        &webhooks,
        &connections,
        Arc::new(PassThrough),
        env,
        Some(r.clone()),
        None,
    )
    .await
    .unwrap();
    let snap = p.snapshot();
    let good = snap.webhook(None, "good").unwrap();
    assert_eq!(
        good.authorization.as_deref(),
        Some(&*format!("Bearer {SECRET}"))
    );
    assert_eq!(
        snap.webhook(None, "plain")
            .unwrap()
            .authorization
            .as_deref(),
        Some("dflt")
    );
    assert!(snap.webhook_exact("default", "bad").is_none());
    let status = serde_json::to_string(&p.status()).unwrap();
    assert!(status.contains("missing/path#f"), "{status}");
    assert!(status.contains("app/auth#nope"), "{status}");
    assert!(
        !status.contains(SECRET) && !status.contains("other-secret-value"),
        "{status}"
    );

    // Rotation: a reload clears the cache and serves the new value; a reference that breaks
    // later keeps the last good value.
    store.put("app/auth", "token", "rotated");
    let reads = store.reads.load(Ordering::SeqCst);
    p.reload(crate::ReloadRequest {
        webhooks: true,
        connections: true,
    })
    .await
    .unwrap();
    assert!(
        store.reads.load(Ordering::SeqCst) > reads,
        "reload asked the store again"
    );
    let snap = p.snapshot();
    assert_eq!(
        snap.webhook(None, "good").unwrap().authorization.as_deref(),
        Some("Bearer rotated")
    );
    store.data.lock().unwrap().remove("app/auth");
    p.reload(crate::ReloadRequest {
        webhooks: true,
        connections: true,
    })
    .await
    .unwrap();
    assert_eq!(
        p.snapshot()
            .webhook(None, "good")
            .unwrap()
            .authorization
            .as_deref(),
        Some("Bearer rotated"),
        "the last good value keeps serving"
    );
    let rejected = p.status().rejected;
    let good = rejected.iter().find(|r| r.key == "webhooks/good").unwrap();
    assert!(good.reason.contains("app/auth#token"), "{}", good.reason);
}

fn vault_settings(vault: &FakeVault, auth: VaultAuth) -> VaultSettings {
    VaultSettings {
        mount: "secret".into(),
        timeout: Duration::from_secs(5),
        ..VaultSettings::new(vault.addr(), auth)
    }
}

#[tokio::test]
async fn vault_store_reads_kv2_with_a_token() {
    let vault = FakeVault::start();
    vault.put("app/auth", "webhook_token", SECRET);
    vault.put("app/auth", "hmac_secret", "h");
    let store = VaultStore::new(vault_settings(
        &vault,
        VaultAuth::Token(FAKE_VAULT_ROOT_TOKEN.into()),
    ))
    .unwrap();
    let fields = store.read("app/auth").await.unwrap();
    assert_eq!(fields["webhook_token"].expose(), SECRET);
    assert_eq!(fields["hmac_secret"].expose(), "h");
    assert_eq!(
        store.read("no/such").await.unwrap_err(),
        SecretError::NotFound
    );
    assert_eq!(
        vault.requests(),
        [
            "GET /v1/secret/data/app/auth",
            "GET /v1/secret/data/no/such"
        ]
    );

    let wrong = VaultStore::new(vault_settings(&vault, VaultAuth::Token("wrong".into()))).unwrap();
    assert_eq!(
        wrong.read("app/auth").await.unwrap_err(),
        SecretError::Denied
    );

    // A transient failure is retried once by the resolver.
    vault.fail_next_reads(1);
    let r = SecretResolver::new(Arc::new(store), CacheSettings::default());
    let got = r.resolve(&refs(&["app/auth#webhook_token"])).await;
    assert_eq!(got.get("app/auth#webhook_token").unwrap().expose(), SECRET);
}

#[tokio::test]
async fn vault_store_reads_kv1() {
    let vault = FakeVault::start();
    vault.add_kv1_mount("kv");
    vault.put_in("kv", "app/auth", "webhook_token", SECRET);
    let store = VaultStore::new(VaultSettings {
        mount: "kv".into(),
        kv_version: 1,
        ..vault_settings(&vault, VaultAuth::Token(FAKE_VAULT_ROOT_TOKEN.into()))
    })
    .unwrap();
    let fields = store.read("app/auth").await.unwrap();
    assert_eq!(fields["webhook_token"].expose(), SECRET);
    assert_eq!(
        store.read("no/such").await.unwrap_err(),
        SecretError::NotFound
    );
    assert_eq!(
        vault.requests(),
        ["GET /v1/kv/app/auth", "GET /v1/kv/no/such"]
    );
}

#[tokio::test]
async fn vault_store_logs_in_with_approle_and_again_when_the_token_expires() {
    let vault = FakeVault::start();
    vault.put("app/auth", "t", SECRET);
    vault.enable_approle("role-1", "secret-1");
    let approle = |secret_id: &str| VaultAuth::AppRole {
        role_id: "role-1".into(),
        secret_id: secret_id.into(),
    };
    let store = VaultStore::new(vault_settings(&vault, approle("secret-1"))).unwrap();
    assert_eq!(store.read("app/auth").await.unwrap()["t"].expose(), SECRET);
    vault.revoke_issued_tokens();
    assert_eq!(store.read("app/auth").await.unwrap()["t"].expose(), SECRET);
    let logins = vault
        .requests()
        .iter()
        .filter(|r| *r == "POST /v1/auth/approle/login")
        .count();
    assert_eq!(logins, 2);

    let bad = VaultStore::new(vault_settings(&vault, approle("wrong"))).unwrap();
    let err = bad.read("app/auth").await.unwrap_err().to_string();
    assert!(
        err.contains("AppRole login failed") && !err.contains("wrong"),
        "{err}"
    );

    // Unreachable: a transient error naming the address, never a value.
    let port = cwm_testkit::free_port();
    let down = VaultStore::new(VaultSettings {
        timeout: Duration::from_secs(2),
        ..VaultSettings::new(
            format!("http://127.0.0.1:{port}"),
            VaultAuth::Token("t".into()),
        )
    })
    .unwrap();
    let err = down.read("app/auth").await.unwrap_err();
    assert!(err.is_transient(), "{err}");
}

#[test]
fn bad_settings_are_refused() {
    let auth = VaultAuth::Token("t".into());
    assert!(VaultStore::new(VaultSettings::new("not a url", auth.clone())).is_err());
    let v3 = VaultSettings {
        kv_version: 3,
        ..VaultSettings::new("http://127.0.0.1:1", auth)
    };
    assert!(VaultStore::new(v3).is_err());
}
