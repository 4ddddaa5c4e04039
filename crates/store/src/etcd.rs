//! The etcd backend: state shared by several routers, and the contact lease
//! lock with fencing (SPEC §3).
//!
//! - One **session lease** per router process, kept alive by a task that
//!   renews at a third of its TTL. A lost lease is noticed there and stops
//!   this process from taking or committing locks under it.
//! - **Acquire** is one transaction: `create_revision(lock) == 0` → put the
//!   lock key with the session lease. A held lock is waited for by watching
//!   its deletion, bounded by `lock_wait`: no polling. Each attempt puts a
//!   value of its own, so an attempt abandoned in flight (wait over, caller
//!   gone) deletes the key it may have created and nobody else's.
//! - **Close** (after the drain) revokes the session lease: every lock still
//!   attached to it goes at once, not after `session_ttl`.
//! - The lock key's create revision is the **fencing token**: the commit is
//!   one transaction that compares it, writes everything and deletes the lock
//!   key. An approved handoff costs two writes: acquire and commit.
//! - Expiring data (context packets, decisions by request id, handoff
//!   records, bot health) is attached to **shared leases per time bucket**,
//!   granted ahead of need: never one lease grant per write. Each bot's
//!   last-seen record (`seen/`) never expires, so every router, however
//!   recently started, agrees on which bots have reported.
//! - Health reports and outcome windows are **watched** (resuming from the
//!   last seen revision after a broken stream) so every router's caches stay
//!   current and the stay path never reads etcd.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use baton_policy::{
    ContactState, ContextPacket, HealthReport, HistoryEntry, LearningConfig, Outcome,
    OutcomeWindow, UnixMs,
};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KvClient, PutOptions, Txn,
    TxnOp, TxnOpResponse, TxnResponse, WatchOptions,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{
    Acknowledged, Commit, ContactLock, DeferredChange, Loaded, OutcomeRecorded, RouteKey, Store,
    StoreError, StoreEvent, StoredDecision, acknowledge_entry, outcome_entry,
};

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
}

/// This process's session lease.
struct Session {
    lease: AtomicI64,
    alive: AtomicBool,
}

pub struct EtcdStore {
    client: Client,
    options: EtcdOptions,
    session: Arc<Session>,
    leases: Arc<LeaseBuckets>,
    events: broadcast::Sender<StoreEvent>,
    /// Write requests sent (transactions with a write, puts, deletes, lease grants).
    writes: Arc<AtomicU64>,
    /// Numbers lock attempts, to give each a unique lock value.
    lock_attempts: AtomicU64,
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

/// Leases shared by every key of one lifetime written in one time bucket.
struct LeaseBuckets {
    client: Client,
    op_timeout: Duration,
    granted: Mutex<HashMap<(u64, i64), i64>>,
    writes: Arc<AtomicU64>,
}

impl LeaseBuckets {
    /// A bucket is an eighth of the lifetime (at least a second); its lease
    /// lives the lifetime plus two buckets, so every key lives at least `ttl`
    /// and at most `ttl` plus three buckets.
    fn bucket(ttl: Duration, now: UnixMs) -> (u64, i64, i64) {
        let ttl_s = ttl.as_secs().max(1);
        let size = (ttl_s / 8).max(1) as i64;
        (ttl_s, now / 1000 / size, ttl_s as i64 + 2 * size)
    }

    async fn lease(&self, ttl: Duration, now: UnixMs) -> Result<i64, StoreError> {
        let (ttl_s, bucket, lease_ttl) = Self::bucket(ttl, now);
        if let Some(id) = self.lock().get(&(ttl_s, bucket)) {
            return Ok(*id);
        }
        let mut lease = self.client.lease_client();
        self.writes.fetch_add(1, Ordering::Relaxed);
        let granted = bounded("lease grant", self.op_timeout, lease.grant(lease_ttl, None)).await?;
        let mut map = self.lock();
        let id = *map.entry((ttl_s, bucket)).or_insert(granted.id());
        // Buckets in the past are of no use to new writes.
        map.retain(|(t, b), _| *t != ttl_s || *b >= bucket);
        Ok(id)
    }

