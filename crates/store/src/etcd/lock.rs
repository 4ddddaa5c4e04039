//! The contact lock: a key on the session lease, taken by one transaction
//! (`create_revision == 0`), whose create revision is the fencing token.
//!
//! A held lock is waited for by watching its deletion, bounded by the
//! caller's wait: no polling. Each attempt puts a value of its own, so an
//! attempt abandoned in flight (wait over, caller gone) deletes the key it
//! may have created and nobody else's. The acquire transaction can also
//! read keys in its success branch: the contact and the request's stored
//! decision come back with the lock, in the same round trip.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, EventType, KvClient, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tracing::{Instrument, debug, warn};

use super::{EtcdStore, send_txn, unavailable};
use crate::locks::Held;
use crate::{ContactLock, StoreError};

/// A held etcd lock: released (if still ours) when dropped without a commit.
pub(crate) struct EtcdHeld {
    pub(super) kv: KvClient,
    pub(super) key: Vec<u8>,
    pub(super) fence: i64,
    pub(super) lease: i64,
    /// The contact record's mod revision when loaded under this lock (0:
    /// absent, -1: not loaded): the commit requires it unchanged, so an
    /// acknowledgement or outcome written meanwhile is never overwritten.
    pub(super) contact_rev: AtomicI64,
    pub(super) armed: bool,
    pub(super) op_timeout: Duration,
    pub(super) writes: Arc<AtomicU64>,
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
    /// Takes the contact's lock, waiting at most `wait`. `reads` (gets)
    /// ride in the successful acquire transaction; their answers come back
    /// in order, read at the fencing revision itself.
    pub(super) async fn acquire(
        &self,
        contact_id: &str,
        wait: Duration,
        reads: &[TxnOp],
    ) -> Result<(ContactLock, Vec<TxnOpResponse>), StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        let busy = || StoreError::Busy(contact_id.to_owned());
        let key = self.key("locks", contact_id);
        let kv = self.kv();
        loop {
            let lease = self.session.live_lease()?;
            // Unique to this attempt (lease ids are unique in the cluster), so
            // an abandoned attempt can delete its key and nobody else's.
            let attempt = self.lock_attempts.fetch_add(1, Ordering::Relaxed);
            let owner = format!("{lease:x}/{attempt}").into_bytes();
            let mut take = Vec::with_capacity(1 + reads.len());
            take.push(TxnOp::put(
                key.clone(),
                owner.clone(),
                Some(PutOptions::new().with_lease(lease)),
            ));
            take.extend(reads.iter().cloned());
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then(take)
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
            let bytes = key.len() * 2 + reads.len() * 64 + 64;
            let sent = self.batcher.send("lock", contact_id, txn, bytes);
            let answer = match tokio::time::timeout_at(deadline, sent).await {
                Err(_) => return Err(busy()),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(answer)) => answer,
            };
            // Answered: either the key is ours (and `EtcdHeld` owns it) or
            // this attempt created nothing.
            pending.armed = false;
            let revision = answer.revision;
            if answer.succeeded {
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
                let lock =
                    ContactLock::new(contact_id.to_owned(), revision, Held::Etcd(Box::new(held)));
                let mut answers = answer.responses;
                answers.remove(0); // the put
                return Ok((lock, answers));
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
}
