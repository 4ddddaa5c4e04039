//! Leases shared by every key of one lifetime written in one time bucket:
//! expiring data (context packets, decisions, handoff records, health,
//! published decisions) never costs a lease grant per write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_policy::UnixMs;
use etcd_client::Client;
use tracing::debug;

use super::{bounded, now_ms};
use crate::StoreError;

pub(super) struct LeaseBuckets {
    pub(super) client: Client,
    pub(super) op_timeout: Duration,
    pub(super) granted: Mutex<HashMap<(u64, i64), i64>>,
    pub(super) writes: Arc<AtomicU64>,
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

    pub(super) async fn lease(&self, ttl: Duration, now: UnixMs) -> Result<i64, StoreError> {
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
    pub(super) async fn prepare(&self, ttls: &[Duration], now: UnixMs) -> Result<(), StoreError> {
        for ttl in ttls {
            let (ttl_s, _, _) = Self::bucket(*ttl, now);
            let size = (ttl_s / 8).max(1) as i64 * 1000;
            self.lease(*ttl, now).await?;
            self.lease(*ttl, now + size).await?;
        }
        Ok(())
    }

    /// Keeps [`prepare`](Self::prepare)ing, every second, for as long as
    /// the store lives.
    pub(super) async fn prepare_forever(self: Arc<Self>, ttls: Vec<Duration>) {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Err(e) = self.prepare(&ttls, now_ms()).await {
                debug!(error = %e, "cannot prepare leases yet");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, i64), i64>> {
        self.granted.lock().unwrap_or_else(|p| p.into_inner())
    }
}
