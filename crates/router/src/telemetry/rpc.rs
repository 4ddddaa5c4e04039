//! The SERVER span of every gRPC call, opened by the server's front service.
//!
//! The span follows the RPC semantic conventions: named
//! `{rpc.service}/{rpc.method}`, kind SERVER, with `rpc.system = "grpc"`,
//! `rpc.service`, `rpc.method` and `rpc.grpc.status_code`. Its parent is the
//! caller's span when the call carries W3C `traceparent` metadata (baggage is
//! extracted alongside), so Baton's spans land in the caller's trace; the
//! decision span and the store spans are its children.
//!
//! The span stays open until the response body has been sent: the status of
//! a successful call only exists in the trailers, and a streaming call lasts
//! as long as its stream.
//!
//! The caller's sampling decision holds (the SDK's default sampler is
//! parent-based): a `traceparent` ending in `-00` means no Baton spans for
//! that call either.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Frame, SizeHint};
use opentelemetry::propagation::{Extractor, TextMapCompositePropagator, TextMapPropagator};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use tonic::codegen::http::{HeaderMap, Response};
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Kubernetes and load balancers call `grpc.health.v1` every few seconds;
/// a span per probe would bury the calls that matter.
const UNTRACED_SERVICES: &[&str] = &["grpc.health.v1.Health"];

/// `CANCELLED`: what a call whose response was dropped before its trailers
/// amounts to (the client went away or the server stopped).
const CANCELLED: i32 = 1;

/// Opens the SERVER span of every call ([`crate::server`]'s front service
/// asks it). Disabled, it opens none: without an exporter the span would
/// only cost time.
#[derive(Clone)]
pub struct Spans {
    propagator: Option<Arc<TextMapCompositePropagator>>,
}

impl Spans {
    pub fn new(enabled: bool) -> Self {
        let propagator = enabled.then(|| {
            Arc::new(TextMapCompositePropagator::new(vec![
                Box::new(TraceContextPropagator::new()),
                Box::new(BaggagePropagator::new()),
            ]))
        });
        Self { propagator }
    }

    /// The span of a call to `path`, joined to the caller's trace; none when
    /// disabled or for an untraced service.
    pub fn start(&self, path: &str, headers: &HeaderMap) -> Option<Span> {
        server_span(self.propagator.as_deref()?, path, headers)
    }
}

/// Runs `call` inside `span` (when there is one) and hands the response
/// body the span, to hold until the trailers are out; an error is recorded
/// as `UNKNOWN`.
pub async fn traced<E>(
    span: Option<Span>,
    call: impl Future<Output = Result<Response<tonic::body::Body>, E>>,
) -> Result<Response<SpanBody>, E> {
    let Some(span) = span else {
        return Ok(call.await?.map(SpanBody::untraced));
    };
    match call.instrument(span.clone()).await {
        Ok(response) => {
            let status = grpc_status(response.headers());
            if let Some(code) = status {
                record_status(&span, code);
            }
            let recorded = status.is_some();
            Ok(response.map(|body| SpanBody {
                inner: body,
                span: Some(span),
                recorded,
            }))
        }
        Err(e) => {
            record_status(&span, tonic::Code::Unknown as i32);
            Err(e)
        }
    }
}

/// The call's span, or none for a path that is not `/service/method` or
/// for an untraced service.
fn server_span(
    propagator: &TextMapCompositePropagator,
    path: &str,
    headers: &HeaderMap,
) -> Option<Span> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    if UNTRACED_SERVICES.contains(&service) {
        return None;
    }
    let span = tracing::info_span!(
        "grpc",
        otel.name = path.trim_start_matches('/'),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
    );
    let parent = propagator.extract(&Metadata(headers));
    // Fails only when no OpenTelemetry layer is installed: then nothing is exported anyway.
    let _ = span.set_parent(parent);
    Some(span)
}

/// Records the gRPC status, and marks the span as an error for the codes
/// the conventions call server errors (a refused or invalid request is the
/// caller's problem, not the server's).
fn record_status(span: &Span, code: i32) {
    span.record("rpc.grpc.status_code", code);
    const SERVER_ERRORS: [tonic::Code; 6] = [
        tonic::Code::Unknown,
        tonic::Code::DeadlineExceeded,
        tonic::Code::Unimplemented,
        tonic::Code::Internal,
        tonic::Code::Unavailable,
        tonic::Code::DataLoss,
    ];
    if SERVER_ERRORS.iter().any(|c| *c as i32 == code) {
        span.record("otel.status_code", "ERROR");
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// gRPC metadata as the propagators read it.
struct Metadata<'a>(&'a HeaderMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// A response body that holds its call's span until the trailers are out,
/// and records the status they carry.
pub struct SpanBody {
    inner: tonic::body::Body,
    span: Option<Span>,
    /// Whether `rpc.grpc.status_code` is on the span already.
    recorded: bool,
}

impl SpanBody {
    fn untraced(inner: tonic::body::Body) -> Self {
        Self {
            inner,
            span: None,
            recorded: true,
        }
    }
}

impl http_body::Body for SpanBody {
    type Data = tonic::codegen::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        // Entered while polling, so the span ends when the last frame went out.
        let _entered = this.span.as_ref().map(Span::enter);
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if !this.recorded
            && let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(code) = frame.trailers_ref().and_then(grpc_status)
            && let Some(span) = &this.span
        {
            record_status(span, code);
            this.recorded = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for SpanBody {
    fn drop(&mut self) {
        if !self.recorded
            && let Some(span) = &self.span
        {
            record_status(span, CANCELLED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_come_from_the_grpc_status_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(grpc_status(&headers), None);
        headers.insert("grpc-status", "3".parse().unwrap());
        assert_eq!(grpc_status(&headers), Some(3));
        headers.insert("grpc-status", "x".parse().unwrap());
        assert_eq!(grpc_status(&headers), None);
    }

    #[test]
    fn metadata_is_read_by_lowercase_name() {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", "00-abc-def-01".parse().unwrap());
        let m = Metadata(&headers);
        assert_eq!(m.get("traceparent"), Some("00-abc-def-01"));
        assert_eq!(m.keys(), vec!["traceparent"]);
    }
}
