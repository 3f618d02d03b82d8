//! `cwm-config` alone, without the receiver: webhook configs read from files and followed as the
//! files change.
//!
//! Shows: a `FileProvider` over a `webhooks.json` (written to a temporary directory) with the
//! `PassThrough` compiler, which serves each validated `WebhookConfig` as it is; reading a
//! snapshot; subscribing to changes (`ConfigProvider::subscribe`); changing the file, and seeing
//! the change announced and the new snapshot.
//!
//! Run: `cargo run -p cwm-examples --example config_only`

use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cwm_config::file::{FILE_NAMESPACE, FileProvider};
use cwm_config::{ConfigProvider, PassThrough, ProcessEnv, WebhookConfig};

fn print_snapshot(provider: &FileProvider<PassThrough>) {
    let snapshot = provider.snapshot();
    for (id, config) in snapshot.webhooks_in(FILE_NAMESPACE) {
        let WebhookConfig { module, ack, .. } = &*config;
        println!("  {id}: module {module:?}, ack {ack:?}");
    }
}

/// Replace the file at once (write aside, then rename), as a deployment tool would.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let aside = path.with_extension("json.new");
    std::fs::write(&aside, text)?;
    std::fs::rename(&aside, path)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let webhooks = dir.path().join("webhooks.json");
    write_atomically(&webhooks, r#"{"orders": {"module": "log"}}"#)?;

    // A missing connections.json counts as no connections.
    let provider = Arc::new(FileProvider::new(
        &webhooks,
        dir.path().join("connections.json"),
        Arc::new(PassThrough),
        Arc::new(ProcessEnv),
    ));
    provider.load().await?;
    println!("loaded:");
    print_snapshot(&provider);

    // Subscribe before the change: the receiver wakes for every snapshot published after this.
    let mut changes = provider.subscribe();
    provider.watch(Duration::from_millis(50))?;
    write_atomically(
        &webhooks,
        r#"{"orders": {"module": "log"}, "refunds": {"module": "log", "ack": "receive"}}"#,
    )?;

    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            changes.changed().await?;
            let count = *changes.borrow_and_update();
            if provider.snapshot().webhook(None, "refunds").is_some() {
                return Ok::<u64, tokio::sync::watch::error::RecvError>(count);
            }
        }
    })
    .await??;
    println!("change #{seen} announced; now:");
    print_snapshot(&provider);
    provider.shutdown().await;
    Ok(())
}
