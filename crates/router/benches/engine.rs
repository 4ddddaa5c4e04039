//! The decision through the router's engine with the in-memory store: the
//! stay path (no storage) and the approve path (lock, load, gates, commit),
//! beside the pure policy's stay path measured in the same run as the baseline.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_policy::{Config, ContextPacket, Message, NothingLearned, Policy};
use baton_router::engine::{Engine, HandoffRequest};
use baton_store::EmbeddedStore;
use criterion::{Criterion, criterion_group, criterion_main};

const STAY: &str = "Thanks so much for the info, I will check with my wife tonight.";
const SELL: &str = "I need to sell my house, what\u{2019}s my home worth?";

fn request(contact: String, message: &str) -> HandoffRequest {
    HandoffRequest {
        contact_id: contact,
        source: 0,
        message: message.to_owned(),
        signals: vec![],
        context: ContextPacket {
            timeline: Some("3 months".into()),
            ..Default::default()
        },
        request_id: String::new(),
    }
}

fn percentiles(n: usize, mut f: impl FnMut()) -> (f64, f64) {
    let mut samples: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    (us(samples[n / 2]), us(samples[n * 99 / 100]))
}

fn engine(rt: &tokio::runtime::Runtime) -> Engine {
    let store = Arc::new(EmbeddedStore::in_memory());
    rt.block_on(Engine::new(
        Policy::new(Config::default()).unwrap(),
        store,
        16,
    ))
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Percentiles first, each path on a fresh store of its own.
    let engine = engine(&rt);
    let policy = Policy::new(Config::default()).unwrap();
    let mut next = 0u64;
    let mut fresh = || {
        next += 1;
        format!("contact-{next}")
    };

    let pure_stay = || {
        let m = Message {
            source: 0,
            text: black_box(STAY),
            signals: &[],
        };
        black_box(policy.assess(&m, &NothingLearned));
    };
    let stay = |contact: String| {
        let d = rt.block_on(engine.decide(request(contact, STAY))).unwrap();
        black_box(d);
    };
    let n: usize = std::env::var("BATON_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let (p50, p99) = percentiles(n, pure_stay);
    let (s50, s99) = percentiles(n, || stay("c".into()));
    // Three rounds, each on a fresh store; the median round's figures.
    let mut rounds: Vec<(f64, f64)> = (0..3)
        .map(|round| {
            let engine = self::engine(&rt);
            let contacts: Vec<String> = (0..n).map(|i| format!("p-{round}-{i}")).collect();
            let mut it = contacts.into_iter();
            percentiles(n, || {
                let contact = it.next().unwrap();
                black_box(rt.block_on(engine.decide(request(contact, SELL))).unwrap());
            })
        })
        .collect();
    rounds.sort_by(|a, b| a.1.total_cmp(&b.1));
    let (a50, a99) = rounds[1];
    println!("single decisions, {n} each, approve: median of 3 rounds (us):");
    println!("  policy stay (baseline)  p50 {p50:>6.2}  p99 {p99:>6.2}");
    println!(
        "  engine stay             p50 {s50:>6.2}  p99 {s99:>6.2}  target p99 <= 5   ({:.2} of target, {:.2}x baseline p50)",
        s99 / 5.0,
        s50 / p50
    );
    println!(
        "  engine approve          p50 {a50:>6.2}  p99 {a99:>6.2}  target p99 <= 20  ({:.2} of target, {:.2}x baseline p50)",
        a99 / 20.0,
        a50 / p50
    );

    let engine = self::engine(&rt);
    c.bench_function("policy/stay (baseline)", |b| b.iter(pure_stay));
    c.bench_function("engine/stay", |b| b.iter(|| stay("c".into())));
    c.bench_function("engine/approve (in-memory store)", |b| {
        b.iter_batched(
            &mut fresh,
            |contact| black_box(rt.block_on(engine.decide(request(contact, SELL))).unwrap()),
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
