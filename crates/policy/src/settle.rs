//! The locked half of a decision, pure (SPEC §2 steps 6–8, §4): given what
//! the router loaded under the contact lock, the target's health and the
//! clock, [`settle`] turns a message's assessment into the verdict, the new
//! contact state and the change to the index of deferred handoffs; and
//! [`settle_deferred`] does the same for a deferred handoff retried after
//! its target recovered. The router only locks, loads, calls these, commits
//! and publishes.

use crate::config::HUMAN;
use crate::contact::{ContactState, Deferral, DeferralStatus, EntryKind};
use crate::context::ContextPacket;
use crate::decision::{Decision, GateCheck, Verdict};
use crate::gates::{self, Failure, GateInput, GateResult};
use crate::health::HealthReport;
use crate::policy::{Assessment, Next};
use crate::{Config, UnixMs, ms};

/// What a request brings besides its message's assessment.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub source: &'a str,
    pub context: &'a ContextPacket,
    pub request_id: &'a str,
}

/// How the index of pending deferred handoffs changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeferredChange {
    /// The contact now waits for this target bot to recover.
    Add(String),
    /// The contact no longer waits.
    Remove,
}

/// Everything one locked decision changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    pub verdict: Verdict,
    /// The contact's new state, when the decision changed it.
    pub contact: Option<ContactState>,
    pub deferred: Option<DeferredChange>,
    /// Whether a retry of the request needs the decision stored: only a
    /// decision that changed the contact or left a deferral; a refusal is
    /// recomputed on a retry.
    pub remember: bool,
}

impl Settlement {
    /// Whether anything must be written.
    pub fn writes(&self) -> bool {
        self.contact.is_some() || self.deferred.is_some()
    }
}

/// The target's id, or [`HUMAN`] for an escalation.
fn target_id<'c>(config: &'c Config, a: &Assessment) -> &'c str {
    a.target.map_or(HUMAN, |t| config.bots[t].id.as_str())
}

/// Settles a message's assessment (which said `Handoff` or `Escalate`)
/// against the contact as loaded under its lock (`None`: never seen, it
/// belongs to the source), the target's latest report, and `now`.
/// `handoff_id` is the id a handoff made here gets.
pub fn settle(
    config: &Config,
    a: &Assessment,
    request: Request<'_>,
    contact: Option<ContactState>,
    target_health: Option<&HealthReport>,
    now: UnixMs,
    handoff_id: &str,
) -> Settlement {
    let target = target_id(config, a);
    let mut contact = contact.unwrap_or_else(|| ContactState::new(request.source, now));
    let result = {
        let input = GateInput {
            contact: &contact,
            source: request.source,
            target,
            target_health,
            target_sla: a
                .target
                .map_or(Default::default(), |t| config.bots[t].sla_p95),
            now,
        };
        match a.next {
            Next::Escalate => gates::ownership(&input),
            _ => gates::run_gates(config, &input),
        }
    };
    let mut checks = a.checks.clone();
    checks.extend(result.checks);
    let (decision, reason, retry_after) = match result.failure {
        Some(Failure {
            decision,
            reason,
            retry_after,
        }) => (decision, reason, retry_after),
        None if a.next == Next::Escalate => (Decision::EscalatedHuman, a.reason.clone(), None),
        None => (Decision::Approved, a.reason.clone(), None),
    };
    let mut verdict = Verdict {
        decision,
        target: target.to_owned(),
        confidence: a.confidence,
        threshold: a.threshold,
        pattern: a.pattern.clone(),
        reason,
        gates: checks,
        handoff_id: String::new(),
        retry_after_ms: retry_after.map_or(0, |d| ms(d) as u64),
        pending_intents: a.pending.clone(),
        context: None,
    };
    let mut settlement = Settlement {
        verdict: verdict.clone(),
        contact: None,
        deferred: None,
        remember: decision.moves_contact() || decision == Decision::DeferredUnhealthy,
    };
    if decision == Decision::DeferredUnhealthy {
        contact.deferral = Some(Deferral {
            source: request.source.to_owned(),
            target: target.to_owned(),
            pattern: a.pattern.clone(),
            confidence: a.confidence,
            threshold: a.threshold,
            pending: a.pending.clone(),
            context: request.context.clone(),
            request_id: request.request_id.to_owned(),
            deferred_at: now,
            tries: 0,
            status: DeferralStatus::Pending,
            handoff_id: String::new(),
            detail: verdict.reason.clone(),
        });
        settlement.deferred = Some(DeferredChange::Add(target.to_owned()));
        settlement.contact = Some(contact);
        return settlement;
    }
    if !decision.moves_contact() {
        return settlement;
    }
    if let Some(d) = contact.deferral.as_mut().filter(|d| d.is_pending()) {
        d.status = DeferralStatus::Abandoned;
        d.detail = format!("superseded by a handoff to '{target}'");
        settlement.deferred = Some(DeferredChange::Remove);
    }
    let (kind, to) = match decision {
        Decision::Approved => (EntryKind::Handoff, target),
        _ => (EntryKind::Escalation, HUMAN),
    };
    contact.hand_over(
        kind,
        handoff_id,
        to,
        &a.pattern,
        a.confidence,
        &verdict.reason,
        request.context.clone(),
        &a.pending,
        config,
        now,
    );
    verdict.target = to.to_owned();
    verdict.handoff_id = handoff_id.to_owned();
    verdict.context = Some(contact.context.clone());
    settlement.verdict = verdict;
    settlement.contact = Some(contact);
    settlement
}

