//! Turns input texts into token sequences with the model's tokenizer.json, enforcing the
//! model's maximum sequence length by rejecting or truncating.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationParams};

use super::OnnxError;

/// One tokenized input, unpadded; its attention mask is all ones.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    /// Token ids, special tokens included.
    pub ids: Vec<i64>,
    /// Segment ids, as BERT-style models take them in `token_type_ids`.
    pub type_ids: Vec<i64>,
}

impl Sequence {
    /// Length in tokens, which is what usage accounting counts.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True for a sequence without tokens (only possible with a tokenizer that adds none).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A tokenizer set up for embedding: no padding (batches are padded later), and truncation at
/// the model's limit only when truncation is enabled.
#[derive(Debug)]
pub struct TextEncoder {
    tokenizer: Tokenizer,
    max_seq_len: usize,
    truncate: bool,
}

impl TextEncoder {
    /// Loads `tokenizer.json`; `max_seq_len` counts special tokens, as the model sees them.
    pub fn load(path: &Path, max_seq_len: usize, truncate: bool) -> Result<Self, OnnxError> {
        if !path.is_file() {
            return Err(OnnxError::TokenizerMissing {
                path: path.to_path_buf(),
            });
        }
        let invalid = |reason: String| OnnxError::TokenizerInvalid {
            path: path.to_path_buf(),
            reason,
        };
        let mut tokenizer = Tokenizer::from_file(path).map_err(|e| invalid(e.to_string()))?;
        // tokenizer.json files often pin padding to a fixed length (128 for MiniLM): that wastes
        // compute, and their own truncation would hide over-long inputs from the limit check.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| invalid(e.to_string()))?;
        let special = tokenizer
            .encode_fast("", true)
            .map_err(|e| invalid(e.to_string()))?
            .len();
        if max_seq_len <= special {
            return Err(OnnxError::InvalidConfig(format!(
                "max_seq_len {max_seq_len} leaves no room for text after {special} special tokens"
            )));
        }
        if truncate {
            let params = TruncationParams {
                max_length: max_seq_len,
                ..TruncationParams::default()
            };
            tokenizer
                .with_truncation(Some(params))
                .map_err(|e| invalid(e.to_string()))?;
        }
        Ok(Self {
            tokenizer,
            max_seq_len,
            truncate,
        })
    }

    /// The longest sequence the model is given, special tokens included.
    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    /// Whether over-long inputs are cut to `max_seq_len` rather than rejected.
    pub fn truncates(&self) -> bool {
        self.truncate
    }

    /// Tokenizes every text, failing on the first one over the limit (when not truncating).
    pub fn encode(&self, texts: &[String]) -> Result<Vec<Sequence>, OnnxError> {
        texts
            .iter()
            .enumerate()
            .map(|(index, text)| self.encode_one(index, text))
            .collect()
    }

    /// Token counts per text, as they would be billed after truncation or rejection.
    pub fn count_tokens(&self, texts: &[String]) -> Result<Vec<usize>, OnnxError> {
        Ok(self.encode(texts)?.iter().map(Sequence::len).collect())
    }

    fn encode_one(&self, index: usize, text: &str) -> Result<Sequence, OnnxError> {
        let encoding = self
            .tokenizer
            .encode_fast(text, true)
            .map_err(|e| OnnxError::Tokenize {
                index,
                reason: e.to_string(),
            })?;
        let tokens = encoding.len();
        if tokens > self.max_seq_len {
            return Err(OnnxError::InputTooLong {
                index,
                tokens,
                limit: self.max_seq_len,
            });
        }
        Ok(Sequence {
            ids: encoding.get_ids().iter().map(|&id| i64::from(id)).collect(),
            type_ids: encoding
                .get_type_ids()
                .iter()
                .map(|&id| i64::from(id))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny WordPiece tokenizer in the same shape as BERT's tokenizer.json, including the
    /// fixed padding and truncation that real files carry.
    fn write_tokenizer(dir: &Path) -> std::path::PathBuf {
        let json = serde_json::json!({
            "version": "1.0",
            "truncation": {"direction": "Right", "max_length": 4, "strategy": "LongestFirst", "stride": 0},
            "padding": {"strategy": {"Fixed": 16}, "direction": "Right", "pad_to_multiple_of": null,
                        "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
            "added_tokens": [],
            "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                           "strip_accents": null, "lowercase": true},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                           {"Sequence": {"id": "A", "type_id": 0}},
                           {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
                "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
                "special_tokens": {
                    "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                    "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
                }
            },
            "decoder": null,
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                      "max_input_chars_per_word": 100,
                      "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3,
                                "hello": 4, "world": 5, "again": 6}}
        });
        let path = dir.join("tokenizer.json");
        std::fs::write(&path, json.to_string()).expect("write tokenizer.json");
        path
    }

    #[test]
    fn encodes_without_padding_or_the_files_truncation() {
        let dir = tempfile::tempdir().expect("temp dir");
        let encoder = TextEncoder::load(&write_tokenizer(dir.path()), 8, false).expect("load");
        let texts = vec![
            "Hello world".to_string(),
            "hello world again hello".to_string(),
        ];
        let sequences = encoder.encode(&texts).expect("encode");
        assert_eq!(sequences[0].ids, vec![2, 4, 5, 3]);
        assert_eq!(sequences[1].ids, vec![2, 4, 5, 6, 4, 3]);
        assert_eq!(sequences[1].type_ids, vec![0; 6]);
        assert_eq!(encoder.count_tokens(&texts).expect("count"), vec![4, 6]);
    }

    #[test]
    fn rejects_inputs_over_the_limit_with_their_index() {
        let dir = tempfile::tempdir().expect("temp dir");
        let encoder = TextEncoder::load(&write_tokenizer(dir.path()), 5, false).expect("load");
        let texts = vec!["hello".to_string(), "hello world again hello".to_string()];
        let err = encoder
            .encode(&texts)
            .expect_err("second input is 6 tokens");
        assert_eq!(
            err,
            OnnxError::InputTooLong {
                index: 1,
                tokens: 6,
                limit: 5
            }
        );
    }

    #[test]
    fn truncation_keeps_the_special_tokens() {
        let dir = tempfile::tempdir().expect("temp dir");
        let encoder = TextEncoder::load(&write_tokenizer(dir.path()), 5, true).expect("load");
        let sequences = encoder
            .encode(&["hello world again hello".to_string()])
            .expect("truncated, not rejected");
        assert_eq!(sequences[0].ids, vec![2, 4, 5, 6, 3]);
    }

    #[test]
    fn limit_must_leave_room_for_text() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = TextEncoder::load(&write_tokenizer(dir.path()), 2, false).expect_err("too small");
        assert!(matches!(err, OnnxError::InvalidConfig(_)), "{err:?}");
    }

    #[test]
    fn missing_and_invalid_tokenizer_files_are_distinguished() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("absent.json");
        let err = TextEncoder::load(&missing, 8, false).expect_err("missing");
        assert_eq!(err, OnnxError::TokenizerMissing { path: missing });

        let garbage = dir.path().join("tokenizer.json");
        std::fs::write(&garbage, "{\"not\": \"a tokenizer\"}").expect("write");
        let err = TextEncoder::load(&garbage, 8, false).expect_err("invalid");
        assert!(matches!(err, OnnxError::TokenizerInvalid { .. }), "{err:?}");
    }
}
