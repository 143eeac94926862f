//! Percentile summaries of latency and throughput samples.
//!
//! Percentiles use linear interpolation between closest ranks (the method numpy and
//! Excel's PERCENTILE.INC use by default): for `n` sorted samples the `p`-th percentile
//! sits at fractional index `h = (n - 1) * p / 100`, and the result is
//! `x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])`.
//! This keeps p50 of an even-sized sample at the midpoint of the two middle values and
//! makes p0/p100 the minimum/maximum.

use serde::Serialize;

/// The p50/p95/p99 of a sample set, plus its extremes, mean and size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Number of samples summarised.
    pub count: usize,
}

impl Percentiles {
    /// Summarises `samples` (any order; NaNs are dropped); `None` when nothing is left.
    pub fn from_samples(samples: &[f64]) -> Option<Self> {
        let sorted = sorted_finite(samples);
        let min = *sorted.first()?;
        let max = *sorted.last()?;
        Some(Self {
            p50: percentile_sorted(&sorted, 50.0)?,
            p95: percentile_sorted(&sorted, 95.0)?,
            p99: percentile_sorted(&sorted, 99.0)?,
            min,
            max,
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
            count: sorted.len(),
        })
    }
}

/// The `p`-th percentile (0..=100, clamped) of `samples` in any order, by linear
/// interpolation; `None` for an empty (or all-NaN) input.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    percentile_sorted(&sorted_finite(samples), p)
}

/// Drops NaNs (they have no rank) and sorts ascending.
fn sorted_finite(samples: &[f64]) -> Vec<f64> {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    sorted
}

/// Linear interpolation on an ascending, NaN-free slice.
fn percentile_sorted(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let p = if p.is_nan() {
        50.0
    } else {
        p.clamp(0.0, 100.0)
    };
    let rank = last as f64 * p / 100.0;
    let lower = rank.floor() as usize;
    let upper = (lower + 1).min(last);
    let fraction = rank - lower as f64;
    Some(sorted[lower] + fraction * (sorted[upper] - sorted[lower]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn empty_input_has_no_percentiles() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(Percentiles::from_samples(&[]), None);
        assert_eq!(percentile(&[f64::NAN], 50.0), None);
    }

    #[test]
    fn single_sample_is_every_percentile() {
        for p in [0.0, 50.0, 95.0, 99.0, 100.0] {
            assert_eq!(percentile(&[7.5], p), Some(7.5));
        }
    }

    #[test]
    fn interpolates_between_ranks() {
        let xs = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(percentile(&xs, 0.0), Some(1.0));
        assert_eq!(percentile(&xs, 100.0), Some(4.0));
        assert_eq!(percentile(&xs, 50.0), Some(2.5));
        // h = 3 * 0.95 = 2.85 -> 3 + 0.85 * (4 - 3)
        assert!(close(percentile(&xs, 95.0).expect("non-empty"), 3.85));
        // h = 3 * 0.99 = 2.97
        assert!(close(percentile(&xs, 99.0).expect("non-empty"), 3.97));
        // h = 3 * 0.25 = 0.75
        assert!(close(percentile(&xs, 25.0).expect("non-empty"), 1.75));
    }

    #[test]
    fn odd_sized_median_is_middle_value() {
        assert_eq!(percentile(&[10.0, 30.0, 20.0], 50.0), Some(20.0));
        // h = 2 * 0.95 = 1.9 -> 20 + 0.9 * 10
        assert!(close(
            percentile(&[10.0, 30.0, 20.0], 95.0).expect("non-empty"),
            29.0
        ));
    }

    #[test]
    fn out_of_range_p_is_clamped() {
        assert_eq!(percentile(&[1.0, 2.0], -5.0), Some(1.0));
        assert_eq!(percentile(&[1.0, 2.0], 150.0), Some(2.0));
    }

    #[test]
    fn summary_of_one_to_hundred() {
        let xs: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let s = Percentiles::from_samples(&xs).expect("non-empty");
        // h = 99 * 0.5 = 49.5 -> between 50 and 51
        assert!(close(s.p50, 50.5));
        // h = 99 * 0.95 = 94.05 -> 95 + 0.05
        assert!(close(s.p95, 95.05));
        // h = 99 * 0.99 = 98.01 -> 99 + 0.01
        assert!(close(s.p99, 99.01));
        assert_eq!((s.min, s.max, s.count), (1.0, 100.0, 100));
        assert!(close(s.mean, 50.5));
    }

    #[test]
    fn nan_samples_are_ignored() {
        let s = Percentiles::from_samples(&[f64::NAN, 2.0, 4.0]).expect("two finite samples");
        assert_eq!(s.count, 2);
        assert_eq!(s.p50, 3.0);
    }
}
