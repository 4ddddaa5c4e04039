//! Logs, traces and metrics. Structured logs always go to stderr. With an
//! OTLP endpoint (`--otlp-endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT`) the
//! tracing spans and the metrics below are exported over OTLP/gRPC; without
//! one, no exporter exists and the metric instruments are OpenTelemetry's
//! no-ops.
//!
//! How it fits the OpenTelemetry ecosystem:
//!
//! - every gRPC call is a SERVER span with the `rpc.*` conventions, joined
//!   to the caller's trace when the call carries W3C `traceparent` metadata
//!   ([`Spans`]); the decision span and the store spans are its
//!   children;
//! - the decision span's attributes are Baton's own, under `baton.*`
//!   (`baton.contact_id`, `baton.source_bot`, `baton.target_bot`,
//!   `baton.decision`, `baton.gate`, …). The draft
//!   `gen_ai.agent.handoff.{source,target}.name` are deliberately not
//!   emitted as aliases: they sit in an open, disputed proposal
//!   (open-telemetry/semantic-conventions-genai#98), they
//!   describe the agent framework's own `execute_tool` span (the caller's
//!   side, which now parents ours), and a rename there would leave
//!   dashboards on names that never stabilised;
//! - latency histograms are in seconds (`s`) with explicit bucket
//!   boundaries from 1 µs ([`LATENCY_BOUNDARIES`]), so decisions of a few
//!   microseconds do not all land in the SDK's default first bucket (5 ms);
//! - the resource names the service (`OTEL_SERVICE_NAME`, default
//!   `baton-router`) and the process: `service.instance.id` is a fresh UUID
//!   v7 per process unless `OTEL_RESOURCE_ATTRIBUTES` sets one;
//! - `RUST_LOG` filters the logs only: the exported spans have their own
//!   filter ([`export_filter`]), so `RUST_LOG=warn` quiets the log without
//!   turning tracing off;
//! - a failing export is logged, at most once per 30 s per signal, with
//!   the number of failures (the SDK's own logs are compiled out).

mod export;
mod rpc;

use std::sync::Weak;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{
    Aggregation, Instrument, InstrumentKind, PeriodicReader, SdkMeterProvider, Stream,
};
use opentelemetry_sdk::resource::{EnvResourceDetector, TelemetryResourceDetector};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use rpc::{SpanBody, Spans, traced};

use crate::config::LogFormat;
use crate::engine::{Engine, now_ms};

/// Upper bounds (seconds) of every latency histogram's buckets: 1-2-5 steps
/// from 1 µs to 5 s. A STAY decision takes microseconds, a decision under
/// the lock up to `lock_wait` (250 ms by default) and a store round trip.
pub const LATENCY_BOUNDARIES: [f64; 21] = [
    0.000_001, 0.000_002, 0.000_005, 0.000_01, 0.000_02, 0.000_05, 0.000_1, 0.000_2, 0.000_5,
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

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
        }
        .with_filter(filter);
        let Some(endpoint) = otlp else {
            let _ = tracing_subscriber::registry().with(logs).try_init();
            return Ok(Self::default());
        };
        let resource = resource();
        let spans = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()?;
        let traces = SdkTracerProvider::builder()
            .with_batch_exporter(export::Logged::new("traces", spans))
            .with_resource(resource.clone())
            .build();
        // Our spans carry their own attributes; tracing's target and
        // busy/idle timings would only add unnamespaced noise.
        let exported = tracing_opentelemetry::layer()
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_tracer(traces.tracer("baton-router"))
            .with_filter(export_filter());
        let metrics_exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()?;
        let reader = PeriodicReader::builder(export::Logged::new("metrics", metrics_exporter))
            .with_interval(metrics_interval)
            .build();
        let metrics = SdkMeterProvider::builder()
            .with_reader(reader)
            .with_resource(resource)
            .with_view(latency_buckets)
            .build();
        opentelemetry::global::set_meter_provider(metrics.clone());
        let _ = tracing_subscriber::registry()
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

/// What is exported, whatever `RUST_LOG` says: Baton's spans (and the events
/// inside them, as span events) from `info`, other crates' from `warn`.
/// The OTLP client's own spans and events, at `debug` and below, stay out,
/// so exporting never feeds itself.
pub fn export_filter() -> Targets {
    Targets::new()
        .with_default(LevelFilter::WARN)
        .with_target("baton_router", LevelFilter::INFO)
        .with_target("baton_store", LevelFilter::INFO)
}

/// The resource every span and metric carries. `service.instance.id` tells
/// replicas apart (a restart is a new instance, as the conventions want);
/// `OTEL_RESOURCE_ATTRIBUTES` overrides the defaults and `OTEL_SERVICE_NAME`
/// overrides both, as the SDK specification orders them.
fn resource() -> Resource {
    let mut builder = Resource::builder_empty()
        .with_service_name("baton-router")
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", uuid::Uuid::now_v7().to_string()),
        ])
        .with_detector(Box::new(EnvResourceDetector::new()));
    if let Ok(name) = std::env::var("OTEL_SERVICE_NAME")
        && !name.is_empty()
    {
        builder = builder.with_service_name(name);
    }
    builder
        .with_detector(Box::new(TelemetryResourceDetector))
        .build()
}

/// The SDK view giving every histogram in seconds [`LATENCY_BOUNDARIES`].
fn latency_buckets(i: &Instrument) -> Option<Stream> {
    if i.kind() != InstrumentKind::Histogram || i.unit() != "s" {
        return None;
    }
    Stream::builder()
        .with_aggregation(Aggregation::ExplicitBucketHistogram {
            boundaries: LATENCY_BOUNDARIES.to_vec(),
            record_min_max: true,
        })
        .build()
        .ok()
}

/// The router's metric instruments (no-ops without an exporter). Their
/// attributes are namespaced like the spans' (`baton.decision`, …).
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
                .with_unit("{decision}")
                .with_description("decisions by kind")
                .build(),
            latency: m
                .f64_histogram("baton.decision.duration")
                .with_unit("s")
                .with_description("time to decide, by decision")
                .build(),
            lock_wait: m
                .f64_histogram("baton.lock.wait")
                .with_unit("s")
                .with_description("time waited for the contact lock")
                .build(),
            outcomes: m
                .u64_counter("baton.handoff.outcomes")
                .with_unit("{outcome}")
                .with_description("handoff outcomes reported by bots")
                .build(),
        }
    }
}

impl Metrics {
    pub fn decided(&self, decision: &'static str, elapsed: Duration) {
        let kind = [KeyValue::new("baton.decision", decision)];
        self.decisions.add(1, &kind);
        self.latency.record(elapsed.as_secs_f64(), &kind);
    }

    pub fn lock_waited(&self, waited: Duration) {
        self.lock_wait.record(waited.as_secs_f64(), &[]);
    }

    pub fn outcome(&self, outcome: &'static str, route: String) {
        let attrs = [
            KeyValue::new("baton.outcome", outcome),
            KeyValue::new("baton.route", route),
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
                    observer.observe(age, &[KeyValue::new("baton.bot", bot.id)]);
                }
            }
        })
        .build();
    m.f64_observable_gauge("baton.learned.threshold")
        .with_unit("1")
        .with_description("threshold per route and pattern after learning")
        .with_callback(move |observer| {
            let Some(engine) = engine.upgrade() else {
                return;
            };
            for t in engine.learned_thresholds() {
                let attrs = [
                    KeyValue::new("baton.route", t.key.route()),
                    KeyValue::new("baton.pattern", t.key.pattern),
                ];
                observer.observe(t.threshold, &attrs);
            }
        })
        .build();
}
