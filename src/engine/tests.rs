//! Engine logic on the deterministic fake backend, driven one step at a time.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};

use tokio::sync::mpsc::UnboundedReceiver;

use super::core::EngineCore;
use super::*;
use crate::backend::fake::{FAKE_REPLY, FakeBackend, FakeConfig, FakeTokenizer};
use crate::backend::{BatchEntry, SamplingParams, SlotId, TokenId};

const SETTINGS: EngineSettings = EngineSettings {
    parallel: 16,
    batch_tokens: 64,
    ctx_size: 512,
    queue_capacity: 64,
    max_tokens: None,
    max_prompt_tokens: None,
    max_stop: 16,
};

struct Harness {
    core: EngineCore<FakeBackend>,
    commands: Sender<Submission>,
}

impl Harness {
    fn new(settings: EngineSettings, config: FakeConfig) -> Self {
        let (commands, rx) = channel();
        let core = EngineCore::new(
            FakeBackend::new(config),
            Arc::new(FakeTokenizer),
            settings,
            rx,
        );
        Harness { core, commands }
    }

    fn submit(&self, prompt: &str, options: GenerationOptions) -> UnboundedReceiver<Event> {
        self.submit_as("anonymous", prompt, options)
    }

    fn submit_as(
        &self,
        owner: &str,
        prompt: &str,
        options: GenerationOptions,
    ) -> UnboundedReceiver<Event> {
        let limits = EngineLimits::new(SETTINGS.ctx_size, 258);
        let prompt = FakeTokenizer.encode(prompt, false, false);
        let request = GenerateRequest::new(prompt, options, &limits)
            .expect("valid request")
            .with_owner(owner);
        let (reply, events) = tokio::sync::mpsc::unbounded_channel();
        self.commands
            .send(Submission {
                request,
                reply,
                submitted: std::time::Instant::now(),
                generated: Default::default(),
            })
            .expect("the engine is listening");
        events
    }

    /// Ticks until no sequence is running (bounded).
    fn run_to_idle(&mut self) {
        for _ in 0..10_000 {
            self.core.tick(false);
            if self.core.running() == 0 {
                return;
            }
        }
        panic!("engine did not become idle");
    }
}

use crate::backend::Tokenizer;

fn max_tokens(n: u32) -> GenerationOptions {
    GenerationOptions {
        max_tokens: Some(n),
        temperature: Some(0.0),
        ..Default::default()
    }
}

