//! Moving configuration between files and etcd: import, export and validation (the
//! receiver only reads etcd; these writes belong to the command-line tool).
//!
//! Values are copied **raw**: `{$VAR}` and `{$vault:...}` placeholders are written to etcd
//! unresolved, so every receiver resolves them against its own environment and Vault, as it
//! does with files. Validation resolves them the way a receiver would: against `env`, and
//! against Vault when a [`SecretResolver`] is given.

use std::path::Path;

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::ConfigError;
use crate::etcd::Entry;
use crate::keys::{KeyRef, connection_key, namespace_webhooks_prefix, parse_key, webhook_key};
use crate::names::is_valid_namespace;
use crate::provider::{Compiler, compile_webhook, parse_connection};
use crate::secrets::{SecretEnv, SecretResolver, prefetch, references_in_json};
use crate::subst::{Env, vault_references};

/// Webhooks and connections as their JSON files hold them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entries {
    /// Webhook configs by id.
    pub webhooks: Map<String, Value>,
    /// Connection configs by name.
    pub connections: Map<String, Value>,
}

/// Read `webhooks.json` and `connections.json`; a missing file holds no entries.
pub fn read_files(webhooks: &Path, connections: &Path) -> Result<Entries, ConfigError> {
    fn read(path: &Path) -> Result<Map<String, Value>, ConfigError> {
        // `cwmctl` reads its input files before any request is served.
        #[allow(clippy::disallowed_methods)]
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
            Err(source) => {
                return Err(ConfigError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(ConfigError::NotAnObject {
                path: path.to_owned(),
            }),
            Err(e) => Err(ConfigError::Json {
                path: path.to_owned(),
                message: e.to_string(),
            }),
        }
    }
    Ok(Entries {
        webhooks: read(webhooks)?,
        connections: read(connections)?,
    })
}

/// One entry that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invalid {
    /// `webhooks/<id>`, `connections/<name>` or the etcd key.
    pub key: String,
    /// Why it was refused, as a receiver would log it.
    pub reason: String,
}

/// Validate entries exactly as a receiver would load them, Vault references fetched through
/// `secrets` (with `None`, as a receiver with Vault off: only their defaults). Returns the
/// refused ones.
pub async fn validate_entries<C: Compiler>(
    entries: &Entries,
    compiler: &C,
    env: &dyn Env,
    secrets: Option<&SecretResolver>,
) -> Vec<Invalid> {
    let fetched = prefetch(secrets, |references| {
        for v in entries
            .webhooks
            .values()
            .chain(entries.connections.values())
        {
            vault_references(v, references);
        }
    })
    .await;
    let env = SecretEnv {
        env,
        secrets: fetched.as_ref(),
    };
    let env: &dyn Env = &env;
    let mut out = Vec::new();
    for (id, v) in &entries.webhooks {
        if let Err(reason) = compile_webhook(compiler, env, id, v.clone()) {
            out.push(Invalid {
                key: format!("webhooks/{id}"),
                reason: reason.to_string(),
            });
        }
    }
    for (name, v) in &entries.connections {
        if let Err(reason) = parse_connection(env, name, v.clone()) {
            out.push(Invalid {
                key: format!("connections/{name}"),
                reason: reason.to_string(),
            });
        }
    }
    out
}

/// Validate every key under `prefix` in etcd (all namespaces and the connections), Vault
/// references fetched through `secrets` as in [`validate_entries`].
/// Returns the number of keys checked and the refused ones.
///
/// A key under the prefix that fits neither layout (`/cwm/default/webhook/x`,
/// `/cwm/global/connection/y`, `/cwm/x`) is refused too: receivers ignore it, so it is most
/// likely a webhook or connection put at the wrong place.
pub async fn validate_etcd<C: Compiler>(
    client: &mut Client,
    prefix: &str,
    page_size: i64,
    compiler: &C,
    env: &dyn Env,
    secrets: Option<&SecretResolver>,
) -> Result<(usize, Vec<Invalid>), ConfigError> {
    let (_, kvs) = crate::etcd::read_all(client, prefix, page_size).await?;
    let fetched = prefetch(secrets, |references| {
        for (_, value) in &kvs {
            references_in_json(value, references);
        }
    })
    .await;
    let env = SecretEnv {
        env,
        secrets: fetched.as_ref(),
    };
    let env: &dyn Env = &env;
    let mut invalid = Vec::new();
    let mut checked = 0;
    for (key, value) in &kvs {
        let reason = match crate::etcd::evaluate(prefix, compiler, env, key, value) {
            Entry::Ignored => Some(format!(
                "fits neither {prefix}{{namespace}}/webhooks/{{id}} nor \
                 {prefix}{}/connections/{{name}}; receivers ignore it",
                crate::keys::GLOBAL
            )),
            Entry::BadKey(reason) => Some(reason),
            Entry::Webhook { result, .. } => result.err(),
            Entry::Connection { result, .. } => result.err(),
        };
        checked += 1;
        if let Some(reason) = reason {
            invalid.push(Invalid {
                key: String::from_utf8_lossy(key).into_owned(),
                reason,
            });
        }
    }
    Ok((checked, invalid))
}

