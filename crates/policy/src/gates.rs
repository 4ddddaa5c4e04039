//! The gates of SPEC §2.7, in their order; the first that fails decides.
//! They read the contact's authoritative state, so they run under its lock.

use std::time::Duration;

use crate::config::Config;
use crate::contact::ContactState;
use crate::decision::{Decision, GateCheck};
use crate::health::{HealthReport, HealthStatus, assess_health};
use crate::{UnixMs, ms};

/// What the gates look at for one request.
pub struct GateInput<'a> {
    pub contact: &'a ContactState,
    pub source: &'a str,
    pub target: &'a str,
    pub target_health: Option<&'a HealthReport>,
    pub target_sla: Duration,
    pub now: UnixMs,
}

/// The first failing gate.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub decision: Decision,
    pub reason: String,
    pub retry_after: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GateResult {
    pub checks: Vec<GateCheck>,
    pub failure: Option<Failure>,
}

/// Only the ownership gate: what an escalation to a human must pass.
pub fn ownership(input: &GateInput<'_>) -> GateResult {
    let mut checks = Vec::with_capacity(1);
    let failure = check_owner(input, &mut checks);
    GateResult { checks, failure }
}

fn check_owner(input: &GateInput<'_>, checks: &mut Vec<GateCheck>) -> Option<Failure> {
    let c = input.contact;
    if c.with_human() {
        return fail(
            checks,
            "ownership",
            Decision::NotOwner,
            "with human".into(),
            None,
        );
    }
    if c.owner != input.source {
        let why = format!("contact is owned by '{}', not '{}'", c.owner, input.source);
        return fail(checks, "ownership", Decision::NotOwner, why, None);
    }
    checks.push(GateCheck::new(
        "ownership",
        true,
        format!("'{}' owns the contact", c.owner),
    ));
    None
}

/// Every gate, in order.
pub fn run_gates(config: &Config, input: &GateInput<'_>) -> GateResult {
    let mut checks = Vec::with_capacity(5);
    let failure = check_owner(input, &mut checks)
        .or_else(|| check_depth(config, input, &mut checks))
        .or_else(|| check_circular(config, input, &mut checks))
        .or_else(|| check_rate(config, input, &mut checks))
        .or_else(|| check_health(config, input, &mut checks));
    GateResult { checks, failure }
}

fn fail(
    checks: &mut Vec<GateCheck>,
    gate: &str,
    decision: Decision,
    reason: String,
    retry_after: Option<Duration>,
) -> Option<Failure> {
    checks.push(GateCheck::new(gate, false, reason.clone()));
    Some(Failure {
        decision,
        reason,
        retry_after,
    })
}

fn check_depth(
    config: &Config,
    input: &GateInput<'_>,
    checks: &mut Vec<GateCheck>,
) -> Option<Failure> {
    let depth = input.contact.chain_depth(config, input.now);
    let max = config.policy.max_chain_depth;
    if depth >= max {
        let why = format!("{depth} handoffs in the active chain (max {max}): escalated to a human");
        return fail(checks, "depth", Decision::EscalatedHuman, why, None);
    }
    checks.push(GateCheck::new(
        "depth",
        true,
        format!("{depth} of {max} handoffs in the chain"),
    ));
    None
}

fn check_circular(
    config: &Config,
    input: &GateInput<'_>,
    checks: &mut Vec<GateCheck>,
) -> Option<Failure> {
    let since = input.now - ms(config.policy.circular_window);
    let mins = config.policy.circular_window.as_secs() / 60;
    for e in input.contact.handoffs_after(since) {
        if e.from == input.source && e.to == input.target {
            let why = format!(
                "{}>{} already approved in the last {mins} min",
                e.from, e.to
            );
            return fail(checks, "circular", Decision::BlockedCircular, why, None);
        }
        if e.from == input.target {
            let why = format!(
                "contact left '{}' in the last {mins} min: no bounce back",
                e.from
            );
            return fail(checks, "circular", Decision::BlockedCircular, why, None);
        }
    }
    checks.push(GateCheck::new(
        "circular",
        true,
        format!("no loop in the last {mins} min"),
    ));
    None
}

fn check_rate(
    config: &Config,
    input: &GateInput<'_>,
    checks: &mut Vec<GateCheck>,
) -> Option<Failure> {
    let p = &config.policy;
    let windows = [
        (p.rate_window_short, p.max_per_hour),
        (p.rate_window_long, p.max_per_day),
    ];
    for (window, max) in windows {
        let since = input.now - ms(window);
        let mut recent = input.contact.handoffs_after(since);
        let Some(oldest) = recent.next() else {
            continue;
        };
        let count = 1 + recent.count() as u32;
        if count >= max {
            let retry = Duration::from_millis((oldest.at + ms(window) - input.now).max(1) as u64);
            let why = format!(
                "{count} handoffs in the last {} (max {max})",
                window_name(window)
            );
            return fail(checks, "rate", Decision::RateLimited, why, Some(retry));
        }
    }
    checks.push(GateCheck::new(
        "rate",
        true,
        "within the hourly and daily limits".into(),
    ));
    None
}

