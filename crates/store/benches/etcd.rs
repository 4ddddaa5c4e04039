//! Approvals per second on a single-node etcd through `EtcdStore`, beside
//! etcd's raw single-key transaction rate measured in the same run with the
//! same client library and concurrency. An approval is everything the
//! router's decision path asks of the store: take the lock and load the
//! contact and the request id's stored decision, then the fenced commit of
//! contact, context, handoff record, stored decision and the decision
//! published to the other routers. An approval is two writes (lock, fenced
//! commit), but the acquires and commits of different contacts waiting
//! together share one etcd transaction (`etcd.batch_*`), so the ratio is
//! not bound by 0.5; the target is 0.45.
//!
//! Two approval paths are measured side by side: `lock_and_load` (one round
//! trip: the reads ride in the acquire transaction; what the router does)
//! and `lock` then `load` (two round trips; what it did before).
//!
//! `cargo bench -p baton-store --bench etcd` (needs the `etcd` binary;
//! `BATON_BENCH_CLIENTS`, `BATON_BENCH_SECS`, and `BATON_BENCH_BATCH_MAX`,
//! `BATON_BENCH_INFLIGHT` for `etcd.batch_max` / `etcd.batch_inflight`,
//! tune it; `BATON_BENCH_BATCH_MAX=1 BATON_BENCH_INFLIGHT=64` sends each
//! transaction alone, as before grouping).

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_policy::{Config, ContactState, ContextPacket, Decision, EntryKind, Verdict};
use baton_store::{
    Commit, EtcdBatching, EtcdOptions, EtcdStore, Store, StoredDecision, request_key,
};
use baton_test_support::Etcd;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Run {
    ops: usize,
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `clients` loops of `op` for `secs`, after a one-second warm-up.
async fn run<F, Fut>(clients: u64, secs: u64, op: F) -> Run
where
    F: Fn(u64, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now() + Duration::from_secs(1);
    let end = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for client in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0;
            loop {
                let t = Instant::now();
                if t >= end {
                    break latencies;
                }
                op(client, n).await;
                n += 1;
                if t >= start {
                    latencies.push(t.elapsed());
                }
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("bench task"));
    }
    all.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Run {
        ops: all.len(),
        secs: secs as f64,
        p50_ms: ms(all[all.len() / 2]),
        p99_ms: ms(all[all.len() * 99 / 100]),
    }
}

/// Both rounds together: total rate, and the worse of the two percentiles.
fn merge(runs: &[Run]) -> Run {
    Run {
        ops: runs.iter().map(|r| r.ops).sum(),
        secs: runs.iter().map(|r| r.secs).sum(),
        p50_ms: runs.iter().map(|r| r.p50_ms).fold(0.0, f64::max),
        p99_ms: runs.iter().map(|r| r.p99_ms).fold(0.0, f64::max),
    }
}

