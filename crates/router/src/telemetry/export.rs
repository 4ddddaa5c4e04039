//! OTLP exporters that say when they fail. The SDK drops a batch it cannot
//! send without a word (its own logs are compiled out); an operator whose
//! collector is down should read that in the router's log, but once per
//! [`REPORT_EVERY`] with a count, not once per batch.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// At most one "export failed" line per signal in this long.
pub const REPORT_EVERY: Duration = Duration::from_secs(30);

/// An exporter whose failures are logged, rate-limited.
pub struct Logged<E> {
    inner: E,
    failures: FailureLog,
}

impl<E> Logged<E> {
    pub fn new(signal: &'static str, inner: E) -> Self {
        Self {
            inner,
            failures: FailureLog {
                signal,
                state: Mutex::new(Failures::default()),
            },
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for Logged<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Logged").field(&self.inner).finish()
    }
}

impl<E: SpanExporter> SpanExporter for Logged<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.failures.observe(&result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn shutdown(&self) -> OTelSdkResult {
        self.inner.shutdown()
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: PushMetricExporter> PushMetricExporter for Logged<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.failures.observe(&result);
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn shutdown(&self) -> OTelSdkResult {
        self.inner.shutdown()
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

struct FailureLog {
    signal: &'static str,
    state: Mutex<Failures>,
}

impl FailureLog {
    fn observe(&self, result: &OTelSdkResult) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let signal = self.signal;
        match result {
            Err(e) => {
                if let Some(failures) = state.failed(Instant::now()) {
                    tracing::warn!(signal, failures, error = %e, "otlp export failed");
                }
            }
            Ok(()) => {
                if state.succeeded() {
                    tracing::info!(signal, "otlp export works again");
                }
            }
        }
    }
}

/// The rate limit, apart from the clock and the logging.
#[derive(Debug, Default)]
struct Failures {
    /// Failures not yet reported.
    unreported: u64,
    last_report: Option<Instant>,
    /// A failure was reported and no recovery since.
    reported: bool,
}

impl Failures {
    /// Counts a failure; `Some(count)` when it is time to report `count`
    /// failures (this one included).
    fn failed(&mut self, now: Instant) -> Option<u64> {
        self.unreported += 1;
        let due = self
            .last_report
            .is_none_or(|t| now.saturating_duration_since(t) >= REPORT_EVERY);
        if !due {
            return None;
        }
        self.last_report = Some(now);
        self.reported = true;
        Some(std::mem::take(&mut self.unreported))
    }

    /// Whether this success ends a reported failure (and is worth a line).
    fn succeeded(&mut self) -> bool {
        std::mem::take(&mut self.reported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_reported_once_per_period_with_a_count() {
        let t0 = Instant::now();
        let mut f = Failures::default();
        assert_eq!(f.failed(t0), Some(1));
        assert_eq!(f.failed(t0 + Duration::from_secs(1)), None);
        assert_eq!(f.failed(t0 + Duration::from_secs(29)), None);
        assert_eq!(f.failed(t0 + REPORT_EVERY), Some(3));
        assert_eq!(f.failed(t0 + REPORT_EVERY + Duration::from_secs(1)), None);
    }

    #[test]
    fn a_recovery_is_reported_once_and_does_not_reset_the_period() {
        let t0 = Instant::now();
        let mut f = Failures::default();
        assert!(!f.succeeded());
        assert_eq!(f.failed(t0), Some(1));
        assert!(f.succeeded());
        assert!(!f.succeeded());
        // Flapping: the next failure waits for the period like any other.
        assert_eq!(f.failed(t0 + Duration::from_secs(2)), None);
        assert!(!f.succeeded());
        assert_eq!(f.failed(t0 + REPORT_EVERY), Some(2));
    }
}