/// "hour", "24 h", "90 min": how a rate window reads in a gate's detail.
fn window_name(window: Duration) -> String {
    match window.as_secs() {
        3600 => "hour".to_owned(),
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        _ => format!("{} s", window.as_secs_f64()),
    }
}

fn check_health(
    config: &Config,
    input: &GateInput<'_>,
    checks: &mut Vec<GateCheck>,
) -> Option<Failure> {
    let status = assess_health(
        input.target_health,
        input.target_sla,
        &config.health,
        input.now,
    );
    let retry = Some(config.health.retry_after);
    match status {
        HealthStatus::Healthy(detail) => {
            checks.push(GateCheck::new(
                "health",
                true,
                format!("'{}': {detail}", input.target),
            ));
            None
        }
        HealthStatus::Unknown if !config.health.strict => {
            let detail = format!("'{}' has no probe reports; allowed", input.target);
            checks.push(GateCheck::new("health", true, detail));
            None
        }
        other => {
            let why = format!("'{}' is unhealthy: {}", input.target, other.detail());
            fail(checks, "health", Decision::DeferredUnhealthy, why, retry)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contact::EntryKind;
    use crate::context::ContextPacket;

    const MIN: UnixMs = 60_000;
    const HOUR: UnixMs = 60 * MIN;
    const NOW: UnixMs = 1_000 * HOUR;

    /// A contact that went through `moves` (from, to, minutes before NOW).
    fn contact(owner: &str, moves: &[(&str, &str, i64)]) -> ContactState {
        let config = Config::default();
        let mut c = ContactState::new(moves.first().map_or(owner, |m| m.0), 0);
        for (i, (from, to, ago)) in moves.iter().enumerate() {
            if c.owner != *from {
                c.release(from, "test", &config, NOW - ago * MIN);
            }
            let id = format!("h{i}");
            let at = NOW - ago * MIN;
            c.hand_over(
                EntryKind::Handoff,
                &id,
                to,
                "p",
                0.9,
                "",
                ContextPacket::default(),
                &[],
                &config,
                at,
            );
        }
        if c.owner != owner {
            c.release(owner, "test", &config, NOW - MIN / 2);
        }
        c
    }

    fn gates(c: &ContactState, source: &str, target: &str) -> GateResult {
        gates_with(&Config::default(), c, source, target, None)
    }

    fn gates_with(
        config: &Config,
        c: &ContactState,
        source: &str,
        target: &str,
        health: Option<&HealthReport>,
    ) -> GateResult {
        let input = GateInput {
            contact: c,
            source,
            target,
            target_health: health,
            target_sla: Duration::from_millis(1800),
            now: NOW,
        };
        run_gates(config, &input)
    }

    fn decision(r: &GateResult) -> Option<Decision> {
        r.failure.as_ref().map(|f| f.decision)
    }

    #[test]
    fn a_new_contact_passes_every_gate_in_order() {
        let r = gates(&ContactState::new("lead", NOW), "lead", "seller");
        assert_eq!(decision(&r), None);
        let names: Vec<&str> = r.checks.iter().map(|c| c.gate.as_str()).collect();
        assert_eq!(names, ["ownership", "depth", "circular", "rate", "health"]);
    }

    #[test]
    fn only_the_owner_may_hand_off_and_a_human_owner_blocks_bots() {
        let c = ContactState::new("seller", NOW);
        assert_eq!(
            decision(&gates(&c, "lead", "buyer")),
            Some(Decision::NotOwner)
        );
        let human = ContactState::new(crate::HUMAN, NOW);
        let r = gates(&human, "lead", "buyer");
        assert_eq!(r.failure.unwrap().reason, "with human");
    }

    #[test]
    fn same_pair_blocked_at_29_minutes_allowed_at_31() {
        // The contact went lead>seller, then was released back to lead.
        let c29 = contact("lead", &[("lead", "seller", 29)]);
        assert_eq!(
            decision(&gates(&c29, "lead", "seller")),
            Some(Decision::BlockedCircular)
        );
        let c31 = contact("lead", &[("lead", "seller", 31)]);
        assert_eq!(decision(&gates(&c31, "lead", "seller")), None);
    }

    #[test]
    fn bouncing_back_to_a_bot_the_contact_just_left_is_circular() {
        let c = contact("buyer", &[("lead", "seller", 20), ("seller", "buyer", 10)]);
        let r = gates(&c, "buyer", "seller");
        assert_eq!(decision(&r), Some(Decision::BlockedCircular));
        assert!(r.failure.unwrap().reason.contains("left 'seller'"));
    }

    #[test]
    fn fourth_handoff_in_a_chain_escalates() {
        // Spread out so neither the loop nor the rate gate fires first.
        let c = contact(
            "lead",
            &[
                ("lead", "seller", 360),
                ("seller", "buyer", 240),
                ("buyer", "lead", 120),
            ],
        );
        assert_eq!(c.chain_depth(&Config::default(), NOW), 3);
        assert_eq!(
            decision(&gates(&c, "lead", "seller")),
            Some(Decision::EscalatedHuman)
        );
    }

    #[test]
    fn a_24h_gap_or_a_release_starts_a_new_chain() {
        let config = Config::default();
        let old = contact(
            "lead",
            &[
                ("lead", "seller", 25 * 60),
                ("seller", "buyer", 24 * 60 + 30),
                ("buyer", "lead", 24 * 60 + 10),
            ],
        );
        assert_eq!(old.chain_depth(&config, NOW), 0);
        let released = contact("lead", &[("lead", "seller", 360), ("seller", "buyer", 240)]);
        assert_eq!(released.chain_depth(&config, NOW), 0);
    }

    #[test]
    fn fourth_handoff_within_an_hour_is_rate_limited() {
        // Operator releases reset the chain, so the depth gate does not fire first.
        let c = contact(
            "lead",
            &[
                ("lead", "seller", 50),
                ("lead", "buyer", 40),
                ("lead", "seller", 35),
            ],
        );
        let r = gates(&c, "lead", "buyer");
        let f = r.failure.unwrap();
        assert_eq!(f.decision, Decision::RateLimited);
        assert_eq!(f.retry_after, Some(Duration::from_secs(10 * 60)));
        // Three within the hour, but the first 61 minutes ago: allowed.
        let c = contact(
            "lead",
            &[
                ("lead", "seller", 61),
                ("lead", "buyer", 40),
                ("lead", "seller", 35),
            ],
        );
        assert_eq!(decision(&gates(&c, "lead", "buyer")), None);
    }

    #[test]
    fn the_rate_windows_are_configuration() {
        let mut config = Config::default();
        config.policy.rate_window_short = Duration::from_secs(2 * 3600);
        let c = contact(
            "lead",
            &[
                ("lead", "seller", 100),
                ("lead", "buyer", 90),
                ("lead", "seller", 80),
            ],
        );
        // Outside the default hour, inside a two-hour window.
        assert_eq!(decision(&gates(&c, "lead", "buyer")), None);
        let f = gates_with(&config, &c, "lead", "buyer", None)
            .failure
            .unwrap();
        assert_eq!(f.decision, Decision::RateLimited);
        assert_eq!(f.reason, "3 handoffs in the last 2 h (max 3)");
        assert_eq!(f.retry_after, Some(Duration::from_secs(20 * 60)));
        config.policy.rate_window_short = Duration::from_secs(10 * 60);
        config.policy.rate_window_long = Duration::from_secs(105 * 60);
        config.policy.max_per_day = 3;
        let f = gates_with(&config, &c, "lead", "buyer", None)
            .failure
            .unwrap();
        assert_eq!(f.reason, "3 handoffs in the last 105 min (max 3)");
    }

    #[test]
    fn eleventh_handoff_within_24h_is_rate_limited() {
        let targets = ["seller", "buyer"];
        let ten: Vec<(&str, &str, i64)> = (0..10)
            .map(|i| ("lead", targets[i % 2], 23 * 60 - i as i64 * 120))
            .collect();
        let c = contact("lead", &ten);
        assert_eq!(c.handoffs_after(NOW - 24 * HOUR).count(), 10);
        let r = gates(&c, "lead", "seller");
        assert_eq!(decision(&r), Some(Decision::RateLimited));
        assert!(r.failure.unwrap().reason.contains("24 h"));
        let nine = contact("lead", &ten[1..]);
        assert_eq!(decision(&gates(&nine, "lead", "seller")), None);
    }

    #[test]
    fn unhealthy_target_defers_with_retry_after() {
        let config = Config::default();
        let c = ContactState::new("lead", NOW);
        let slow = HealthReport {
            bot: "buyer".into(),
            sample_count: 100,
            p95_ms: 2500.0,
            received_at: NOW - 1000,
            ..Default::default()
        };
        let r = gates_with(&config, &c, "lead", "buyer", Some(&slow));
        let f = r.failure.unwrap();
        assert_eq!(f.decision, Decision::DeferredUnhealthy);
        assert_eq!(f.retry_after, Some(config.health.retry_after));
        let strict = Config {
            health: crate::config::HealthConfig {
                strict: true,
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            decision(&gates_with(&strict, &c, "lead", "buyer", None)),
            Some(Decision::DeferredUnhealthy)
        );
    }
}