    /// Grants the current and the next bucket's leases ahead of need.
    async fn prepare(&self, ttls: &[Duration], now: UnixMs) -> Result<(), StoreError> {
        for ttl in ttls {
            let (ttl_s, _, _) = Self::bucket(*ttl, now);
            let size = (ttl_s / 8).max(1) as i64 * 1000;
            self.lease(*ttl, now).await?;
            self.lease(*ttl, now + size).await?;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, i64), i64>> {
        self.granted.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A held etcd lock: released (if still ours) when dropped without a commit.
struct EtcdHeld {
    kv: KvClient,
    key: Vec<u8>,
    fence: i64,
    lease: i64,
    /// The contact record's mod revision when loaded under this lock (0:
    /// absent, -1: not loaded): the commit requires it unchanged, so an
    /// acknowledgement or outcome written meanwhile is never overwritten.
    contact_rev: AtomicI64,
    armed: bool,
    op_timeout: Duration,
    writes: Arc<AtomicU64>,
}

impl Drop for EtcdHeld {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (kv, key, fence, limit) = (
            self.kv.clone(),
            self.key.clone(),
            self.fence,
            self.op_timeout,
        );
        self.writes.fetch_add(1, Ordering::Relaxed);
        handle.spawn(async move {
            let txn = Txn::new()
                .when([Compare::create_revision(
                    key.clone(),
                    CompareOp::Equal,
                    fence,
                )])
                .and_then([TxnOp::delete(key, None)]);
            // While this process's session lives the lock would outlive a
            // failed unlock: try for a while before leaving it to the lease.
            for attempt in 1..=10 {
                match send_txn("unlock", limit, &kv, txn.clone()).await {
                    Ok(_) => return,
                    Err(e) if attempt == 10 => {
                        warn!(error = %e, "unlock failed; the lock goes with the session lease");
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
    }
}

/// An acquire transaction that may have reached etcd without its answer
/// reaching us: the wait timed out, the call failed, or the caller's future
/// was dropped. Dropped while armed, it deletes the lock key if it still
/// carries this attempt's unique value, so the key never stays behind on
/// the live session lease (SPEC §3: a lock is never left behind).
struct PendingAcquire {
    kv: KvClient,
    key: Vec<u8>,
    owner: Vec<u8>,
    armed: bool,
    op_timeout: Duration,
    writes: Arc<AtomicU64>,
}

impl Drop for PendingAcquire {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (kv, key, owner, limit, writes) = (
            self.kv.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.owner),
            self.op_timeout,
            Arc::clone(&self.writes),
        );
        handle.spawn(
            async move {
                let txn = Txn::new()
                    .when([Compare::value(key.clone(), CompareOp::Equal, owner)])
                    .and_then([TxnOp::delete(key, None)]);
                // The abandoned acquire may still be on its way to etcd: look
                // again once any such request has had time to be applied.
                for delay in [Duration::ZERO, limit / 4, limit] {
                    tokio::time::sleep(delay).await;
                    for attempt in 1..=10 {
                        writes.fetch_add(1, Ordering::Relaxed);
                        match send_txn("lock cleanup", limit, &kv, txn.clone()).await {
                            Ok(resp) if resp.succeeded() => {
                                debug!("deleted the lock key of an abandoned acquire");
                                return;
                            }
                            Ok(_) => break,
                            Err(e) if attempt == 10 => {
                                warn!(error = %e, "cannot clean up an abandoned lock acquire");
                                return;
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                        }
                    }
                }
            }
            .in_current_span(),
        );
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
        let session = Arc::new(Session {
            lease: AtomicI64::new(granted.id()),
            alive: AtomicBool::new(true),
        });
        info!(lease = granted.id(), ttl_s = ttl, prefix = %options.prefix, "etcd session started");
        let leases = Arc::new(LeaseBuckets {
            client: client.clone(),
            op_timeout: options.op_timeout,
            granted: Mutex::new(HashMap::new()),
            writes: Arc::clone(&writes),
        });
        let ttls = [
            options.context_ttl,
            options.decision_ttl,
            options.health_ttl,
        ];
        leases.prepare(&ttls, now_ms()).await?;
        let (events, _) = broadcast::channel(1024);
        let mut store = Self {
            client,
            options,
            session,
            leases,
            events,
            writes,
            lock_attempts: AtomicU64::new(0),
            tasks: Vec::new(),
        };
        store.tasks.push(tokio::spawn(
            store.keep_alive().instrument(info_span!("etcd_session")),
        ));
        store.tasks.push(tokio::spawn(store.prepare_leases(ttls)));
        for (suffix, kind) in [
            ("health/", Watched::Health),
            ("outcomes/", Watched::Outcomes),
        ] {
            let task = store.watch(format!("{}{suffix}", store.options.prefix), kind);
            store.tasks.push(tokio::spawn(
                task.instrument(info_span!("etcd_watch", prefix = suffix)),
            ));
        }
        Ok(store)
    }

    /// Write requests this process sent to etcd so far.
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

    /// Renews the session lease at a third of its TTL; on loss, marks the
    /// session dead at once (no commit under it) and grants a new one.
    fn keep_alive(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let client = self.client.clone();
        let session = Arc::clone(&self.session);
        let ttl = self.options.session_ttl.max(Duration::from_secs(1));
        let limit = self.options.op_timeout;
        let writes = Arc::clone(&self.writes);
        async move {
            let mut last_ok = Instant::now();
            loop {
                let id = session.lease.load(Ordering::SeqCst);
                let renewed = async {
                    let mut lease = client.lease_client();
                    let (mut keeper, mut stream) =
                        bounded("keep-alive", limit, lease.keep_alive(id)).await?;
                    loop {
                        bounded("keep-alive", limit, keeper.keep_alive()).await?;
                        match bounded("keep-alive", limit, stream.message()).await? {
                            Some(r) if r.ttl() > 0 => {
                                last_ok = Instant::now();
                                session.alive.store(true, Ordering::SeqCst);
                            }
                            _ => {
                                return Err(StoreError::Unavailable(
                                    "session lease expired".into(),
                                ));
                            }
                        }
                        tokio::time::sleep(ttl / 3).await;
                    }
                };
                let error: StoreError = match renewed.await {
                    Err(e) => e,
                    Ok(()) => continue,
                };
                let expired = matches!(&error, StoreError::Unavailable(m) if m.contains("expired"));
                if expired || last_ok.elapsed() >= ttl {
                    if session.alive.swap(false, Ordering::SeqCst) {
                        warn!(lease = id, error = %error, "etcd session lost: no commits under its locks");
                    }
                    let mut lease = client.lease_client();
                    writes.fetch_add(1, Ordering::Relaxed);
                    match bounded(
                        "session lease",
                        limit,
                        lease.grant(ttl.as_secs() as i64, None),
                    )
                    .await
                    {
                        Ok(granted) => {
                            session.lease.store(granted.id(), Ordering::SeqCst);
                            session.alive.store(true, Ordering::SeqCst);
                            last_ok = Instant::now();
                            info!(lease = granted.id(), "new etcd session");
                            continue;
                        }
                        Err(e) => debug!(error = %e, "cannot grant a new session lease yet"),
                    }
                } else {
                    debug!(error = %error, "keep-alive interrupted; retrying");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    fn prepare_leases(
        &self,
        ttls: [Duration; 3],
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let leases = Arc::clone(&self.leases);
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Err(e) = leases.prepare(&ttls, now_ms()).await {
                    debug!(error = %e, "cannot prepare leases yet");
                }
            }
        }
    }

    /// Follows a prefix: loads it, then watches from the next revision,
    /// resuming after broken streams and reloading after compaction.
    fn watch(
        &self,
        prefix: String,
        kind: Watched,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let client = self.client.clone();
        let events = self.events.clone();
        let limit = self.options.op_timeout;
        async move {
            let mut next_rev: i64 = 0;
            loop {
                if next_rev == 0 {
                    let mut kv = client.kv_client();
                    match bounded(
                        "load",
                        limit,
                        kv.get(prefix.clone(), Some(GetOptions::new().with_prefix())),
                    )
                    .await
                    {
                        Ok(resp) => {
                            for kv in resp.kvs() {
                                if let Some(e) = kind.event(&prefix, kv.key(), Some(kv.value())) {
                                    let _ = events.send(e);
                                }
                            }
                            next_rev = resp.header().map_or(0, |h| h.revision()) + 1;
                        }
                        Err(e) => {
                            debug!(error = %e, "cannot load watched prefix yet");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            continue;
                        }
                    }
                }
                let options = WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(next_rev);
                let mut watch_client = client.watch_client();
                let mut stream = match watch_client.watch(prefix.clone(), Some(options)).await {
                    Ok(s) => s,
                    Err(e) => {
                        debug!(error = %e, "cannot watch yet");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                loop {
                    match stream.message().await {
                        Ok(Some(resp)) => {
                            if resp.compact_revision() > 0 {
                                warn!(
                                    revision = resp.compact_revision(),
                                    "watch fell behind compaction; reloading"
                                );
                                next_rev = 0;
                                break;
                            }
                            if resp.canceled() {
                                break;
                            }
                            for ev in resp.events() {
                                let Some(kv) = ev.kv() else { continue };
                                next_rev = next_rev.max(kv.mod_revision() + 1);
                                let value = (ev.event_type() == EventType::Put).then(|| kv.value());
                                if let Some(e) = kind.event(&prefix, kv.key(), value) {
                                    let _ = events.send(e);
                                }
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            debug!(error = %e, "watch stream broke; resuming");
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
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

    /// The session lease, if the session is alive.
    fn live_lease(&self) -> Result<i64, StoreError> {
        if self.session.alive.load(Ordering::SeqCst) {
            Ok(self.session.lease.load(Ordering::SeqCst))
        } else {
            Err(StoreError::Unavailable(
                "etcd session lost; renewing".into(),
            ))
        }
    }

    /// Read-modify-write of a handoff's history entry on its contact
    /// record, with compare-and-swap retries. With `learning`, a newly set
    /// outcome also goes into its route's window in the same transaction;
    /// the window is returned.
    async fn update_handoff<T>(
        &self,
        handoff_id: &str,
        learning: Option<&LearningConfig>,
        mut f: impl FnMut(&mut HistoryEntry) -> Result<(T, bool), StoreError>,
    ) -> Result<(T, HistoryEntry, OutcomeWindow), StoreError> {
        let not_found = || StoreError::NotFound {
            what: "handoff",
            id: handoff_id.to_owned(),
        };
        // Handoff ids carry their contact: `<id>:<contact id>`.
        let (_, contact_id) = handoff_id.split_once(':').ok_or_else(not_found)?;
        let key = self.key("contacts", contact_id);
        let limit = self.options.op_timeout;
        let mut kv = self.kv();
        for _ in 0..16 {
            let got = bounded("get", limit, kv.get(key.clone(), None)).await?;
            let found = got.kvs().first().ok_or_else(not_found)?;
            let rev = found.mod_revision();
            let mut contact: ContactState = decode("contact", found.value())?;
            let entry = contact.entry_mut(handoff_id).ok_or_else(not_found)?;
            let (out, changed) = f(entry)?;
            let entry = entry.clone();
            let mut window = OutcomeWindow::default();
            let mut window_op = None;
            if let Some(learning) = learning {
                let route = RouteKey {
                    source: entry.from.clone(),
                    target: entry.to.clone(),
                    pattern: entry.pattern.clone(),
                };
                let window_key = self.key("outcomes", &route.encode());
                let current = bounded("get", limit, kv.get(window_key.clone(), None)).await?;
                let mut window_rev = 0;
                if let Some(w) = current.kvs().first() {
                    window_rev = w.mod_revision();
                    window = decode("outcome window", w.value())?;
                }
                if let (true, Some(outcome)) = (changed, entry.outcome) {
                    window.record(outcome, learning);
                    window_op = Some((window_key, window_rev, encode(&window)));
                }
            }
            if !changed {
                return Ok((out, entry, window));
            }
            let mut compares = vec![Compare::mod_revision(key.clone(), CompareOp::Equal, rev)];
            let mut ops = vec![TxnOp::put(key.clone(), encode(&contact), None)];
            if let Some((window_key, window_rev, bytes)) = window_op {
                compares.push(Compare::mod_revision(
                    window_key.clone(),
                    CompareOp::Equal,
                    window_rev,
                ));
                ops.push(TxnOp::put(window_key, bytes, None));
            }
            self.writes.fetch_add(1, Ordering::Relaxed);
            let update = Txn::new().when(compares).and_then(ops);
            if send_txn("txn", limit, &kv, update).await?.succeeded() {
                return Ok((out, entry, window));
            }
        }
        Err(StoreError::Conflict(format!(
            "handoff '{handoff_id}' is being updated concurrently; retry"
        )))
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn lock(&self, contact_id: &str, wait: Duration) -> Result<ContactLock, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        let busy = || StoreError::Busy(contact_id.to_owned());
        let key = self.key("locks", contact_id);
        let kv = self.kv();
        loop {
            let lease = self.live_lease()?;
            // Unique to this attempt (lease ids are unique in the cluster), so
            // an abandoned attempt can delete its key and nobody else's.
            let attempt = self.lock_attempts.fetch_add(1, Ordering::Relaxed);
            let owner = format!("{lease:x}/{attempt}").into_bytes();
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.clone(),
                    owner.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                )])
                .or_else([TxnOp::get(key.clone(), None)]);
            let mut pending = PendingAcquire {
                kv: kv.clone(),
                key: key.clone(),
                owner,
                armed: true,
                op_timeout: self.options.op_timeout,
                writes: Arc::clone(&self.writes),
            };
            self.writes.fetch_add(1, Ordering::Relaxed);
            // On timeout, error or a dropped future, `pending` cleans up.
            let resp = match tokio::time::timeout_at(deadline, retrying(&kv, txn)).await {
                Err(_) => return Err(busy()),
                Ok(Err(e)) => return Err(unavailable("lock", e)),
                Ok(Ok(resp)) => resp,
            };
            // Answered: either the key is ours (and `EtcdHeld` owns it) or
            // this attempt created nothing.
            pending.armed = false;
            let revision = resp.header().map_or(0, |h| h.revision());
            if resp.succeeded() {
                let held = EtcdHeld {
                    kv: kv.clone(),
                    key,
                    fence: revision,
                    lease,
                    contact_rev: AtomicI64::new(-1),
                    armed: true,
                    op_timeout: self.options.op_timeout,
                    writes: Arc::clone(&self.writes),
                };
                return Ok(ContactLock::new(
                    contact_id.to_owned(),
                    revision,
                    Box::new(held),
                ));
            }
            // Held by someone else: wait for its deletion, from the revision we saw.
            let options = WatchOptions::new().with_start_revision(revision + 1);
            let mut watch_client = self.client.watch_client();
            let released = async {
                let mut stream = watch_client
                    .watch(key.clone(), Some(options))
                    .await
                    .map_err(|e| unavailable("watch", e))?;
                loop {
                    match stream.message().await {
                        Ok(Some(resp))
                            if resp
                                .events()
                                .iter()
                                .any(|e| e.event_type() == EventType::Delete) =>
                        {
                            return Ok(());
                        }
                        Ok(Some(resp)) if resp.canceled() || resp.compact_revision() > 0 => {
                            return Ok(());
                        }
                        Ok(Some(_)) => continue,
                        Ok(None) => return Ok(()),
                        Err(e) => return Err(unavailable("watch", e)),
                    }
                }
            };
            match tokio::time::timeout_at(deadline, released).await {
                Err(_) => return Err(busy()),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(())) => continue,
            }
        }
    }

    async fn load(
        &self,
        lock: &ContactLock,
        request_id: &str,
        now: UnixMs,
    ) -> Result<Loaded, StoreError> {
        let contact_id = &lock.contact_id;
        let mut ops = vec![
            TxnOp::get(self.key("contacts", contact_id), None),
            TxnOp::get(self.key("contexts", contact_id), None),
        ];
        if !request_id.is_empty() {
            ops.push(TxnOp::get(self.decision_key(contact_id, request_id), None));
        }
        let resp = send_txn(
            "load",
            self.options.op_timeout,
            &self.kv(),
            Txn::new().and_then(ops),
        )
        .await?;
        let parts = resp.op_responses();
        if let Some(held) = lock.held::<EtcdHeld>() {
            let rev = parts
                .first()
                .and_then(first_kv)
                .map_or(0, |kv| kv.mod_revision());
            held.contact_rev.store(rev, Ordering::SeqCst);
        }
        let contact = contact_from(
            parts.first().and_then(first_kv),
            parts.get(1).and_then(first_kv),
        )?;
        let prior = match parts.get(2).and_then(first_kv) {
            Some(kv) => Some(decode::<StoredDecision>("decision", kv.value())?)
                .filter(|d| d.expires_at > now)
                .map(|d| d.verdict),
            None => None,
        };
        Ok(Loaded { contact, prior })
    }

    async fn commit(&self, mut lock: ContactLock, commit: Commit) -> Result<(), StoreError> {
        let fence = lock.fence;
        let Some(held) = lock.held_mut::<EtcdHeld>() else {
            return Err(StoreError::Fenced(commit.contact_id));
        };
        if held.key != self.key("locks", &commit.contact_id) {
            return Err(StoreError::Fenced(commit.contact_id));
        }
        // A lock taken under a lease this process no longer holds is not ours.
        if !self.session.alive.load(Ordering::SeqCst)
            || self.session.lease.load(Ordering::SeqCst) != held.lease
        {
            return Err(StoreError::Fenced(commit.contact_id));
        }
        let lock_key = held.key.clone();
        let contact_rev = held.contact_rev.load(Ordering::SeqCst);
        let now = now_ms();
        let mut ops = Vec::with_capacity(5);
        if let Some(contact) = &commit.contact {
            let mut stored = contact.clone();
            let context = std::mem::take(&mut stored.context);
            ops.push(TxnOp::put(
                self.key("contacts", &commit.contact_id),
                encode(&stored),
                None,
            ));
            if contact.context_expires_at > now {
                let lease = self.leases.lease(self.options.context_ttl, now).await?;
                ops.push(TxnOp::put(
                    self.key("contexts", &commit.contact_id),
                    encode(&context),
                    Some(PutOptions::new().with_lease(lease)),
                ));
            }
        }
        if let Some((request_id, decision)) = &commit.decision {
            let lease = self.leases.lease(self.options.decision_ttl, now).await?;
            ops.push(TxnOp::put(
                self.decision_key(&commit.contact_id, request_id),
                encode(decision),
                Some(PutOptions::new().with_lease(lease)),
            ));
        }
        match &commit.deferred {
            Some(DeferredChange::Add(target)) => {
                let lease = self.leases.lease(self.options.defer_ttl, now).await?;
                let key = self.key("deferred", &commit.contact_id);
                ops.push(TxnOp::put(
                    key,
                    target.clone().into_bytes(),
                    Some(PutOptions::new().with_lease(lease)),
                ));
            }
            Some(DeferredChange::Remove) => ops.push(TxnOp::delete(
                self.key("deferred", &commit.contact_id),
                None,
            )),
            None => {}
        }
        ops.push(TxnOp::delete(lock_key.clone(), None));
        let mut compares = vec![Compare::create_revision(
            lock_key.clone(),
            CompareOp::Equal,
            fence,
        )];
        if contact_rev >= 0 {
            let contact_key = self.key("contacts", &commit.contact_id);
            compares.push(Compare::mod_revision(
                contact_key,
                CompareOp::Equal,
                contact_rev,
            ));
        }
        let txn = Txn::new().when(compares).and_then(ops);
        self.writes.fetch_add(1, Ordering::Relaxed);
        let resp = send_txn("commit", self.options.op_timeout, &self.kv(), txn).await?;
        if !resp.succeeded() {
            // Which compare failed: is the lock still ours?
            let mut kv = self.kv();
            let lock = bounded("get", self.options.op_timeout, kv.get(lock_key, None)).await?;
            if lock
                .kvs()
                .first()
                .is_some_and(|k| k.create_revision() == fence)
            {
                return Err(StoreError::Conflict(format!(
                    "contact '{}' changed during the decision (an acknowledgement or outcome); retry",
                    commit.contact_id
                )));
            }
            warn!(contact = %commit.contact_id, fence, "commit refused: the lock was lost");
            return Err(StoreError::Fenced(commit.contact_id));
        }
        if let Some(held) = lock.held_mut::<EtcdHeld>() {
            held.armed = false; // the commit deleted the lock key
        }
        Ok(())
    }

    async fn contact(&self, contact_id: &str) -> Result<Option<ContactState>, StoreError> {
        let ops = [
            TxnOp::get(self.key("contacts", contact_id), None),
            TxnOp::get(self.key("contexts", contact_id), None),
        ];
        let limit = self.options.op_timeout;
        let resp = send_txn("get", limit, &self.kv(), Txn::new().and_then(ops)).await?;
        let parts = resp.op_responses();
        let Some(contact) = contact_from(
            parts.first().and_then(first_kv),
            parts.get(1).and_then(first_kv),
        )?
        else {
            return Ok(None);
        };
        Ok(Some(contact))
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

    /// Stops the keep-alive first (it would grant a new session after the
    /// revocation), then revokes the session lease: etcd deletes every
    /// lock key attached to it in the same step.
    async fn close(&self) -> Result<(), StoreError> {
        for task in &self.tasks {
            task.abort();
        }
        self.session.alive.store(false, Ordering::SeqCst);
        let lease = self.session.lease.load(Ordering::SeqCst);
        let mut client = self.client.lease_client();
        self.writes.fetch_add(1, Ordering::Relaxed);
        bounded(
            "session lease revoke",
            self.options.op_timeout,
            client.revoke(lease),
        )
        .await?;
        info!(lease, "etcd session lease revoked");
        Ok(())
    }

    fn subscribe(&self) -> Option<broadcast::Receiver<StoreEvent>> {
        Some(self.events.subscribe())
    }
}

/// Joins a contact record and its (separately expiring) context packet.
fn contact_from(
    contact: Option<&etcd_client::KeyValue>,
    context: Option<&etcd_client::KeyValue>,
) -> Result<Option<ContactState>, StoreError> {
    let Some(kv) = contact else { return Ok(None) };
    let mut state: ContactState = decode("contact", kv.value())?;
    state.context = match context {
        Some(kv) => decode::<ContextPacket>("context", kv.value())?,
        None => ContextPacket::default(),
    };
    Ok(Some(state))
}

#[derive(Debug, Clone, Copy)]
enum Watched {
    Health,
    Outcomes,
}

impl Watched {
    fn event(self, prefix: &str, key: &[u8], value: Option<&[u8]>) -> Option<StoreEvent> {
        let name = std::str::from_utf8(key).ok()?.strip_prefix(prefix)?;
        match (self, value) {
            (Watched::Health, Some(v)) => serde_json::from_slice(v).ok().map(StoreEvent::Health),
            (Watched::Health, None) => Some(StoreEvent::HealthExpired(name.to_owned())),
            (Watched::Outcomes, Some(v)) => {
                let window = serde_json::from_slice(v).ok()?;
                Some(StoreEvent::Outcomes(RouteKey::decode(name)?, window))
            }
            (Watched::Outcomes, None) => None,
        }
    }
}

fn now_ms() -> UnixMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
