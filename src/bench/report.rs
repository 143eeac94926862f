//! Benchmark results: per-level summaries, the scaling ratio between levels, and their
//! rendering as a plain-text table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::Endpoint;
use super::client::Sample;
use super::stats::Percentiles;

/// The whole run: what was measured against which server, level by level.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Base URL the requests went to.
    pub url: String,
    /// Model id used in every request.
    pub model: String,
    /// API shape used.
    pub endpoint: Endpoint,
    /// Requested approximate prompt length in tokens.
    pub prompt_tokens: usize,
    /// `max_tokens` of every request.
    pub max_tokens: u32,
    /// Whether `ignore_eos` was sent, making every request generate `max_tokens`.
    pub ignore_eos: bool,
    /// One summary per concurrency level, in the order run.
    pub levels: Vec<LevelReport>,
    /// Each level's aggregate generation throughput relative to the first level's;
    /// empty unless at least two levels ran.
    pub scaling: Vec<Scaling>,
}

/// Summary of all requests issued at one concurrency level.
#[derive(Debug, Clone, Serialize)]
pub struct LevelReport {
    /// Number of requests in flight at once.
    pub concurrency: usize,
    /// Requests the level was asked to complete.
    pub requests: usize,
    /// Requests that streamed to completion.
    pub ok: usize,
    /// Requests that failed, timed out, or were never issued before the deadline.
    pub errors: usize,
    /// Seconds from the level's first request to its last response.
    pub wall_s: f64,
    /// Time to first token, milliseconds.
    pub ttft_ms: Option<Percentiles>,
    /// Inter-token latency (gap between content chunks) pooled over requests, milliseconds.
    pub itl_ms: Option<Percentiles>,
    /// End-to-end request latency, milliseconds.
    pub e2e_ms: Option<Percentiles>,
    /// Median over requests of completion_tokens / (e2e - ttft): the decode speed one
    /// client sees.
    pub stream_tokens_per_s_p50: Option<f64>,
    /// Completion tokens of successful requests divided by wall time.
    pub gen_tokens_per_s: f64,
    /// Prompt plus completion tokens of successful requests divided by wall time.
    pub total_tokens_per_s: f64,
    /// Completion tokens over successful requests.
    pub completion_tokens: u64,
    /// Prompt tokens over successful requests that reported usage.
    pub prompt_tokens: u64,
    /// Successful requests without a usage chunk, whose completion tokens were counted
    /// as content chunks and whose prompt tokens are missing from the totals.
    pub usage_missing: usize,
    /// Distinct error reasons with how often each occurred, most frequent first.
    pub error_reasons: Vec<ErrorCount>,
}

/// One error reason and its number of occurrences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorCount {
    /// The reason, e.g. `HTTP 503: overloaded`.
    pub message: String,
    /// How many requests failed this way.
    pub count: usize,
}

/// Aggregate generation throughput of one level relative to the first level.
#[derive(Debug, Clone, Serialize)]
pub struct Scaling {
    /// Concurrency of the level compared.
    pub concurrency: usize,
    /// Its gen tokens/s divided by the first level's; `None` if the first level made none.
    pub ratio: Option<f64>,
}

/// Selects one latency summary of a level, for rendering it row by row.
type PickPercentiles = fn(&LevelReport) -> Option<Percentiles>;

/// Reason recorded for requests the level deadline prevented from starting.
pub(crate) const NOT_ISSUED: &str = "not issued before the level timeout";

impl LevelReport {
    /// Summarises one level from its request outcomes; `requests - outcomes.len()` requests
    /// were never issued and count as errors.
    pub(crate) fn from_outcomes(
        concurrency: usize,
        requests: usize,
        outcomes: &[Result<Sample, String>],
        wall: Duration,
    ) -> Self {
        let samples: Vec<&Sample> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
        let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
        for reason in outcomes.iter().filter_map(|o| o.as_ref().err()) {
            *reasons.entry(reason.as_str()).or_default() += 1;
        }
        let not_issued = requests.saturating_sub(outcomes.len());
        if not_issued > 0 {
            *reasons.entry(NOT_ISSUED).or_default() += not_issued;
        }
        let mut error_reasons: Vec<ErrorCount> = reasons
            .into_iter()
            .map(|(message, count)| ErrorCount {
                message: message.to_owned(),
                count,
            })
            .collect();
        error_reasons.sort_by(|a, b| b.count.cmp(&a.count).then(a.message.cmp(&b.message)));

        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let ttft: Vec<f64> = samples.iter().filter_map(|s| s.ttft).map(ms).collect();
        let itl: Vec<f64> = samples
            .iter()
            .flat_map(|s| s.itl.iter().copied())
            .map(ms)
            .collect();
        let e2e: Vec<f64> = samples.iter().map(|s| ms(s.e2e)).collect();
        let stream_rates: Vec<f64> = samples.iter().filter_map(|s| stream_rate(s)).collect();
        let completion_tokens: u64 = samples.iter().map(|s| s.completion_tokens).sum();
        let prompt_tokens: u64 = samples.iter().filter_map(|s| s.prompt_tokens).sum();
        let wall_s = wall.as_secs_f64();
        let per_second = |tokens: u64| {
            if wall_s > 0.0 {
                tokens as f64 / wall_s
            } else {
                0.0
            }
        };

        Self {
            concurrency,
            requests,
            ok: samples.len(),
            errors: error_reasons.iter().map(|e| e.count).sum(),
            wall_s,
            ttft_ms: Percentiles::from_samples(&ttft),
            itl_ms: Percentiles::from_samples(&itl),
            e2e_ms: Percentiles::from_samples(&e2e),
            stream_tokens_per_s_p50: Percentiles::from_samples(&stream_rates).map(|p| p.p50),
            gen_tokens_per_s: per_second(completion_tokens),
            total_tokens_per_s: per_second(completion_tokens + prompt_tokens),
            completion_tokens,
            prompt_tokens,
            usage_missing: samples.iter().filter(|s| !s.usage_reported).count(),
            error_reasons,
        }
    }
}

