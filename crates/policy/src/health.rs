//! Whether a bot is fit to take a contact (SPEC §2.7.5, §4).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::HealthConfig;
use crate::{UnixMs, ms};

/// The latest report a probe sent for a bot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    pub bot: String,
    pub window_ms: u64,
    pub sample_count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub error_rate: f64,
    /// The probe's clock, when it computed the report.
    pub observed_at: UnixMs,
    /// The router's clock, when the report arrived: staleness is judged on it.
    pub received_at: UnixMs,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HealthStatus {
    Healthy(String),
    Unhealthy(String),
    Stale(String),
    /// Never reported: no probe deployed.
    Unknown,
}

impl HealthStatus {
    pub fn detail(&self) -> &str {
        match self {
            HealthStatus::Healthy(d) | HealthStatus::Unhealthy(d) | HealthStatus::Stale(d) => d,
            HealthStatus::Unknown => "no report yet",
        }
    }
}

/// Judges a bot from its latest report at `now`, the router's clock.
/// Reports over fewer than `min_samples` samples are not evidence either way.
///
/// Silence is measured from `received_at`, stamped by the router that took
/// the report, never from `observed_at`: that is the probe's clock, on
/// another machine, and any skew larger than `stale_after` would turn a
/// healthy bot stale (or keep a silent one fresh).
pub fn assess_health(
    report: Option<&HealthReport>,
    sla: Duration,
    config: &HealthConfig,
    now: UnixMs,
) -> HealthStatus {
    let Some(r) = report else {
        return HealthStatus::Unknown;
    };
    let age = now - r.received_at;
    if age > ms(config.stale_after) {
        return HealthStatus::Stale(format!(
            "last report {}s ago (stale after {}s)",
            age / 1000,
            config.stale_after.as_secs()
        ));
    }
    if r.sample_count < config.min_samples {
        return HealthStatus::Healthy(format!(
            "{} samples, fewer than {} needed to judge",
            r.sample_count, config.min_samples
        ));
    }
    let limit = sla.as_secs_f64() * 1000.0 * config.sla_factor;
    if r.p95_ms > limit {
        return HealthStatus::Unhealthy(format!(
            "p95 {:.0}ms above {:.0}ms ({} x sla)",
            r.p95_ms, limit, config.sla_factor
        ));
    }
    if r.error_rate > config.max_error_rate {
        return HealthStatus::Unhealthy(format!(
            "error rate {:.1}% above {:.1}%",
            r.error_rate * 100.0,
            config.max_error_rate * 100.0
        ));
    }
    HealthStatus::Healthy(format!(
        "p95 {:.0}ms, error rate {:.1}% over {} samples",
        r.p95_ms,
        r.error_rate * 100.0,
        r.sample_count
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(p95: f64, errors: f64, samples: u64, received_at: UnixMs) -> HealthReport {
        HealthReport {
            bot: "buyer".into(),
            sample_count: samples,
            p95_ms: p95,
            error_rate: errors,
            received_at,
            ..Default::default()
        }
    }

    fn status(r: Option<&HealthReport>, now: UnixMs) -> HealthStatus {
        assess_health(
            r,
            Duration::from_millis(1800),
            &HealthConfig::default(),
            now,
        )
    }

    #[test]
    fn p95_above_1_2_sla_is_unhealthy_and_at_it_is_not() {
        assert!(matches!(
            status(Some(&report(2500.0, 0.0, 100, 0)), 0),
            HealthStatus::Unhealthy(_)
        ));
        assert!(matches!(
            status(Some(&report(2160.0, 0.0, 100, 0)), 0),
            HealthStatus::Healthy(_)
        ));
        assert!(matches!(
            status(Some(&report(2161.0, 0.0, 100, 0)), 0),
            HealthStatus::Unhealthy(_)
        ));
    }

    #[test]
    fn error_rate_above_ten_percent_over_enough_samples() {
        assert!(matches!(
            status(Some(&report(100.0, 0.2, 100, 0)), 0),
            HealthStatus::Unhealthy(_)
        ));
        assert!(matches!(
            status(Some(&report(100.0, 0.1, 100, 0)), 0),
            HealthStatus::Healthy(_)
        ));
        assert!(matches!(
            status(Some(&report(100.0, 0.5, 19, 0)), 0),
            HealthStatus::Healthy(_)
        ));
    }

    #[test]
    fn silence_past_stale_after_is_stale_and_no_report_is_unknown() {
        let r = report(100.0, 0.0, 100, 0);
        assert!(matches!(status(Some(&r), 30_000), HealthStatus::Healthy(_)));
        assert!(matches!(status(Some(&r), 30_001), HealthStatus::Stale(_)));
        assert_eq!(status(None, 0), HealthStatus::Unknown);
    }

    /// The sender's clock is another machine's: a probe an hour behind (or
    /// ahead) says nothing about how long the bot has been silent. Only
    /// the router's receive time counts.
    #[test]
    fn staleness_ignores_the_senders_clock() {
        const NOW: UnixMs = 1_700_000_000_000;
        const HOUR: UnixMs = 3_600_000;
        let stale_after = ms(HealthConfig::default().stale_after);
        for skew in [-HOUR, -(stale_after + 1), stale_after + 1, HOUR] {
            let fresh = HealthReport {
                observed_at: NOW - 1_000 + skew,
                ..report(100.0, 0.0, 100, NOW - 1_000)
            };
            assert_eq!(
                status(Some(&fresh), NOW),
                HealthStatus::Healthy("p95 100ms, error rate 0.0% over 100 samples".into()),
                "sender's clock off by {skew}ms"
            );
            // Silent past stale_after by the router's clock: stale, even
            // though the sender's clock makes the report look recent.
            let silent = HealthReport {
                observed_at: NOW + skew,
                ..report(100.0, 0.0, 100, NOW - stale_after - 1)
            };
            assert_eq!(
                status(Some(&silent), NOW),
                HealthStatus::Stale("last report 30s ago (stale after 30s)".into()),
                "sender's clock off by {skew}ms"
            );
        }
    }
}
