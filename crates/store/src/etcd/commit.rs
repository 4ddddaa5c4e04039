//! What a decision reads under its lock and the one fenced transaction that
//! writes it: contact, context, decision, deferral index, the decision
//! published to the other routers, and the lock's release. Also the
//! compare-and-swap updates of a handoff's record (acknowledgements,
//! outcomes), which take no lock.

use std::sync::atomic::Ordering;

use baton_policy::{
    ContactState, ContextPacket, HistoryEntry, LearningConfig, OutcomeWindow, UnixMs,
};
use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use tracing::warn;

use super::{EtcdStore, bounded, decode, encode, first_kv, now_ms, send_txn};
use crate::{Commit, ContactLock, DeferredChange, Loaded, RouteKey, StoreError, StoredDecision};

impl EtcdStore {
    /// The gets that load a contact under its lock: contact record, context
    /// packet and, with a request id, the decision stored under it.
    pub(super) fn load_ops(&self, contact_id: &str, request_id: &str) -> Vec<TxnOp> {
        let mut ops = vec![
            TxnOp::get(self.key("contacts", contact_id), None),
            TxnOp::get(self.key("contexts", contact_id), None),
        ];
        if !request_id.is_empty() {
            ops.push(TxnOp::get(self.decision_key(contact_id, request_id), None));
        }
        ops
    }

    /// Reads the answers to [`load_ops`](Self::load_ops), and notes on the
    /// lock the contact revision its commit will require.
    pub(super) fn loaded(
        lock: &ContactLock,
        parts: &[TxnOpResponse],
        now: UnixMs,
    ) -> Result<Loaded, StoreError> {
        if let Some(held) = lock.etcd() {
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

    pub(super) async fn load_locked(
        &self,
        lock: &ContactLock,
        request_id: &str,
        now: UnixMs,
    ) -> Result<Loaded, StoreError> {
        let ops = self.load_ops(&lock.contact_id, request_id);
        let limit = self.options.op_timeout;
        let resp = send_txn("load", limit, &self.kv(), Txn::new().and_then(ops)).await?;
        Self::loaded(lock, &resp.op_responses(), now)
    }

    pub(super) async fn commit_locked(
        &self,
        mut lock: ContactLock,
        commit: Commit,
    ) -> Result<(), StoreError> {
        let fence = lock.fence;
        let Some(held) = lock.etcd_mut() else {
            return Err(StoreError::Fenced(commit.contact_id));
        };
        if held.key != self.key("locks", &commit.contact_id) {
            return Err(StoreError::Fenced(commit.contact_id));
        }
        // A lock taken under a lease this process no longer holds is not ours.
        if !self.session.holds(held.lease) {
            return Err(StoreError::Fenced(commit.contact_id));
        }
        let lock_key = held.key.clone();
        let contact_rev = held.contact_rev.load(Ordering::SeqCst);
        let now = now_ms();
        let mut ops = Vec::with_capacity(6);
        // Keys and values, about: what the batch that carries this counts.
        let mut bytes = 256;
        if let Some(contact) = &commit.contact {
            let mut stored = contact.clone();
            let context = std::mem::take(&mut stored.context);
            let kept = self.leases.lease(self.options.retention, now).await?;
            let value = encode(&stored);
            bytes += value.len() + 64;
            ops.push(TxnOp::put(
                self.key("contacts", &commit.contact_id),
                value,
                Some(PutOptions::new().with_lease(kept)),
            ));
            if contact.context_expires_at > now {
                let lease = self.leases.lease(self.options.context_ttl, now).await?;
                let value = encode(&context);
                bytes += value.len() + 64;
                ops.push(TxnOp::put(
                    self.key("contexts", &commit.contact_id),
                    value,
                    Some(PutOptions::new().with_lease(lease)),
                ));
            }
        }
        if let Some((request_id, decision)) = &commit.decision {
            let lease = self.leases.lease(self.options.decision_ttl, now).await?;
            let value = encode(decision);
            bytes += value.len() + request_id.len() + 64;
            ops.push(TxnOp::put(
                self.decision_key(&commit.contact_id, request_id),
                value,
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
        if let Some(published) = commit.published {
            bytes += published.len() + 64;
            ops.push(self.publish_op(published, now).await?);
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
        let answer = self
            .batcher
            .send("commit", &commit.contact_id, txn, bytes)
            .await?;
        if !answer.succeeded {
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
        if let Some(held) = lock.etcd_mut() {
            held.armed = false; // the commit deleted the lock key
        }
        Ok(())
    }

    /// Read-modify-write of a handoff's history entry on its contact
    /// record, with compare-and-swap retries. With `learning`, a newly set
    /// outcome also goes into its route's window in the same transaction;
    /// the window is returned.
    pub(super) async fn update_handoff<T>(
        &self,
        handoff_id: &str,
        learning: Option<&LearningConfig>,
        mut f: impl FnMut(&mut HistoryEntry) -> Result<(T, bool), StoreError>,
    ) -> Result<(T, HistoryEntry, OutcomeWindow), StoreError> {
        let not_found = || StoreError::NotFound {
            what: "handoff",
            id: handoff_id.to_owned(),
        };
        let contact_id = crate::handoff_contact_id(handoff_id).ok_or_else(not_found)?;
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
            // Activity: the contact (and its route's window) are kept a
            // retention period from now.
            let kept = self.leases.lease(self.options.retention, now_ms()).await?;
            let kept = || Some(PutOptions::new().with_lease(kept));
            let mut compares = vec![Compare::mod_revision(key.clone(), CompareOp::Equal, rev)];
            let mut ops = vec![TxnOp::put(key.clone(), encode(&contact), kept())];
            if let Some((window_key, window_rev, bytes)) = window_op {
                compares.push(Compare::mod_revision(
                    window_key.clone(),
                    CompareOp::Equal,
                    window_rev,
                ));
                ops.push(TxnOp::put(window_key, bytes, kept()));
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

/// Joins a contact record and its (separately expiring) context packet.
pub(super) fn contact_from(
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
