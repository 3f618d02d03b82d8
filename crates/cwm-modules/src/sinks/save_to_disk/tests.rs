#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use cwm_config::WebhookConfig;
use serde_json::{Value, json};

use super::SaveToDiskBuilder;
use super::jail::{JailError, is_system_dir};
use crate::context::ModuleContext;
use crate::sink::{BuildError, Event, Payload, Sink, SinkBuilder, SinkContext, SinkError};

/// The builder's answer for `config`, as the registry would build it.
fn factory(config: &WebhookConfig, ctx: &ModuleContext) -> Result<Arc<dyn Sink>, BuildError> {
    SaveToDiskBuilder.build(&SinkContext {
        webhook_id: "w",
        config,
        connection: None,
        modules: ctx,
    })
}

fn config(mc: Value) -> WebhookConfig {
    WebhookConfig::from_value(
        json!({"module":"save_to_disk","module-config":mc}),
        &|_: &str| None,
    )
    .unwrap()
}

fn ctx(base: &Path) -> ModuleContext {
    let mut c = ModuleContext::new();
    c.base_dir = base.to_path_buf();
    c
}

fn event(payload: Payload) -> Event {
    Event {
        namespace: None,
        webhook_id: "w".into(),
        payload,
        headers: vec![],
        received_at: SystemTime::now(),
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn writes_json_and_blob_files_before_returning() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = factory(&config(json!({"path":"out/sub"})), &ctx(tmp.path())).unwrap();
    let doc = json!({"a":1,"b":[true,null],"c":"é"});
    sink.deliver(&event(Payload::Json(doc.clone().into())))
        .await
        .unwrap();
    let dir = tmp.path().join("out/sub");
    let written = files(&dir);
    assert_eq!(written.len(), 1);
    let name = written[0].file_name().unwrap().to_str().unwrap().to_owned();
    assert!(name.ends_with(".json"));
    assert!(uuid::Uuid::parse_str(name.trim_end_matches(".json")).is_ok());
    let text = fs::read(&written[0]).unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&text).unwrap(), doc);
    assert_eq!(text, serde_json::to_vec(&doc).unwrap());
    assert_eq!(
        fs::metadata(&written[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );

    let blob = Bytes::from_static(b"\x00\x01raw\xff");
    sink.deliver(&event(Payload::Blob(blob.clone())))
        .await
        .unwrap();
    let bins: Vec<_> = files(&dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    assert_eq!(bins.len(), 1);
    assert_eq!(fs::read(&bins[0]).unwrap(), blob.to_vec());
}

#[tokio::test]
async fn defaults_and_absolute_path_inside_base() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = factory(&config(json!({})), &ctx(tmp.path())).unwrap();
    sink.deliver(&event(Payload::Json(json!(1).into())))
        .await
        .unwrap();
    assert_eq!(files(tmp.path()).len(), 1);

    let inside = tmp.path().join("abs");
    let sink = factory(
        &config(
            json!({"path": inside.to_str().unwrap(), "base_dir": tmp.path().to_str().unwrap()}),
        ),
        &ctx(Path::new("/nonexistent-cwd")),
    )
    .unwrap();
    sink.deliver(&event(Payload::Json(json!("x").into())))
        .await
        .unwrap();
    assert_eq!(files(&inside).len(), 1);

    // A base_dir that does not exist yet is created on the first write.
    let later = tmp.path().join("later/base");
    let sink = factory(
        &config(json!({"base_dir": later.to_str().unwrap(), "path": "p"})),
        &ctx(tmp.path()),
    )
    .unwrap();
    sink.deliver(&event(Payload::Json(json!({}).into())))
        .await
        .unwrap();
    assert_eq!(files(&later.join("p")).len(), 1);
}

#[test]
fn rejects_traversal_at_load() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    symlink(outside.path(), tmp.path().join("escape")).unwrap();
    fs::create_dir(tmp.path().join("real")).unwrap();
    symlink(tmp.path().join("real"), tmp.path().join("inner")).unwrap();
    fs::write(tmp.path().join("file"), b"x").unwrap();
    let c = ctx(tmp.path());
    for path in [
        "../x",
        "a/../../x",
        "..",
        "%2e%2e/x",
        "%2E%2E%2Fx",
        "%252e%252e/x",
        "a\0b",
        "a%00b",
        "/etc",
        outside.path().to_str().unwrap(),
        "escape",
        "escape/deeper",
        "file",
    ] {
        assert!(
            factory(&config(json!({ "path": path })), &c).is_err(),
            "{path:?}"
        );
    }
    for base in [
        "/etc",
        "/etc/ssl",
        "/ETC",
        "/usr/lib",
        "/proc",
        "/var/lib/x",
        "/a/../etc",
        "",
    ] {
        assert!(
            factory(&config(json!({ "base_dir": base })), &c).is_err(),
            "{base:?}"
        );
    }
    // The root is a legal jail, but only for directories that are not system ones.
    assert!(factory(&config(json!({"base_dir":"/","path":"/etc"})), &c).is_err());
    assert!(factory(&config(json!({"base_dir":"/","path":"etc/x"})), &c).is_err());
    assert!(factory(&config(json!({"base_dir":"/","path":"."})), &c).is_err());
    assert!(factory(&config(json!({"path": 5})), &c).is_err());
    // Errors name the key; unknown keys are ignored; `null` means the default.
    for (mc, key) in [
        (json!({"path": 5}), "path"),
        (json!({"base_dir": []}), "base_dir"),
        (json!({"path": "../x"}), "path"),
        (json!({"base_dir": "/etc"}), "base_dir"),
        (json!({"path": "/elsewhere"}), "path"),
    ] {
        match factory(&config(mc.clone()), &c) {
            Err(BuildError::Option { key: got, .. }) => assert_eq!(got, key, "{mc}"),
            Err(e) => panic!("{mc}: {e}"),
            Ok(_) => panic!("{mc} should be rejected"),
        }
    }
    let err = factory(&config(json!({"path": "../x"})), &c).err().unwrap();
    assert_eq!(
        err.to_string(),
        "'module-config.path': must not contain '..', NUL or their encodings"
    );
    assert!(
        factory(
            &config(json!({"path": null, "base_dir": null, "mode": "x"})),
            &c
        )
        .is_ok()
    );
    // A symlink that stays inside the jail is fine.
    assert!(factory(&config(json!({"path":"inner/new"})), &c).is_ok());
    assert!(factory(&config(json!({"path":"./a/b"})), &c).is_ok());
}

