//! Reduces a model's per-token hidden states to one vector per input.

use std::fmt;

/// How token states become a sentence vector; sentence-transformers models name theirs in
/// `1_Pooling/config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Average of the states of the real (unpadded) tokens: all-MiniLM, most sentence-transformers.
    #[default]
    Mean,
    /// The state of the first token ([CLS]): BGE, some E5 variants.
    Cls,
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Mean => "mean",
            Self::Cls => "cls",
        })
    }
}

/// Pools one input's hidden states.
///
/// `states` holds the input's row of the output, `padded_len × hidden` values, of which the
/// first `real_len` token rows are real: batches are right-padded, so the attention mask is a
/// prefix of ones.
pub(crate) fn pool(states: &[f32], hidden: usize, real_len: usize, pooling: Pooling) -> Vec<f32> {
    match pooling {
        Pooling::Cls => states[..hidden].to_vec(),
        Pooling::Mean => {
            let mut sum = vec![0.0f32; hidden];
            for token in states.chunks_exact(hidden).take(real_len) {
                for (acc, &value) in sum.iter_mut().zip(token) {
                    *acc += value;
                }
            }
            // real_len is at least 1 for any tokenizer that adds special tokens; max() only
            // guards a degenerate empty sequence from producing NaNs.
            let count = real_len.max(1) as f32;
            sum.iter_mut().for_each(|v| *v /= count);
            sum
        }
    }
}

/// Scales a vector to unit length, so that dot product equals cosine similarity.
///
/// A zero vector stays zero (same epsilon as `torch.nn.functional.normalize`).
pub(crate) fn normalize(vector: &mut [f32]) {
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    vector.iter_mut().for_each(|v| *v /= norm);
}

#[cfg(test)]
mod tests {
    use super::*;

    // Three token rows of a 2-wide hidden state; the third row is padding.
    const STATES: [f32; 6] = [1.0, 2.0, 3.0, 6.0, 100.0, 100.0];

    #[test]
    fn mean_ignores_padding_rows() {
        assert_eq!(pool(&STATES, 2, 2, Pooling::Mean), vec![2.0, 4.0]);
    }

    #[test]
    fn cls_takes_the_first_token() {
        assert_eq!(pool(&STATES, 2, 2, Pooling::Cls), vec![1.0, 2.0]);
    }

    #[test]
    fn normalize_gives_unit_length_and_keeps_zero() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut zero = vec![0.0, 0.0];
        normalize(&mut zero);
        assert_eq!(zero, vec![0.0, 0.0]);
    }
}
