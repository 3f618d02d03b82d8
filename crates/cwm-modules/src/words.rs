//! "Does this name contain one of these words?" for the redaction and cleanup lists, checked for
//! every header and payload key of every event, so it is one pass over the name (Aho-Corasick)
//! and allocates nothing.

use aho_corasick::AhoCorasick;

/// A fixed list of lower-case ASCII words, matched ASCII-case-insensitively anywhere in a name.
pub(crate) struct WordSet {
    words: &'static [&'static str],
    /// `None` only if the automaton could not be built (it cannot for short word lists); the
    /// plain scan below then gives the same answers, slower.
    automaton: Option<AhoCorasick>,
}

impl WordSet {
    pub(crate) fn new(words: &'static [&'static str]) -> Self {
        let automaton = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(words)
            .ok();
        Self { words, automaton }
    }

    /// Whether `name` contains any word, ignoring ASCII case.
    pub(crate) fn found_in(&self, name: &[u8]) -> bool {
        match &self.automaton {
            Some(ac) => ac.is_match(name),
            None => self.words.iter().any(|w| {
                name.windows(w.len())
                    .any(|s| s.eq_ignore_ascii_case(w.as_bytes()))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_anywhere_ignoring_ascii_case() {
        let set = WordSet::new(&["token", "api_key"]);
        for (name, want) in [
            ("token", true),
            ("X-Auth-TOKEN", true),
            ("my_api_KEY_2", true),
            ("api-key", false),
            ("tok", false),
            ("", false),
        ] {
            assert_eq!(set.found_in(name.as_bytes()), want, "{name}");
        }
        let plain = WordSet {
            words: &["token"],
            automaton: None,
        };
        assert!(plain.found_in(b"X-TOKEN") && !plain.found_in(b"x-tok"));
    }
}
