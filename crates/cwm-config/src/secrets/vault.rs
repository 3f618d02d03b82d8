//! The HashiCorp Vault secret store: KV v2 (or v1) reads through the `vaultrs` client, with a
//! token or an AppRole login.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use vaultrs::client::{Client, VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use super::{SecretError, SecretStore, SecretValue};
use crate::error::ConfigError;

/// Mount of the AppRole auth method.
const APPROLE_MOUNT: &str = "approle";

/// How the store authenticates to Vault.
#[derive(Clone, PartialEq, Eq)]
pub enum VaultAuth {
    /// A token (VAULT_TOKEN).
    Token(String),
    /// AppRole login (VAULT_ROLE_ID, VAULT_SECRET_ID) at `auth/approle`; the client token it
    /// returns is used until Vault refuses it, then the store logs in again.
    AppRole {
        /// The role id.
        role_id: String,
        /// The secret id.
        secret_id: String,
    },
}

impl fmt::Debug for VaultAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token(_) => f.write_str("Token(<redacted>)"),
            Self::AppRole { role_id, .. } => f
                .debug_struct("AppRole")
                .field("role_id", role_id)
                .field("secret_id", &"<redacted>")
                .finish(),
        }
    }
}

/// Where Vault is and how to reach it. `Debug` redacts the token and secret id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultSettings {
    /// VAULT_ADDR, e.g. `http://127.0.0.1:8200`.
    pub addr: String,
    /// VAULT_TOKEN, else VAULT_ROLE_ID + VAULT_SECRET_ID.
    pub auth: VaultAuth,
    /// VAULT_NAMESPACE (Vault Enterprise), sent as `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// VAULT_MOUNT_POINT: the KV secrets engine's mount (default `secret`).
    pub mount: String,
    /// VAULT_KV_VERSION: 2 (default) or 1.
    pub kv_version: u8,
    /// VAULT_VERIFY: whether the server certificate is checked (an https:// address).
    pub verify: bool,
    /// VAULT_VERIFY given as a path: a PEM bundle of CA certificates to trust.
    pub ca_cert: Option<String>,
    /// VAULT_TIMEOUT_SECONDS: the timeout of one request (1 to 300 s).
    pub timeout: Duration,
}

impl VaultSettings {
    /// Settings for `addr` with `auth`, the defaults elsewhere (mount `secret`, KV v2, verify,
    /// 10 s timeout).
    pub fn new(addr: impl Into<String>, auth: VaultAuth) -> Self {
        Self {
            addr: addr.into(),
            auth,
            namespace: None,
            mount: "secret".into(),
            kv_version: 2,
            verify: true,
            ca_cert: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Reads secrets from Vault's KV engine; a [`SecretStore`].
pub struct VaultStore {
    settings: VaultSettings,
    client: tokio::sync::Mutex<Session>,
}

struct Session {
    client: VaultClient,
    /// Whether the client holds a token (always with VAULT_TOKEN; after a login with AppRole).
    authenticated: bool,
}

impl fmt::Debug for VaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultStore")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl VaultStore {
    /// A store for `settings`. Reads the CA file when one is set; contacts Vault only on the
    /// first read. TLS is rustls on ring (installed as the process default provider when none
    /// is).
    pub fn new(settings: VaultSettings) -> Result<Self, ConfigError> {
        let bad = |m: String| ConfigError::Setting(format!("Vault: {m}"));
        if !matches!(settings.kv_version, 1 | 2) {
            return Err(bad(format!(
                "VAULT_KV_VERSION must be 1 or 2, not {}",
                settings.kv_version
            )));
        }
        if settings.mount.trim_matches('/').is_empty() {
            return Err(bad("VAULT_MOUNT_POINT is empty".into()));
        }
        match url::Url::parse(&settings.addr) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => {
                return Err(bad(format!(
                    "VAULT_ADDR {:?} is not an http:// or https:// URL",
                    settings.addr
                )));
            }
        }
        // The HTTP client's rustls has no provider of its own: use the tree's ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (token, authenticated) = match &settings.auth {
            VaultAuth::Token(t) => (t.clone(), true),
            VaultAuth::AppRole { .. } => (String::new(), false),
        };
        let mut builder = VaultClientSettingsBuilder::default();
        builder
            .address(&settings.addr)
            .token(token)
            .verify(settings.verify)
            .ca_certs(settings.ca_cert.iter().cloned().collect())
            .identity(None)
            .timeout(Some(settings.timeout))
            .namespace(settings.namespace.clone());
        let client_settings = builder
            .build()
            .map_err(|e| bad(format!("invalid VAULT_ADDR {:?}: {e}", settings.addr)))?;
        let client = VaultClient::new(client_settings).map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            settings,
            client: tokio::sync::Mutex::new(Session {
                client,
                authenticated,
            }),
        })
    }

    /// The settings (secrets redacted by `Debug`).
    pub fn settings(&self) -> &VaultSettings {
        &self.settings
    }

    async fn login(&self, session: &mut Session) -> Result<(), SecretError> {
        let VaultAuth::AppRole { role_id, secret_id } = &self.settings.auth else {
            return Ok(());
        };
        let auth =
            vaultrs::auth::approle::login(&session.client, APPROLE_MOUNT, role_id, secret_id)
                .await
                .map_err(|e| match classify(e) {
                    SecretError::Transient(m) => SecretError::Transient(m),
                    other => SecretError::Other(format!("AppRole login failed: {other}")),
                })?;
        session.client.set_token(&auth.client_token);
        session.authenticated = true;
        tracing::info!("logged in to Vault with AppRole");
        Ok(())
    }

    async fn read_once(&self, session: &Session, path: &str) -> Result<Value, SecretError> {
        let mount = self.settings.mount.trim_matches('/');
        let result = if self.settings.kv_version == 1 {
            vaultrs::kv1::get::<Value>(&session.client, mount, path).await
        } else {
            vaultrs::kv2::read::<Value>(&session.client, mount, path).await
        };
        result.map_err(classify)
    }
}

