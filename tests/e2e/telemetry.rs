//! SPEC §6: telemetry that fits OpenTelemetry, checked against an OTLP
//! receiver the test runs (the collector's own gRPC services): the caller's
//! `traceparent` is honoured, calls are SERVER spans with the `rpc.*`
//! conventions, decision attributes are namespaced, histograms resolve
//! microseconds, replicas have their own `service.instance.id`, `RUST_LOG`
//! never turns export off, and a failing export says so in the log.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_proto::v1::{Decision, RequestHandoffRequest, RequestHandoffResponse, Signal};
use baton_test_support::{Process, Router, TempDir, eventually, free_port};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::{HistogramDataPoint, Metric, ResourceMetrics};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::{decision, request, router_bin};

/// What the router exported, as the receiver got it.
#[derive(Clone, Default)]
struct Receiver {
    traces: Arc<Mutex<Vec<ResourceSpans>>>,
    metrics: Arc<Mutex<Vec<ResourceMetrics>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        r: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut traces = self.traces.lock().unwrap();
        traces.extend(r.into_inner().resource_spans);
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        r: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let mut metrics = self.metrics.lock().unwrap();
        metrics.extend(r.into_inner().resource_metrics);
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

impl Receiver {
    fn spans(&self) -> Vec<Span> {
        let traces = self.traces.lock().unwrap();
        traces
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| ss.spans.clone())
            .collect()
    }

    /// The metrics of the latest export that had `name`.
    fn metric(&self, name: &str) -> Option<Metric> {
        let metrics = self.metrics.lock().unwrap();
        metrics
            .iter()
            .rev()
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .find(|m| m.name == name)
            .cloned()
    }

    /// The resource attributes of the first span export.
    fn resource(&self) -> Option<Vec<KeyValue>> {
        let traces = self.traces.lock().unwrap();
        Some(traces.first()?.resource.as_ref()?.attributes.clone())
    }
}

/// A receiver on a loopback port; its endpoint URL.
async fn start_receiver() -> (String, Receiver) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let receiver = Receiver::default();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(receiver.clone()))
        .add_service(MetricsServiceServer::new(receiver.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    (format!("http://{addr}"), receiver)
}

/// A router exporting to `endpoint`, spans batched for 100 ms at most.
async fn exporting_router(endpoint: &str, env: &[(&str, &str)]) -> Router {
    let mut all = vec![("OTEL_BSP_SCHEDULE_DELAY", "100")];
    all.extend_from_slice(env);
    let args = [
        "--otlp-endpoint",
        endpoint,
        "--set",
        "server.metrics_interval=200ms",
    ];
    Router::start_with_env(router_bin(), &args, &all)
        .await
        .expect("start baton-router")
}

/// A handoff `lead` → `seller` the lead bot is sure of (its own signal), so
/// the decision does not hang on the classifier.
fn to_seller(contact: &str) -> RequestHandoffRequest {
    let mut req = request(contact, "lead", "a message");
    req.signals = vec![Signal {
        target_bot: "seller".into(),
        confidence: 0.95,
        pattern: "telemetry".into(),
    }];
    req
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match value {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        Value::BoolValue(b) => b.to_string(),
        _ => return None,
    })
}

