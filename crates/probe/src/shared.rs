//! State shared by the probe's tasks: the window (behind a short-held
//! lock), the counters shown on `/healthz`, and the router in use.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use baton_proto::v1::HealthReport;
use serde::{Deserialize, Serialize};

use crate::window::{Summary, Window};

pub(crate) struct Shared {
    pub bot: String,
    window: Mutex<Window>,
    router: Mutex<Option<String>>,
    /// Passive observations queued, and dropped because the queue was full.
    pub observed: AtomicU64,
    pub dropped: AtomicU64,
    pub probes: AtomicU64,
    pub reports_sent: AtomicU64,
}

/// What `GET /healthz` answers: the probe's own liveness and figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub bot: String,
    /// The router the report stream is open to, if any.
    pub router: Option<String>,
    pub window_ms: u64,
    /// Samples (active probes and accepted observations) in the window.
    pub samples: u64,
    pub errors: u64,
    pub p95_ms: f64,
    /// Active probes run since start.
    pub probes: u64,
    /// Passive observations accepted since start.
    pub observed: u64,
    /// Passive observations dropped since start because the queue was full.
    pub dropped: u64,
    /// Reports handed to the router stream since start.
    pub reports_sent: u64,
}

impl Shared {
    pub fn new(bot: String, window: Duration, slots: u32) -> Self {
        Self {
            bot,
            window: Mutex::new(Window::new(window, slots, Instant::now())),
            router: Mutex::new(None),
            observed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            probes: AtomicU64::new(0),
            reports_sent: AtomicU64::new(0),
        }
    }

    /// The lock is only held to record or merge; a panic while holding it
    /// leaves the window consistent enough to keep going.
    fn window(&self) -> MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn record(&self, latency: Duration, ok: bool) {
        self.window().record(Instant::now(), latency, ok);
    }

    pub fn record_all(&self, samples: &[(Duration, bool)]) {
        let now = Instant::now();
        let mut window = self.window();
        for &(latency, ok) in samples {
            window.record(now, latency, ok);
        }
    }

    fn summary(&self) -> (Duration, Summary) {
        let mut window = self.window();
        (window.span(), window.summary(Instant::now()))
    }

    pub fn set_router(&self, router: Option<&str>) {
        *self.router.lock().unwrap_or_else(PoisonError::into_inner) = router.map(str::to_owned);
    }

    /// The report sent to the router for the window as it is now.
    pub fn report(&self) -> HealthReport {
        let (span, s) = self.summary();
        HealthReport {
            bot: self.bot.clone(),
            window_ms: span.as_millis() as u64,
            sample_count: s.samples,
            p50_ms: s.p50_ms,
            p95_ms: s.p95_ms,
            p99_ms: s.p99_ms,
            error_rate: s.error_rate(),
            observed_at_unix_ms: unix_ms(),
        }
    }

    pub fn status(&self) -> Status {
        let (span, s) = self.summary();
        Status {
            bot: self.bot.clone(),
            router: self
                .router
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            window_ms: span.as_millis() as u64,
            samples: s.samples,
            errors: s.errors,
            p95_ms: s.p95_ms,
            probes: self.probes.load(Ordering::Relaxed),
            observed: self.observed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            reports_sent: self.reports_sent.load(Ordering::Relaxed),
        }
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Resolves once `stop` is true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}