/// What retrying a deferred handoff changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Retried {
    /// The contact with its deferral's new status (always written).
    pub contact: ContactState,
    pub deferred: Option<DeferredChange>,
    /// The handoff made, to index and to publish, when the retry approved.
    pub approved: Option<Verdict>,
}

/// Retries `contact`'s pending deferred handoff now that its target
/// reported again: every gate again, as for a new request. It completes
/// (`APPROVED`), waits on (still unhealthy, tries left), or ends: expired
/// past `health.defer_window`, abandoned after `health.defer_max_tries` or
/// on another refusal, or when the target is no longer configured. `None`
/// when the contact has no pending deferral (the index entry is stale).
pub fn settle_deferred(
    config: &Config,
    mut contact: ContactState,
    target_health: Option<&HealthReport>,
    now: UnixMs,
    handoff_id: &str,
) -> Option<Retried> {
    let mut d = contact.deferral.clone().filter(Deferral::is_pending)?;
    let mut deferred = Some(DeferredChange::Remove);
    let mut approved = None;
    let target_ix = config.bots.iter().position(|b| b.id == d.target);
    if now - d.deferred_at > ms(config.health.defer_window) {
        d.status = DeferralStatus::Expired;
        d.detail = format!("'{}' did not recover within the defer window", d.target);
    } else if let Some(t) = target_ix {
        d.tries += 1;
        let GateResult { checks, failure } = {
            let input = GateInput {
                contact: &contact,
                source: &d.source,
                target: &d.target,
                target_health,
                target_sla: config.bots[t].sla_p95,
                now,
            };
            gates::run_gates(config, &input)
        };
        match failure {
            None => {
                let reason = format!(
                    "deferred handoff completed after '{}' recovered (try {})",
                    d.target, d.tries
                );
                contact.hand_over(
                    EntryKind::Handoff,
                    handoff_id,
                    &d.target,
                    &d.pattern,
                    d.confidence,
                    &reason,
                    d.context.clone(),
                    &d.pending,
                    config,
                    now,
                );
                d.status = DeferralStatus::Completed;
                d.handoff_id = handoff_id.to_owned();
                d.detail = reason.clone();
                approved = Some(Verdict {
                    decision: Decision::Approved,
                    target: d.target.clone(),
                    confidence: d.confidence,
                    threshold: d.threshold,
                    pattern: d.pattern.clone(),
                    reason,
                    gates: checks,
                    handoff_id: handoff_id.to_owned(),
                    retry_after_ms: 0,
                    pending_intents: d.pending.clone(),
                    context: Some(contact.context.clone()),
                });
            }
            Some(f)
                if f.decision == Decision::DeferredUnhealthy
                    && d.tries < config.health.defer_max_tries =>
            {
                d.detail = f.reason;
                deferred = None; // still waiting
            }
            Some(f) => {
                d.status = DeferralStatus::Abandoned;
                d.detail = format!("after {} tries: {}", d.tries, f.reason);
            }
        }
    } else {
        d.status = DeferralStatus::Abandoned;
        d.detail = format!("'{}' is no longer a configured bot", d.target);
    }
    contact.deferral = Some(d);
    Some(Retried {
        contact,
        deferred,
        approved,
    })
}

