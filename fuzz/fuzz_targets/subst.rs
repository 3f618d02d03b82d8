//! `{$VAR}` / `{$VAR:default}` substitution (`cwm_config::subst`) on any string, with any
//! environment, and on whole JSON documents.
//!
//! Input: the text to substitute, then a NUL byte, then the environment as `NAME=value` lines.
#![no_main]

use std::collections::HashMap;

use cwm_config::subst::{MAX_VALUE_CHARS, SubstError, substitute, substitute_str};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    let (text, env_lines) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let text = String::from_utf8_lossy(text);
    let text = text.as_ref();
    let vars: HashMap<String, String> = String::from_utf8_lossy(env_lines)
        .split('\n')
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let env = |name: &str| vars.get(name).cloned();

    let result = substitute_str(text, &env);
    if !text.contains("{$") {
        // No placeholder: the identity.
        assert_eq!(result.as_deref(), Ok(text));
    }
    match &result {
        Ok(_) => {}
        Err(SubstError::Unset(name)) => {
            // Only a variable that is really unset, named in the text, is reported.
            assert!(!vars.contains_key(name.as_str()), "{name:?} is set");
            assert!(text.contains(name.as_str()));
        }
        Err(SubstError::Vault(reference)) => assert!(text.contains(reference.as_str())),
    }

    // The document walk substitutes every string value the same way and never touches keys.
    let mut doc = json!({ text: text, "list": [text, { "k": text }], "n": 1 });
    let walked = substitute(&mut doc, &env);
    match (&result, &walked) {
        (Ok(out), Ok(())) => {
            let expected = json!({ text: out, "list": [out, { "k": out }], "n": 1 });
            assert_eq!(doc, expected);
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("string and document substitution disagree: {result:?} vs {walked:?}"),
    }

    // A set variable resolves to its value, NUL-free and capped, in every placeholder form.
    // (`{$vault:...}` is a Vault reference, so a variable named `vault` takes no default.)
    for (name, value) in vars.iter().filter(|(n, _)| is_word(n) && *n != "vault") {
        let clean: String = value
            .chars()
            .filter(|&c| c != '\0')
            .take(MAX_VALUE_CHARS)
            .collect();
        assert_eq!(
            substitute_str(&format!("{{${name}}}"), &env),
            Ok(clean.clone())
        );
        assert_eq!(
            substitute_str(&format!("{{${name}:dflt}}"), &env),
            Ok(clean.clone())
        );
        assert_eq!(
            substitute_str(&format!("a{{${name}}}b"), &env),
            Ok(format!("a{clean}b"))
        );
    }

    // Values nested beyond the walk's depth are left as they are, and deep documents are safe.
    let mut deep = Value::String(text.to_owned());
    for _ in 0..150 {
        deep = Value::Array(vec![deep]);
    }
    let _ = substitute(&mut deep, &env);
});

/// A variable name: `subst::is_word`.
fn is_word(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_')
}