#[async_trait]
impl SecretStore for VaultStore {
    async fn read(&self, path: &str) -> Result<BTreeMap<String, SecretValue>, SecretError> {
        let mut session = self.client.lock().await;
        if !session.authenticated {
            self.login(&mut session).await?;
        }
        let value = match self.read_once(&session, path).await {
            // An AppRole token that expired: log in again, once.
            Err(SecretError::Denied) if matches!(self.settings.auth, VaultAuth::AppRole { .. }) => {
                session.authenticated = false;
                self.login(&mut session).await?;
                self.read_once(&session, path).await?
            }
            other => other?,
        };
        let Value::Object(fields) = value else {
            return Err(SecretError::Other("the secret is not a JSON object".into()));
        };
        Ok(fields
            .into_iter()
            .map(|(k, v)| {
                let text = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, SecretValue::new(text))
            })
            .collect())
    }
}

/// A client error as a [`SecretError`], without any part of a response body (it may hold
/// secret values): status codes, Vault's error messages and transport errors only.
fn classify(e: ClientError) -> SecretError {
    use rustify::errors::ClientError as Rest;
    let by_code = |code: u16, detail: String| match code {
        404 => SecretError::NotFound,
        403 => SecretError::Denied,
        429 | 500..=599 => SecretError::Transient(format!("Vault answered HTTP {code}{detail}")),
        _ => SecretError::Other(format!("Vault answered HTTP {code}{detail}")),
    };
    match e {
        ClientError::APIError { code, errors } => {
            let detail = if errors.is_empty() {
                String::new()
            } else {
                format!(": {}", errors.join("; "))
            };
            by_code(code, detail)
        }
        ClientError::RestClientError { source } => match source {
            Rest::ServerResponseError { code, .. } => by_code(code, String::new()),
            Rest::RequestError { source, url, .. } => {
                SecretError::Transient(format!("cannot reach Vault at {url}: {}", chain(&*source)))
            }
            Rest::ResponseError { source } => {
                SecretError::Transient(format!("no answer from Vault: {}", chain(&*source)))
            }
            Rest::ResponseParseError { .. } | Rest::ResponseConversionError { .. } => {
                SecretError::Other("Vault's answer could not be read".into())
            }
            other => SecretError::Other(other.to_string()),
        },
        ClientError::JsonParseError { .. } => {
            SecretError::Other("the secret is not a JSON object".into())
        }
        other => SecretError::Other(other.to_string()),
    }
}

/// An error and its sources, `: `-separated (transport errors only: no response content).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
