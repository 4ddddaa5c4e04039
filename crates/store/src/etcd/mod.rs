//! The etcd backend: state shared by several routers, and the contact lease
//! lock with fencing (SPEC §3). One module per job:
//!
//! - [`session`]: one **session lease** per router process, kept alive by a
//!   task that renews at a third of its TTL. A lost lease is noticed there
//!   and stops this process from taking or committing locks under it.
//!   **Close** (after the drain) revokes it: every lock still attached to
//!   it goes at once, not after `session_ttl`.
//! - [`lock`]: **acquire** is one transaction: `create_revision(lock) == 0`
//!   → put the lock key with the session lease (and, for a decision, read
//!   the contact in the same transaction). A held lock is waited for by
//!   watching its deletion; an attempt abandoned in flight deletes the key
//!   it may have created and nobody else's.
//! - [`commit`]: the lock key's create revision is the **fencing token**:
//!   the commit is one transaction that compares it, writes everything and
//!   deletes the lock key. An approved handoff costs two writes and two
//!   round trips: acquire (with the reads) and commit.
//! - [`batch`]: the acquires and commits of different contacts waiting at
//!   the same time go to etcd as **one transaction**, each nested with its
//!   own compares (group commit): still two writes per approval, but one
//!   raft proposal and one request carry many.
//! - [`leases`]: expiring data (context packets, decisions by request id,
//!   handoff records, bot health, published decisions) is attached to
//!   **shared leases per time bucket**, granted ahead of need: never one
//!   lease grant per write. Each bot's last-seen record (`seen/`) never
//!   expires, so every router, however recently started, agrees on which
//!   bots have reported.
//! - [`watch`]: health reports and outcome windows are **watched** (resuming
//!   from the last seen revision after a broken stream) so every router's
//!   caches stay current and the stay path never reads etcd.
//! - [`events`]: decisions a commit publishes reach the other routers'
//!   watchers through short-lived keys, watched the same way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use baton_policy::{ContactState, HealthReport, LearningConfig, Outcome, OutcomeWindow, UnixMs};
use etcd_client::{
    Client, ConnectOptions, GetOptions, KvClient, PutOptions, Txn, TxnOp, TxnOpResponse,
    TxnResponse,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tracing::{Instrument, info, info_span};

use crate::now_ms;
use crate::{
    Acknowledged, Commit, ContactLock, Loaded, OutcomeRecorded, RouteKey, Store, StoreError,
    StoreEvent, acknowledge_entry, outcome_entry,
};
use batch::Batcher;
pub use batch::EtcdBatching;
use leases::LeaseBuckets;
use session::Session;
use watch::Watched;

mod batch;
mod commit;
mod events;
mod leases;
mod lock;

pub(crate) use lock::EtcdHeld;
mod session;
mod watch;

/// How the router reaches etcd and how long things live there.
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdOptions {
    pub endpoints: Vec<String>,
    /// Every key starts with this; several deployments can share one etcd.
    pub prefix: String,
    /// TTL of this process's session lease: how long its locks outlive it.
    pub session_ttl: Duration,
    /// Bound on every etcd call.
    pub op_timeout: Duration,
    pub connect_timeout: Duration,
    /// Lifetimes of context packets, decisions (and handoff records), health reports.
    pub context_ttl: Duration,
    pub decision_ttl: Duration,
    pub health_ttl: Duration,
    /// How long a deferred handoff waits for its target.
    pub defer_ttl: Duration,
    /// How long a decision published to the other routers stays in etcd:
    /// they get it by watch within moments; the key only has to outlive a
    /// watch resuming after a broken stream.
    pub event_ttl: Duration,
    /// A contact record and an outcome window are put under a lease of
    /// this lifetime at every write: one left idle this long (to at most
    /// three eighths longer, the lease buckets) is gone (`store.retention`).
    pub retention: Duration,
    /// How the acquires and commits of different contacts are grouped.
    pub batch: EtcdBatching,
}

impl Default for EtcdOptions {
    /// The router's defaults (`etcd.*`, `policy.*` and `health.*` keys),
    /// with no endpoint.
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            prefix: "/baton/".into(),
            session_ttl: Duration::from_secs(10),
            op_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(3),
            context_ttl: Duration::from_secs(24 * 3600),
            decision_ttl: Duration::from_secs(24 * 3600),
            health_ttl: Duration::from_secs(30),
            defer_ttl: Duration::from_secs(30 * 60),
            event_ttl: Duration::from_secs(60),
            retention: Duration::from_secs(30 * 24 * 3600),
            batch: EtcdBatching::default(),
        }
    }
}

