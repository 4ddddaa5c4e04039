//! This process's session lease: granted at connect, renewed at a third of
//! its TTL, replaced when lost (nothing commits under a lost one), and
//! revoked at close so every lock still attached to it goes at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::Client;
use tracing::{debug, info, warn};

use super::{EtcdStore, bounded};
use crate::StoreError;

pub(super) struct Session {
    pub(super) lease: AtomicI64,
    pub(super) alive: AtomicBool,
}

impl Session {
    pub(super) fn new(lease: i64) -> Self {
        Self {
            lease: AtomicI64::new(lease),
            alive: AtomicBool::new(true),
        }
    }

    /// The session lease, if the session is alive.
    pub(super) fn live_lease(&self) -> Result<i64, StoreError> {
        if self.alive.load(Ordering::SeqCst) {
            Ok(self.lease.load(Ordering::SeqCst))
        } else {
            Err(StoreError::Unavailable(
                "etcd session lost; renewing".into(),
            ))
        }
    }

    /// Whether a lock taken under `lease` may still commit: the session
    /// is alive and still that lease.
    pub(super) fn holds(&self, lease: i64) -> bool {
        self.alive.load(Ordering::SeqCst) && self.lease.load(Ordering::SeqCst) == lease
    }
}

/// Renews the session lease at a third of its TTL; on loss, marks the
/// session dead at once (no commit under it) and grants a new one.
pub(super) fn keep_alive(
    client: Client,
    session: Arc<Session>,
    ttl: Duration,
    limit: Duration,
    writes: Arc<AtomicU64>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let ttl = ttl.max(Duration::from_secs(1));
    async move {
        let mut last_ok = Instant::now();
        loop {
            let id = session.lease.load(Ordering::SeqCst);
            let renewed = async {
                let mut lease = client.lease_client();
                let (mut keeper, mut stream) = bounded("keep-alive", limit, lease.keep_alive(id))
                    .await
                    .map_err(Lost::Failed)?;
                loop {
                    bounded("keep-alive", limit, keeper.keep_alive())
                        .await
                        .map_err(Lost::Failed)?;
                    let answer = bounded("keep-alive", limit, stream.message()).await;
                    match answer.map_err(Lost::Failed)? {
                        Some(r) if r.ttl() > 0 => {
                            last_ok = Instant::now();
                            session.alive.store(true, Ordering::SeqCst);
                        }
                        _ => return Err(Lost::Expired),
                    }
                    tokio::time::sleep(ttl / 3).await;
                }
            };
            let (expired, error) = match renewed.await {
                Err(Lost::Expired) => (
                    true,
                    StoreError::Unavailable("session lease expired".into()),
                ),
                Err(Lost::Failed(e)) => (false, e),
                Ok(()) => continue,
            };
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

impl EtcdStore {
    /// Stops the keep-alive first (it would grant a new session after the
    /// revocation) and the watches, then revokes the session lease: etcd
    /// deletes every lock key attached to it in the same step.
    pub(super) async fn end_session(&self) -> Result<(), StoreError> {
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
}

/// Why keeping the session lease alive stopped.
enum Lost {
    /// etcd answered that the lease is gone.
    Expired,
    /// etcd could not be reached or failed.
    Failed(StoreError),
}
