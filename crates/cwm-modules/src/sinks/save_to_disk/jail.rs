//! The jail of a `save_to_disk` sink: the directory rules, checked lexically at load
//! ([`Jail::new`]) and on the filesystem at load and on every write ([`Jail::resolve`]).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use percent_encoding::percent_decode_str;

use crate::sink::{BuildError, SinkError};

/// Why the jail refused or failed.
#[derive(Debug)]
pub(super) enum JailError {
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
pub(super) struct Jail {
    /// Absolute, without `..`.
    base: PathBuf,
    /// Only normal components.
    rel: PathBuf,
}

impl Jail {
    /// Lexical checks of the configured strings.
    pub(super) fn new(base: Option<&str>, path: &str, cwd: &Path) -> Result<Self, BuildError> {
        let base = match base {
            None => cwd.to_path_buf(),
            Some(b) => {
                if b.trim().is_empty() {
                    return Err(BuildError::option("base_dir", "is empty"));
                }
                if b.contains("..") || b.contains('\0') {
                    return Err(BuildError::option(
                        "base_dir",
                        "must not contain '..' or NUL",
                    ));
                }
                cwd.join(b)
            }
        };
        if base.components().any(|c| c == Component::ParentDir) || !base.is_absolute() {
            return Err(BuildError::option(
                "base_dir",
                "must be an absolute path without '..'",
            ));
        }
        if is_system_dir(&base) {
            return Err(BuildError::option("base_dir", "is a system directory"));
        }

        let bad_path =
            || BuildError::option("path", "must not contain '..', NUL or their encodings");
        let once = percent_decode_str(path).decode_utf8_lossy();
        let twice = percent_decode_str(&once).decode_utf8_lossy();
        if [path, &*once, &*twice]
            .iter()
            .any(|p| p.contains("..") || p.contains('\0'))
        {
            return Err(bad_path());
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
                .ok_or_else(|| BuildError::option("path", "must lie inside base_dir"))?
                .to_path_buf()
        } else {
            path.to_path_buf()
        };
        let mut clean = PathBuf::new();
        for c in rel.components() {
            match c {
                Component::Normal(n) => clean.push(n),
                Component::CurDir => {}
                _ => return Err(bad_path()),
            }
        }
        if is_system_dir(&base.join(&clean)) {
            return Err(BuildError::option("path", "is a system directory"));
        }
        Ok(Self { base, rel: clean })
    }

    /// Resolve the target directory, following symlinks and checking each step stays in the jail.
    /// With `create`, missing directories (the base included) are made with mode 0700; without it,
    /// a missing directory ends the check with `Ok(None)`.
    pub(super) fn resolve(&self, create: bool) -> Result<Option<PathBuf>, JailError> {
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
    #[allow(clippy::disallowed_methods)]
    pub(super) fn write(&self, data: &[u8], ext: &str) -> Result<(), SinkError> {
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

/// Blocking: called by [`Jail::write`] on the blocking pool.
#[allow(clippy::disallowed_methods)]
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
pub(super) fn is_system_dir(path: &Path) -> bool {
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
