//! Decisions pushed to the routers that share the store: a bot watching
//! one replica hears of a handoff approved or completed on another (SPEC §3).
//!
//! A commit that carries [`Commit::published`](crate::Commit::published)
//! writes it, in the same fenced transaction, under
//! `<prefix>events/<time ms>.<origin>.<sequence>` (hex, fixed width: keys
//! sort by time, then by writer, and never collide), on a shared bucket
//! lease of `event_ttl`: the keys are only a carrier for the watch and go
//! by themselves. The origin is this store's first session lease id: unique
//! among live stores, and unchanged when the session is renewed. Every
//! store watches the prefix from the revision it started at (no replay of
//! older events) and passes on the others' events as
//! [`StoreEvent::Published`](crate::StoreEvent::Published), skipping its own:
//! this process told its watchers already.

use std::sync::atomic::Ordering;
use std::time::Duration;

use baton_policy::UnixMs;
use etcd_client::{Client, GetOptions, PutOptions, TxnOp};

use super::{EtcdStore, bounded};
use crate::StoreError;

/// The origin tag of a store whose first session lease is `lease`.
pub(super) fn origin(lease: i64) -> String {
    format!("{lease:016x}")
}

/// The origin of an event, from its key below the events prefix.
pub(super) fn origin_of(name: &str) -> Option<&str> {
    name.split('.').nth(1)
}

impl EtcdStore {
    /// The write that publishes `bytes` to the other routers.
    pub(super) async fn publish_op(
        &self,
        bytes: Vec<u8>,
        now: UnixMs,
    ) -> Result<TxnOp, StoreError> {
        let lease = self.leases.lease(self.options.event_ttl, now).await?;
        let seq = self.published.fetch_add(1, Ordering::Relaxed);
        let key = format!(
            "{}events/{:012x}.{}.{seq:08x}",
            self.options.prefix, now, self.origin
        );
        Ok(TxnOp::put(
            key,
            bytes,
            Some(PutOptions::new().with_lease(lease)),
        ))
    }
}

/// The store's revision now: events are watched from the next one, so
/// whatever is committed after `connect` returns reaches this store, and
/// nothing older does.
pub(super) async fn start_revision(
    client: &Client,
    prefix: &str,
    limit: Duration,
) -> Result<i64, StoreError> {
    let mut kv = client.kv_client();
    let options = GetOptions::new().with_prefix().with_count_only();
    let resp = bounded("get", limit, kv.get(prefix, Some(options))).await?;
    Ok(resp.header().map_or(0, |h| h.revision()))
}
