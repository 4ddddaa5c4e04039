//! The pure decision, alone: the stay path (score, pick, threshold) and the
//! approve path (that, plus every gate and the state change of a handoff).
//! Besides criterion's means it prints P50/P99 of single decisions and their
//! ratio to the targets (stay ≤ 5 µs, approve ≤ 20 µs at P99), the stay
//! path on a typical and on an 8 KiB message beside the phrase classifier
//! Baton used before its model (≤ 5 µs and ≤ 50 µs at P99), and the size
//! and load time of the built-in model.

use std::hint::black_box;
use std::time::{Duration, Instant};

use baton_policy::config::{NO_MODEL, example_phrase_intents};
use baton_policy::gates::{GateInput, run_gates};
use baton_policy::model::DEFAULT_MODEL;
use baton_policy::{
    Config, ContactState, ContextPacket, EntryKind, IntentModel, Message, NothingLearned, Policy,
};
use criterion::{Criterion, criterion_group, criterion_main};

/// The router binary's allocator: the decision allocates as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const STAY: &str = "Thanks so much for the info, I will check with my wife tonight.";
const SELL: &str = "I need to sell my house, what\u{2019}s my home worth?";

fn stay(policy: &Policy) {
    stay_on(policy, STAY);
}

fn stay_on(policy: &Policy, text: &str) {
    let m = Message {
        source: 0,
        text: black_box(text),
        signals: &[],
    };
    black_box(policy.assess(&m, &NothingLearned));
}

/// The phrase classifier alone, as Baton decided before it had a model.
fn phrase_policy() -> Policy {
    let mut config = Config::default();
    config.classifier.model = NO_MODEL.into();
    config.intents = example_phrase_intents();
    Policy::new(config).unwrap()
}

/// An 8 KiB message that warrants no handoff.
fn long_message() -> String {
    let mut text = String::new();
    while text.len() + STAY.len() < 8 * 1024 {
        text.push_str(STAY);
        text.push(' ');
    }
    text
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn approve(policy: &Policy, now: i64) {
    let m = Message {
        source: 0,
        text: black_box(SELL),
        signals: &[],
    };
    let a = policy.assess(&m, &NothingLearned);
    let target = policy.bot_id(a.target.expect("seller"));
    let mut contact = ContactState::new("lead", now);
    let input = GateInput {
        contact: &contact,
        source: "lead",
        target,
        target_health: None,
        target_sla: Duration::from_millis(1800),
        now,
    };
    let result = run_gates(policy.config(), &input);
    assert!(result.failure.is_none());
    let context = ContextPacket {
        timeline: Some("3 months".into()),
        ..Default::default()
    };
    contact.hand_over(
        EntryKind::Handoff,
        "h",
        target,
        &a.pattern,
        a.confidence,
        &a.reason,
        context,
        &a.pending,
        policy.config(),
        now,
    );
    black_box(contact);
}

/// P50 and P99 of `n` single calls, after as many unmeasured ones; the
/// samples' buffer is written before timing starts, so no page fault of
/// the harness lands in a sample.
fn percentiles(n: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    let mut samples = vec![Duration::ZERO; n];
    for _ in 0..n {
        f();
    }
    for sample in &mut samples {
        let t = Instant::now();
        f();
        *sample = t.elapsed();
    }
    samples.sort();
    (samples[n / 2], samples[n * 99 / 100])
}

fn bench(c: &mut Criterion) {
    let policy = Policy::new(Config::default()).unwrap();
    let phrases = phrase_policy();
    let long = long_message();
    for p in [&policy, &phrases] {
        for text in [STAY, long.as_str()] {
            let m = Message {
                source: 0,
                text,
                signals: &[],
            };
            let next = p.assess(&m, &NothingLearned).next;
            assert_eq!(
                next,
                baton_policy::Next::Stay,
                "the stay benchmark must stay"
            );
        }
    }
    c.bench_function("policy/stay", |b| b.iter(|| stay(&policy)));
    c.bench_function("policy/stay_phrases", |b| b.iter(|| stay(&phrases)));
    c.bench_function("policy/stay_8k", |b| b.iter(|| stay_on(&policy, &long)));
    c.bench_function("policy/stay_8k_phrases", |b| {
        b.iter(|| stay_on(&phrases, &long))
    });
    c.bench_function("policy/approve", |b| b.iter(|| approve(&policy, 1_000_000)));

    let (s50, s99) = percentiles(100_000, || stay(&policy));
    let (a50, a99) = percentiles(100_000, || approve(&policy, 1_000_000));
    println!("single decisions, 100000 each:");
    println!(
        "  stay     p50 {:>7.2} us  p99 {:>7.2} us  target p99 <= 5 us   ({:.2} of target)",
        s50.as_secs_f64() * 1e6,
        s99.as_secs_f64() * 1e6,
        s99.as_secs_f64() * 1e6 / 5.0
    );
    println!(
        "  approve  p50 {:>7.2} us  p99 {:>7.2} us  target p99 <= 20 us  ({:.2} of target)",
        a50.as_secs_f64() * 1e6,
        a99.as_secs_f64() * 1e6,
        a99.as_secs_f64() * 1e6 / 20.0
    );
    println!(
        "  approve / stay at p50: {:.1}x",
        a50.as_secs_f64() / s50.as_secs_f64()
    );

    println!("stay path, model beside the phrase classifier, 100000 each:");
    for (name, text, target) in [("typical", STAY, 5.0), ("8 KiB", long.as_str(), 50.0)] {
        let (m50, m99) = percentiles(100_000, || stay_on(&policy, text));
        let (p50, p99) = percentiles(100_000, || stay_on(&phrases, text));
        println!(
            "  {name:<8} model p50 {:>7.2} us  p99 {:>7.2} us | phrases p50 {:>7.2} us  p99 {:>7.2} us | model/phrases p99 {:.2}x | target p99 <= {target} us ({:.2} of target)",
            us(m50),
            us(m99),
            us(p50),
            us(p99),
            us(m99) / us(p99),
            us(m99) / target
        );
    }

    let started = Instant::now();
    let model = IntentModel::builtin().unwrap();
    let loaded = started.elapsed();
    let started = Instant::now();
    let _ = Policy::new(Config::default()).unwrap();
    println!(
        "built-in model: {} bytes (limit 5 MiB: {:.2} of it), {} weighted features, parsed in {:.1} ms, policy with it built in {:.1} ms",
        DEFAULT_MODEL.len(),
        DEFAULT_MODEL.len() as f64 / (5.0 * 1024.0 * 1024.0),
        model.entries(),
        loaded.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64() * 1e3
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
