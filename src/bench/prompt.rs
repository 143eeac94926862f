//! Deterministic benchmark prompts of a chosen approximate token length.
//!
//! Common English words are almost always a single token in BPE vocabularies, so a prompt
//! of `n` such words separated by spaces is close to `n` tokens on any model. Each prompt
//! starts with its request index so no two requests share more than a few leading tokens:
//! a server's prefix cache cannot turn the benchmark into a cache-hit benchmark.

/// Common short words, each one token in typical vocabularies.
const WORDS: &[&str] = &[
    "time",
    "year",
    "people",
    "way",
    "day",
    "man",
    "thing",
    "woman",
    "life",
    "child",
    "world",
    "school",
    "state",
    "family",
    "student",
    "group",
    "country",
    "problem",
    "hand",
    "part",
    "place",
    "case",
    "week",
    "company",
    "system",
    "program",
    "question",
    "work",
    "number",
    "night",
    "point",
    "home",
    "water",
    "room",
    "mother",
    "area",
    "money",
    "story",
    "fact",
    "month",
    "lot",
    "right",
    "study",
    "book",
    "eye",
    "job",
    "word",
    "business",
    "issue",
    "side",
    "kind",
    "head",
    "house",
    "service",
    "friend",
    "father",
    "power",
    "hour",
    "game",
    "line",
    "end",
    "member",
    "law",
    "car",
    "city",
    "name",
    "team",
    "minute",
    "idea",
    "kid",
    "body",
    "back",
    "parent",
    "face",
    "others",
    "level",
    "office",
    "door",
    "health",
    "person",
    "art",
    "war",
    "history",
    "party",
    "result",
    "change",
    "morning",
    "reason",
    "research",
    "girl",
    "guy",
    "moment",
    "air",
    "teacher",
    "force",
    "education",
    "river",
    "green",
    "small",
    "large",
    "quick",
    "bright",
    "quiet",
    "early",
    "late",
    "open",
    "simple",
    "strong",
];

/// Words spent on the instruction that precedes the word list.
const INSTRUCTION_WORDS: usize = 12;

/// Builds the prompt for request `index`, about `approx_tokens` tokens long.
///
/// The word sequence walks the list with a stride coprime to its length, starting at an
/// index-dependent offset, so prompts differ throughout and not only in their first word.
pub fn build_prompt(index: usize, approx_tokens: usize) -> String {
    let word_count = approx_tokens.saturating_sub(INSTRUCTION_WORDS).max(1);
    let mut prompt = format!("Request {index}: write a long story that uses these words:");
    let start = index.wrapping_mul(31) % WORDS.len();
    for i in 0..word_count {
        prompt.push(' ');
        prompt.push_str(WORDS[(start + i * 7) % WORDS.len()]);
    }
    prompt.push('.');
    prompt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_tracks_requested_tokens() {
        for tokens in [16, 64, 512] {
            let words = build_prompt(3, tokens).split_whitespace().count();
            // The instruction's punctuation and index take a few more tokens than words.
            assert!(
                words.abs_diff(tokens) <= 4,
                "{tokens} tokens -> {words} words"
            );
        }
        // Tiny requests still get the instruction and at least one listed word.
        let tiny = build_prompt(0, 0);
        assert!(
            tiny.starts_with("Request 0: write") && tiny.ends_with("time."),
            "{tiny}"
        );
    }

    #[test]
    fn prompts_are_deterministic_and_distinct() {
        assert_eq!(build_prompt(5, 64), build_prompt(5, 64));
        let prompts: std::collections::HashSet<String> =
            (0..200).map(|i| build_prompt(i, 64)).collect();
        assert_eq!(prompts.len(), 200);
        assert!(build_prompt(42, 64).starts_with("Request 42:"));
    }

    #[test]
    fn stride_visits_every_word() {
        // A stride sharing a factor with the list length would repeat a short cycle.
        let prompt = build_prompt(0, WORDS.len() + INSTRUCTION_WORDS);
        for word in WORDS {
            assert!(
                prompt
                    .split_whitespace()
                    .any(|w| w.trim_end_matches('.') == *word)
            );
        }
    }
}
