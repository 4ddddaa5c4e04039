//! Approved handoffs per second through the embedded store: what a real
//! approval does (lock, load with the request id, fenced commit of the
//! contact, the handoff index and the stored decision), by concurrent
//! callers, on the redb file (group commit, one journal record per batch) beside the
//! in-memory store measured in the same run, then on the file again with
//! 10 k, 100 k and 1 M contacts already stored.
//!
//! `cargo bench -p baton-store --bench embedded`
//! (`BATON_BENCH_CLIENTS` (32), `BATON_BENCH_SECS` (4), `BATON_BENCH_SIZES`
//! (`10000,100000,1000000`), `BATON_BENCH_DIR` (the system temp dir) tune it).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_policy::{Config, ContactState, ContextPacket, Decision, EntryKind, Verdict};
use baton_store::{Commit, EmbeddedStore, Store, StoredDecision, request_key};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Run {
    /// Approvals measured (after the warm-up).
    ops: usize,
    /// Every approval made, warm-up included: contacts stored.
    total: u64,
    secs: f64,
    p50_us: f64,
    p99_us: f64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.secs
    }
}

/// Everything an approved handoff writes, for a contact never seen.
fn approval(contact: &str, config: &Config) -> Commit {
    let mut state = ContactState::new("lead", 1);
    let handoff_id = format!("0190:{contact}");
    let context = ContextPacket {
        timeline: Some("3 months".into()),
        ..Default::default()
    };
    state.hand_over(
        EntryKind::Handoff,
        &handoff_id,
        "seller",
        "model/seller/sell",
        0.9,
        "intent 'seller' at 0.90",
        context,
        &[],
        config,
        1_000,
    );
    let verdict = Verdict {
        decision: Decision::Approved,
        target: "seller".into(),
        confidence: 0.9,
        threshold: 0.7,
        pattern: "model/seller/sell".into(),
        reason: "intent 'seller' at 0.90".into(),
        gates: vec![],
        handoff_id: handoff_id.clone(),
        retry_after_ms: 0,
        pending_intents: vec![],
        context: Some(state.context.clone()),
    };
    Commit {
        contact_id: contact.to_owned(),
        contact: Some(state),
        decision: Some((
            request_key("lead", "r1"),
            StoredDecision {
                verdict,
                expires_at: i64::MAX,
            },
        )),
        ..Default::default()
    }
}

/// One approval of a new contact, as the router makes it.
async fn approve(store: &EmbeddedStore, contact: &str, config: &Config) {
    let lock = store
        .lock(contact, Duration::from_secs(5))
        .await
        .expect("lock");
    let loaded = store
        .load(&lock, &request_key("lead", "r1"), 2_000)
        .await
        .expect("load");
    assert!(loaded.contact.is_none() && loaded.prior.is_none());
    store
        .commit(lock, approval(contact, config))
        .await
        .expect("commit");
}

/// `clients` callers approving new contacts for `secs`, after a warm-up.
async fn run(store: &Arc<EmbeddedStore>, label: &str, clients: u64, secs: u64) -> Run {
    let start = Instant::now() + Duration::from_millis(500);
    let end = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for client in 0..clients {
        let store = Arc::clone(store);
        let label = label.to_owned();
        tasks.push(tokio::spawn(async move {
            let config = Config::default();
            let mut latencies = Vec::new();
            let mut made = 0u64;
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                approve(&store, &format!("{label}-{client}-{made}"), &config).await;
                made += 1;
                if t >= start {
                    latencies.push(t.elapsed());
                }
            }
            (latencies, made)
        }));
    }
    let mut all = Vec::new();
    let mut total = 0;
    for t in tasks {
        let (latencies, made) = t.await.expect("bench task");
        all.extend(latencies);
        total += made;
    }
    all.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    Run {
        ops: all.len(),
        total,
        secs: secs as f64,
        p50_us: us(all[all.len() / 2]),
        p99_us: us(all[all.len() * 99 / 100]),
    }
}

/// Stores `n` more contacts, 256 commits in flight.
async fn preload(store: &Arc<EmbeddedStore>, from: u64, n: u64) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    let lanes = 256;
    for lane in 0..lanes {
        let store = Arc::clone(store);
        tasks.push(tokio::spawn(async move {
            let config = Config::default();
            let mut i = from + lane;
            while i < from + n {
                approve(&store, &format!("pre-{i}"), &config).await;
                i += lanes;
            }
        }));
    }
    for t in tasks {
        t.await.expect("preload task");
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "  stored {n} more contacts in {secs:.1}s ({:.0}/s)",
        n as f64 / secs
    );
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn row(what: &str, r: &Run) {
    println!(
        "| {what} | {:.0} | {:.0} µs | {:.0} µs |",
        r.rate(),
        r.p50_us,
        r.p99_us
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let clients = env("BATON_BENCH_CLIENTS", 32);
    let secs = env("BATON_BENCH_SECS", 4);
    let sizes: Vec<u64> = std::env::var("BATON_BENCH_SIZES")
        .unwrap_or_else(|_| "10000,100000,1000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let base = std::env::var_os("BATON_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = TempDir(base.join(format!("baton-bench-embedded-{}", std::process::id())));

    println!("approvals through the store, {clients} concurrent callers, {secs}s per round");
    println!();
    println!("| store | approvals/s | P50 | P99 |");
    println!("|---|---|---|---|");
    let memory = Arc::new(EmbeddedStore::in_memory());
    let file = Arc::new(EmbeddedStore::open(&dir.0).expect("open the store"));
    let mut rounds = Vec::new();
    for round in 0..2 {
        let m = run(&memory, &format!("m{round}"), clients, secs).await;
        let before = file.transactions();
        let f = run(&file, &format!("f{round}"), clients, secs).await;
        let batch = f.ops as f64 / (file.transactions() - before).max(1) as f64;
        row("in memory", &m);
        row(&format!("redb file ({batch:.1} commits per batch)"), &f);
        rounds.push((m, f));
    }
    let ratio: f64 =
        rounds.iter().map(|(m, f)| f.rate() / m.rate()).sum::<f64>() / rounds.len() as f64;
    println!();
    // Here the memory store costs nothing but the rules; the target (≥ 0.5)
    // is over gRPC, where every approval also pays for the call:
    // `baton-loadgen --path approve --store embedded --baseline memory`.
    println!("file / memory throughput at the store: {ratio:.2}");

    println!();
    println!("| contacts stored | approvals/s | P50 | P99 | file bytes | bytes per contact |");
    println!("|---|---|---|---|---|---|");
    let path = dir.0.join("baton.redb");
    let mut stored: u64 = rounds.iter().map(|(_, f)| f.total).sum();
    let mut first: Option<f64> = None;
    for &size in &sizes {
        if size > stored {
            preload(&file, stored, size - stored).await;
            stored = size;
        }
        let r = run(&file, &format!("s{size}"), clients, secs).await;
        stored += r.total;
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!(
            "| {size} | {:.0} | {:.0} µs | {:.0} µs | {bytes} | {:.0} |",
            r.rate(),
            r.p50_us,
            r.p99_us,
            bytes as f64 / stored as f64
        );
        let base = *first.get_or_insert(r.rate());
        if size != sizes[0] {
            eprintln!(
                "  {size} contacts: {:.2}× the rate at {}",
                base / r.rate(),
                sizes[0]
            );
        }
    }
}