#[tokio::test]
async fn rechecks_on_write() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let sink = factory(&config(json!({"path":"late"})), &ctx(tmp.path())).unwrap();
    // The target turns into an escaping symlink after load.
    symlink(outside.path(), tmp.path().join("late")).unwrap();
    let err = sink
        .deliver(&event(Payload::Json(json!(1).into())))
        .await
        .unwrap_err();
    assert!(matches!(err, SinkError::Config(_)), "{err:?}");
    assert!(!err.retryable());
    assert!(files(outside.path()).is_empty());
}

#[tokio::test]
async fn io_failure_is_retryable() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = factory(&config(json!({"path":"ro"})), &ctx(tmp.path())).unwrap();
    let ro = tmp.path().join("ro");
    fs::create_dir(&ro).unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o500)).unwrap();
    let probe = ro.join("probe");
    if fs::write(&probe, b"").is_ok() {
        // Running as root: permissions do not apply, nothing to test.
        fs::remove_file(probe).unwrap();
        return;
    }
    let err = sink
        .deliver(&event(Payload::Json(json!(1).into())))
        .await
        .unwrap_err();
    assert!(matches!(err, SinkError::Unavailable(_)), "{err:?}");
    assert!(err.retryable());
}

#[test]
fn error_kinds() {
    let full: SinkError = JailError::Io(io::Error::from_raw_os_error(28)).into();
    assert!(matches!(full, SinkError::Unavailable(_)) && full.retryable());
    let bad: SinkError = JailError::Config("escape".into()).into();
    assert!(matches!(bad, SinkError::Config(_)) && !bad.retryable());
}

#[test]
fn system_dirs() {
    for p in [
        "/etc",
        "/etc/",
        "/ETC/x",
        "/var/lib",
        "/private/var/log/a",
        "/proc/self",
    ] {
        assert!(is_system_dir(Path::new(p)), "{p}");
    }
    for p in [
        "/tmp/x",
        "/var/tmp/etc",
        "/etcetera",
        "/home/u",
        "/var/www",
        "/srv/data",
    ] {
        assert!(!is_system_dir(Path::new(p)), "{p}");
    }
}
