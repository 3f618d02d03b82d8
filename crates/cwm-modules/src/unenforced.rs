//! The checks of the Python gateway this version does not perform yet (DECISIONS H7: fail closed).
//!
//! A webhook whose config names one of them is rejected at load by [`crate::Registry`]'s
//! compiler, so it is never served with the check silently skipped: a sender without the HMAC
//! secret must not get a 200 because `hmac` was ignored. The rejection is per webhook, like any
//! other bad entry: the last good value of that key keeps serving, other webhooks are unaffected,
//! and `/admin/config-status` lists it with the reason.
//!
//! When a check is implemented, remove its entry from [`UNENFORCED_VALIDATORS`] in the same
//! change: that list is the only place the receiver reads them from. (The user documentation
//! and the black-box tests of the receiver list them too, and say so when one is lifted.)

use cwm_config::WebhookConfig;
use serde_json::Value;

/// A webhook-level key of the Python gateway that names a check this version does not perform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unenforced {
    /// The webhook config key, e.g. `hmac`.
    pub key: &'static str,
    /// Whether `"<key>": null` means "no check" in the Python gateway (its validator passes every
    /// request), so a `null` value is accepted as if the key were absent. When `false`, `null` is
    /// rejected like any other value.
    pub null_is_off: bool,
}

/// For the next check listed here (none is, now).
#[allow(dead_code)]
const fn off_when_null(key: &'static str) -> Unenforced {
    Unenforced {
        key,
        null_is_off: true,
    }
}

/// Every validator of the Python gateway the receiver does not enforce yet (see `validators`),
/// in the gateway's run order. A webhook with any of these keys present is rejected at load.
///
/// "Present" follows the Python gateway, which builds a validator for every key present in the
/// config: any value counts, `{}`, `[]`, `""` and `false` included (fail closed: some of them
/// meant "no check" upstream, but an operator who wrote the key asked for the check). The one
/// exception is an explicit `null`, which the Python validators treat as "no check" (all but
/// `recaptcha`, whose `null` broke every request with a 500 there: its validator, enforced now,
/// rejects `null` at load).
///
/// None of the `module-config` options of the sinks this build has (`log`, `save_to_disk`,
/// `http_webhook`) is a check left unperformed: each one is honoured, so none is listed.
pub const UNENFORCED_VALIDATORS: &[Unenforced] = &[];

/// The unenforced checks `config` names, in [`UNENFORCED_VALIDATORS`] order.
pub fn unenforced_checks(config: &WebhookConfig) -> impl Iterator<Item = &'static str> + '_ {
    UNENFORCED_VALIDATORS
        .iter()
        .filter(|u| match config.extra.get(u.key) {
            None => false,
            Some(Value::Null) => !u.null_is_off,
            Some(_) => true,
        })
        .map(|u| u.key)
}

/// `Err` with the reason the webhook is rejected when `config` names a check this version does
/// not perform.
pub(crate) fn reject_unenforced(config: &WebhookConfig) -> Result<(), String> {
    let keys: Vec<String> = unenforced_checks(config)
        .map(|k| format!("'{k}'"))
        .collect();
    match keys.as_slice() {
        [] => Ok(()),
        [one] => Err(format!(
            "{one} is not enforced by this version of cwm; \
             the webhook is rejected rather than served unchecked"
        )),
        many => Err(format!(
            "{} are not enforced by this version of cwm; \
             the webhook is rejected rather than served unchecked",
            many.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(v: Value) -> WebhookConfig {
        WebhookConfig::from_value(v, &|_: &str| None).unwrap()
    }

    #[test]
    fn every_python_validator_is_enforced_in_the_gateway_order() {
        assert_eq!(UNENFORCED_VALIDATORS, &[]);
        let enforced: Vec<&str> = crate::validators::VALIDATORS
            .iter()
            .map(|(key, _)| *key)
            .collect();
        assert_eq!(
            enforced,
            [
                "rate_limit",
                "recaptcha",
                "basic_auth",
                "digest_auth",
                "jwt",
                "oauth1",
                "oauth2",
                "authorization",
                "hmac",
                "ip_whitelist",
                "json_schema",
                "query_auth",
                "header_auth",
            ]
        );
    }

    #[test]
    fn any_present_value_counts_and_null_only_where_python_ignored_it() {
        for u in UNENFORCED_VALIDATORS {
            for value in [
                json!({"secret": "s"}),
                json!({}),
                json!([]),
                json!(""),
                json!(false),
                json!(0),
            ] {
                let c = config(json!({"module": "log", u.key: value}));
                assert_eq!(
                    unenforced_checks(&c).collect::<Vec<_>>(),
                    [u.key],
                    "{value}"
                );
                let e = reject_unenforced(&c).unwrap_err();
                assert_eq!(
                    e,
                    format!(
                        "'{}' is not enforced by this version of cwm; \
                         the webhook is rejected rather than served unchecked",
                        u.key
                    )
                );
            }
            let null = config(json!({"module": "log", u.key: null}));
            assert_eq!(reject_unenforced(&null).is_ok(), u.null_is_off, "{}", u.key);
        }
        let hmac_null = config(json!({"module": "log", "hmac": null}));
        assert!(reject_unenforced(&hmac_null).is_ok());
    }

    #[test]
    fn harmless_keys_pass_and_several_checks_are_all_named() {
        let plain = config(json!({
            "module": "log",
            "authorization": "Bearer t",
            "trusted_proxies": ["10.0.0.1"],
            "description": "kept and ignored",
            "module-config": {"hmac": {"secret": "not a webhook-level key"}},
        }));
        assert_eq!(reject_unenforced(&plain), Ok(()));
        if let [a, b, ..] = UNENFORCED_VALIDATORS {
            let two = config(json!({"module": "log", a.key: {"secret": "s"}, b.key: {}}));
            let e = reject_unenforced(&two).unwrap_err();
            let want = format!(
                "'{}', '{}' are not enforced by this version of cwm",
                a.key, b.key
            );
            assert!(e.starts_with(&want), "{e}");
        }
    }
}