/// The verdict for a request whose contact lock was not acquired within
/// `policy.lock_wait`.
pub fn busy(config: &Config, a: Assessment) -> Verdict {
    let why = format!(
        "another handoff holds the contact (waited {}ms)",
        config.policy.lock_wait.as_millis()
    );
    let target = target_id(config, &a).to_owned();
    let mut checks = a.checks;
    checks.push(GateCheck::new("lock", false, why.clone()));
    Verdict {
        decision: Decision::ContactBusy,
        target,
        confidence: a.confidence,
        threshold: a.threshold,
        pattern: a.pattern,
        reason: why,
        gates: checks,
        handoff_id: String::new(),
        retry_after_ms: ms(config.policy.lock_wait) as u64,
        pending_intents: Vec::new(),
        context: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HealthReport;

    const NOW: UnixMs = 1_000_000;

    fn config() -> Config {
        Config::default()
    }

    fn ix(config: &Config, id: &str) -> usize {
        config.bots.iter().position(|b| b.id == id).unwrap()
    }

    fn handoff_to(config: &Config, target: &str) -> Assessment {
        Assessment {
            next: Next::Handoff,
            target: Some(ix(config, target)),
            confidence: 0.9,
            threshold: 0.7,
            pattern: "model/seller/sell".into(),
            pending: vec![],
            reason: "intent 'seller' at 0.90".into(),
            checks: vec![],
        }
    }

    fn request<'a>(context: &'a ContextPacket) -> Request<'a> {
        Request {
            source: "lead",
            context,
            request_id: "r1",
        }
    }

    fn healthy(bot: &str) -> HealthReport {
        HealthReport {
            bot: bot.into(),
            p95_ms: 100.0,
            error_rate: 0.0,
            sample_count: 100,
            received_at: NOW,
            ..Default::default()
        }
    }

    fn failing(bot: &str) -> HealthReport {
        HealthReport {
            error_rate: 0.5,
            ..healthy(bot)
        }
    }

    #[test]
    fn an_unseen_contact_is_handed_over_with_its_context() {
        let config = config();
        let context = ContextPacket {
            timeline: Some("3 months".into()),
            ..Default::default()
        };
        let a = handoff_to(&config, "seller");
        let health = healthy("seller");
        let s = settle(
            &config,
            &a,
            request(&context),
            None,
            Some(&health),
            NOW,
            "h1",
        );
        assert_eq!(s.verdict.decision, Decision::Approved);
        assert_eq!(s.verdict.handoff_id, "h1");
        assert!(s.remember && s.writes());
        let contact = s.contact.unwrap();
        assert_eq!(contact.owner, "seller");
        assert_eq!(contact.owner_since, NOW);
        assert_eq!(contact.context.timeline.as_deref(), Some("3 months"));
        assert_eq!(contact.history.len(), 1);
        assert_eq!(s.deferred, None);
    }

    #[test]
    fn a_refusal_writes_nothing_and_is_not_remembered() {
        let config = config();
        let context = ContextPacket::default();
        let a = handoff_to(&config, "seller");
        let owned_by_buyer = ContactState::new("buyer", NOW - 10);
        let s = settle(
            &config,
            &a,
            request(&context),
            Some(owned_by_buyer),
            None,
            NOW,
            "h1",
        );
        assert_eq!(s.verdict.decision, Decision::NotOwner);
        assert!(!s.remember && !s.writes());
        assert_eq!(s.verdict.handoff_id, "");
    }

    #[test]
    fn an_unhealthy_target_defers_and_indexes_the_wait() {
        let config = config();
        let context = ContextPacket::default();
        let a = handoff_to(&config, "seller");
        let health = failing("seller");
        let s = settle(
            &config,
            &a,
            request(&context),
            None,
            Some(&health),
            NOW,
            "h1",
        );
        assert_eq!(s.verdict.decision, Decision::DeferredUnhealthy);
        assert_eq!(s.deferred, Some(DeferredChange::Add("seller".into())));
        assert!(s.remember);
        let contact = s.contact.unwrap();
        assert_eq!(contact.owner, "lead");
        let d = contact.deferral.unwrap();
        assert_eq!(
            (d.deferred_at, d.tries, d.status),
            (NOW, 0, DeferralStatus::Pending)
        );
        assert_eq!(d.request_id, "r1");
    }

    fn deferred_contact(config: &Config) -> ContactState {
        let context = ContextPacket::default();
        let a = handoff_to(config, "seller");
        let health = failing("seller");
        let s = settle(
            config,
            &a,
            request(&context),
            None,
            Some(&health),
            NOW,
            "h0",
        );
        s.contact.unwrap()
    }

    #[test]
    fn a_deferral_completes_when_the_target_recovers() {
        let config = config();
        let contact = deferred_contact(&config);
        let later = NOW + 60_000;
        let health = HealthReport {
            received_at: later,
            ..healthy("seller")
        };
        let r = settle_deferred(&config, contact, Some(&health), later, "h2").unwrap();
        let v = r.approved.unwrap();
        assert_eq!(
            (v.decision, v.handoff_id.as_str()),
            (Decision::Approved, "h2")
        );
        assert_eq!(r.deferred, Some(DeferredChange::Remove));
        assert_eq!(r.contact.owner, "seller");
        let d = r.contact.deferral.unwrap();
        assert_eq!((d.status, d.tries), (DeferralStatus::Completed, 1));
    }

    #[test]
    fn a_deferral_still_unhealthy_waits_then_is_abandoned_after_the_last_try() {
        let config = config();
        let mut contact = deferred_contact(&config);
        let health = failing("seller");
        for t in 1..config.health.defer_max_tries {
            let r = settle_deferred(&config, contact, Some(&health), NOW + 1, "h").unwrap();
            assert_eq!(r.deferred, None, "try {t} keeps waiting");
            assert!(r.approved.is_none());
            contact = r.contact;
        }
        let r = settle_deferred(&config, contact, Some(&health), NOW + 1, "h").unwrap();
        assert_eq!(r.deferred, Some(DeferredChange::Remove));
        assert_eq!(
            r.contact.deferral.unwrap().status,
            DeferralStatus::Abandoned
        );
    }

    #[test]
    fn a_deferral_past_the_window_expires_whatever_the_health() {
        let config = config();
        let contact = deferred_contact(&config);
        let late = NOW + ms(config.health.defer_window) + 1;
        let health = HealthReport {
            received_at: late,
            ..healthy("seller")
        };
        let r = settle_deferred(&config, contact, Some(&health), late, "h").unwrap();
        assert!(r.approved.is_none());
        assert_eq!(r.contact.deferral.unwrap().status, DeferralStatus::Expired);
        // Exactly at the window's end it still completes.
        let contact = deferred_contact(&config);
        let edge = NOW + ms(config.health.defer_window);
        let health = HealthReport {
            received_at: edge,
            ..healthy("seller")
        };
        let r = settle_deferred(&config, contact, Some(&health), edge, "h").unwrap();
        assert!(r.approved.is_some());
    }

    #[test]
    fn a_new_handoff_supersedes_a_pending_deferral() {
        let config = config();
        let contact = deferred_contact(&config);
        let context = ContextPacket::default();
        let a = handoff_to(&config, "buyer");
        let health = healthy("buyer");
        let s = settle(
            &config,
            &a,
            request(&context),
            Some(contact),
            Some(&health),
            NOW + 5,
            "h3",
        );
        assert_eq!(s.verdict.decision, Decision::Approved);
        assert_eq!(s.deferred, Some(DeferredChange::Remove));
        let contact = s.contact.unwrap();
        let status = contact.deferral.as_ref().map(|d| d.status);
        assert_eq!(status, Some(DeferralStatus::Abandoned));
        // Nothing pending is left to retry.
        assert_eq!(settle_deferred(&config, contact, None, NOW, "h"), None);
    }

    #[test]
    fn an_escalation_goes_to_a_human() {
        let config = config();
        let context = ContextPacket::default();
        let a = Assessment {
            next: Next::Escalate,
            target: None,
            ..handoff_to(&config, "seller")
        };
        let s = settle(&config, &a, request(&context), None, None, NOW, "h1");
        assert_eq!(s.verdict.decision, Decision::EscalatedHuman);
        assert_eq!(s.verdict.target, HUMAN);
        assert_eq!(s.contact.unwrap().owner, HUMAN);
    }

    #[test]
    fn busy_names_the_wait_and_asks_to_retry_after_it() {
        let config = config();
        let v = busy(&config, handoff_to(&config, "seller"));
        assert_eq!(v.decision, Decision::ContactBusy);
        assert_eq!(v.retry_after_ms, ms(config.policy.lock_wait) as u64);
        assert_eq!(v.gates.last().unwrap().gate, "lock");
        assert_eq!(v.target, "seller");
    }
}
