//! `save_to_disk` sink: one new file per event inside a jail directory.
//!
//! `module-config`: `path` (default `"."`; relative to `base_dir`, or absolute inside it) and
//! `base_dir` (default: the process working directory; a relative one is taken from there).
//!
//! Each event becomes `<uuid4>.json` holding the payload as JSON text (the body as the sender wrote
//! it, or compact JSON when credential cleanup changed it), or `<uuid4>.bin`
//! holding the raw bytes of a blob payload (upstream wrote `<uuid4>.txt` holding the Python repr,
//! which nothing but Python reads back; so raw bytes are kept as they came). Files are created with
//! `O_CREAT|O_EXCL` and mode 0600, missing directories with mode 0700; the data and the directory
//! entry are fsynced before `deliver` returns `Ok`, so a 200 means the file survives a crash.
//!
//! Jail rules, checked when the webhook loads (a bad config rejects it) and again on every write:
//! no `..` and no NUL in `base_dir` or `path`, also after percent-decoding `path` (twice); an
//! absolute `path` must lie inside `base_dir`; symlinks are resolved and must stay inside
//! `base_dir`; system directories (`/etc`, `/usr`, `/proc`, `/var/lib`, ...) can be neither the
//! base nor the target, except below `/tmp` and `/var/tmp`; the filesystem root cannot be the
//! target.
//!
//! Errors: jail violations are [`SinkError::Config`]; I/O failures (disk full, permissions) are
//! [`SinkError::Unavailable`], so the sender may retry.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use percent_encoding::percent_decode_str;

use cwm_config::WebhookConfig;

use crate::context::ModuleContext;
use crate::opts;
use crate::sink::{Event, Payload, Sink, SinkError};

pub fn factory(config: &WebhookConfig, ctx: &ModuleContext) -> Result<Arc<dyn Sink>, String> {
    let mc = &config.module_config;
    let path = opts::string(mc, "path")?.unwrap_or(".");
    let base = opts::string(mc, "base_dir")?;
    let jail = Jail::new(base, path, &ctx.base_dir)?;
    // Catch symlink escapes and system directories now; missing directories are made on write.
    match jail.resolve(false) {
        Ok(_) => {}
        Err(JailError::Config(msg)) => return Err(msg),
        Err(JailError::Io(e)) => {
            tracing::warn!(error = %e, "save_to_disk: target directory not checkable yet");
        }
    }
    Ok(Arc::new(DiskSink {
        jail: Arc::new(jail),
    }))
}

struct DiskSink {
    jail: Arc<Jail>,
}

#[async_trait]
impl Sink for DiskSink {
    fn module(&self) -> &'static str {
        "save_to_disk"
    }

    async fn deliver(&self, event: &Event) -> Result<(), SinkError> {
        let (data, ext) = match &event.payload {
            Payload::Json(v) => (
                v.to_json_bytes()
                    .map_err(|e| SinkError::Rejected(e.to_string()))?,
                "json",
            ),
            Payload::Blob(b) => (b.clone(), "bin"),
        };
        let jail = Arc::clone(&self.jail);
        tokio::task::spawn_blocking(move || jail.write(&data, ext))
            .await
            .map_err(|_| SinkError::Unavailable("file write task failed".into()))?
    }
}

#[derive(Debug)]
enum JailError {
    Config(String),
    Io(io::Error),
}

impl From<io::Error> for JailError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<JailError> for SinkError {
    fn from(e: JailError) -> Self {
        match e {
            JailError::Config(m) => SinkError::Config(m),
            // io::Error's text never holds the path.
            JailError::Io(e) => SinkError::Unavailable(format!("file write failed: {e}")),
        }
    }
}

fn config_err<T>(msg: &str) -> Result<T, JailError> {
    Err(JailError::Config(msg.to_owned()))
}

/// The target directory: a base (the jail root) and a path below it.
#[derive(Debug)]
struct Jail {
    /// Absolute, without `..`.
    base: PathBuf,
    /// Only normal components.
    rel: PathBuf,
}

impl Jail {
    /// Lexical checks of the configured strings.
    fn new(base: Option<&str>, path: &str, cwd: &Path) -> Result<Self, String> {
        let base = match base {
            None => cwd.to_path_buf(),
            Some(b) => {
                if b.trim().is_empty() {
                    return Err("'module-config.base_dir' is empty".into());
                }
                if b.contains("..") || b.contains('\0') {
                    return Err("'module-config.base_dir' must not contain '..' or NUL".into());
                }
                cwd.join(b)
            }
        };
        if base.components().any(|c| c == Component::ParentDir) || !base.is_absolute() {
            return Err("'module-config.base_dir' must be an absolute path without '..'".into());
        }
        if is_system_dir(&base) {
            return Err("'module-config.base_dir' is a system directory".into());
        }

        let bad_path = || "'module-config.path' must not contain '..', NUL or their encodings";
        let once = percent_decode_str(path).decode_utf8_lossy();
        let twice = percent_decode_str(&once).decode_utf8_lossy();
        if [path, &*once, &*twice]
            .iter()
            .any(|p| p.contains("..") || p.contains('\0'))
        {
            return Err(bad_path().into());
        }
        let path = Path::new(path);
        let rel = if path.is_absolute() {
            let canonical_base = fs::canonicalize(&base).ok();
            path.strip_prefix(&base)
                .ok()
                .or_else(|| {
                    canonical_base
                        .as_deref()
                        .and_then(|c| path.strip_prefix(c).ok())
                })
                .ok_or("'module-config.path' must lie inside base_dir")?
                .to_path_buf()
        } else {
            path.to_path_buf()
        };
        let mut clean = PathBuf::new();
        for c in rel.components() {
            match c {
                Component::Normal(n) => clean.push(n),
                Component::CurDir => {}
                _ => return Err(bad_path().into()),
            }
        }
        if is_system_dir(&base.join(&clean)) {
            return Err("'module-config.path' is a system directory".into());
        }
        Ok(Self { base, rel: clean })
    }

