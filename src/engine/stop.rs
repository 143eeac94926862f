//! Stop strings over streamed text.
//!
//! Generated text must never contain a stop string, so any tail that may be the start of one is
//! held back until the next push decides it. A stop is reported as soon as it completes: the
//! occurrence that ends first wins (ties go to the one that starts first), which makes the result
//! independent of how the text was split into pushes.

/// Finds stop strings in streamed text, holding back any tail that may start one.
#[derive(Debug)]
pub struct StopMatcher {
    /// Non-empty stop strings.
    stops: Vec<String>,
    /// Longest tail of the text seen so far that is a proper prefix of some stop.
    held: String,
    /// Set once a stop has been found; later text is dropped.
    stopped: bool,
}

/// What a push produced.
#[derive(Debug, PartialEq, Eq)]
pub struct StopOutcome {
    /// Text that is safe to send now.
    pub emit: String,
    /// A stop string was found: `emit` is the text before it and the rest is dropped.
    pub stopped: bool,
}

/// Where a scanned buffer must be cut.
enum Cut {
    /// A stop string starts at this byte offset.
    Stop(usize),
    /// No stop; the tail from this byte offset may start one and is held back.
    Hold(usize),
}

impl StopMatcher {
    /// Creates a matcher for `stops`; empty strings are ignored.
    pub fn new(stops: Vec<String>) -> Self {
        let stops = stops.into_iter().filter(|stop| !stop.is_empty()).collect();
        Self {
            stops,
            held: String::new(),
            stopped: false,
        }
    }

    /// Feeds newly generated text; `emit` is safe to send now; `stopped` means a stop string was
    /// found: `emit` is the text before it and the rest (including any later push) is dropped.
    pub fn push(&mut self, text: &str) -> StopOutcome {
        if self.stopped {
            return StopOutcome {
                emit: String::new(),
                stopped: true,
            };
        }
        if self.stops.is_empty() {
            return StopOutcome {
                emit: text.to_owned(),
                stopped: false,
            };
        }
        if self.held.is_empty() {
            // Nothing carried over: scan the new text in place and copy only its held tail.
            return match cut(&self.stops, text) {
                Cut::Stop(start) => self.stop_with(text[..start].to_owned()),
                Cut::Hold(start) => {
                    self.held.push_str(&text[start..]);
                    emitted(text[..start].to_owned())
                }
            };
        }
        self.held.push_str(text);
        match cut(&self.stops, &self.held) {
            Cut::Stop(start) => {
                let mut emit = std::mem::take(&mut self.held);
                emit.truncate(start);
                self.stop_with(emit)
            }
            Cut::Hold(start) => {
                let emit = self.held[..start].to_owned();
                self.held.replace_range(..start, "");
                emitted(emit)
            }
        }
    }

    /// End of generation (length/EOS): releases the held-back text.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    fn stop_with(&mut self, emit: String) -> StopOutcome {
        self.stopped = true;
        self.held.clear();
        StopOutcome {
            emit,
            stopped: true,
        }
    }
}

fn emitted(emit: String) -> StopOutcome {
    StopOutcome {
        emit,
        stopped: false,
    }
}

/// Decides where `buf` (held text plus new text) must be cut.
fn cut(stops: &[String], buf: &str) -> Cut {
    match first_stop(stops, buf) {
        Some(start) => Cut::Stop(start),
        None => Cut::Hold(held_start(stops, buf)),
    }
}

/// Start of the stop occurrence that ends first in `buf`; on equal ends, the one starting first.
fn first_stop(stops: &[String], buf: &str) -> Option<usize> {
    // (end, start) of the best occurrence so far.
    let mut best: Option<(usize, usize)> = None;
    for stop in stops {
        // An occurrence that could beat the best one must end by the best one's end, a char
        // boundary, so the search never needs to look past it.
        let limit = best.map_or(buf.len(), |(end, _)| end);
        if let Some(start) = buf[..limit].find(stop.as_str()) {
            let end = start + stop.len();
            if best.is_none_or(|(best_end, best_start)| (end, start) < (best_end, best_start)) {
                best = Some((end, start));
            }
        }
    }
    best.map(|(_, start)| start)
}

