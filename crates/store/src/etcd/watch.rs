//! Follows prefixes other routers write: health reports and outcome windows
//! (loaded first, so the caches start complete) and published decisions
//! (new ones only). Resumes from the last seen revision after a broken
//! stream, so nothing is delivered twice or skipped.

use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use tokio::sync::broadcast;
use tracing::{debug, warn};

use super::{bounded, events};
use crate::{RouteKey, StoreEvent};

#[derive(Debug, Clone)]
pub(super) enum Watched {
    Health,
    Outcomes,
    /// Decisions published by routers other than `origin` (this one).
    Published {
        origin: String,
    },
}

impl Watched {
    pub(super) fn event(
        &self,
        prefix: &str,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Option<StoreEvent> {
        let name = std::str::from_utf8(key).ok()?.strip_prefix(prefix)?;
        match (self, value) {
            (Watched::Health, Some(v)) => serde_json::from_slice(v).ok().map(StoreEvent::Health),
            (Watched::Health, None) => Some(StoreEvent::HealthExpired(name.to_owned())),
            (Watched::Outcomes, Some(v)) => {
                let window = serde_json::from_slice(v).ok()?;
                Some(StoreEvent::Outcomes(RouteKey::decode(name)?, window))
            }
            (Watched::Published { origin }, Some(v)) => {
                let theirs = events::origin_of(name) != Some(origin.as_str());
                theirs.then(|| StoreEvent::Published(v.to_vec()))
            }
            // An outcome window is never deleted; an event expiring is no news.
            (Watched::Outcomes | Watched::Published { .. }, None) => None,
        }
    }

    /// Whether what is already stored matters (a cache's contents), or
    /// only what comes next (a push).
    fn loads(&self) -> bool {
        !matches!(self, Watched::Published { .. })
    }
}

/// Follows `prefix` from `start` (a revision; 0: load the prefix, then
/// watch from the next revision), resuming after broken streams. A watch
/// that fell behind compaction reloads a cache; a push resumes from the
/// oldest revision still kept (the events in between are lost, and said so).
pub(super) async fn watch(
    client: Client,
    events: broadcast::Sender<StoreEvent>,
    limit: Duration,
    prefix: String,
    kind: Watched,
    start: i64,
) {
    let mut next_rev: i64 = start;
    loop {
        if next_rev == 0 {
            let mut kv = client.kv_client();
            let options = if kind.loads() {
                GetOptions::new().with_prefix()
            } else {
                GetOptions::new().with_prefix().with_count_only()
            };
            match bounded("load", limit, kv.get(prefix.clone(), Some(options))).await {
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
                        if kind.loads() {
                            warn!(
                                revision = resp.compact_revision(),
                                "watch fell behind compaction; reloading"
                            );
                            next_rev = 0;
                        } else {
                            warn!(
                                from = next_rev,
                                to = resp.compact_revision(),
                                "watch fell behind compaction; events in between are lost"
                            );
                            next_rev = resp.compact_revision();
                        }
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