fn attr(span: &Span, key: &str) -> Option<String> {
    attribute(&span.attributes, key)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `RequestHandoff` as a caller inside its own trace: W3C `traceparent`
/// (and `baggage`) in the metadata.
async fn traced_call(
    channel: Channel,
    req: RequestHandoffRequest,
    trace: &str,
    parent: &str,
) -> Result<RequestHandoffResponse, Status> {
    let mut req = Request::new(req);
    let traceparent = format!("00-{trace}-{parent}-01");
    req.metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    req.metadata_mut()
        .insert("baggage", "tenant=acme".parse().unwrap());
    baton_proto::v1::handoff_service_client::HandoffServiceClient::new(channel)
        .request_handoff(req)
        .await
        .map(Response::into_inner)
}

/// Waits for a span named `name` in trace `trace`.
async fn span_in(receiver: &Receiver, trace: &str, name: &str) -> Span {
    let what = format!("span '{name}' in trace {trace}");
    eventually(&what, Duration::from_secs(15), || {
        let found = receiver
            .spans()
            .into_iter()
            .find(|s| s.name == name && hex(&s.trace_id) == trace);
        async move { found }
    })
    .await
}

const APPROVED_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const REFUSED_TRACE: &str = "1bf7651916cd43dd8448eb211c80319d";
const INVALID_TRACE: &str = "2cf7651916cd43dd8448eb211c80319e";
const CALLER_SPAN: &str = "b7ad6b7169203331";
const REQUEST_HANDOFF: &str = "baton.v1.HandoffService/RequestHandoff";

#[tokio::test]
async fn calls_join_the_callers_trace_as_server_spans_with_namespaced_decisions() {
    let (endpoint, receiver) = start_receiver().await;
    let router = exporting_router(&endpoint, &[]).await;
    let sell = || to_seller("otel-1");
    let approved = traced_call(router.channel().await, sell(), APPROVED_TRACE, CALLER_SPAN)
        .await
        .unwrap();
    assert_eq!(decision(&approved), Decision::Approved);
    let refused = traced_call(router.channel().await, sell(), REFUSED_TRACE, CALLER_SPAN)
        .await
        .unwrap();
    assert_eq!(decision(&refused), Decision::NotOwner);
    let invalid = to_seller("");
    let status = traced_call(router.channel().await, invalid, INVALID_TRACE, CALLER_SPAN)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    // The call: a SERVER span, child of the caller's span, in the caller's trace.
    let server = span_in(&receiver, APPROVED_TRACE, REQUEST_HANDOFF).await;
    assert_eq!(server.kind, SpanKind::Server as i32);
    assert_eq!(hex(&server.parent_span_id), CALLER_SPAN);
    assert_eq!(attr(&server, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        attr(&server, "rpc.service").as_deref(),
        Some("baton.v1.HandoffService")
    );
    assert_eq!(
        attr(&server, "rpc.method").as_deref(),
        Some("RequestHandoff")
    );
    // OK travels in the trailers, after the reply.
    assert_eq!(attr(&server, "rpc.grpc.status_code").as_deref(), Some("0"));

    // The decision: the call's child, its attributes under `baton.*`.
    let decided = span_in(&receiver, APPROVED_TRACE, "decision").await;
    assert_eq!(decided.parent_span_id, server.span_id);
    assert_eq!(
        attr(&decided, "baton.contact_id").as_deref(),
        Some("otel-1")
    );
    assert_eq!(attr(&decided, "baton.source_bot").as_deref(), Some("lead"));
    assert_eq!(
        attr(&decided, "baton.target_bot").as_deref(),
        Some("seller")
    );
    assert_eq!(
        attr(&decided, "baton.decision").as_deref(),
        Some("APPROVED")
    );
    assert_eq!(
        attr(&decided, "baton.handoff_id").as_deref(),
        Some(approved.handoff_id.as_str())
    );
    assert!(attr(&decided, "baton.lock_wait_ms").is_some());
    // No gate refused an approved handoff: no gate named, not "none".
    assert_eq!(attr(&decided, "baton.gate"), None);
    for old in ["contact", "source", "target", "decision", "gate"] {
        assert_eq!(attr(&decided, old), None, "unnamespaced '{old}'");
    }
    // Store calls are the decision's children.
    let commit = span_in(&receiver, APPROVED_TRACE, "store.commit").await;
    assert_eq!(commit.parent_span_id, decided.span_id);

    // A refusal names the gate that refused; it is a decision, not an error.
    let server = span_in(&receiver, REFUSED_TRACE, REQUEST_HANDOFF).await;
    assert_eq!(hex(&server.parent_span_id), CALLER_SPAN);
    assert_eq!(attr(&server, "rpc.grpc.status_code").as_deref(), Some("0"));
    let decided = span_in(&receiver, REFUSED_TRACE, "decision").await;
    assert_eq!(decided.parent_span_id, server.span_id);
    assert_eq!(
        attr(&decided, "baton.decision").as_deref(),
        Some("NOT_OWNER")
    );
    assert_eq!(attr(&decided, "baton.gate").as_deref(), Some("ownership"));

    // A refused call carries its status in the headers; a caller's mistake
    // does not make the server span an error.
    let server = span_in(&receiver, INVALID_TRACE, REQUEST_HANDOFF).await;
    assert_eq!(hex(&server.parent_span_id), CALLER_SPAN);
    assert_eq!(attr(&server, "rpc.grpc.status_code").as_deref(), Some("3"));
    let code = server.status.map_or(StatusCode::Unset as i32, |s| s.code);
    assert_ne!(code, StatusCode::Error as i32);
}

/// Buckets of every latency histogram, in seconds.
const BOUNDARIES: [f64; 21] = [
    0.000_001, 0.000_002, 0.000_005, 0.000_01, 0.000_02, 0.000_05, 0.000_1, 0.000_2, 0.000_5,
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

fn histogram_points(metric: &Metric) -> Vec<HistogramDataPoint> {
    match &metric.data {
        Some(Data::Histogram(h)) => h.data_points.clone(),
        other => panic!("{} is not a histogram: {other:?}", metric.name),
    }
}

#[tokio::test]
async fn latency_histograms_are_in_seconds_and_resolve_microseconds() {
    let (endpoint, receiver) = start_receiver().await;
    let router = exporting_router(&endpoint, &[]).await;
    let mut client = router.handoff().await;
    const STAYS: u64 = 20;
    for i in 0..STAYS {
        let req = request(&format!("quiet-{i}"), "lead", "hello there");
        let reply = client.request_handoff(req).await.unwrap().into_inner();
        assert_eq!(decision(&reply), Decision::Stay);
    }
    let req = to_seller("moving");
    let reply = client.request_handoff(req).await.unwrap().into_inner();
    assert_eq!(decision(&reply), Decision::Approved);

    let stays = eventually("the STAY latencies", Duration::from_secs(15), || {
        let stays = receiver
            .metric("baton.decision.duration")
            .map(|m| (m.unit.clone(), histogram_points(&m)))
            .and_then(|(unit, points)| {
                let p = points.into_iter().find(|p| {
                    attribute(&p.attributes, "baton.decision").as_deref() == Some("STAY")
                })?;
                (p.count == STAYS).then_some((unit, p))
            });
        async move { stays }
    })
    .await;
    let (unit, stays) = stays;
    assert_eq!(unit, "s");
    assert_eq!(stays.explicit_bounds, BOUNDARIES);
    assert_eq!(stays.bucket_counts.iter().sum::<u64>(), STAYS);

    let lock = eventually("the lock wait", Duration::from_secs(15), || {
        let m = receiver.metric("baton.lock.wait");
        async move { m }
    })
    .await;
    assert_eq!(lock.unit, "s");
    let points = histogram_points(&lock);
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].count, 1);
    assert_eq!(points[0].explicit_bounds, BOUNDARIES);
    // An uncontended lock takes microseconds: it lands in a bucket below a
    // millisecond, where the SDK's default buckets (first bound 5 ms) would
    // have lumped it with everything else.
    let below_1ms = BOUNDARIES.iter().take_while(|b| **b <= 0.001).count();
    let fast: u64 = points[0].bucket_counts[..below_1ms].iter().sum();
    assert_eq!(fast, 1, "{:?}", points[0].bucket_counts);
}

#[tokio::test]
async fn each_replica_has_its_own_instance_id_under_the_configured_service_name() {
    let name = ("OTEL_SERVICE_NAME", "baton-east");
    let pinned = (
        "OTEL_RESOURCE_ATTRIBUTES",
        "service.instance.id=router-c,deployment.environment.name=test",
    );
    let ((a, ra), (b, rb), (c, rc)) =
        tokio::join!(start_receiver(), start_receiver(), start_receiver());
    let (default_id, pinned_id) = ([name], [name, pinned]);
    let (ka, kb, kc) = tokio::join!(
        exporting_router(&a, &default_id),
        exporting_router(&b, &default_id),
        exporting_router(&c, &pinned_id),
    );
    let mut resources = Vec::new();
    for (router, receiver) in [(&ka, &ra), (&kb, &rb), (&kc, &rc)] {
        let req = request("replica", "lead", "hello there");
        router.handoff().await.request_handoff(req).await.unwrap();
        let resource = eventually("a span export", Duration::from_secs(15), || {
            let r = receiver.resource();
            async move { r }
        })
        .await;
        resources.push(resource);
    }
    let get = |i: usize, key: &str| attribute(&resources[i], key);
    for i in 0..3 {
        assert_eq!(get(i, "service.name").as_deref(), Some("baton-east"));
    }
    let (ia, ib) = (get(0, "service.instance.id"), get(1, "service.instance.id"));
    for id in [&ia, &ib] {
        let id = id.as_deref().expect("service.instance.id");
        // A UUID v7: 8-4-4-4-12 hex digits, version nibble 7.
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(&id[14..15], "7", "{id}");
    }
    assert_ne!(ia, ib);
    assert_eq!(get(2, "service.instance.id").as_deref(), Some("router-c"));
    assert_eq!(
        get(2, "deployment.environment.name").as_deref(),
        Some("test")
    );
}

/// A router started by the test itself, its output kept: the harness waits
/// for an `info` line that `RUST_LOG=warn` would hide.
struct Watched {
    _process: Process,
    _data: TempDir,
    channel: Channel,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Watched {
    async fn start(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let data = TempDir::new("router");
        let listen = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(router_bin());
        cmd.args(["--listen", &listen, "--log-format", "json", "--data-dir"])
            .arg(data.path())
            .args(extra)
            .envs(env.iter().copied());
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let process = Process::spawn("baton-router", cmd, move |line| {
            sink.lock().unwrap().push(line.to_owned());
        })
        .expect("start baton-router");
        let endpoint = format!("http://{listen}");
        let channel = eventually("baton-router to serve", Duration::from_secs(30), || {
            let endpoint = endpoint.clone();
            async move {
                let channel = Channel::from_shared(endpoint).ok()?.connect().await.ok()?;
                let mut health =
                    tonic_health::pb::health_client::HealthClient::new(channel.clone());
                let request = tonic_health::pb::HealthCheckRequest::default();
                health.check(request).await.ok()?;
                Some(channel)
            }
        })
        .await;
        Self {
            _process: process,
            _data: data,
            channel,
            lines,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn rust_log_warn_quiets_the_log_but_not_the_spans() {
    let (endpoint, receiver) = start_receiver().await;
    let env = [("RUST_LOG", "warn"), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let router = Watched::start(&["--otlp-endpoint", &endpoint], &env).await;
    let trace = "3df7651916cd43dd8448eb211c80319f";
    let sell = to_seller("quiet-log");
    let reply = traced_call(router.channel.clone(), sell, trace, CALLER_SPAN)
        .await
        .unwrap();
    assert_eq!(decision(&reply), Decision::Approved);
    let server = span_in(&receiver, trace, REQUEST_HANDOFF).await;
    let decided = span_in(&receiver, trace, "decision").await;
    assert_eq!(decided.parent_span_id, server.span_id);
    // The log filter still applies to the log: the startup `info` lines
    // ("exporting traces and metrics", "serving") are not there.
    let lines = router.lines();
    let info: Vec<_> = lines.iter().filter(|l| l.contains("\"INFO\"")).collect();
    assert!(info.is_empty(), "info lines under RUST_LOG=warn: {info:?}");
}

#[tokio::test]
async fn a_failing_export_is_logged() {
    // Nothing listens there: every export is refused.
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let args = [
        "--otlp-endpoint",
        &endpoint,
        "--set",
        "server.metrics_interval=200ms",
    ];
    let env = [("RUST_LOG", "info"), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let router = Watched::start(&args, &env).await;
    let sell = to_seller("unexported");
    let reply = traced_call(router.channel.clone(), sell, APPROVED_TRACE, CALLER_SPAN)
        .await
        .unwrap();
    assert_eq!(decision(&reply), Decision::Approved);
    for signal in ["traces", "metrics"] {
        let what = format!("a failed {signal} export in the log");
        let line = eventually(&what, Duration::from_secs(15), || {
            let line = router.lines().into_iter().find(|l| {
                l.contains("otlp export failed") && l.contains(&format!("\"signal\":\"{signal}\""))
            });
            async move { line }
        })
        .await;
        assert!(line.contains("\"level\":\"WARN\""), "{line}");
        // The first failure is reported at once; later ones are counted.
        assert!(line.contains("\"failures\":1"), "{line}");
    }
}