/// completion_tokens / (e2e - ttft) of one request, when both are meaningful.
fn stream_rate(sample: &Sample) -> Option<f64> {
    let generating = sample.e2e.checked_sub(sample.ttft?)?.as_secs_f64();
    (generating > 0.0 && sample.completion_tokens > 0)
        .then(|| sample.completion_tokens as f64 / generating)
}

impl BenchReport {
    /// Fills in `scaling` from the levels: each level's gen tokens/s over the first's.
    pub(crate) fn with_scaling(mut self) -> Self {
        self.scaling = match self.levels.first() {
            Some(first) if self.levels.len() >= 2 => self
                .levels
                .iter()
                .map(|level| Scaling {
                    concurrency: level.concurrency,
                    ratio: (first.gen_tokens_per_s > 0.0)
                        .then(|| level.gen_tokens_per_s / first.gen_tokens_per_s),
                })
                .collect(),
            _ => Vec::new(),
        };
        self
    }

    /// Renders the report as a text table with one column per concurrency level.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let eos = if self.ignore_eos { ", ignore_eos" } else { "" };
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{} {} model={} prompt~{} tok, max_tokens={}{eos}",
            self.url,
            self.endpoint.as_str(),
            self.model,
            self.prompt_tokens,
            self.max_tokens,
        );
        let mut rows: Vec<(String, Vec<String>)> = Vec::new();
        let mut row = |label: &str, cell: &dyn Fn(&LevelReport) -> String| {
            rows.push((label.to_owned(), self.levels.iter().map(cell).collect()));
        };
        row("concurrency", &|l| l.concurrency.to_string());
        row("requests ok", &|l| format!("{}/{}", l.ok, l.requests));
        row("errors", &|l| l.errors.to_string());
        row("wall time (s)", &|l| format!("{:.2}", l.wall_s));
        let stats: [(&str, PickPercentiles); 3] = [
            ("TTFT", |l| l.ttft_ms),
            ("ITL", |l| l.itl_ms),
            ("E2E", |l| l.e2e_ms),
        ];
        for (name, pick) in stats {
            row(&format!("{name} p50 (ms)"), &|l| {
                number(pick(l).map(|p| p.p50))
            });
            row(&format!("{name} p95 (ms)"), &|l| {
                number(pick(l).map(|p| p.p95))
            });
            row(&format!("{name} p99 (ms)"), &|l| {
                number(pick(l).map(|p| p.p99))
            });
        }
        row("stream tok/s p50", &|l| number(l.stream_tokens_per_s_p50));
        row("gen tok/s (aggregate)", &|l| {
            number(Some(l.gen_tokens_per_s))
        });
        row("total tok/s (aggregate)", &|l| {
            number(Some(l.total_tokens_per_s))
        });
        row("completion tokens", &|l| l.completion_tokens.to_string());
        row("prompt tokens", &|l| l.prompt_tokens.to_string());

        let label_width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
        let cell_width = rows
            .iter()
            .flat_map(|(_, cells)| cells.iter().map(String::len))
            .max()
            .unwrap_or(0)
            .max(8);
        for (label, cells) in &rows {
            let _ = write!(out, "{label:<label_width$}");
            for cell in cells {
                let _ = write!(out, "  {cell:>cell_width$}");
            }
            out.push('\n');
        }
        self.render_notes(&mut out);
        out
    }

    /// Usage caveats, error reasons and the scaling ratios, below the table.
    fn render_notes(&self, out: &mut String) {
        for level in &self.levels {
            if level.usage_missing > 0 {
                let _ = writeln!(
                    out,
                    "note: c={}: {} request(s) sent no usage chunk; their completion tokens \
                     were counted as content chunks and their prompt tokens are missing",
                    level.concurrency, level.usage_missing
                );
            }
            for error in &level.error_reasons {
                let _ = writeln!(
                    out,
                    "errors: c={}: {} x {}",
                    level.concurrency, error.count, error.message
                );
            }
        }
        if let Some(first) = self.scaling.first() {
            let _ = writeln!(out, "gen tok/s scaling vs c={}:", first.concurrency);
            for scaling in &self.scaling {
                let ratio = scaling
                    .ratio
                    .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x"));
                let _ = writeln!(out, "  c={}: {ratio}", scaling.concurrency);
            }
        }
    }
}