pub struct EtcdStore {
    client: Client,
    options: EtcdOptions,
    session: Arc<Session>,
    leases: Arc<LeaseBuckets>,
    events: broadcast::Sender<StoreEvent>,
    /// What tags the decisions this store publishes (see [`events`]).
    origin: String,
    /// Numbers published decisions, to keep their keys apart.
    published: AtomicU64,
    /// Writes sent (transactions with a write, puts, deletes, lease grants);
    /// acquires and commits count one each, also when a batch carries several.
    writes: Arc<AtomicU64>,
    /// Numbers lock attempts, to give each a unique lock value.
    lock_attempts: AtomicU64,
    /// Groups acquires and commits into shared transactions.
    batcher: Batcher,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("etcd {what}: {e}"))
}

/// Runs an etcd call with the configured bound.
async fn bounded<T>(
    what: &str,
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(unavailable(what, e)),
        Err(_) => Err(unavailable(what, format!("no answer within {limit:?}"))),
    }
}

/// Whether a failed call never reached etcd (no connection to that member),
/// so sending it again cannot apply it twice.
fn never_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::Unavailable && s.message().contains("connect error")
        }
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

/// One transaction. A request that could not reach the member the client
/// picked (a dead member of a cluster) is sent again, so the client's
/// balancer moves on to a live one; anything else is returned as it is.
async fn retrying(kv: &KvClient, txn: Txn) -> Result<TxnResponse, etcd_client::Error> {
    let mut tries = 0;
    loop {
        match kv.clone().txn(txn.clone()).await {
            Err(e) if never_sent(&e) && tries < 20 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            other => return other,
        }
    }
}

/// [`retrying`], bounded by `limit`.
async fn send_txn(
    what: &str,
    limit: Duration,
    kv: &KvClient,
    txn: Txn,
) -> Result<TxnResponse, StoreError> {
    bounded(what, limit, retrying(kv, txn)).await
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: for<'de> Deserialize<'de>>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt { what, source })
}

fn first_kv(resp: &TxnOpResponse) -> Option<&etcd_client::KeyValue> {
    match resp {
        TxnOpResponse::Get(get) => get.kvs().first(),
        _ => None,
    }
}

