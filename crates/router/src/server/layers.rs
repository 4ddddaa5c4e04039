//! The server's middleware as one tower layer around tonic's routes,
//! [`FrontLayer`]. For each call, in this order, it:
//!
//! - counts the call on its connection for the idle, handshake and
//!   shutdown rules of [`super::conn`];
//! - opens the SERVER span ([`crate::telemetry::Spans`]);
//! - checks the token, the limit on failed authentications per client
//!   address and the per-principal call rate, for the Baton services
//!   (`grpc.health.v1` and reflection stay open, as orchestrators and
//!   `grpcurl` expect);
//! - sheds load (a router-wide bound on Baton calls in flight, beyond which
//!   a call is refused at once) and bounds the handler's time (a call not
//!   answered in time gets `DEADLINE_EXCEEDED`; a decision it cut off still
//!   commits or not as a whole).
//!
//! One layer rather than four: each would box its own future per call.
//! tonic's builder adds the rest as tower layers of its own: HTTP/2's
//! `MAX_CONCURRENT_STREAMS`, and the limit on calls in flight per
//! connection when it is the tighter of the two.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Frame, SizeHint};
use tonic::codegen::Service;
use tonic::codegen::http::{Request, Response};
use tonic::transport::server::TlsConnectInfo;

use super::conn::{ConnInfo, ConnState};
use crate::auth::Auth;
use crate::error::EngineError;
use crate::telemetry::{SpanBody, Spans, traced};

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// The peer address tonic put into a request's extensions (plain or TLS).
fn peer<B>(request: &Request<B>) -> Option<SocketAddr> {
    conn_info(request).and_then(|i| i.tcp.remote_addr)
}

/// What the connection a request came on told tonic of itself, with or
/// without TLS.
fn conn_info<B>(request: &Request<B>) -> Option<&ConnInfo> {
    let ext = request.extensions();
    ext.get::<ConnInfo>()
        .or_else(|| ext.get::<TlsConnectInfo<ConnInfo>>().map(|i| i.get_ref()))
}

/// Marks the call answered when dropped (also when the call is cancelled).
struct Answered(Arc<ConnState>);

impl Drop for Answered {
    fn drop(&mut self) {
        self.0.answered();
    }
}

/// Marks the call's response ended when dropped.
struct Closed(Arc<ConnState>);

impl Drop for Closed {
    fn drop(&mut self) {
        self.0.closed();
    }
}

/// A response body that marks its call ended when hyper drops it.
pub struct Tracked<B> {
    inner: B,
    _closed: Option<Closed>,
}

impl<B> http_body::Body for Tracked<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Which calls need a token: the Baton services. `grpc.health.v1` and
/// reflection answer anyone, as orchestrators and `grpcurl` expect.
fn guarded_path(path: &str) -> bool {
    path.starts_with("/baton.")
}

/// Whether a call's answer is bounded by `server.call_timeout`: every Baton
/// call but a probe's report stream, answered only when the probe ends it.
fn timed(path: &str) -> bool {
    path != "/baton.v1.HealthService/ReportHealth"
}

/// What the front service needs: the token check, the bound on calls in
/// flight, the handler timeout and the span source.
#[derive(Clone)]
pub struct FrontLayer {
    auth: Arc<Auth>,
    spans: Spans,
    in_flight: Arc<tokio::sync::Semaphore>,
    max: usize,
    timeout: std::time::Duration,
}

impl FrontLayer {
    /// At most `max` Baton calls handled at once; each answered (for a
    /// stream: its response head) within `timeout`.
    pub fn new(auth: Arc<Auth>, spans: Spans, max: usize, timeout: std::time::Duration) -> Self {
        Self {
            auth,
            spans,
            in_flight: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
            timeout,
        }
    }

    /// Admits a call to a Baton service: its caller goes into the request.
    /// Returns the call's slot among those in flight and its time bound,
    /// or the refusal to answer with.
    fn admit<B>(&self, request: &mut Request<B>) -> Result<Admitted, tonic::Status> {
        let token = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let caller = self.auth.admit(token, peer(request).map(|p| p.ip()))?;
        request.extensions_mut().insert(caller);
        let Ok(permit) = Arc::clone(&self.in_flight).try_acquire_owned() else {
            return Err(EngineError::Exhausted(format!(
                "the router is handling {} calls (server.max_calls_in_flight); retry",
                self.max
            ))
            .into());
        };
        Ok(Admitted {
            _permit: permit,
            timeout: timed(request.uri().path()).then_some(self.timeout),
        })
    }
}

impl<S> tower_layer::Layer<S> for FrontLayer {
    type Service = Front<S>;

    fn layer(&self, inner: S) -> Front<S> {
        Front {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Front<S> {
    inner: S,
    layer: FrontLayer,
}

/// An admitted Baton call: its slot among the calls in flight, held until
/// it is answered, and its time bound.
struct Admitted {
    _permit: tokio::sync::OwnedSemaphorePermit,
    timeout: Option<std::time::Duration>,
}

impl<S, B> Service<Request<B>> for Front<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Tracked<SpanBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let state = conn_info(&request).map(|i| Arc::clone(&i.state));
        if let Some(state) = &state {
            state.begin();
        }
        let answered = state.clone().map(Answered);
        let closed = state.map(Closed);
        let span = self
            .layer
            .spans
            .start(request.uri().path(), request.headers());
        let admitted = if guarded_path(request.uri().path()) {
            self.layer.admit(&mut request).map(Some)
        } else {
            Ok(None)
        };
        let call = admitted.map(|admitted| {
            let call = match &span {
                Some(span) => span.in_scope(|| self.inner.call(request)),
                None => self.inner.call(request),
            };
            (call, admitted)
        });
        let handled = async move {
            let (call, admitted) = match call {
                Ok(call) => call,
                Err(refused) => return Ok(refused.into_http()),
            };
            let Some(timeout) = admitted.as_ref().and_then(|a| a.timeout) else {
                return call.await;
            };
            match tokio::time::timeout(timeout, call).await {
                Ok(response) => response,
                Err(_) => Ok(tonic::Status::from(EngineError::Timeout(format!(
                    "no answer within {} (server.call_timeout)",
                    humantime::format_duration(timeout)
                )))
                .into_http()),
            }
        };
        Box::pin(async move {
            let response = traced(span, handled).await;
            drop(answered);
            Ok(response?.map(|inner| Tracked {
                inner,
                _closed: closed,
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probes_report_stream_is_not_timed_out() {
        assert!(timed("/baton.v1.HandoffService/RequestHandoff"));
        assert!(timed("/baton.v1.HandoffService/WatchHandoffs"));
        assert!(!timed("/baton.v1.HealthService/ReportHealth"));
    }

    #[test]
    fn only_the_baton_services_need_tokens() {
        assert!(guarded_path("/baton.v1.HandoffService/RequestHandoff"));
        assert!(guarded_path("/baton.v1.AdminService/WatchDecisions"));
        assert!(!guarded_path("/grpc.health.v1.Health/Check"));
        assert!(!guarded_path(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
    }
}
