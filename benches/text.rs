//! Per-token cost of the engine's text path: detokenizer and stop-string matcher.
//!
//! Both run on the engine thread once per generated token, so the stream here mimics a real
//! generation: ~500 short byte pieces that sometimes split multi-byte characters, and two stop
//! strings whose prefixes occur in the text (forcing hold-back and release).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use inferno::engine::detokenizer::Detokenizer;
use inferno::engine::stop::StopMatcher;

const PASSAGE: &str = "The model answered: \"Café crème, naïve façade\" — 東京は晴れです。 \
    Launch 🚀 succeeded <b>now</b>.\nUsers asked why; it replied </ok>.\n";

/// Piece lengths in bytes, averaging three, like short BPE tokens.
const PIECE_LENS: [usize; 8] = [3, 1, 4, 2, 5, 3, 2, 4];

const STOPS: [&str; 2] = ["</s>", "\nUser:"];

/// About 500 byte pieces cut regardless of character boundaries.
fn byte_pieces() -> Vec<Vec<u8>> {
    let mut bytes = Vec::new();
    while bytes.len() < 1500 {
        bytes.extend_from_slice(PASSAGE.as_bytes());
    }
    let mut pieces = Vec::new();
    let mut rest = bytes.as_slice();
    for len in PIECE_LENS.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, after) = rest.split_at((*len).min(rest.len()));
        pieces.push(piece.to_vec());
        rest = after;
    }
    pieces
}

/// The text pieces the detokenizer yields for the byte pieces, as the stop matcher sees them.
fn text_pieces(pieces: &[Vec<u8>]) -> Vec<String> {
    let mut detok = Detokenizer::new();
    let mut texts: Vec<String> = pieces.iter().map(|piece| detok.push(piece)).collect();
    texts.push(detok.finish());
    texts
}

fn stops() -> Vec<String> {
    STOPS.iter().map(|stop| stop.to_string()).collect()
}

fn bench_text(c: &mut Criterion) {
    let pieces = byte_pieces();
    let texts = text_pieces(&pieces);
    assert_eq!(
        texts.concat().len(),
        pieces.concat().len(),
        "stream must be valid UTF-8"
    );

    let mut group = c.benchmark_group("text");
    group.throughput(Throughput::Elements(pieces.len() as u64));

    group.bench_function("detokenizer_push", |b| {
        b.iter(|| {
            let mut detok = Detokenizer::new();
            for piece in &pieces {
                black_box(detok.push(black_box(piece)));
            }
            black_box(detok.finish())
        })
    });

    group.bench_function("stop_push", |b| {
        b.iter_batched(
            || StopMatcher::new(stops()),
            |mut matcher| {
                for text in &texts {
                    black_box(matcher.push(black_box(text)));
                }
                black_box(matcher.flush())
            },
            BatchSize::SmallInput,
        )
    });

    group.bench_function("detokenize_then_stop", |b| {
        b.iter_batched(
            || (Detokenizer::new(), StopMatcher::new(stops())),
            |(mut detok, mut matcher)| {
                for piece in &pieces {
                    let text = detok.push(black_box(piece));
                    black_box(matcher.push(&text));
                }
                black_box(matcher.flush())
            },
            BatchSize::SmallInput,
        )
    });

    group.finish();
}

criterion_group!(benches, bench_text);
criterion_main!(benches);
