//! `{$vault:path#field}` references: fetched from a secret store before substitution.
//!
//! Lookups in a secret store are asynchronous HTTP; substitution ([`crate::subst`]) is
//! synchronous. A load therefore resolves in two steps:
//!
//! 1. collect the references of the documents being loaded ([`references_in_json`],
//!    [`crate::subst::vault_references`]) and fetch them through the [`SecretResolver`] (a cache
//!    with a time to live and a size bound in front of a [`SecretStore`]; one retry on a
//!    transient failure), which returns [`Secrets`];
//! 2. substitute as usual with a [`SecretEnv`], which serves the fetched values to
//!    [`crate::subst::Env::secret`].
//!
//! A reference that cannot be resolved (and has no inline default) rejects the webhook or
//! connection that holds it, alone: its last good value keeps serving and `/admin/config-status`
//! names the reference (`path#field`) and the reason. Values never appear in errors, logs or
//! `Debug` output ([`SecretValue`]). The request path never reaches the store: values are
//! resolved at load time only. An admin reload clears the cache ([`SecretResolver::invalidate`]).
//!
//! [`vault::VaultStore`] is the HashiCorp Vault (KV v2) store; tests and embedders can plug their
//! own [`SecretStore`].

pub mod vault;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;

use crate::subst::Env;

pub use vault::{VaultAuth, VaultSettings, VaultStore};

/// Longest path of a reference, as the Python gateway.
const MAX_PATH: usize = 512;
/// Longest field of a reference.
const MAX_FIELD: usize = 128;
/// Wait before the one retry of a transient failure.
const RETRY_DELAY: Duration = Duration::from_millis(200);

/// A secret value. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Arc<str>);

impl SecretValue {
    /// Wrap a value.
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }

    /// The value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

/// Why a secret store could not answer. Messages never contain a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// No secret at that path (HTTP 404).
    #[error("secret not found")]
    NotFound,
    /// The store refused access (HTTP 403: a wrong or expired token, a policy).
    #[error("permission denied")]
    Denied,
    /// A failure worth one retry: the store is unreachable, timed out, or answered 429 or 5xx.
    #[error("{0}")]
    Transient(String),
    /// Any other failure (a bad setting, an answer that cannot be read, a failed login).
    #[error("{0}")]
    Other(String),
}

impl SecretError {
    /// Whether one retry may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

/// Where secrets come from: [`VaultStore`] in production; tests and embedders may plug their own.
#[async_trait]
pub trait SecretStore: Send + Sync + 'static {
    /// Every field of the secret at `path`, as text (a string field as it is, any other JSON
    /// value as its JSON text).
    async fn read(&self, path: &str) -> Result<BTreeMap<String, SecretValue>, SecretError>;
}

/// A parsed `path#field` reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretRef {
    /// The secret's path under the mount, e.g. `app/auth`.
    pub path: String,
    /// The field of the secret, e.g. `webhook_token`.
    pub field: String,
}

impl SecretRef {
    /// Parse `path#field` (the text after `{$vault:`, without the default). The path is
    /// 1 to 512 of `A-Z a-z 0-9 _ . / -` without `..`; the field 1 to 128 of `A-Z a-z 0-9 _ . -`.
    pub fn parse(reference: &str) -> Result<Self, String> {
        let Some((path, field)) = reference.split_once('#') else {
            return Err("invalid reference: expected path#field".into());
        };
        let path_ok = (1..=MAX_PATH).contains(&path.len())
            && !path.contains("..")
            && path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_./-".contains(&b));
        if !path_ok {
            return Err("invalid reference: bad path".into());
        }
        let field_ok = (1..=MAX_FIELD).contains(&field.len())
            && field
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !field_ok {
            return Err("invalid reference: bad field".into());
        }
        Ok(Self {
            path: path.to_owned(),
            field: field.to_owned(),
        })
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.path, self.field)
    }
}

/// The references (`path#field`) in one JSON document given as text, or none when it holds no
/// `{$vault:` (checked on the bytes first, so documents without references cost one scan).
pub fn references_in_json(json: &[u8], out: &mut BTreeSet<String>) {
    let may_hold = |needle: &[u8]| json.windows(needle.len()).any(|w| w == needle);
    // A `\u` escape might spell the reference.
    if !may_hold(b"vault:") && !may_hold(b"\\u") {
        return;
    }
    if let Ok(value) = serde_json::from_slice::<Value>(json) {
        crate::subst::vault_references(&value, out);
    }
}

/// The outcome of fetching a set of references: each one's value, or why it is unresolved.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    values: HashMap<String, Result<SecretValue, String>>,
}

impl Secrets {
    /// No references fetched.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record the outcome of `reference` (`path#field`); for stores that fill it by hand.
    pub fn insert(&mut self, reference: impl Into<String>, outcome: Result<SecretValue, String>) {
        self.values.insert(reference.into(), outcome);
    }

    /// The outcome of `reference`; a reference that was not fetched is unresolved.
    pub fn get(&self, reference: &str) -> Result<&SecretValue, String> {
        match self.values.get(reference) {
            Some(Ok(v)) => Ok(v),
            Some(Err(reason)) => Err(reason.clone()),
            None => Err("not fetched".into()),
        }
    }