/// Start of the longest suffix of `buf` that is a proper prefix of some stop (`buf.len()` if none).
fn held_start(stops: &[String], buf: &str) -> usize {
    let bytes = buf.as_bytes();
    let mut longest = 0;
    for stop in stops {
        let stop = stop.as_bytes();
        let most = (stop.len() - 1).min(bytes.len());
        // Only suffixes longer than the best so far matter; the boundary check guarantees the
        // cut never splits a character of the text.
        if let Some(len) = (longest + 1..=most)
            .rev()
            .find(|&len| bytes.ends_with(&stop[..len]) && buf.is_char_boundary(bytes.len() - len))
        {
            longest = len;
        }
    }
    bytes.len() - longest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(stops: &[&str]) -> StopMatcher {
        StopMatcher::new(stops.iter().map(|stop| stop.to_string()).collect())
    }

    fn out(emit: &str, stopped: bool) -> StopOutcome {
        StopOutcome {
            emit: emit.to_owned(),
            stopped,
        }
    }

    /// Feeds `pieces` and returns everything emitted (plus flush when no stop) and the stop flag.
    fn feed(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut matcher = matcher(stops);
        let mut text = String::new();
        for piece in pieces {
            let outcome = matcher.push(piece);
            text.push_str(&outcome.emit);
            if outcome.stopped {
                assert_eq!(matcher.flush(), "", "nothing is released after a stop");
                return (text, true);
            }
        }
        text.push_str(&matcher.flush());
        (text, false)
    }

    /// Straightforward reference: cut at the stop occurrence that completes first.
    fn reference(stops: &[&str], text: &str) -> (String, bool) {
        for end in text.char_indices().map(|(at, ch)| at + ch.len_utf8()) {
            let seen = &text[..end];
            let longest = stops
                .iter()
                .filter(|stop| !stop.is_empty() && seen.ends_with(*stop))
                .map(|stop| stop.len())
                .max();
            if let Some(len) = longest {
                return (text[..end - len].to_owned(), true);
            }
        }
        (text.to_owned(), false)
    }

    #[test]
    fn without_stops_text_passes_through_at_once() {
        let mut matcher = matcher(&["", ""]);
        assert_eq!(matcher.push("Hello <"), out("Hello <", false));
        assert_eq!(matcher.push("/s>"), out("/s>", false));
        assert_eq!(matcher.flush(), "");
    }

    #[test]
    fn stop_split_across_pushes() {
        let mut two = matcher(&["</s>"]);
        assert_eq!(two.push("done.</"), out("done.", false));
        assert_eq!(two.push("s> trailing"), out("", true));

        let mut four = matcher(&["</s>"]);
        assert_eq!(four.push("hello <"), out("hello ", false));
        assert_eq!(four.push("/"), out("", false));
        assert_eq!(four.push("s"), out("", false));
        assert_eq!(four.push(">more"), out("", true));
        assert_eq!(four.push("ignored"), out("", true));
        assert_eq!(four.flush(), "");
    }

    #[test]
    fn stop_at_the_very_start() {
        let mut matcher = matcher(&["STOP"]);
        assert_eq!(matcher.push("STOP and more"), out("", true));
    }

    #[test]
    fn near_miss_is_released_in_order() {
        let mut matcher = matcher(&["</s>"]);
        assert_eq!(matcher.push("a <"), out("a ", false));
        assert_eq!(matcher.push("/"), out("", false));
        assert_eq!(matcher.push("x <"), out("</x ", false));
        assert_eq!(matcher.push("b"), out("<b", false));
        assert_eq!(matcher.flush(), "");
    }

    #[test]
    fn shorter_stop_completing_first_wins() {
        let mut whole = matcher(&["abcd", "bc"]);
        assert_eq!(whole.push("abcd"), out("a", true));
        assert_eq!(
            feed(&["abcd", "bc"], &["a", "b", "c", "d"]),
            ("a".to_owned(), true)
        );
        // On equal ends the earlier start wins.
        assert_eq!(feed(&["c", "abc"], &["xabc"]), ("x".to_owned(), true));
    }

    #[test]
    fn self_overlapping_stops() {
        assert_eq!(feed(&["aab"], &["aaab"]), ("a".to_owned(), true));
        assert_eq!(
            feed(&["aab"], &["a", "a", "a", "b"]),
            ("a".to_owned(), true)
        );
        assert_eq!(
            feed(&["abab"], &["aba", "ab", "ab"]),
            ("aba".to_owned(), true)
        );
        // "aa" is held after each push, so the overlap is found without losing the first "a".
        let mut matcher = matcher(&["aab"]);
        assert_eq!(matcher.push("aa"), out("", false));
        assert_eq!(matcher.push("a"), out("a", false));
        assert_eq!(matcher.push("b"), out("", true));
    }

    #[test]
    fn non_ascii_stops() {
        assert_eq!(
            feed(&["。"], &["你好", "。", "再见"]),
            ("你好".to_owned(), true)
        );
        assert_eq!(feed(&["🛑"], &["go ", "🛑 now"]), ("go ".to_owned(), true));
        let mut matcher = matcher(&["é!"]);
        assert_eq!(matcher.push("café"), out("caf", false));
        assert_eq!(matcher.push("?"), out("é?", false));
        // "ã" shares its lead byte with "é" but is not a prefix of the stop.
        assert_eq!(matcher.push("ã"), out("ã", false));
        assert_eq!(matcher.flush(), "");
    }

    #[test]
    fn flush_releases_the_held_tail() {
        let mut matcher = matcher(&["</s>", "\nUser:"]);
        assert_eq!(matcher.push("end\nUs"), out("end", false));
        assert_eq!(matcher.push(" </"), out("\nUs ", false));
        assert_eq!(matcher.flush(), "</");
        assert_eq!(matcher.flush(), "");
    }

    #[test]
    fn held_text_never_exceeds_the_longest_stop() {
        let mut matcher = matcher(&["abc", "xyz!"]);
        for piece in ["x", "y", "z", "xy", "ab", "a"] {
            matcher.push(piece);
            assert!(matcher.held.len() < 4, "held {:?}", matcher.held);
        }
    }

    /// Tiny deterministic generator so the tests need no rand crate.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next() % bound as u64) as usize
        }

        fn string(&mut self, alphabet: &[char], len: usize) -> String {
            (0..len)
                .map(|_| alphabet[self.below(alphabet.len())])
                .collect()
        }
    }

    #[test]
    fn random_splits_match_the_reference() {
        let alphabet = ['a', 'b', 'c', 'é', 'ã', '。', '😀'];
        let mut rng = Lcg(42);
        let mut stops_hit = 0;
        for _ in 0..3000 {
            let len = rng.below(24);
            let text = rng.string(&alphabet, len);
            let stops: Vec<String> = (0..1 + rng.below(3))
                .map(|_| {
                    let len = 1 + rng.below(4);
                    let letters = 3 + rng.below(alphabet.len() - 2);
                    rng.string(&alphabet[..letters], len)
                })
                .collect();
            let stops: Vec<&str> = stops.iter().map(String::as_str).collect();

            let boundaries: Vec<usize> = text.char_indices().map(|(at, _)| at).skip(1).collect();
            let mut cuts: Vec<usize> = (0..rng.below(8))
                .filter(|_| !boundaries.is_empty())
                .map(|_| boundaries[rng.below(boundaries.len())])
                .collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut start = 0;
            for &cut in cuts.iter().chain(std::iter::once(&text.len())) {
                pieces.push(&text[start..cut]);
                start = cut;
            }

            let expected = reference(&stops, &text);
            stops_hit += usize::from(expected.1);
            assert_eq!(
                feed(&stops, &pieces),
                expected,
                "text {text:?} stops {stops:?} pieces {pieces:?}"
            );
        }
        // The generator must exercise both outcomes for the comparison to mean anything.
        assert!(
            stops_hit > 300 && stops_hit < 2700,
            "stops hit {stops_hit} times"
        );
    }
}
