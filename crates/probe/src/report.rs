//! Reporting to the router: one long-lived `HealthService.ReportHealth`
//! client stream, fed a report every interval.
//!
//! Reports go through a small channel that is offered to, never waited on:
//! if the router stops reading, reports are skipped, not queued. When the
//! router is away or ends the stream (it answers an invalid report with an
//! error status, which is logged), the reporter tries the next router URL
//! after an exponential backoff with jitter. Measuring goes on meanwhile:
//! it does not depend on this task.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use baton_proto::v1::health_service_client::HealthServiceClient;
use baton_proto::v1::{ReportHealthRequest, ReportHealthResponse};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Endpoint;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::shared::{Shared, stopped};

/// Reports waiting for the stream; more means the router is not reading.
const PENDING_REPORTS: usize = 4;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 pings that notice a router gone silently (a cut network) rather
/// than with a reset.
const KEEPALIVE: Duration = Duration::from_secs(10);
/// How long the last reports may take to reach the router at shutdown.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Exponential backoff with "equal jitter": each delay is drawn from
/// [d/2, d], and d doubles up to `max`. The jitter keeps a fleet of probes
/// from reconnecting in lockstep after a router restart.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    /// The next delay, given a random number.
    pub fn delay(&mut self, random: u64) -> Duration {
        let full = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = full / 2;
        let spread = (full - half).as_nanos() as u64;
        half + Duration::from_nanos(random % spread.saturating_add(1))
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// A random number without a generator crate: std's randomly keyed hasher.
fn random() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

pub(crate) struct Reporter {
    pub routers: Vec<String>,
    /// `Bearer <token>`, when the router requires one.
    pub authorization: Option<MetadataValue<Ascii>>,
    /// TLS towards the router, when configured.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    pub every: Duration,
    pub backoff: Backoff,
    pub shared: Arc<Shared>,
}

/// How a stream to a router ended.
enum Ended {
    Stopped,
    Broken,
}

impl Reporter {
    /// Keeps a report stream open to one of the routers until `stop`.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let span = info_span!("reporter", bot = %self.shared.bot);
        async move {
            let mut ix = 0;
            loop {
                let router = self.routers[ix % self.routers.len()].clone();
                ix = ix.wrapping_add(1);
                let opened = Instant::now();
                match self.stream(&router, &mut stop).await {
                    Ok(Ended::Stopped) => return,
                    Ok(Ended::Broken) => {
                        // A stream that lived a while was a good connection:
                        // start over from the shortest delay.
                        if opened.elapsed() >= self.backoff.max {
                            self.backoff.reset();
                        }
                    }
                    Err(e) => warn!(%router, error = %e, "cannot reach the router"),
                }
                self.shared.set_router(None);
                let delay = self.backoff.delay(random());
                debug!(
                    delay_ms = delay.as_millis() as u64,
                    "reconnecting after a delay"
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stopped(&mut stop) => return,
                }
            }
        }
        .instrument(span)
        .await;
    }

    /// Connects to `router` and streams reports until the stream ends.
    async fn stream(
        &mut self,
        router: &str,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Ended, tonic::transport::Error> {
        let endpoint = Endpoint::from_shared(router.to_owned())?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(KEEPALIVE)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        let endpoint = match &self.tls {
            Some(tls) => endpoint.tls_config(tls.clone())?,
            None => endpoint,
        };
        let channel = tokio::select! {
            channel = endpoint.connect() => channel?,
            () = stopped(stop) => return Ok(Ended::Stopped),
        };
        let (tx, rx) = mpsc::channel(PENDING_REPORTS);
        let mut client = HealthServiceClient::new(channel);
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        let call = client.report_health(request);
        tokio::pin!(call);
        info!(%router, "connected to the router");
        self.shared.set_router(Some(router));
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                result = &mut call => {
                    log_end(router, result);
                    return Ok(Ended::Broken);
                }
                _ = tick.tick() => self.send(&tx, router),
                () = stopped(stop) => {
                    // Ending the request stream lets the router answer.
                    drop(tx);
                    match tokio::time::timeout(CLOSE_GRACE, &mut call).await {
                        Ok(result) => log_end(router, result),
                        Err(_) => warn!(%router, "the router did not close the report stream in time"),
                    }
                    return Ok(Ended::Stopped);
                }
            }
        }
    }

    /// Offers the report of the window as it is now to the stream.
    fn send(&self, tx: &mpsc::Sender<ReportHealthRequest>, router: &str) {
        let report = self.shared.report();
        debug!(
            samples = report.sample_count,
            p95_ms = report.p95_ms,
            error_rate = report.error_rate,
            "report"
        );
        let request = ReportHealthRequest {
            report: Some(report),
        };
        match tx.try_send(request) {
            Ok(()) => {
                self.shared.reports_sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => warn!(%router, "the router is not reading reports: one skipped"),
        }
    }
}

/// Logs how a report stream ended: the router's answer when it closed
/// cleanly, its verdict when it rejected a report, or the broken transport.
fn log_end(router: &str, result: Result<tonic::Response<ReportHealthResponse>, tonic::Status>) {
    match result {
        Ok(reply) => info!(
            %router,
            accepted = reply.into_inner().accepted,
            "report stream closed"
        ),
        Err(status) if is_verdict(status.code()) => error!(
            %router,
            code = ?status.code(),
            detail = status.message(),
            "the router rejected a report"
        ),
        Err(status) => warn!(
            %router,
            code = ?status.code(),
            detail = status.message(),
            "report stream broken"
        ),
    }
}

/// Codes by which the router judges a report rather than report trouble
/// on the way: retrying will not help until the probe is reconfigured.
fn is_verdict(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::InvalidArgument
            | tonic::Code::PermissionDenied
            | tonic::Code::Unauthenticated
            | tonic::Code::FailedPrecondition
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_within_each_step() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(100), ms(1000));
        let steps = [100, 200, 400, 800, 1000, 1000];
        for full in steps {
            let mut b = backoff.clone();
            let lowest = b.delay(0);
            let highest = backoff.delay(u64::MAX);
            assert_eq!(lowest, ms(full / 2), "step {full}");
            assert!(
                highest >= ms(full / 2) && highest <= ms(full),
                "{highest:?}"
            );
        }
        backoff.reset();
        assert!(backoff.delay(random()) <= ms(100));
    }

    #[test]
    fn random_numbers_differ() {
        let draws: std::collections::HashSet<u64> = (0..100).map(|_| random()).collect();
        assert!(draws.len() > 90);
    }
}
