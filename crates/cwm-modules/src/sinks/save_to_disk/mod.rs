//! `save_to_disk` sink: one new file per event inside a jail directory.
//!
//! `module-config` ([`SaveToDiskConfig`]): `path` (default `"."`; relative to `base_dir`, or absolute inside it) and
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
//!
//! [`SinkError::Config`]: crate::SinkError::Config
//! [`SinkError::Unavailable`]: crate::SinkError::Unavailable

mod config;
mod jail;
mod sink;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use config::SaveToDiskConfig;

use crate::sink::{BuildError, Sink, SinkBuilder, SinkContext};
use sink::DiskSink;

/// Builds `save_to_disk` sinks.
#[derive(Debug)]
pub struct SaveToDiskBuilder;

impl SinkBuilder for SaveToDiskBuilder {
    fn name(&self) -> &'static str {
        "save_to_disk"
    }

    fn build(&self, cx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, BuildError> {
        let config: SaveToDiskConfig = cx.module_config()?;
        let jail = config.resolve(&cx.modules.base_dir)?;
        Ok(Arc::new(DiskSink {
            jail: Arc::new(jail),
        }))
    }
}
