//! "Does this name contain one of these words?" for the redaction and cleanup lists, checked for
//! every header and payload key of every event, so it is one pass over the name (an Aho-Corasick
//! DFA, stepped byte by byte: for names of a few bytes the general search routine's setup costs
//! more than the walk) and allocates nothing.

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::dfa::DFA;
use aho_corasick::{Anchored, MatchKind, StartKind};

/// A fixed list of lower-case ASCII words, matched ASCII-case-insensitively anywhere in a name.
pub(crate) struct WordSet {
    words: &'static [&'static str],
    /// `None` only if the automaton could not be built (it cannot for short word lists); the
    /// plain scan below then gives the same answers, slower.
    automaton: Option<(DFA, StateID)>,
}

impl WordSet {
    pub(crate) fn new(words: &'static [&'static str]) -> Self {
        let automaton = DFA::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .start_kind(StartKind::Unanchored)
            .prefilter(false)
            .build(words)
            .ok()
            .and_then(|dfa| {
                let start = dfa.start_state(Anchored::No).ok()?;
                Some((dfa, start))
            });
        Self { words, automaton }
    }

    /// Whether `name` contains any word, ignoring ASCII case.
    pub(crate) fn found_in(&self, name: &[u8]) -> bool {
        match &self.automaton {
            Some((dfa, start)) => {
                let mut sid = *start;
                for &b in name {
                    sid = dfa.next_state(Anchored::No, sid, b);
                    if dfa.is_special(sid) {
                        if dfa.is_match(sid) {
                            return true;
                        }
                        if dfa.is_dead(sid) {
                            return false;
                        }
                    }
                }
                false
            }
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
            ("tokapi_ke", false),
            ("xxtotoken", true),
        ] {
            assert_eq!(set.found_in(name.as_bytes()), want, "{name}");
        }
        let plain = WordSet {
            words: &["token"],
            automaton: None,
        };
        assert!(plain.found_in(b"X-TOKEN") && !plain.found_in(b"x-tok"));
    }

    #[test]
    fn automaton_agrees_with_plain_scan() {
        const WORDS: &[&str] = &[
            "password", "pwd", "token", "key", "auth", "api_key", "api-key",
        ];
        let dfa = WordSet::new(WORDS);
        let plain = WordSet {
            words: WORDS,
            automaton: None,
        };
        assert!(dfa.automaton.is_some());
        // Names drawn from the words' own letters, so near-misses and overlaps are common.
        let alphabet = b"kKeEyYaAuUtThH_";
        let mut found = 0;
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = (next() % 12) as usize;
            let name: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let hit = dfa.found_in(&name);
            assert_eq!(hit, plain.found_in(&name), "{name:?}");
            found += usize::from(hit);
        }
        assert!((100..19_900).contains(&found), "{found} matches");
    }
}