    /// Number of references held.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether no reference is held.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// An [`Env`] that serves variables from `env` and Vault references from `secrets`. With
/// `secrets` `None` (Vault off), references resolve to their inline default only.
#[derive(Clone, Copy)]
pub struct SecretEnv<'a> {
    /// Where `{$VAR}` values come from.
    pub env: &'a dyn Env,
    /// The fetched references, when a secret store is configured.
    pub secrets: Option<&'a Secrets>,
}

impl Env for SecretEnv<'_> {
    fn var(&self, name: &str) -> Option<String> {
        self.env.var(name)
    }

    fn secret(&self, reference: &str) -> Option<Result<String, String>> {
        let secrets = self.secrets?;
        Some(secrets.get(reference).map(|v| v.expose().to_owned()))
    }
}

/// Cache settings of a [`SecretResolver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// How long a fetched value is reused; zero turns the cache off.
    pub ttl: Duration,
    /// Most values held; the oldest go first.
    pub max_size: usize,
}

impl Default for CacheSettings {
    /// 300 s, 1000 entries (VAULT_CACHE_TTL_SECONDS, VAULT_CACHE_MAX_SIZE).
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            max_size: 1000,
        }
    }
}

/// Fetches references through a [`SecretStore`], with a cache per `path#field`.
pub struct SecretResolver {
    store: Arc<dyn SecretStore>,
    cache: CacheSettings,
    entries: Mutex<HashMap<String, (SecretValue, Instant)>>,
    retry_delay: Duration,
}

impl fmt::Debug for SecretResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretResolver")
            .field("cache", &self.cache)
            .field("cached", &self.cached())
            .finish_non_exhaustive()
    }
}

impl SecretResolver {
    /// A resolver in front of `store`.
    pub fn new(store: Arc<dyn SecretStore>, cache: CacheSettings) -> Self {
        Self {
            store,
            cache,
            entries: Mutex::new(HashMap::new()),
            retry_delay: RETRY_DELAY,
        }
    }

    /// Forget every cached value: the next [`SecretResolver::resolve`] asks the store again.
    /// Admin reloads call it.
    pub fn invalidate(&self) {
        self.lock().clear();
    }

    /// Number of values cached (expired ones included until they are evicted).
    pub fn cached(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (SecretValue, Instant)>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fetch `references` (`path#field`): from the cache when fresh, else one store read per
    /// path (retried once on a transient failure). Never fails as a whole: each reference gets
    /// its value or the reason it is unresolved.
    pub async fn resolve(&self, references: &BTreeSet<String>) -> Secrets {
        let mut secrets = Secrets::new();
        let mut wanted: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        {
            let now = Instant::now();
            let entries = self.lock();
            for reference in references {
                match SecretRef::parse(reference) {
                    Err(reason) => secrets.insert(reference.clone(), Err(reason)),
                    Ok(r) => match entries.get(reference) {
                        Some((v, at)) if now.duration_since(*at) < self.cache.ttl => {
                            secrets.insert(reference.clone(), Ok(v.clone()));
                        }
                        _ => wanted
                            .entry(r.path)
                            .or_default()
                            .push((reference.clone(), r.field)),
                    },
                }
            }
        }
        for (path, fields) in wanted {
            let read = match self.store.read(&path).await {
                Err(e) if e.is_transient() => {
                    tracing::debug!(path, error = %e, "secret store read failed; retrying once");
                    tokio::time::sleep(self.retry_delay).await;
                    self.store.read(&path).await
                }
                other => other,
            };
            match read {
                Ok(values) => {
                    for (reference, field) in fields {
                        match values.get(&field) {
                            Some(v) => {
                                self.remember(&reference, v);
                                secrets.insert(reference, Ok(v.clone()));
                            }
                            None => secrets.insert(reference, Err("field not found".into())),
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(path, error = %e, "secret could not be read");
                    for (reference, _) in fields {
                        secrets.insert(reference, Err(e.to_string()));
                    }
                }
            }
        }
        secrets
    }

    fn remember(&self, reference: &str, value: &SecretValue) {
        if self.cache.ttl.is_zero() || self.cache.max_size == 0 {
            return;
        }
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.len() >= self.cache.max_size && !entries.contains_key(reference) {
            let ttl = self.cache.ttl;
            entries.retain(|_, (_, at)| now.duration_since(*at) < ttl);
            while entries.len() >= self.cache.max_size {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => entries.remove(&k),
                    None => break,
                };
            }
        }
        entries.insert(reference.to_owned(), (value.clone(), now));
    }
}

/// Fetch the references of documents about to be loaded, as both providers do before a load:
/// `collect` adds them (with [`references_in_json`] or [`crate::subst::vault_references`]) and
/// `resolver` fetches them. `None` without a resolver (Vault off; `collect` is not called), so
/// substitution uses the inline defaults only. Pass the result to a [`SecretEnv`].
pub async fn prefetch(
    resolver: Option<&SecretResolver>,
    collect: impl FnOnce(&mut BTreeSet<String>),
) -> Option<Secrets> {
    let resolver = resolver?;
    let mut references = BTreeSet::new();
    collect(&mut references);
    Some(resolver.resolve(&references).await)
}

#[cfg(test)]
mod tests;
