//! The cost of recording one observation into the sliding window, against
//! a bare HdrHistogram record measured in the same run, and the cost of the
//! merge behind every report. Target: ≤ 100 ns per observation.

use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use baton_probe::Window;
use criterion::{Criterion, criterion_group, criterion_main};
use hdrhistogram::Histogram;

const TARGET_NS: f64 = 100.0;

/// 1024 latencies from 1 ms to ~4 s, deterministic.
fn latencies() -> Vec<Duration> {
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    (0..1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            Duration::from_micros(1_000 + state % 4_000_000)
        })
        .collect()
}

/// Mean nanoseconds per call over `n` calls.
fn ns_per_call(n: u64, mut f: impl FnMut(u64)) -> f64 {
    for i in 0..n / 10 {
        f(i);
    }
    let start = Instant::now();
    for i in 0..n {
        f(i);
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn bench(c: &mut Criterion) {
    let lat = latencies();
    let micros: Vec<u64> = lat.iter().map(|d| d.as_micros() as u64).collect();
    let origin = Instant::now();
    let mut bare = Histogram::<u32>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut window = Window::new(Duration::from_secs(60), 20, origin);

    c.bench_function("baseline/hdrhistogram_record", |b| {
        let mut i = 0usize;
        b.iter(|| {
            bare.saturating_record(black_box(micros[i & 1023]));
            i += 1;
        })
    });
    c.bench_function("window/record", |b| {
        let mut i = 0u64;
        b.iter(|| {
            // Time moves 1 µs per sample: slots rotate as in real use.
            let now = origin + Duration::from_micros(i);
            window.record(
                black_box(now),
                black_box(lat[i as usize & 1023]),
                !i.is_multiple_of(10),
            );
            i += 1;
        })
    });
    let locked = Mutex::new(Window::new(Duration::from_secs(60), 20, origin));
    c.bench_function("window/record_locked_with_clock", |b| {
        let mut i = 0usize;
        b.iter(|| {
            let mut w = locked.lock().expect("uncontended");
            w.record(
                Instant::now(),
                black_box(lat[i & 1023]),
                !i.is_multiple_of(10),
            );
            i += 1;
        })
    });
    let mut full = Window::new(Duration::from_secs(60), 20, origin);
    for i in 0..600u64 {
        full.record(
            origin + Duration::from_millis(i * 100),
            lat[i as usize & 1023],
            true,
        );
    }
    let at = origin + Duration::from_secs(59);
    c.bench_function("window/summary_20_slots", |b| {
        b.iter(|| black_box(full.summary(black_box(at))))
    });

    let n = 20_000_000;
    let mut bare = Histogram::<u32>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let base = ns_per_call(n, |i| {
        bare.saturating_record(black_box(micros[i as usize & 1023]));
    });
    let mut window = Window::new(Duration::from_secs(60), 20, origin);
    let record = ns_per_call(n, |i| {
        let now = origin + Duration::from_micros(i);
        window.record(
            black_box(now),
            black_box(lat[i as usize & 1023]),
            !i.is_multiple_of(10),
        );
    });
    let locked = Mutex::new(Window::new(Duration::from_secs(60), 20, origin));
    let with_clock = ns_per_call(n / 4, |i| {
        if let Ok(mut w) = locked.lock() {
            w.record(
                Instant::now(),
                black_box(lat[i as usize & 1023]),
                !i.is_multiple_of(10),
            );
        }
    });
    let merge = ns_per_call(2_000, |_| {
        black_box(full.summary(black_box(at)));
    });
    println!("one observation, mean over {n} calls:");
    println!("  bare hdrhistogram record        {base:>7.1} ns   (baseline)");
    println!(
        "  window record                   {record:>7.1} ns   {:.2}x baseline, {:.2} of the {TARGET_NS} ns target",
        record / base,
        record / TARGET_NS
    );
    println!(
        "  window record + lock + clock    {with_clock:>7.1} ns   {:.2}x baseline, {:.2} of the {TARGET_NS} ns target",
        with_clock / base,
        with_clock / TARGET_NS
    );
    println!(
        "one report: merge of 20 slots    {:>7.1} us",
        merge / 1000.0
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