    /// Resolve the target directory, following symlinks and checking each step stays in the jail.
    /// With `create`, missing directories (the base included) are made with mode 0700; without it,
    /// a missing directory ends the check with `Ok(None)`.
    fn resolve(&self, create: bool) -> Result<Option<PathBuf>, JailError> {
        let base = match fs::canonicalize(&self.base) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.base)?;
                fs::canonicalize(&self.base)?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if is_system_dir(&base) {
            return config_err("base_dir resolves to a system directory");
        }
        let mut cur = base.clone();
        for name in self.rel.iter() {
            let next = cur.join(name);
            cur = match step(&next, &base)? {
                Some(dir) => dir,
                None if !create => return Ok(None),
                None => match DirBuilder::new().mode(0o700).create(&next) {
                    Ok(()) => next,
                    // Made by a concurrent delivery (or swapped in): check it like any other.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        step(&next, &base)?.ok_or(JailError::Io(e))?
                    }
                    Err(e) => return Err(e.into()),
                },
            };
            if is_system_dir(&cur) {
                return config_err("path resolves to a system directory");
            }
        }
        if is_system_dir(&cur) || cur.parent().is_none() {
            return config_err("path resolves to a system directory");
        }
        Ok(Some(cur))
    }

    /// Write one file. Blocking: runs on the blocking pool.
    fn write(&self, data: &[u8], ext: &str) -> Result<(), SinkError> {
        let dir = self
            .resolve(true)?
            .ok_or_else(|| SinkError::Unavailable("target directory missing".into()))?;
        let file = dir.join(format!("{}.{ext}", uuid::Uuid::new_v4()));
        let result = write_new(&file, data).and_then(|()| File::open(&dir)?.sync_all());
        if let Err(e) = result {
            // No half-written files: the sender retries the whole event.
            let _ = fs::remove_file(&file);
            return Err(JailError::Io(e).into());
        }
        tracing::debug!(file = %file.display(), "save_to_disk: written");
        Ok(())
    }
}

/// Where `next` leads if it exists: a directory inside `base`, after following a symlink.
fn step(next: &Path, base: &Path) -> Result<Option<PathBuf>, JailError> {
    let meta = match fs::symlink_metadata(next) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let dir = if meta.file_type().is_symlink() {
        let target = match fs::canonicalize(next) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return config_err("path contains a dangling symlink");
            }
            Err(e) => return Err(e.into()),
        };
        if !target.starts_with(base) {
            return config_err("path escapes base_dir through a symlink");
        }
        if !target.is_dir() {
            return config_err("path is not a directory");
        }
        target
    } else if meta.is_dir() {
        next.to_path_buf()
    } else {
        return config_err("path is not a directory");
    };
    Ok(Some(dir))
}

fn write_new(file: &Path, data: &[u8]) -> io::Result<()> {
    // create_new = O_CREAT|O_EXCL: never overwrite, never follow a planted symlink.
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)?;
    f.write_all(data)?;
    f.sync_data()
}

/// System directories the upstream refuses as targets, compared case-insensitively; temp trees are exempt.
fn is_system_dir(path: &Path) -> bool {
    const TEMP: &[&str] = &[
        "/tmp/",
        "/var/tmp/",
        "/var/folders/",
        "/private/var/tmp/",
        "/private/var/folders/",
    ];
    const BLOCKED: &[&str] = &[
        "/etc",
        "/usr",
        "/bin",
        "/sbin",
        "/lib",
        "/lib64",
        "/sys",
        "/proc",
        "/dev",
        "/root",
        "/boot",
        "/private/etc",
        "/var/log",
        "/var/db",
        "/var/run",
        "/var/lib",
        "/var/cache",
        "/var/spool",
        "/var/mail",
        "/var/backups",
        "/private/var/log",
        "/private/var/db",
        "/private/var/run",
        "/private/var/lib",
        "/private/var/cache",
        "/private/var/spool",
        "/private/var/mail",
        "/private/var/backups",
    ];
    let p = path.to_string_lossy().to_lowercase();
    let p = p.trim_end_matches('/');
    if TEMP.iter().any(|t| p.starts_with(t)) {
        return false;
    }
    BLOCKED.iter().any(|d| {
        p.strip_prefix(d)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::{Value, json};
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::time::SystemTime;

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
}
