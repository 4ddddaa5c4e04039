//! The probe's local HTTP endpoint: `POST /observe`, where the bot pushes
//! the latency and outcome of its real requests, and `GET /healthz`, the
//! probe's own liveness.
//!
//! Posting must never slow the bot: an observation is parsed, offered to a
//! bounded queue without waiting, and answered `202` at once. When the
//! queue is full the observation is dropped and counted (`/healthz` shows
//! the count, the reporter logs it). One drainer task empties the queue
//! into the window in batches, so the window's lock is taken once per batch
//! and never by a request handler.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::error::ProbeError;
use crate::shared::{Shared, stopped};

/// An observation is a few dozen bytes; anything much larger is a mistake.
const MAX_BODY: usize = 4096;
/// Observations moved into the window per lock.
const BATCH: usize = 256;
/// How often drops, if any, are logged.
const LOG_DROPS_EVERY: Duration = Duration::from_secs(10);

/// What the bot posts: `{"latency_ms": 123.4, "ok": true}`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observation {
    /// How long the bot took to answer one real request.
    pub latency_ms: f64,
    /// Whether it answered successfully.
    pub ok: bool,
}

impl Observation {
    /// Parses and checks a posted body; the error names the field.
    pub fn parse(body: &[u8]) -> Result<Self, ProbeError> {
        let o: Observation =
            serde_json::from_slice(body).map_err(|e| ProbeError::Observation(e.to_string()))?;
        if !(o.latency_ms.is_finite() && o.latency_ms >= 0.0) {
            return Err(ProbeError::Observation(format!(
                "field 'latency_ms' must be a finite number >= 0, got {}",
                o.latency_ms
            )));
        }
        Ok(o)
    }

    fn sample(self) -> (Duration, bool) {
        (
            Duration::from_secs_f64(self.latency_ms.min(1e9) / 1000.0),
            self.ok,
        )
    }
}

#[derive(Clone)]
struct Handler {
    shared: Arc<Shared>,
    queue: mpsc::Sender<(Duration, bool)>,
}

/// Serves `listener` until `stop`; connections still open then are asked
/// to close after their current request.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    capacity: usize,
    mut stop: watch::Receiver<bool>,
) {
    let (queue, rx) = mpsc::channel(capacity);
    tokio::spawn(drain(rx, Arc::clone(&shared)));
    tokio::spawn(log_drops(Arc::clone(&shared), stop.clone()));
    let handler = Handler { shared, queue };
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: wait a little
                    // rather than spin.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => return,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler.handle(req).await) }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(error) = result {
                debug!(%error, "connection ended with an error");
            }
        });
    }
}

/// Logs how many observations were dropped, when some were, every
/// `LOG_DROPS_EVERY`: a steady trickle of drops is one line, not thousands.
async fn log_drops(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(LOG_DROPS_EVERY);
    let mut logged = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stopped(&mut stop) => return,
        }
        let dropped = shared.dropped.load(Ordering::Relaxed);
        if dropped > logged {
            warn!(
                dropped = dropped - logged,
                total = dropped,
                "observations dropped: the queue was full"
            );
            logged = dropped;
        }
    }
}

/// Moves queued observations into the window until every sender is gone.
async fn drain(mut rx: mpsc::Receiver<(Duration, bool)>, shared: Arc<Shared>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        shared.record_all(&batch);
        batch.clear();
    }
}

impl Handler {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match (req.method(), req.uri().path()) {
            (&Method::POST, "/observe") => self.observe(req).await,
            (&Method::GET, "/healthz") => match serde_json::to_vec(&self.shared.status()) {
                Ok(body) => json(StatusCode::OK, body),
                Err(e) => message(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            },
            (_, "/observe") => not_allowed("POST"),
            (_, "/healthz") => not_allowed("GET"),
            _ => message(
                StatusCode::NOT_FOUND,
                "no such path: try /observe or /healthz",
            ),
        }
    }

    async fn observe(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => {
                return message(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot read the body (at most {MAX_BODY} bytes): {e}"),
                );
            }
        };
        let observation = match Observation::parse(&body) {
            Ok(o) => o,
            Err(e) => return message(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        match self.queue.try_send(observation.sample()) {
            Ok(()) => {
                self.shared.observed.fetch_add(1, Ordering::Relaxed);
                json(StatusCode::ACCEPTED, br#"{"queued":true}"#.to_vec())
            }
            Err(_) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                json(StatusCode::ACCEPTED, br#"{"queued":false}"#.to_vec())
            }
        }
    }
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// `{"error": "..."}` with `status`.
fn message(status: StatusCode, error: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": error }).to_string();
    json(status, body.into_bytes())
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = message(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_parse_and_bad_ones_name_the_problem() {
        assert_eq!(
            Observation::parse(br#"{"latency_ms": 123.4, "ok": true}"#).unwrap(),
            Observation {
                latency_ms: 123.4,
                ok: true
            }
        );
        let err = |body: &[u8]| Observation::parse(body).unwrap_err().to_string();
        assert!(
            err(b"{").starts_with("invalid observation: EOF"),
            "{}",
            err(b"{")
        );
        assert!(err(br#"{"ok": true}"#).contains("missing field `latency_ms`"));
        assert!(err(br#"{"latency_ms": 1, "ok": true, "x": 1}"#).contains("unknown field `x`"));
        assert!(
            err(br#"{"latency_ms": -1, "ok": true}"#)
                .contains("field 'latency_ms' must be a finite number >= 0, got -1")
        );
        assert!(err(br#"{"latency_ms": "fast", "ok": true}"#).contains("invalid type"));
    }

    #[test]
    fn a_sample_keeps_the_latency_and_the_outcome() {
        let o = Observation {
            latency_ms: 1500.0,
            ok: false,
        };
        assert_eq!(o.sample(), (Duration::from_millis(1500), false));
    }
}
