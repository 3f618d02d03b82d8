//! `{$VAR}` / `{$VAR:default}` substitution in string values; an unset variable without a default rejects that entry.
//!
//! Unlike the upstream, values are never "sanitised": a secret containing `$` or `..` arrives intact.
//! Only NUL bytes are removed and a resolved value is capped at 4096 characters. An unset variable
//! with no default is an error for the document (one webhook or connection), never a silent literal.

use serde_json::Value;

/// Deepest nesting walked; deeper values are left as they are.
const MAX_DEPTH: usize = 100;
/// Longest resolved value, as upstream.
pub const MAX_VALUE_CHARS: usize = 4096;

/// A placeholder that could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubstError {
    /// `{$VAR}` names a variable that is not set, and gives no default.
    #[error("environment variable {0} is not set and has no default")]
    Unset(String),
    /// `{$vault:path#field}` could not be resolved and gives no default. The message names the
    /// reference and why (never a value).
    #[error("vault reference {reference} could not be resolved: {reason}")]
    Vault {
        /// `path#field`.
        reference: String,
        /// Why: Vault is off, the secret or field does not exist, access denied, Vault unreachable.
        reason: String,
    },
}

/// Why a `{$vault:...}` reference is unresolved when Vault is turned off.
pub const VAULT_DISABLED: &str =
    "Vault is not enabled (set SECRETS_BACKEND=vault or VAULT_ENABLED=true)";

/// Where variables come from. The process environment in production; a map in tests.
pub trait Env {
    /// The value of variable `name`, or `None` when it is not set.
    fn var(&self, name: &str) -> Option<String>;