/// What an import did (or, in a dry run, would do) with each key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The key did not exist and was written.
    Created,
    /// The key held another value and was overwritten (`force`).
    Overwritten,
    /// The key exists and `force` was not given.
    Skipped,
    /// The key already holds exactly this value.
    Unchanged,
}

/// The outcome of one import.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    /// Whether this was a dry run (nothing written).
    pub dry_run: bool,
    /// Each etcd key and what was done with it.
    pub actions: Vec<(String, Action)>,
}

impl ImportReport {
    /// How many keys had `action`.
    pub fn count(&self, action: Action) -> usize {
        self.actions.iter().filter(|(_, a)| *a == action).count()
    }
}

/// Import options.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Namespace the webhooks go to.
    pub namespace: String,
    /// Report without writing.
    pub dry_run: bool,
    /// Overwrite keys that already exist.
    pub force: bool,
}

/// Write webhooks under `{prefix}{namespace}/webhooks/{id}` and connections under
/// `{prefix}global/connections/{name}`. Without `force` an existing key is never overwritten: the
/// check and the write are one transaction, so a concurrent writer cannot be clobbered either.
pub async fn import(
    client: &mut Client,
    prefix: &str,
    entries: &Entries,
    options: &ImportOptions,
) -> Result<ImportReport, ConfigError> {
    if !is_valid_namespace(&options.namespace) {
        return Err(ConfigError::Setting(format!(
            "invalid namespace {:?}: must match [a-zA-Z0-9_-]{{1,64}}",
            options.namespace
        )));
    }
    let mut writes: Vec<(String, String)> = Vec::new();
    for (id, v) in &entries.webhooks {
        writes.push((webhook_key(prefix, &options.namespace, id), v.to_string()));
    }
    for (name, v) in &entries.connections {
        writes.push((connection_key(prefix, name), v.to_string()));
    }
    let mut report = ImportReport {
        dry_run: options.dry_run,
        actions: Vec::with_capacity(writes.len()),
    };
    for (key, value) in writes {
        let existing = client
            .get(key.as_bytes(), None)
            .await
            .map_err(etcd_err)?
            .kvs()
            .first()
            .map(|kv| kv.value().to_vec());
        let action = match existing {
            Some(old) if old == value.as_bytes() => Action::Unchanged,
            Some(_) if !options.force => Action::Skipped,
            Some(_) => Action::Overwritten,
            None => Action::Created,
        };
        if !options.dry_run {
            match action {
                Action::Created => {
                    // Only if the key still does not exist.
                    let txn = Txn::new()
                        .when([Compare::create_revision(
                            key.as_bytes(),
                            CompareOp::Equal,
                            0,
                        )])
                        .and_then([TxnOp::put(key.as_bytes(), value.as_bytes(), None)]);
                    let resp = client.txn(txn).await.map_err(etcd_err)?;
                    if !resp.succeeded() {
                        report.actions.push((key, Action::Skipped));
                        continue;
                    }
                }
                Action::Overwritten => {
                    client
                        .put(key.as_bytes(), value.as_bytes(), None)
                        .await
                        .map_err(etcd_err)?;
                }
                Action::Skipped | Action::Unchanged => {}
            }
        }
        report.actions.push((key, action));
    }
    Ok(report)
}

/// Read one namespace's webhooks and every connection back into file form. Values that are not
/// JSON objects are returned as invalid instead.
pub async fn export(
    client: &mut Client,
    prefix: &str,
    namespace: &str,
    page_size: i64,
) -> Result<(Entries, Vec<Invalid>), ConfigError> {
    if !is_valid_namespace(namespace) {
        return Err(ConfigError::Setting(format!(
            "invalid namespace {namespace:?}"
        )));
    }
    let mut entries = Entries::default();
    let mut invalid = Vec::new();
    let ranges = [
        namespace_webhooks_prefix(prefix, namespace),
        format!("{prefix}{}/connections/", crate::keys::GLOBAL),
    ];
    for range in ranges {
        let (_, kvs) = crate::etcd::read_all(client, &range, page_size).await?;
        for (key, value) in kvs {
            let key_text = String::from_utf8_lossy(&key).into_owned();
            let target = match parse_key(prefix, &key) {
                Ok(KeyRef::Webhook { id, .. }) => (&mut entries.webhooks, id.to_owned()),
                Ok(KeyRef::Connection { name }) => (&mut entries.connections, name.to_owned()),
                Err(_) => continue,
            };
            match serde_json::from_slice::<Value>(&value) {
                Ok(v @ Value::Object(_)) => {
                    target.0.insert(target.1, v);
                }
                Ok(_) => invalid.push(Invalid {
                    key: key_text,
                    reason: "value is not a JSON object".into(),
                }),
                Err(e) => invalid.push(Invalid {
                    key: key_text,
                    reason: crate::EntryError::Json(e.to_string()).to_string(),
                }),
            }
        }
    }
    Ok((entries, invalid))
}

fn etcd_err(e: etcd_client::Error) -> ConfigError {
    ConfigError::Etcd(e.to_string())
}