impl EtcdStore {
    /// Connects, grants the session lease, prepares the bucket leases and
    /// starts the keep-alive, lease and watch tasks.
    pub async fn connect(options: EtcdOptions) -> Result<Self, StoreError> {
        if options.endpoints.is_empty() {
            return Err(StoreError::Unavailable(
                "no etcd endpoints configured".into(),
            ));
        }
        let connect = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_timeout(options.op_timeout)
            .with_keep_alive(Duration::from_secs(2), options.op_timeout);
        let client = bounded(
            "connect",
            options.connect_timeout + options.op_timeout,
            Client::connect(options.endpoints.clone(), Some(connect)),
        )
        .await?;
        let writes = Arc::new(AtomicU64::new(0));
        let mut lease = client.lease_client();
        let ttl = options.session_ttl.as_secs().max(1) as i64;
        writes.fetch_add(1, Ordering::Relaxed);
        let granted = bounded("session lease", options.op_timeout, lease.grant(ttl, None)).await?;
        let session = Arc::new(Session::new(granted.id()));
        info!(lease = granted.id(), ttl_s = ttl, prefix = %options.prefix, "etcd session started");
        let leases = Arc::new(LeaseBuckets {
            client: client.clone(),
            op_timeout: options.op_timeout,
            granted: Mutex::new(HashMap::new()),
            writes: Arc::clone(&writes),
        });
        let ttls = vec![
            options.context_ttl,
            options.decision_ttl,
            options.health_ttl,
            options.event_ttl,
            options.retention,
        ];
        leases.prepare(&ttls, now_ms()).await?;
        let events_prefix = format!("{}events/", options.prefix);
        let since = events::start_revision(&client, &events_prefix, options.op_timeout).await?;
        let (events, _) = broadcast::channel(1024);
        let (batcher, batches) =
            Batcher::start(client.kv_client(), options.batch, options.op_timeout);
        let mut store = Self {
            client,
            options,
            origin: events::origin(granted.id()),
            published: AtomicU64::new(0),
            session,
            leases,
            events,
            writes,
            lock_attempts: AtomicU64::new(0),
            batcher,
            tasks: vec![tokio::spawn(batches.instrument(info_span!("etcd_batches")))],
        };
        let keep_alive = session::keep_alive(
            store.client.clone(),
            Arc::clone(&store.session),
            store.options.session_ttl,
            store.options.op_timeout,
            Arc::clone(&store.writes),
        );
        store.tasks.push(tokio::spawn(
            keep_alive.instrument(info_span!("etcd_session")),
        ));
        let prepare = Arc::clone(&store.leases).prepare_forever(ttls);
        store.tasks.push(tokio::spawn(prepare));
        let origin = store.origin.clone();
        for (suffix, kind, start) in [
            ("health/", Watched::Health, 0),
            ("outcomes/", Watched::Outcomes, 0),
            ("events/", Watched::Published { origin }, since + 1),
        ] {
            let task = watch::watch(
                store.client.clone(),
                store.events.clone(),
                store.options.op_timeout,
                format!("{}{suffix}", store.options.prefix),
                kind,
                start,
            );
            store.tasks.push(tokio::spawn(
                task.instrument(info_span!("etcd_watch", prefix = suffix)),
            ));
        }
        Ok(store)
    }

    /// Writes this process sent to etcd so far: acquires and commits count
    /// one each, also when several share one request (see `batch`).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// The session lease id (for tests and logs).
    pub fn session_lease(&self) -> i64 {
        self.session.lease.load(Ordering::SeqCst)
    }

    fn key(&self, kind: &str, id: &str) -> Vec<u8> {
        format!("{}{kind}/{id}", self.options.prefix).into_bytes()
    }

    fn decision_key(&self, contact_id: &str, request_id: &str) -> Vec<u8> {
        self.key("decisions", &format!("{contact_id}\0{request_id}"))
    }

    fn kv(&self) -> KvClient {
        self.client.kv_client()
    }

