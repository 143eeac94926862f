//! Incremental detokenization: token byte pieces in, complete UTF-8 text out.
//!
//! A multi-byte character may be split across tokens, and byte-level BPE models can emit
//! bytes that never form a valid character; both must be handled without losing text.

/// Turns a stream of token byte pieces into text, never emitting half a character.
#[derive(Debug, Default)]
pub struct Detokenizer {
    /// Bytes of a trailing incomplete character (at most 3) that the next piece may complete.
    pending: Vec<u8>,
}

impl Detokenizer {
    /// Creates a detokenizer with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a piece; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, piece: &[u8]) -> String {
        let mut out = String::new();
        if self.pending.is_empty() {
            // Common case: decode the piece in place and copy only an incomplete tail.
            let tail = decode_into(piece, &mut out);
            self.pending.extend_from_slice(&piece[tail..]);
        } else {
            // Pieces are short, so joining them to the pending bytes keeps this buffer tiny.
            self.pending.extend_from_slice(piece);
            let tail = decode_into(&self.pending, &mut out);
            self.pending.drain(..tail);
        }
        out
    }

    /// End of stream: returns whatever is left, invalid bytes replaced with U+FFFD.
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

/// Appends the decodable text of `bytes` to `out` and returns where the held-back tail starts.
///
/// Sequences that can never become valid are replaced with U+FFFD right away; only a trailing
/// sequence that more bytes could still complete is left undecoded.
fn decode_into(bytes: &[u8], out: &mut String) -> usize {
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(text) => {
                out.push_str(text);
                return bytes.len();
            }
            Err(error) => {
                let (valid, after) = rest.split_at(error.valid_up_to());
                out.push_str(std::str::from_utf8(valid).expect("valid_up_to bounds valid UTF-8"));
                match error.error_len() {
                    Some(invalid) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        rest = &after[invalid..];
                    }
                    None => return bytes.len() - after.len(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FFFD: &str = "\u{FFFD}";

    /// Feeds `bytes` cut at `cuts` (ascending) and returns each push's output plus finish().
    fn run(bytes: &[u8], cuts: &[usize]) -> (Vec<String>, String) {
        let mut detok = Detokenizer::new();
        let mut outs = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
            outs.push(detok.push(&bytes[start..cut]));
            assert!(
                detok.pending.len() <= 3,
                "pending grew to {}",
                detok.pending.len()
            );
            start = cut;
        }
        let rest = detok.finish();
        assert!(detok.pending.is_empty());
        (outs, rest)
    }

    fn joined(bytes: &[u8], cuts: &[usize]) -> String {
        let (outs, rest) = run(bytes, cuts);
        outs.concat() + &rest
    }

    #[test]
    fn ascii_passes_through_at_once() {
        let mut detok = Detokenizer::new();
        assert_eq!(detok.push(b"Hello"), "Hello");
        assert_eq!(detok.push(b", world"), ", world");
        assert_eq!(detok.push(b""), "");
        assert_eq!(detok.finish(), "");
    }

    #[test]
    fn multibyte_chars_split_at_every_position() {
        for text in ["é", "€", "😀", "aé€😀z", "日本語テキスト"] {
            let bytes = text.as_bytes();
            for cut in 0..=bytes.len() {
                let (outs, rest) = run(bytes, &[cut]);
                assert_eq!(outs.concat(), text, "split at {cut} of {text:?}");
                assert_eq!(rest, "");
            }
        }
    }

    #[test]
    fn multibyte_chars_one_byte_per_push() {
        let text = "aé€😀z";
        let bytes = text.as_bytes();
        let cuts: Vec<usize> = (1..bytes.len()).collect();
        let (outs, rest) = run(bytes, &cuts);
        // Each character appears exactly when its last byte arrives.
        let expected: Vec<&str> = vec!["a", "", "é", "", "", "€", "", "", "", "😀", "z"];
        assert_eq!(outs, expected);
        assert_eq!(rest, "");
    }

    #[test]
    fn incomplete_char_is_held_then_completed() {
        let mut detok = Detokenizer::new();
        assert_eq!(detok.push(&[b'x', 0xE2, 0x82]), "x");
        assert_eq!(detok.pending, [0xE2, 0x82]);
        assert_eq!(detok.push(&[0xAC, b'y']), "€y");
        assert!(detok.pending.is_empty());
    }

    #[test]
    fn invalid_bytes_in_the_middle_are_replaced_at_once() {
        let mut detok = Detokenizer::new();
        assert_eq!(detok.push(b"a\xFFb"), format!("a{FFFD}b"));
        // A continuation byte without a lead.
        assert_eq!(detok.push(b"c\x80d"), format!("c{FFFD}d"));
        // A lead byte followed by a non-continuation byte.
        assert_eq!(detok.push(&[0xE2, b'A']), format!("{FFFD}A"));
        // A surrogate encoding can never be valid.
        assert_eq!(detok.push(&[0xED, 0xA0, 0x80]), FFFD.repeat(3));
        assert!(detok.pending.is_empty());
    }

    #[test]
    fn invalid_bytes_at_the_end_are_not_held() {
        let mut detok = Detokenizer::new();
        assert_eq!(detok.push(&[b'a', 0xFF]), format!("a{FFFD}"));
        // 0xC0 and 0xF5 are never lead bytes of a valid sequence.
        assert_eq!(detok.push(&[0xC0]), FFFD);
        assert_eq!(detok.push(&[0xF5]), FFFD);
        assert!(detok.pending.is_empty());
    }

    #[test]
    fn held_lead_followed_by_non_continuation_in_next_piece() {
        let mut detok = Detokenizer::new();
        assert_eq!(detok.push(&[0xF0, 0x9F]), "");
        assert_eq!(detok.push(b"ok"), format!("{FFFD}ok"));
        assert!(detok.pending.is_empty());
    }

    #[test]
    fn finish_replaces_an_incomplete_tail() {
        let mut detok = Detokenizer::new();
        assert_eq!(detok.push(&[b'x', 0xF0, 0x9F, 0x98]), "x");
        assert_eq!(detok.finish(), FFFD);
        assert_eq!(detok.finish(), "");
        // The detokenizer is reusable after finish.
        assert_eq!(detok.push("é".as_bytes()), "é");
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
    }

    #[test]
    fn random_splits_match_lossy_decoding_of_the_whole() {
        let parts: [&[u8]; 9] = [
            b"a",
            b" the",
            "é".as_bytes(),
            "€".as_bytes(),
            "😀".as_bytes(),
            &[0xFF],
            &[0x80],
            &[0xE2, 0x82],
            &[0xF0, 0x9F],
        ];
        let mut rng = Lcg(7);
        for _ in 0..2000 {
            let mut bytes = Vec::new();
            for _ in 0..rng.below(12) {
                bytes.extend_from_slice(parts[rng.below(parts.len())]);
            }
            let mut cuts: Vec<usize> = (0..rng.below(6))
                .map(|_| rng.below(bytes.len() + 1))
                .collect();
            cuts.sort_unstable();
            let expected = String::from_utf8_lossy(&bytes);
            assert_eq!(
                joined(&bytes, &cuts),
                expected,
                "bytes {bytes:?} cuts {cuts:?}"
            );
        }
    }
}