    /// The value of the Vault reference `path#field` (the text after `{$vault:`, without the
    /// default), fetched before substitution ([`crate::secrets`]): `Some(Err(reason))` when it
    /// could not be resolved, `None` when no secret store is configured (Vault off). The default
    /// has no secret store.
    fn secret(&self, reference: &str) -> Option<Result<String, String>> {
        let _ = reference;
        None
    }
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// Substitute every string value in `value`, in place. Object keys are never touched.
pub fn substitute(value: &mut Value, env: &dyn Env) -> Result<(), SubstError> {
    walk(value, env, 0)
}

fn walk(value: &mut Value, env: &dyn Env, depth: usize) -> Result<(), SubstError> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    match value {
        Value::String(s) if s.contains("{$") => {
            *s = substitute_str(s, env)?;
        }
        Value::Array(items) => {
            for item in items {
                walk(item, env, depth + 1)?;
            }
        }
        Value::Object(map) => {
            for (_, item) in map.iter_mut() {
                walk(item, env, depth + 1)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn is_word(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_')
}

fn clean(v: String) -> String {
    let v = if v.contains('\0') {
        v.replace('\0', "")
    } else {
        v
    };
    if v.chars().count() > MAX_VALUE_CHARS {
        v.chars().take(MAX_VALUE_CHARS).collect()
    } else {
        v
    }
}

fn resolve(name: &str, default: Option<&str>, env: &dyn Env) -> Result<String, SubstError> {
    if let Some(reference) = name.strip_prefix("vault:") {
        // The fetched value, else the inline default; without one the entry is rejected.
        return match (env.secret(reference), default) {
            (Some(Ok(v)), _) => Ok(clean(v)),
            (_, Some(d)) => Ok(clean(d.to_owned())),
            (Some(Err(reason)), None) => Err(SubstError::Vault {
                reference: reference.to_owned(),
                reason,
            }),
            (None, None) => Err(SubstError::Vault {
                reference: reference.to_owned(),
                reason: VAULT_DISABLED.to_owned(),
            }),
        };
    }
    match env.var(name) {
        Some(v) => Ok(clean(v)),
        None => match default {
            Some(d) => Ok(clean(d.to_owned())),
            None => Err(SubstError::Unset(name.to_owned())),
        },
    }
}

/// Split `NAME` or `NAME:default` (vault refs keep their own `#field:default` shape).
fn split_placeholder(inner: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = inner.strip_prefix("vault:") {
        // vault:path#field[:default]
        let hash = rest.find('#')?;
        let after = &rest[hash..];
        let (name, default) = match after.find(':') {
            Some(c) => (&inner[..6 + hash + c], Some(&after[c + 1..])),
            None => (inner, None),
        };
        // `{$vault:a#b}{$vault:c#d}` is two references, not one with a strange path.
        return (!name.contains(['{', '}'])).then_some((name, default));
    }
    let (name, default) = match inner.find(':') {
        Some(c) => (&inner[..c], Some(&inner[c + 1..])),
        None => (inner, None),
    };
    is_word(name).then_some((name, default))
}

/// Substitute the placeholders in one string.
pub fn substitute_str(s: &str, env: &dyn Env) -> Result<String, SubstError> {
    scan(s, &mut |name, default| resolve(name, default, env))
}

/// Every `{$vault:path#field}` reference in the string values of `value` (as `path#field`,
/// without the default), found exactly as [`substitute`] finds them: what must be fetched before
/// substituting.
pub fn vault_references(value: &Value, out: &mut std::collections::BTreeSet<String>) {
    fn walk_refs(value: &Value, out: &mut std::collections::BTreeSet<String>, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        match value {
            Value::String(s) if s.contains("{$vault:") => {
                let _ = scan(s, &mut |name, _| {
                    if let Some(reference) = name.strip_prefix("vault:") {
                        out.insert(reference.to_owned());
                    }
                    Ok(String::new())
                });
            }
            Value::Array(items) => items.iter().for_each(|i| walk_refs(i, out, depth + 1)),
            Value::Object(map) => map.values().for_each(|i| walk_refs(i, out, depth + 1)),
            _ => {}
        }
    }
    walk_refs(value, out, 0);
}

/// What [`scan`] calls for each placeholder: `(name, default)` to its replacement.
type OnPlaceholder<'a> = dyn FnMut(&str, Option<&str>) -> Result<String, SubstError> + 'a;

/// Find the placeholders of one string and replace each with what `on(name, default)` returns.
fn scan(s: &str, on: &mut OnPlaceholder<'_>) -> Result<String, SubstError> {
    // Exact form: the whole string is one placeholder; its default may contain `}` and `:`.
    if let Some(inner) = s.strip_prefix("{$").and_then(|r| r.strip_suffix('}'))
        && let Some((name, default)) = split_placeholder(inner)
    {
        return on(name, default);
    }
    // Embedded form: each `{$NAME}` / `{$NAME:default}` (default without `}`).
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{$") {
        out.push_str(&rest[..start]);
        let tail = &rest[start + 2..];
        match tail.find('}') {
            Some(end) => match split_placeholder(&tail[..end]) {
                Some((name, default)) => {
                    out.push_str(&on(name, default)?);
                    rest = &tail[end + 1..];
                }
                None => {
                    out.push_str("{$");
                    rest = tail;
                }
            },
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        match name {
            "T" => Some("abc".into()),
            "SECRET" => Some("p$ss..word;rm -rf".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn exact_and_embedded() {
        assert_eq!(substitute_str("{$T}", &env).unwrap(), "abc");
        assert_eq!(substitute_str("Bearer {$T}", &env).unwrap(), "Bearer abc");
        assert_eq!(substitute_str("{$X:dflt}", &env).unwrap(), "dflt");
        assert_eq!(substitute_str("{$X:a:b}c}", &env).unwrap(), "a:b}c");
        assert_eq!(substitute_str("{$X:}", &env).unwrap(), "");
        assert_eq!(substitute_str("a{$T}b{$X:z}c", &env).unwrap(), "aabcbzc");
        assert_eq!(substitute_str("{$EMPTY}", &env).unwrap(), "");
        assert_eq!(
            substitute_str("no placeholder {$", &env).unwrap(),
            "no placeholder {$"
        );
        assert_eq!(
            substitute_str("{$not valid}", &env).unwrap(),
            "{$not valid}"
        );
    }

    #[test]
    fn values_are_not_mangled() {
        assert_eq!(
            substitute_str("{$SECRET}", &env).unwrap(),
            "p$ss..word;rm -rf"
        );
    }

    #[test]
    fn unset_without_default_is_an_error() {
        assert_eq!(
            substitute_str("{$X}", &env),
            Err(SubstError::Unset("X".into()))
        );
        assert!(substitute_str("a {$X} b", &env).is_err());
    }

    #[test]
    fn vault_defaults() {
        assert_eq!(
            substitute_str("{$vault:a/b#c:fallback}", &env).unwrap(),
            "fallback"
        );
        assert!(substitute_str("{$vault:a/b#c}", &env).is_err());
    }

    #[test]
    fn walks_documents_and_keeps_keys() {
        let mut v = json!({"{$T}": "{$T}", "n": 5, "list": ["{$T}", {"port": "{$P:6379}"}]});
        substitute(&mut v, &env).unwrap();
        assert_eq!(
            v,
            json!({"{$T}": "abc", "n": 5, "list": ["abc", {"port": "6379"}]})
        );
    }
}
