//! Logs, traces and metrics. Structured logs always go to stderr. With an
//! OTLP endpoint (`--otlp-endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT`) the
//! tracing spans (one per decision, one per store call) and the metrics
//! below are exported over OTLP/gRPC; without one, no exporter exists and
//! the metric instruments are OpenTelemetry's no-ops.

use std::sync::Weak;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;
use crate::engine::{Engine, now_ms};

/// The exporters in use; flushed on shutdown.
#[derive(Default)]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
    metrics: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// Sets up logs, and traces and metrics export when `otlp` is given.
    /// Must run inside the Tokio runtime (the OTLP client needs it).
    pub fn init(
        format: LogFormat,
        otlp: Option<&str>,
        metrics_interval: Duration,
    ) -> anyhow::Result<Self> {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let logs = match format {
            LogFormat::Json => tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr)
                .boxed(),
            LogFormat::Text => tracing_subscriber::fmt::layer()
                .with_ansi(ansi)
                .with_writer(std::io::stderr)
                .boxed(),
        };
        let Some(endpoint) = otlp else {
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(logs)
                .try_init();
            return Ok(Self::default());
        };
        let resource = Resource::builder()
            .with_service_name("baton-router")
            .build();
        let spans = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()?;
        let traces = SdkTracerProvider::builder()
            .with_batch_exporter(spans)
            .with_resource(resource.clone())
            .build();
        // Our spans carry a `target` field (the bot); tracing's own target would shadow it.
        let exported = tracing_opentelemetry::layer()
            .with_target(false)
            .with_tracer(traces.tracer("baton-router"));
        let metrics_exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()?;
        let reader = PeriodicReader::builder(metrics_exporter)
            .with_interval(metrics_interval)
            .build();
        let metrics = SdkMeterProvider::builder()
            .with_reader(reader)
            .with_resource(resource)
            .build();
        opentelemetry::global::set_meter_provider(metrics.clone());
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(logs)
            .with(exported)
            .try_init();
        tracing::info!(endpoint, "exporting traces and metrics over OTLP/gRPC");
        Ok(Self {
            traces: Some(traces),
            metrics: Some(metrics),
        })
    }

    /// Flushes what is buffered.
    pub fn shutdown(self) {
        if let Some(t) = self.traces {
            let _ = t.shutdown();
        }
        if let Some(m) = self.metrics {
            let _ = m.shutdown();
        }
    }
}

/// The router's metric instruments (no-ops without an exporter).
pub struct Metrics {
    decisions: Counter<u64>,
    latency: Histogram<f64>,
    lock_wait: Histogram<f64>,
    outcomes: Counter<u64>,
}

fn meter() -> Meter {
    opentelemetry::global::meter("baton-router")
}

impl Default for Metrics {
    fn default() -> Self {
        let m = meter();
        Self {
            decisions: m
                .u64_counter("baton.decisions")
                .with_description("decisions by kind")
                .build(),
            latency: m
                .f64_histogram("baton.decision.duration")
                .with_unit("ms")
                .with_description("time to decide, by decision")
                .build(),
            lock_wait: m
                .f64_histogram("baton.lock.wait")
                .with_unit("ms")
                .with_description("time waited for the contact lock")
                .build(),
            outcomes: m
                .u64_counter("baton.handoff.outcomes")
                .with_description("handoff outcomes reported by bots")
                .build(),
        }
    }
}

impl Metrics {
    pub fn decided(&self, decision: &'static str, elapsed: Duration) {
        let kind = [KeyValue::new("decision", decision)];
        self.decisions.add(1, &kind);
        self.latency.record(elapsed.as_secs_f64() * 1000.0, &kind);
    }

    pub fn lock_waited(&self, waited: Duration) {
        self.lock_wait.record(waited.as_secs_f64() * 1000.0, &[]);
    }

    pub fn outcome(&self, outcome: &'static str, route: String) {
        let attrs = [
            KeyValue::new("outcome", outcome),
            KeyValue::new("route", route),
        ];
        self.outcomes.add(1, &attrs);
    }
}

/// Gauges read from the engine when metrics are collected: the age of each
/// bot's latest health report and every learned threshold.
pub fn register_gauges(engine: Weak<Engine>) {
    let m = meter();
    let health = engine.clone();
    m.f64_observable_gauge("baton.health.report_age")
        .with_unit("s")
        .with_description("age of each bot's latest health report")
        .with_callback(move |observer| {
            let Some(engine) = health.upgrade() else {
                return;
            };
            let now = now_ms();
            for bot in engine.bots() {
                if let Some(r) = bot.report {
                    let age = (now - r.received_at).max(0) as f64 / 1000.0;
                    observer.observe(age, &[KeyValue::new("bot", bot.id)]);
                }
            }
        })
        .build();
    m.f64_observable_gauge("baton.learned.threshold")
        .with_description("threshold per route and pattern after learning")
        .with_callback(move |observer| {
            let Some(engine) = engine.upgrade() else {
                return;
            };
            for t in engine.learned_thresholds() {
                let attrs = [
                    KeyValue::new("route", t.key.route()),
                    KeyValue::new("pattern", t.key.pattern),
                ];
                observer.observe(t.threshold, &attrs);
            }
        })
        .build();
}