/// One decimal, or `-` where nothing was measured.
fn number(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ttft_ms: u64, e2e_ms: u64, tokens: u64, usage: bool) -> Sample {
        Sample {
            ttft: Some(Duration::from_millis(ttft_ms)),
            itl: vec![Duration::from_millis(10); 2],
            e2e: Duration::from_millis(e2e_ms),
            completion_tokens: tokens,
            prompt_tokens: usage.then_some(5),
            usage_reported: usage,
        }
    }

    #[test]
    fn level_summary_counts_tokens_errors_and_rates() {
        let outcomes = vec![
            Ok(sample(100, 1100, 10, true)),
            Ok(sample(200, 700, 10, false)),
            Err("HTTP 503: busy".to_owned()),
            Err("HTTP 503: busy".to_owned()),
            Err("stream error: reset".to_owned()),
        ];
        let level = LevelReport::from_outcomes(2, 6, &outcomes, Duration::from_secs(2));
        assert_eq!((level.ok, level.errors, level.requests), (2, 4, 6));
        assert_eq!(level.completion_tokens, 20);
        assert_eq!(level.prompt_tokens, 5);
        assert_eq!(level.usage_missing, 1);
        assert_eq!(level.gen_tokens_per_s, 10.0);
        assert_eq!(level.total_tokens_per_s, 12.5);
        // 10 tokens over 1.0 s and over 0.5 s -> median of 10 and 20.
        assert_eq!(level.stream_tokens_per_s_p50, Some(15.0));
        assert_eq!(level.ttft_ms.map(|p| p.p50), Some(150.0));
        assert_eq!(level.itl_ms.map(|p| p.count), Some(4));
        let reasons: Vec<(&str, usize)> = level
            .error_reasons
            .iter()
            .map(|e| (e.message.as_str(), e.count))
            .collect();
        assert_eq!(
            reasons,
            [
                ("HTTP 503: busy", 2),
                (NOT_ISSUED, 1),
                ("stream error: reset", 1)
            ]
        );
    }

    #[test]
    fn all_failed_level_has_no_percentiles() {
        let outcomes = vec![Err("x".to_owned())];
        let level = LevelReport::from_outcomes(1, 1, &outcomes, Duration::from_millis(5));
        assert!(level.ttft_ms.is_none() && level.e2e_ms.is_none() && level.itl_ms.is_none());
        assert_eq!(level.stream_tokens_per_s_p50, None);
        assert_eq!(level.gen_tokens_per_s, 0.0);
    }

    fn report(rates: &[(usize, u64)]) -> BenchReport {
        let levels = rates
            .iter()
            .map(|&(concurrency, tokens)| {
                let outcomes = vec![Ok(sample(10, 110, tokens, true))];
                LevelReport::from_outcomes(concurrency, 1, &outcomes, Duration::from_secs(1))
            })
            .collect();
        BenchReport {
            url: "http://127.0.0.1:1/v1".into(),
            model: "m".into(),
            endpoint: Endpoint::Chat,
            prompt_tokens: 64,
            max_tokens: 128,
            ignore_eos: true,
            levels,
            scaling: Vec::new(),
        }
        .with_scaling()
    }

    #[test]
    fn scaling_is_relative_to_first_level() {
        let ratios: Vec<Option<f64>> = report(&[(1, 10), (8, 45)])
            .scaling
            .iter()
            .map(|s| s.ratio)
            .collect();
        assert_eq!(ratios, [Some(1.0), Some(4.5)]);
        assert!(report(&[(1, 10)]).scaling.is_empty());
        assert_eq!(report(&[(1, 0), (2, 5)]).scaling[1].ratio, None);
    }

    #[test]
    fn table_has_a_column_per_level_and_the_ratio() {
        let table = report(&[(1, 10), (8, 45)]).render_table();
        let concurrency = table
            .lines()
            .find(|l| l.starts_with("concurrency"))
            .expect("row");
        assert_eq!(
            concurrency.split_whitespace().collect::<Vec<_>>(),
            ["concurrency", "1", "8"]
        );
        let gen_row = table
            .lines()
            .find(|l| l.starts_with("gen tok/s"))
            .expect("row");
        assert!(gen_row.ends_with("45.0"), "{gen_row}");
        assert!(table.contains("c=8: 4.50x"), "{table}");
        assert!(table.contains("TTFT p99 (ms)"));
    }
}
