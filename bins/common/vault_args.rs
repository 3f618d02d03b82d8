//! The Vault settings shared by `cwm-receiver`, `cwmctl` and `cwm-connector` (one definition):
//! `{$vault:path#field}` references in webhooks and connections, resolved at load time (see
//! docs/SECRETS.md).

use std::sync::Arc;
use std::time::Duration;

use cwm_config::secrets::{CacheSettings, SecretResolver, VaultAuth, VaultSettings, VaultStore};

/// HashiCorp Vault (KV engine) for `{$vault:path#field}` and `{$vault:path#field:default}` in
/// webhook and connection values. Read once at load time and cached; `POST /admin/reload-config`
/// fetches every reference again. Off by default: references then take their default, and one
/// without a default rejects its webhook or connection. Every flag is `global`: with `cwmctl` it
/// is accepted before or after the subcommand (no effect elsewhere).
#[derive(Debug, clap::Args)]
pub struct VaultArgs {
    /// `vault` turns Vault resolution on (as does VAULT_ENABLED); anything else (`env`) leaves it off.
    #[arg(long, global = true, env = "SECRETS_BACKEND", default_value = "env")]
    secrets_backend: String,

    /// `1`, `true`, `yes` or `on` turns Vault resolution on.
    #[arg(long, global = true, env = "VAULT_ENABLED", default_value = "false")]
    vault_enabled: String,

    /// Vault address, e.g. `http://vault:8200` (required when Vault is on).
    #[arg(long, global = true, env = "VAULT_ADDR")]
    vault_addr: Option<String>,

    /// Vault token; takes precedence over AppRole.
    #[arg(long, global = true, env = "VAULT_TOKEN", hide_env_values = true)]
    vault_token: Option<String>,

    /// AppRole role id (with VAULT_SECRET_ID), used when no VAULT_TOKEN is set.
    #[arg(long, global = true, env = "VAULT_ROLE_ID", hide_env_values = true)]
    vault_role_id: Option<String>,

    /// AppRole secret id (with VAULT_ROLE_ID).
    #[arg(long, global = true, env = "VAULT_SECRET_ID", hide_env_values = true)]
    vault_secret_id: Option<String>,

    /// Vault Enterprise namespace, sent as X-Vault-Namespace.
    #[arg(long, global = true, env = "VAULT_NAMESPACE")]
    vault_namespace: Option<String>,

    /// Mount point of the KV secrets engine the references' paths live under.
    #[arg(
        long,
        global = true,
        env = "VAULT_MOUNT_POINT",
        default_value = "secret"
    )]
    vault_mount_point: String,

    /// KV engine version: 2 (default) or 1.
    #[arg(long, global = true, env = "VAULT_KV_VERSION", default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
    vault_kv_version: u8,

    /// TLS verification of an https:// VAULT_ADDR: `true` (system roots), `false` (no check), or
    /// the path of a PEM file of CA certificates to trust.
    #[arg(long, global = true, env = "VAULT_VERIFY", default_value = "true")]
    vault_verify: String,

    /// Timeout of one Vault request, seconds (held to 1..300).
    #[arg(
        long,
        global = true,
        env = "VAULT_TIMEOUT_SECONDS",
        default_value_t = 10
    )]
    vault_timeout_seconds: u64,

    /// How long a fetched secret is reused by loads, seconds; 0 turns the cache off.
    #[arg(
        long,
        global = true,
        env = "VAULT_CACHE_TTL_SECONDS",
        default_value_t = 300
    )]
    vault_cache_ttl_seconds: u64,

    /// Most secrets cached.
    #[arg(
        long,
        global = true,
        env = "VAULT_CACHE_MAX_SIZE",
        default_value_t = 1000
    )]
    vault_cache_max_size: usize,
}

/// Log filter directives that silence the Vault client's own logs: it logs every non-2xx answer
/// (a missing secret) as an ERROR, while `cwm_config::secrets` reports each failure once, with
/// the reference. None when `log_level` names those targets (someone debugging the client).
#[allow(dead_code, reason = "cwmctl sets up no logging")]
pub fn quiet_client_logs(log_level: &str) -> &'static [&'static str] {
    if log_level.contains("vaultrs") || log_level.contains("rustify") {
        &[]
    } else {
        &["vaultrs=off", "rustify=off"]
    }
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl VaultArgs {
    /// Whether Vault resolution is on.
    pub fn enabled(&self) -> bool {
        self.secrets_backend.trim().eq_ignore_ascii_case("vault") || truthy(&self.vault_enabled)
    }

    /// The resolver the providers fetch references through; `None` when Vault is off.
    pub fn resolver(&self) -> Result<Option<Arc<SecretResolver>>, String> {
        if !self.enabled() {
            return Ok(None);
        }
        let addr = nonempty(&self.vault_addr).ok_or(
            "VAULT_ADDR is required when Vault is enabled (SECRETS_BACKEND=vault or VAULT_ENABLED)",
        )?;
        let auth = match (
            nonempty(&self.vault_token),
            nonempty(&self.vault_role_id),
            nonempty(&self.vault_secret_id),
        ) {
            (Some(token), _, _) => VaultAuth::Token(token),
            (None, Some(role_id), Some(secret_id)) => VaultAuth::AppRole { role_id, secret_id },
            _ => {
                return Err(
                    "Vault is enabled but neither VAULT_TOKEN nor VAULT_ROLE_ID + VAULT_SECRET_ID is set"
                        .into(),
                );
            }
        };
        let verify = self.vault_verify.trim();
        let (verify, ca_cert) = match verify.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" | "" => (true, None),
            "0" | "false" | "no" | "off" => (false, None),
            _ => (true, Some(verify.to_owned())),
        };
        let settings = VaultSettings {
            namespace: nonempty(&self.vault_namespace),
            mount: self.vault_mount_point.trim().trim_matches('/').to_owned(),
            kv_version: self.vault_kv_version,
            verify,
            ca_cert,
            timeout: Duration::from_secs(self.vault_timeout_seconds.clamp(1, 300)),
            ..VaultSettings::new(addr, auth)
        };
        let mount = settings.mount.clone();
        let store = VaultStore::new(settings).map_err(|e| e.to_string())?;
        let cache = CacheSettings {
            ttl: Duration::from_secs(self.vault_cache_ttl_seconds),
            max_size: self.vault_cache_max_size,
        };
        tracing::info!(
            addr = %store.settings().addr,
            mount,
            approle = matches!(store.settings().auth, VaultAuth::AppRole { .. }),
            cache_ttl_seconds = self.vault_cache_ttl_seconds,
            "Vault secret references enabled"
        );
        Ok(Some(Arc::new(SecretResolver::new(Arc::new(store), cache))))
    }
}