/// Collects all events; asserts exactly one final event and that it is last. Timings are
/// zeroed in the returned final event so tests can compare it exactly.
fn drain(events: &mut UnboundedReceiver<Event>) -> (String, Event) {
    let mut text = String::new();
    let mut all = Vec::new();
    while let Ok(event) = events.try_recv() {
        if event != Event::Admitted {
            all.push(event);
        }
    }
    let finals = all.iter().filter(|e| !matches!(e, Event::Text(_))).count();
    assert_eq!(finals, 1, "exactly one final event: {all:?}");
    let last = match all.pop().expect("at least the final event") {
        Event::Done(completion) => {
            let timings = completion.timings;
            assert!(timings.total >= timings.queued, "{timings:?}");
            Event::Done(Completion {
                timings: Timings::default(),
                ..completion
            })
        }
        other => other,
    };
    assert!(
        !matches!(last, Event::Text(_)),
        "the final event comes last: {last:?}"
    );
    for event in all {
        match event {
            Event::Text(t) => {
                assert!(!t.is_empty(), "text events are never empty");
                text.push_str(&t);
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    (text, last)
}

fn expected_reply(len: usize, prompt: &str) -> String {
    // Mirrors the fake model: the reply cycles from an offset fixed by the prompt.
    let hash = prompt
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let reply = FAKE_REPLY.as_bytes();
    let bytes: Vec<u8> = (0..len)
        .map(|i| reply[(hash as usize).wrapping_add(i) % reply.len()])
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn one_request_streams_then_finishes_with_length() {
    let mut h = Harness::new(SETTINGS, FakeConfig::default());
    let mut events = h.submit("hi", max_tokens(40));
    h.run_to_idle();
    let (text, last) = drain(&mut events);
    let completion = Completion {
        finish_reason: FinishReason::Length,
        prompt_tokens: 2,
        completion_tokens: 40,
        timings: Timings::default(),
    };
    assert_eq!(last, Event::Done(completion));
    assert_eq!(text, expected_reply(40, "hi"));
}

#[test]
fn end_of_generation_finishes_with_stop_and_min_tokens_delays_it() {
    let mut h = Harness::new(SETTINGS, FakeConfig { eog_after: Some(3) });
    let mut plain = h.submit("a", max_tokens(50));
    let mut delayed = h.submit(
        "a",
        GenerationOptions {
            min_tokens: Some(10),
            ..max_tokens(50)
        },
    );
    let mut ignored = h.submit(
        "a",
        GenerationOptions {
            ignore_eos: true,
            ..max_tokens(20)
        },
    );
    h.run_to_idle();
    let done = |reason, tokens| {
        Event::Done(Completion {
            finish_reason: reason,
            prompt_tokens: 1,
            completion_tokens: tokens,
            timings: Timings::default(),
        })
    };
    assert_eq!(
        drain(&mut plain).1,
        done(FinishReason::Stop, 4),
        "3 tokens + the EOG token"
    );
    assert_eq!(drain(&mut ignored).1, done(FinishReason::Length, 20));
    let (text, last) = drain(&mut delayed);
    assert_eq!(
        last,
        done(FinishReason::Length, 50),
        "the fake only offers EOG once, at 3"
    );
    assert_eq!(text.len(), expected_reply(50, "a").len());
}

#[test]
fn output_is_identical_alone_and_inside_a_batch_of_16() {
    let prompts: Vec<String> = (0..16)
        .map(|i| format!("prompt number {i} {}", "x".repeat(i * 7)))
        .collect();
    let alone: Vec<String> = prompts
        .iter()
        .map(|p| {
            let mut h = Harness::new(SETTINGS, FakeConfig::default());
            let mut events = h.submit(p, max_tokens(33));
            h.run_to_idle();
            drain(&mut events).0
        })
        .collect();
    let mut h = Harness::new(SETTINGS, FakeConfig::default());
    let mut streams: Vec<_> = prompts
        .iter()
        .map(|p| h.submit(p, max_tokens(33)))
        .collect();
    h.run_to_idle();
    assert!(
        h.core.backend().max_batch_tokens > 16,
        "requests really shared batches"
    );
    assert!(
        h.core.backend().max_batch_tokens <= SETTINGS.batch_tokens,
        "budget respected"
    );
    for (i, events) in streams.iter_mut().enumerate() {
        assert_eq!(drain(events).0, alone[i], "prompt {i}");
    }
}

#[test]
fn dropped_receiver_frees_its_slot_within_one_step() {
    let settings = EngineSettings {
        parallel: 2,
        ..SETTINGS
    };
    let mut h = Harness::new(settings, FakeConfig::default());
    let first = h.submit("first", max_tokens(400));
    let mut second = h.submit("second", max_tokens(400));
    let mut waiting = h.submit("waiting", max_tokens(5));
    for _ in 0..5 {
        h.core.tick(false);
    }
    assert_eq!(h.core.running(), 2);
    assert!(waiting.try_recv().is_err(), "no slot yet");
    drop(first);
    h.core.tick(false);
    assert_eq!(
        h.core.running(),
        2,
        "the waiting request took the freed slot at once"
    );
    assert_eq!(
        h.core.backend().occupied_slots(),
        vec![0, 1],
        "slots stay contiguous"
    );
    h.run_to_idle();
    assert_eq!(drain(&mut waiting).0, expected_reply(5, "waiting"));
    assert!(matches!(drain(&mut second).1, Event::Done(_)));
}

#[test]
fn stop_strings_end_generation_and_never_appear() {
    let mut h = Harness::new(SETTINGS, FakeConfig::default());
    let full = expected_reply(60, "s");
    let stop = "wörld".to_owned();
    let cut = full.find(&stop).expect("the fake reply contains the stop");
    let mut events = h.submit(
        "s",
        GenerationOptions {
            stop: vec![stop],
            ..max_tokens(60)
        },
    );
    h.run_to_idle();
    let (text, last) = drain(&mut events);
    assert_eq!(text, full[..cut]);
    assert!(matches!(
        last,
        Event::Done(Completion {
            finish_reason: FinishReason::Stop,
            ..
        })
    ));
}

#[test]
fn long_prompts_are_prefilled_in_chunks_while_others_decode() {
    let settings = EngineSettings {
        batch_tokens: 32,
        ..SETTINGS
    };
    let mut h = Harness::new(settings, FakeConfig::default());
    let mut short = h.submit("go", max_tokens(30));
    h.core.tick(false);
    let mut long = h.submit(&"y".repeat(300), max_tokens(3));
    // The short stream must get a token every step while the long prompt is prefilled.
    let mut tokens_seen = 0;
    for _ in 0..9 {
        h.core.tick(false);
        while let Ok(Event::Text(t)) = short.try_recv() {
            tokens_seen += t.chars().count();
        }
    }
    assert!(tokens_seen >= 8, "short stream stalled: {tokens_seen}");
    assert!(h.core.backend().max_batch_tokens <= 32);
    h.run_to_idle();
    assert!(matches!(drain(&mut long).1, Event::Done(_)));
}

/// A backend that reports each step (admission is done by then) and blocks until released.
struct GatedBackend {
    inner: FakeBackend,
    admitted: SyncSender<()>,
    gate: Receiver<()>,
}

impl Backend for GatedBackend {
    fn begin(&mut self, slot: SlotId, params: &SamplingParams) -> Result<(), BackendError> {
        self.inner.begin(slot, params)
    }
    fn step(&mut self, batch: &[BatchEntry<'_>]) -> Result<Vec<TokenId>, BackendError> {
        // Admission is complete once a step runs.
        let _ = self.admitted.try_send(());
        let _ = self.gate.recv();
        self.inner.step(batch)
    }
    fn end(&mut self, slot: SlotId) {
        self.inner.end(slot);
    }
    fn relocate(&mut self, from: SlotId, to: SlotId) {
        self.inner.relocate(from, to);
    }
}

#[test]
fn full_queue_is_reported_at_once_and_queued_requests_still_finish() {
    let settings = EngineSettings {
        parallel: 1,
        queue_capacity: 2,
        ..SETTINGS
    };
    let (admitted_tx, admitted_rx) = sync_channel(8);
    let (gate_tx, gate_rx) = sync_channel::<()>(0);
    let engine = Engine::spawn("gated", settings, move |runner| {
        let backend = GatedBackend {
            inner: FakeBackend::default(),
            admitted: admitted_tx,
            gate: gate_rx,
        };
        runner.run(backend, Arc::new(FakeTokenizer), FakeBackend::info());
        Ok(())
    })
    .expect("fake engine starts");
    let request = |text: &str| {
        let prompt = FakeTokenizer.encode(text, false, false);
        GenerateRequest::new(prompt, max_tokens(2), &engine.limits()).expect("valid")
    };
    let mut running = engine.submit(request("a")).expect("admitted").events;
    admitted_rx
        .recv()
        .expect("first request admitted; the engine now waits at the gate");
    let mut queued: Vec<_> = ["b", "c"]
        .iter()
        .map(|t| engine.submit(request(t)).expect("fits the queue").events)
        .collect();
    assert_eq!(
        engine.submit(request("d")).unwrap_err(),
        EngineError::QueueFull { queued: 2 }
    );
    drop(gate_tx);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        for events in std::iter::once(&mut running).chain(queued.iter_mut()) {
            let mut last = None;
            while let Some(event) = events.recv().await {
                last = Some(event);
            }
            assert!(matches!(last, Some(Event::Done(_))), "{last:?}");
        }
    });
    engine.shutdown();
}

#[test]
fn a_failed_load_is_a_clean_error() {
    let err = Engine::spawn("broken", SETTINGS, |_runner| {
        Err(BackendError::Load {
            path: "/nope.gguf".into(),
            message: "no such file".into(),
        })
    })
    .unwrap_err();
    assert!(
        matches!(err, EngineError::Load(ref m) if m.contains("/nope.gguf")),
        "{err:?}"
    );
}

#[test]
fn a_flooding_owner_cannot_starve_another() {
    let settings = EngineSettings {
        parallel: 1,
        ..SETTINGS
    };
    let mut h = Harness::new(settings, FakeConfig::default());
    let mut flood: Vec<_> = (0..6)
        .map(|i| h.submit_as("flood", &format!("f{i}"), max_tokens(10)))
        .collect();
    let mut quiet = h.submit_as("quiet", "q", max_tokens(10));
    let mut admitted_at = None;
    for step in 0..200 {
        h.core.tick(false);
        if admitted_at.is_none() && quiet.try_recv() == Ok(Event::Admitted) {
            admitted_at = Some(step);
        }
    }
    // The first flood request holds the only slot for its 10 tokens; the quiet owner is next,
    // ahead of the five other flood requests that were queued before it.
    let step = admitted_at.expect("the quiet request was admitted");
    assert!(step <= 11, "admitted at step {step}");
    let mut finished = 0;
    for events in &mut flood {
        while let Ok(event) = events.try_recv() {
            finished += usize::from(matches!(event, Event::Done(_)));
        }
    }
    assert_eq!(
        finished, 6,
        "the flooding owner is still served, after the others"
    );
}

#[test]
fn queued_requests_whose_client_left_are_dropped_before_admission() {
    let settings = EngineSettings {
        parallel: 1,
        ..SETTINGS
    };
    let mut h = Harness::new(settings, FakeConfig::default());
    let mut first = h.submit("first", max_tokens(3));
    let gone = h.submit("gone", max_tokens(3));
    drop(gone);
    h.run_to_idle();
    assert!(matches!(drain(&mut first).1, Event::Done(_)));
    assert_eq!(h.core.backend().steps, 3, "only the first request ran");
}
