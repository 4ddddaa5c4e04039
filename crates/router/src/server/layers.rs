//! The server's middleware as tower layers around tonic's routes, outermost
//! first:
//!
//! - [`CallsLayer`] counts each connection's calls for the idle, handshake
//!   and shutdown rules of [`super::conn`];
//! - the SERVER span ([`crate::telemetry::RpcSpanLayer`]);
//! - [`AuthLayer`]: the token check, the limit on failed authentications
//!   per client address and the per-principal call rate, for the Baton
//!   services (`grpc.health.v1` and reflection stay open, as orchestrators
//!   and `grpcurl` expect);
//! - [`GuardLayer`]: load shedding (a router-wide bound on Baton calls in
//!   flight, beyond which a call is refused at once) and the handler
//!   timeout (a call not answered in time gets `DEADLINE_EXCEEDED`; a
//!   decision it cut off still commits or not as a whole).
//!
//! tonic's builder adds the rest as tower layers of its own: the
//! concurrency limit per connection and HTTP/2's `MAX_CONCURRENT_STREAMS`.

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

/// Counts each connection's calls in its [`ConnState`], which the
/// connection hands every request it carries ([`ConnInfo`]).
#[derive(Clone, Default)]
pub struct CallsLayer;

impl<S> tower_layer::Layer<S> for CallsLayer {
    type Service = Calls<S>;

    fn layer(&self, inner: S) -> Calls<S> {
        Calls { inner }
    }
}

#[derive(Clone)]
pub struct Calls<S> {
    inner: S,
}

impl<S, B, ResBody> Service<Request<B>> for Calls<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<Tracked<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let state = conn_info(&request).map(|i| Arc::clone(&i.state));
        let guards = state.map(|s| {
            s.begin();
            (Answered(Arc::clone(&s)), Closed(s))
        });
        let call = self.inner.call(request);
        Box::pin(async move {
            let (answered, closed) = match guards {
                Some((a, c)) => (Some(a), Some(c)),
                None => (None, None),
            };
            let response = call.await;
            drop(answered);
            Ok(response?.map(|inner| Tracked {
                inner,
                _closed: closed,
            }))
        })
    }
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

/// The token check as a layer: puts the [`crate::auth::Caller`] into the
/// request, or answers the refusal itself.
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Auth>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Auth>) -> Self {
        Self { auth }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Authenticated<S> {
        Authenticated {
            inner,
            auth: Arc::clone(&self.auth),
        }
    }
}

#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    auth: Arc<Auth>,
}

impl<S, B, ResBody> Service<Request<B>> for Authenticated<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Response<ResBody>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if guarded_path(request.uri().path()) {
            let token = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            match self.auth.admit(token, peer(&request).map(|p| p.ip())) {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                }
                Err(refused) => {
                    let response = tonic::Status::from(refused).into_http::<ResBody>();
                    return Box::pin(async move { Ok(response) });
                }
            }
        }
        Box::pin(self.inner.call(request))
    }
}

/// Whether a call's answer is bounded by `server.call_timeout`: every Baton
/// call but a probe's report stream, answered only when the probe ends it.
fn timed(path: &str) -> bool {
    path != "/baton.v1.HealthService/ReportHealth"
}

/// Load shedding and the handler timeout as a layer.
#[derive(Clone)]
pub struct GuardLayer {
    in_flight: Arc<tokio::sync::Semaphore>,
    max: usize,
    timeout: std::time::Duration,
}

impl GuardLayer {
    /// At most `max` Baton calls handled at once; each answered (for a
    /// stream: its response head) within `timeout`.
    pub fn new(max: usize, timeout: std::time::Duration) -> Self {
        Self {
            in_flight: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
            timeout,
        }
    }
}

impl<S> tower_layer::Layer<S> for GuardLayer {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    layer: GuardLayer,
}

impl<S, B, ResBody> Service<Request<B>> for Guarded<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Response<ResBody>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if !guarded_path(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        let refuse = |e: EngineError| {
            let response = tonic::Status::from(e).into_http::<ResBody>();
            Box::pin(async move { Ok(response) }) as Self::Future
        };
        let Ok(permit) = Arc::clone(&self.layer.in_flight).try_acquire_owned() else {
            return refuse(EngineError::Exhausted(format!(
                "the router is handling {} calls (server.max_calls_in_flight); retry",
                self.layer.max
            )));
        };
        let timeout = timed(request.uri().path()).then_some(self.layer.timeout);
        let call = self.inner.call(request);
        Box::pin(async move {
            let Some(timeout) = timeout else {
                let answered = call.await;
                drop(permit);
                return answered;
            };
            let answered = tokio::time::timeout(timeout, call).await;
            drop(permit);
            match answered {
                Ok(response) => response,
                Err(_) => Ok(tonic::Status::from(EngineError::Timeout(format!(
                    "no answer within {} (server.call_timeout)",
                    humantime::format_duration(timeout)
                )))
                .into_http::<ResBody>()),
            }
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