    /// Every key under `prefix/` (below the deployment prefix): the full
    /// prefix, and the key-value pairs.
    async fn list(&self, what: &str) -> Result<(String, Vec<etcd_client::KeyValue>), StoreError> {
        let prefix = format!("{}{what}/", self.options.prefix);
        let mut kv = self.kv();
        let get = kv.get(prefix.clone(), Some(GetOptions::new().with_prefix()));
        let mut resp = bounded("get", self.options.op_timeout, get).await?;
        Ok((prefix, resp.take_kvs()))
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn lock(&self, contact_id: &str, wait: Duration) -> Result<ContactLock, StoreError> {
        let (lock, _) = self.acquire(contact_id, wait, &[]).await?;
        Ok(lock)
    }

    async fn load(
        &self,
        lock: &ContactLock,
        request_id: &str,
        now: UnixMs,
    ) -> Result<Loaded, StoreError> {
        self.load_locked(lock, request_id, now).await
    }

    /// One round trip: the reads ride in the acquire transaction's success
    /// branch, at the fencing revision. An attempt that found the lock held
    /// waits and tries again, reads included.
    async fn lock_and_load(
        &self,
        contact_id: &str,
        request_id: &str,
        wait: Duration,
        now: UnixMs,
    ) -> Result<(ContactLock, Loaded), StoreError> {
        let reads = self.load_ops(contact_id, request_id);
        let (lock, answers) = self.acquire(contact_id, wait, &reads).await?;
        let loaded = Self::loaded(&lock, &answers, now)?;
        Ok((lock, loaded))
    }

    async fn commit(&self, lock: ContactLock, commit: Commit) -> Result<(), StoreError> {
        self.commit_locked(lock, commit).await
    }

    async fn contact(&self, contact_id: &str) -> Result<Option<ContactState>, StoreError> {
        let ops = [
            TxnOp::get(self.key("contacts", contact_id), None),
            TxnOp::get(self.key("contexts", contact_id), None),
        ];
        let limit = self.options.op_timeout;
        let resp = send_txn("get", limit, &self.kv(), Txn::new().and_then(ops)).await?;
        let parts = resp.op_responses();
        commit::contact_from(
            parts.first().and_then(first_kv),
            parts.get(1).and_then(first_kv),
        )
    }

    async fn acknowledge(
        &self,
        handoff_id: &str,
        bot: &str,
        now: UnixMs,
    ) -> Result<Acknowledged, StoreError> {
        let (ack, _, _) = self
            .update_handoff(handoff_id, None, |entry| acknowledge_entry(entry, bot, now))
            .await?;
        Ok(ack)
    }

    async fn record_outcome(
        &self,
        handoff_id: &str,
        outcome: Outcome,
        config: &LearningConfig,
    ) -> Result<OutcomeRecorded, StoreError> {
        let (recorded, entry, window) = self
            .update_handoff(handoff_id, Some(config), |entry| {
                let (_, fresh) = outcome_entry(entry, outcome);
                Ok((fresh, fresh))
            })
            .await?;
        let key = RouteKey {
            source: entry.from,
            target: entry.to,
            pattern: entry.pattern,
        };
        Ok(OutcomeRecorded {
            key,
            window,
            recorded,
        })
    }

    async fn outcome_windows(&self) -> Result<Vec<(RouteKey, OutcomeWindow)>, StoreError> {
        let (prefix, kvs) = self.list("outcomes").await?;
        Ok(kvs
            .iter()
            .filter_map(
                |kv| match Watched::Outcomes.event(&prefix, kv.key(), Some(kv.value())) {
                    Some(StoreEvent::Outcomes(key, window)) => Some((key, window)),
                    _ => None,
                },
            )
            .collect())
    }

    /// One transaction writes the report twice: under `health/`, on a
    /// lease of `health_ttl`, which is what other routers watch (its expiry
    /// tells them the bot went silent); and under `seen/`, with no lease:
    /// the bot's last-seen record. Without it, a router started after a bot
    /// went silent would find no report and take the bot for one that
    /// never reported (allowed), while older routers judge it stale.
    async fn put_health(&self, report: &HealthReport) -> Result<(), StoreError> {
        let lease = self.leases.lease(self.options.health_ttl, now_ms()).await?;
        let value = encode(report);
        let txn = Txn::new().and_then([
            TxnOp::put(
                self.key("health", &report.bot),
                value.clone(),
                Some(PutOptions::new().with_lease(lease)),
            ),
            TxnOp::put(self.key("seen", &report.bot), value, None),
        ]);
        self.writes.fetch_add(1, Ordering::Relaxed);
        send_txn("put health", self.options.op_timeout, &self.kv(), txn).await?;
        Ok(())
    }

    /// From the last-seen records, which never expire: a silent bot's last
    /// report is there, with the `received_at` that makes it stale.
    async fn health_reports(&self) -> Result<Vec<HealthReport>, StoreError> {
        let (_, kvs) = self.list("seen").await?;
        kvs.iter()
            .map(|kv| decode("health report", kv.value()))
            .collect()
    }

    async fn deferred(&self) -> Result<Vec<(String, String)>, StoreError> {
        let (prefix, kvs) = self.list("deferred").await?;
        Ok(kvs
            .iter()
            .filter_map(|kv| {
                let contact = std::str::from_utf8(kv.key()).ok()?.strip_prefix(&prefix)?;
                Some((
                    contact.to_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                ))
            })
            .collect())
    }

    /// etcd expires decisions itself, through their leases.
    async fn purge_expired(&self, _now: UnixMs) -> Result<usize, StoreError> {
        Ok(0)
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.end_session().await
    }

    fn subscribe(&self) -> Option<broadcast::Receiver<StoreEvent>> {
        Some(self.events.subscribe())
    }
}
