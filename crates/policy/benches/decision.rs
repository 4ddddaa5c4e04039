//! The pure decision, alone: the stay path (score, pick, threshold) and the
//! approve path (that, plus every gate and the state change of a handoff).
//! Besides criterion's means it prints P50/P99 of single decisions and their
//! ratio to the targets (stay ≤ 5 µs, approve ≤ 20 µs at P99).

use std::hint::black_box;
use std::time::{Duration, Instant};

use baton_policy::gates::{GateInput, run_gates};
use baton_policy::{
    Config, ContactState, ContextPacket, EntryKind, Message, NothingLearned, Policy,
};
use criterion::{Criterion, criterion_group, criterion_main};

const STAY: &str = "Thanks! We're flexible on the closing date, what are the next steps?";
const SELL: &str = "I need to sell my house, what\u{2019}s my home worth?";

fn stay(policy: &Policy) {
    let m = Message {
        source: 0,
        text: black_box(STAY),
        signals: &[],
    };
    black_box(policy.assess(&m, &NothingLearned));
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

/// P50 and P99 of `n` single calls.
fn percentiles(n: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    let mut samples: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    samples.sort();
    (samples[n / 2], samples[n * 99 / 100])
}

fn bench(c: &mut Criterion) {
    let policy = Policy::new(Config::default()).unwrap();
    c.bench_function("policy/stay", |b| b.iter(|| stay(&policy)));
    c.bench_function("policy/approve", |b| b.iter(|| approve(&policy, 1_000_000)));

    for _ in 0..10_000 {
        stay(&policy);
    }
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
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
