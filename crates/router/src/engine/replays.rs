//! Which request ids have a decision in the store, so a retry is answered
//! from the store before anything is recomputed, while the STAY path still
//! never reads storage.
//!
//! The choice (SPEC §2): a request that carries a request id is looked up
//! in the store when this set knows the id, or when its message would not
//! end in STAY (it takes the contact lock and loads anyway). A request
//! whose id the set does not know and whose message stays is answered
//! STAY from memory: only approved, escalated and deferred decisions are
//! stored, and each of them passes through here first. The set holds keys
//! only (never verdicts, whose context can be 64 KiB), and as many as the
//! store holds decisions: they expire together.
//!
//! What it does not see: decisions made by another replica sharing an etcd
//! store, and those made before this process started. A retry of such a
//! decision is still replayed when its message does not stay; one that
//! would now stay (learning raised the threshold since) answers STAY.

use std::collections::HashMap;
use std::sync::RwLock;

use baton_policy::UnixMs;

#[derive(Default)]
pub(super) struct Replays {
    /// `contact \0 source \0 request id` → when the stored decision expires.
    ids: RwLock<HashMap<String, UnixMs>>,
}

fn key(contact_id: &str, request_key: &str) -> String {
    format!("{contact_id}\0{request_key}")
}

impl Replays {
    /// Notes that a decision is about to be stored under `request_key`. Done
    /// before the commit: a failed commit leaves a key that costs one
    /// storage read on a retry, never a missed replay.
    pub(super) fn remember(&self, contact_id: &str, request_key: &str, expires_at: UnixMs) {
        let mut ids = self.ids.write().unwrap_or_else(|p| p.into_inner());
        ids.insert(key(contact_id, request_key), expires_at);
    }

    /// Whether a decision may be stored under `request_key`.
    pub(super) fn known(&self, contact_id: &str, request_key: &str, now: UnixMs) -> bool {
        let ids = self.ids.read().unwrap_or_else(|p| p.into_inner());
        ids.get(&key(contact_id, request_key))
            .is_some_and(|expires_at| *expires_at > now)
    }

    /// Forgets expired keys; returns how many.
    pub(super) fn purge(&self, now: UnixMs) -> usize {
        let mut ids = self.ids.write().unwrap_or_else(|p| p.into_inner());
        let before = ids.len();
        ids.retain(|_, expires_at| *expires_at > now);
        before - ids.len()
    }
}
