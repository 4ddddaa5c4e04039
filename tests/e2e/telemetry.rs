//! SPEC §6: the router exports its decision spans and metrics over
//! OTLP/gRPC to a receiver the test runs (the collector's own services).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_proto::v1::Decision;
use baton_test_support::{Router, eventually};
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
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use tonic::{Request, Response, Status};

use crate::{decision, request, router_bin};

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    metrics: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        r: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in r.into_inner().resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        r: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let mut names = self.metrics.lock().unwrap();
        for rm in r.into_inner().resource_metrics {
            for sm in rm.scope_metrics {
                names.extend(sm.metrics.into_iter().map(|m| m.name));
            }
        }
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

async fn start_receiver() -> (SocketAddr, Receiver) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let receiver = Receiver::default();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(receiver.clone()))
        .add_service(MetricsServiceServer::new(receiver.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    (addr, receiver)
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
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

#[tokio::test]
async fn decisions_are_exported_as_spans_and_metrics() {
    let (addr, receiver) = start_receiver().await;
    let endpoint = format!("http://{addr}");
    let router = Router::start_with_env(
        router_bin(),
        &[
            "--otlp-endpoint",
            &endpoint,
            "--set",
            "server.metrics_interval=300ms",
        ],
        &[("OTEL_BSP_SCHEDULE_DELAY", "200")],
    )
    .await
    .unwrap();
    let reply = router
        .handoff()
        .await
        .request_handoff(request("otel-1", "lead", "I want to sell my house"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decision(&reply), Decision::Approved);
    let blocked = router
        .handoff()
        .await
        .request_handoff(request("otel-1", "lead", "I want to sell my house"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decision(&blocked), Decision::NotOwner);

    let spans = eventually("the decision spans", Duration::from_secs(15), || {
        let spans = receiver.spans.lock().unwrap().clone();
        let found = spans.iter().filter(|s| s.name == "decision").count() >= 2;
        async move { found.then_some(spans) }
    })
    .await;
    let decisions: Vec<&Span> = spans.iter().filter(|s| s.name == "decision").collect();
    let approved = decisions
        .iter()
        .find(|s| attribute(s, "decision").as_deref() == Some("APPROVED"))
        .expect("an APPROVED decision span");
    assert_eq!(attribute(approved, "contact").as_deref(), Some("otel-1"));
    assert_eq!(attribute(approved, "source").as_deref(), Some("lead"));
    assert_eq!(attribute(approved, "target").as_deref(), Some("seller"));
    assert_eq!(attribute(approved, "gate").as_deref(), Some("none"));
    assert!(attribute(approved, "lock_wait_ms").is_some());
    let refused = decisions
        .iter()
        .find(|s| attribute(s, "decision").as_deref() == Some("NOT_OWNER"))
        .expect("a NOT_OWNER decision span");
    assert_eq!(attribute(refused, "gate").as_deref(), Some("ownership"));
    // Store calls are spans of their own, children of the decision.
    let commit = spans
        .iter()
        .find(|s| s.name == "store.commit")
        .expect("a store.commit span");
    assert_eq!(commit.trace_id, approved.trace_id);

    let metrics = eventually("the metrics", Duration::from_secs(15), || {
        let names = receiver.metrics.lock().unwrap().clone();
        let found = names.iter().any(|n| n == "baton.decisions")
            && names.iter().any(|n| n == "baton.lock.wait");
        async move { found.then_some(names) }
    })
    .await;
    assert!(
        metrics.iter().any(|n| n == "baton.decision.duration"),
        "{metrics:?}"
    );
}
