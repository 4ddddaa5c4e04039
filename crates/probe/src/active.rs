//! Active probing: every interval, one HTTP GET or one `grpc.health.v1`
//! Check of the bot, with a timeout. Each probe is one sample in the window:
//! its latency and whether it succeeded. A probe that timed out is a
//! failure whose latency is at least the timeout, never less: a hung bot
//! then shows in the P95 as well as in the error rate, and trips the
//! router's P95 gate when the timeout exceeds `sla_factor` × its SLA (see
//! `ProbeConfig::timeout`).
//!
//! Probes run one after another: a bot that hangs gets one probe per
//! timeout, never a pile of them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tracing::{Instrument, debug, info_span, warn};

use crate::config::ActiveProbe;
use crate::error::ProbeError;
use crate::shared::{Shared, stopped};

/// A health answer body larger than this is an error (and is not read).
const MAX_BODY: usize = 64 * 1024;
/// At most one warning about failing probes per this period.
const LOG_EVERY: Duration = Duration::from_secs(10);

enum Checker {
    Http {
        client: Client<HttpConnector, Empty<Bytes>>,
        url: Uri,
    },
    Grpc {
        client: HealthClient<Channel>,
        service: String,
    },
}

impl Checker {
    fn new(probe: &ActiveProbe, timeout: Duration) -> Result<Self, ProbeError> {
        Ok(match probe {
            ActiveProbe::Http { url } => {
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(timeout));
                connector.set_nodelay(true);
                let client = Client::builder(TokioExecutor::new())
                    .pool_max_idle_per_host(1)
                    .build(connector);
                Checker::Http {
                    client,
                    url: url.clone(),
                }
            }
            ActiveProbe::Grpc { url, service } => {
                let endpoint = Endpoint::from_shared(url.clone())
                    .map_err(|e| ProbeError::config("--grpc-health", e.to_string()))?
                    .connect_timeout(timeout)
                    .timeout(timeout);
                Checker::Grpc {
                    client: HealthClient::new(endpoint.connect_lazy()),
                    service: service.clone(),
                }
            }
        })
    }

    /// One probe; the error says why it failed.
    async fn check(&mut self) -> Result<(), String> {
        match self {
            Checker::Http { client, url } => {
                let response = client
                    .get(url.clone())
                    .await
                    .map_err(|e| format!("GET failed: {e}"))?;
                let status = response.status();
                // Read the body so the connection can be reused.
                Limited::new(response.into_body(), MAX_BODY)
                    .collect()
                    .await
                    .map_err(|e| format!("reading the answer: {e}"))?;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("answered {status}"))
                }
            }
            Checker::Grpc { client, service } => {
                let request = HealthCheckRequest {
                    service: service.clone(),
                };
                let reply = client
                    .check(request)
                    .await
                    .map_err(|s| format!("check failed: {:?} {}", s.code(), s.message()))?;
                match ServingStatus::try_from(reply.into_inner().status) {
                    Ok(ServingStatus::Serving) => Ok(()),
                    Ok(other) => Err(format!("status {}", other.as_str_name())),
                    Err(_) => Err("unknown serving status".to_owned()),
                }
            }
        }
    }
}

/// The latency a probe counts as: what it took, and at least `timeout`
/// when it timed out. (A failure reported by the clients' own connect or
/// call timeouts, set to the same value, counts as what it took.)
fn probe_latency(elapsed: Duration, timed_out: bool, timeout: Duration) -> Duration {
    if timed_out {
        elapsed.max(timeout)
    } else {
        elapsed
    }
}

/// The active prober of one bot.
pub(crate) struct Prober {
    checker: Checker,
    target: String,
    interval: Duration,
    timeout: Duration,
}

impl Prober {
    pub fn new(
        probe: &ActiveProbe,
        interval: Duration,
        timeout: Duration,
    ) -> Result<Self, ProbeError> {
        let target = match probe {
            ActiveProbe::Http { url } => url.to_string(),
            ActiveProbe::Grpc { url, .. } => url.clone(),
        };
        Ok(Self {
            checker: Checker::new(probe, timeout)?,
            target,
            interval,
            timeout,
        })
    }

    /// Probes the bot every interval until `stop` turns true.
    pub async fn run(mut self, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
        let span = info_span!("active_probe", bot = %shared.bot, target = %self.target);
        let (interval, timeout) = (self.interval, self.timeout);
        async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // A flapping bot must not flood the logs: one warning per
            // LOG_EVERY, with the number of failures it stands for.
            let mut last_warning: Option<Instant> = None;
            let mut failures = 0u64;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stopped(&mut stop) => return,
                }
                let start = Instant::now();
                let (result, timed_out) = tokio::select! {
                    result = tokio::time::timeout(timeout, self.checker.check()) => match result {
                        Ok(result) => (result, false),
                        Err(_) => (
                            Err(format!(
                                "no answer within {}",
                                humantime::format_duration(timeout)
                            )),
                            true,
                        ),
                    },
                    () = stopped(&mut stop) => return,
                };
                let latency = probe_latency(start.elapsed(), timed_out, timeout);
                shared.record(latency, result.is_ok());
                shared.probes.fetch_add(1, Ordering::Relaxed);
                let latency_ms = latency.as_secs_f64() * 1000.0;
                match result {
                    Ok(()) => debug!(latency_ms, "probe ok"),
                    Err(error) => {
                        failures += 1;
                        if last_warning.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
                            warn!(%error, latency_ms, failures, "probe failed");
                            last_warning = Some(Instant::now());
                            failures = 0;
                        } else {
                            debug!(%error, latency_ms, "probe failed");
                        }
                    }
                }
            }
        }
        .instrument(span)
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timed_out_probe_counts_at_least_the_timeout() {
        let timeout = Duration::from_millis(2500);
        let early = Duration::from_millis(2499);
        assert_eq!(probe_latency(early, true, timeout), timeout);
        let late = Duration::from_millis(2503);
        assert_eq!(probe_latency(late, true, timeout), late);
        let answered = Duration::from_millis(40);
        assert_eq!(probe_latency(answered, false, timeout), answered);
    }
}