/// What an approval commits: contact, context, handoff record, the
/// decision under its request id, and the decision published to the other
/// routers (about the size the router's JSON event has).
fn approval(contact: &str, request_key: &str) -> Commit {
    let mut state = ContactState::new("lead", 1);
    let context = ContextPacket {
        timeline: Some("3 months".into()),
        ..Default::default()
    };
    static CONFIG: std::sync::OnceLock<Config> = std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(Config::default);
    state.hand_over(
        EntryKind::Handoff,
        contact,
        "seller",
        "sell my house",
        0.9,
        "",
        context,
        &[],
        config,
        now(),
    );
    let verdict = Verdict {
        decision: Decision::Approved,
        target: "seller".into(),
        confidence: 0.9,
        threshold: 0.7,
        pattern: "model/seller/sell".into(),
        reason: "seller intent 0.90 >= 0.70".into(),
        gates: Vec::new(),
        handoff_id: format!("{contact}:{contact}"),
        retry_after_ms: 0,
        pending_intents: Vec::new(),
        context: Some(state.context.clone()),
    };
    let published = serde_json::to_vec(&(contact, "lead", request_key, now(), &verdict))
        .expect("serialise the event");
    Commit {
        contact_id: contact.into(),
        contact: Some(state),
        decision: Some((
            request_key.into(),
            StoredDecision {
                verdict,
                expires_at: now() + 24 * 3_600_000,
            },
        )),
        deferred: None,
        published: Some(published),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[tokio::main]
async fn main() {
    let clients = env("BATON_BENCH_CLIENTS", 64);
    let secs = env("BATON_BENCH_SECS", 5);
    let etcd = Etcd::single()
        .await
        .expect("start etcd (apt-get install etcd-server)");
    let raw = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .expect("connect");
    let defaults = EtcdBatching::default();
    let batch = EtcdBatching {
        max: env("BATON_BENCH_BATCH_MAX", defaults.max as u64) as usize,
        inflight: env("BATON_BENCH_INFLIGHT", defaults.inflight as u64) as usize,
        ..defaults
    };
    let store = EtcdStore::connect(EtcdOptions {
        endpoints: etcd.endpoints(),
        prefix: "/bench/".into(),
        session_ttl: Duration::from_secs(10),
        op_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        health_ttl: Duration::from_secs(3600),
        batch,
        ..EtcdOptions::default()
    })
    .await
    .expect("connect the store");
    let store = Arc::new(store);

    // Alternate the three, so drift on a shared machine hits them alike.
    let mut raw_runs = Vec::new();
    let mut one_trip_runs = Vec::new();
    let mut two_trip_runs = Vec::new();
    for round in 0..2u64 {
        let raw = raw.clone();
        raw_runs.push(
            run(clients, secs, move |client, n| {
                let mut kv = raw.kv_client();
                async move {
                    let key = format!("/raw/{round}/{client}/{n}");
                    let txn = Txn::new()
                        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(key, b"x".to_vec(), None)]);
                    kv.txn(txn).await.expect("raw txn");
                }
            })
            .await,
        );
        for (one_trip, runs) in [(true, &mut one_trip_runs), (false, &mut two_trip_runs)] {
            let store = Arc::clone(&store);
            runs.push(
                run(clients, secs, move |client, n| {
                    let store = Arc::clone(&store);
                    async move {
                        let contact = format!("c-{one_trip}-{round}-{client}-{n}");
                        let request = request_key("lead", &format!("m-{n}"));
                        let wait = Duration::from_secs(5);
                        let (lock, loaded) = if one_trip {
                            store
                                .lock_and_load(&contact, &request, wait, now())
                                .await
                                .expect("lock and load")
                        } else {
                            let lock = store.lock(&contact, wait).await.expect("lock");
                            let loaded = store.load(&lock, &request, now()).await.expect("load");
                            (lock, loaded)
                        };
                        assert!(loaded.contact.is_none() && loaded.prior.is_none());
                        let commit = approval(&contact, &request);
                        store.commit(lock, commit).await.expect("commit");
                    }
                })
                .await,
            );
        }
    }
    let raw_run = merge(&raw_runs);
    let one_trip = merge(&one_trip_runs);
    let two_trips = merge(&two_trip_runs);

    let rate = |r: &Run| r.ops as f64 / r.secs;
    println!(
        "single-node etcd, {clients} concurrent clients, 2 alternating rounds of {secs}s each:"
    );
    let line = |name: &str, r: &Run| {
        println!(
            "  {name:<36} {:>8.0} /s   p50 {:>6.2} ms   p99 {:>6.2} ms   ratio {:.2}",
            rate(r),
            r.p50_ms,
            r.p99_ms,
            rate(r) / rate(&raw_run)
        );
    };
    line("raw single-key txn", &raw_run);
    line("approval: lock_and_load + commit", &one_trip);
    line("approval: lock + load + commit", &two_trips);
    println!(
        "  approvals/s over raw txn/s: {:.2} (target >= 0.45; batches of at most {} approvals' writes)",
        rate(&one_trip) / rate(&raw_run),
        batch.max,
    );
}
