//! Between the wire (`baton.v1`) and the domain: validation on the way in
//! (every error names its field; nothing is stored), plain mapping on the
//! way out.

use baton_policy::{
    Budget, ContactState, ContextPacket, Decision, GateCheck, HealthReport, HistoryEntry, Outcome,
    Policy, PropertyPreferences, Signal, Verdict,
};
use baton_proto::v1 as pb;
use prost::Message as _;

use crate::engine::HandoffRequest;
use crate::error::EngineError;

fn invalid(field: &str, problem: impl std::fmt::Display) -> EngineError {
    EngineError::Invalid(format!("field '{field}' {problem}"))
}

/// Checks a contact id: 1..=max bytes of printable text.
pub fn contact_id(policy: &Policy, id: &str) -> Result<(), EngineError> {
    let max = policy.config().limits.contact_id_bytes;
    if id.is_empty() || id.len() > max || id.chars().any(char::is_control) {
        return Err(invalid(
            "contact_id",
            format!("must be 1..={max} bytes of printable text"),
        ));
    }
    Ok(())
}

/// A size limit: "field 'message' is 9000 bytes, more than 8192".
fn at_most(field: &str, size: usize, max: usize, unit: &str) -> Result<(), EngineError> {
    if size <= max {
        return Ok(());
    }
    let verb = if unit == "bytes" { "is" } else { "has" };
    Err(invalid(
        field,
        format!("{verb} {size} {unit}, more than {max}"),
    ))
}

fn finite(field: &str, value: f64) -> Result<f64, EngineError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(invalid(
            field,
            format!("must be a finite number, got {value}"),
        ))
    }
}

/// Validates a `RequestHandoff` against SPEC §2.1 and the configured limits.
pub fn handoff_request(
    policy: &Policy,
    req: pb::RequestHandoffRequest,
) -> Result<HandoffRequest, EngineError> {
    let limits = &policy.config().limits;
    contact_id(policy, &req.contact_id)?;
    let source = policy.bot_ix(&req.source_bot).ok_or_else(|| {
        invalid(
            "source_bot",
            format!("'{}' is not a configured bot", req.source_bot),
        )
    })?;
    at_most("message", req.message.len(), limits.message_bytes, "bytes")?;
    at_most("signals", req.signals.len(), limits.signals, "entries")?;
    let mut signals = Vec::with_capacity(req.signals.len());
    for (i, s) in req.signals.into_iter().enumerate() {
        let target = policy.bot_ix(&s.target_bot).ok_or_else(|| {
            invalid(
                &format!("signals[{i}].target_bot"),
                format!("'{}' is not a configured bot", s.target_bot),
            )
        })?;
        if !(s.confidence.is_finite() && (0.0..=1.0).contains(&s.confidence)) {
            return Err(invalid(
                &format!("signals[{i}].confidence"),
                format!("must be a finite number in [0, 1], got {}", s.confidence),
            ));
        }
        if s.pattern.len() > limits.request_id_bytes {
            return Err(invalid(
                &format!("signals[{i}].pattern"),
                format!("is longer than {} bytes", limits.request_id_bytes),
            ));
        }
        signals.push(Signal {
            target,
            confidence: s.confidence,
            pattern: s.pattern,
        });
    }
    let context = match req.context {
        Some(c) => {
            at_most("context", c.encoded_len(), limits.context_bytes, "bytes")?;
            context_in(c)?
        }
        None => ContextPacket::default(),
    };
    at_most(
        "request_id",
        req.request_id.len(),
        limits.request_id_bytes,
        "bytes",
    )?;
    Ok(HandoffRequest {
        contact_id: req.contact_id,
        source,
        message: req.message,
        signals,
        context,
        request_id: req.request_id,
    })
}

pub fn context_in(c: pb::ContextPacket) -> Result<ContextPacket, EngineError> {
    let budget = match c.budget {
        Some(b) => {
            let min = finite("context.budget.min", b.min)?;
            let max = finite("context.budget.max", b.max)?;
            if min < 0.0 || max < min {
                return Err(invalid("context.budget", "must have 0 <= min <= max"));
            }
            Some(Budget {
                min,
                max,
                currency: b.currency,
            })
        }
        None => None,
    };
    let qualification_score = c
        .qualification_score
        .map(|s| finite("context.qualification_score", s))
        .transpose()?;
    Ok(ContextPacket {
        budget,
        timeline: c.timeline,
        property_preferences: c.property_preferences.map(|p| PropertyPreferences {
            locations: p.locations,
            property_types: p.property_types,
            bedrooms_min: p.bedrooms_min,
            bathrooms_min: p.bathrooms_min,
            must_haves: p.must_haves,
        }),
        property_address: c.property_address,
        temperature: c.temperature,
        qualification_score,
        conversation_summary: c.conversation_summary,
        answered_questions: c.answered_questions,
        pending_intents: c.pending_intents,
        attributes: c.attributes.into_iter().collect(),
    })
}

pub fn context_out(c: &ContextPacket) -> pb::ContextPacket {
    pb::ContextPacket {
        budget: c.budget.as_ref().map(|b| pb::Budget {
            min: b.min,
            max: b.max,
            currency: b.currency.clone(),
        }),
        timeline: c.timeline.clone(),
        property_preferences: c
            .property_preferences
            .as_ref()
            .map(|p| pb::PropertyPreferences {
                locations: p.locations.clone(),
                property_types: p.property_types.clone(),
                bedrooms_min: p.bedrooms_min,
                bathrooms_min: p.bathrooms_min,
                must_haves: p.must_haves.clone(),
            }),
        property_address: c.property_address.clone(),
        temperature: c.temperature.clone(),
        qualification_score: c.qualification_score,
        conversation_summary: c.conversation_summary.clone(),
        answered_questions: c.answered_questions.clone(),
        pending_intents: c.pending_intents.clone(),
        attributes: c.attributes.clone().into_iter().collect(),
    }
}

pub fn decision_out(d: Decision) -> pb::Decision {
    match d {
        Decision::Stay => pb::Decision::Stay,
        Decision::Approved => pb::Decision::Approved,
        Decision::EscalatedHuman => pb::Decision::EscalatedHuman,
        Decision::BlockedCircular => pb::Decision::BlockedCircular,
        Decision::RateLimited => pb::Decision::RateLimited,
        Decision::DeferredUnhealthy => pb::Decision::DeferredUnhealthy,
        Decision::ContactBusy => pb::Decision::ContactBusy,
        Decision::NotOwner => pb::Decision::NotOwner,
    }
}

pub fn gates_out(gates: &[GateCheck]) -> Vec<pb::GateCheck> {
    gates
        .iter()
        .map(|g| pb::GateCheck {
            gate: g.gate.clone(),
            passed: g.passed,
            detail: g.detail.clone(),
        })
        .collect()
}

pub fn verdict_out(v: Verdict, replayed: bool) -> pb::RequestHandoffResponse {
    pb::RequestHandoffResponse {
        decision: decision_out(v.decision) as i32,
        target_bot: v.target,
        confidence: v.confidence,
        threshold: v.threshold,
        reason: v.reason,
        gates: gates_out(&v.gates),
        handoff_id: v.handoff_id,
        context: v.context.as_ref().map(context_out),
        retry_after_ms: v.retry_after_ms,
        pending_intents: v.pending_intents,
        replayed,
        pattern: v.pattern,
    }
}

pub fn record_out(
    contact_id: &str,
    source: &str,
    request_id: &str,
    at: i64,
    v: &Verdict,
) -> pb::DecisionRecord {
    pb::DecisionRecord {
        decision: decision_out(v.decision) as i32,
        contact_id: contact_id.to_owned(),
        source_bot: source.to_owned(),
        target_bot: v.target.clone(),
        confidence: v.confidence,
        threshold: v.threshold,
        reason: v.reason.clone(),
        gates: gates_out(&v.gates),
        handoff_id: v.handoff_id.clone(),
        retry_after_ms: v.retry_after_ms,
        pending_intents: v.pending_intents.clone(),
        pattern: v.pattern.clone(),
        decided_at_unix_ms: at,
        request_id: request_id.to_owned(),
    }
}

pub fn outcome_in(value: i32) -> Result<Outcome, EngineError> {
    match pb::Outcome::try_from(value) {
        Ok(pb::Outcome::Successful) => Ok(Outcome::Successful),
        Ok(pb::Outcome::Failed) => Ok(Outcome::Failed),
        Ok(pb::Outcome::Reverted) => Ok(Outcome::Reverted),
        Ok(pb::Outcome::Timeout) => Ok(Outcome::Timeout),
        _ => Err(invalid(
            "outcome",
            "must be OUTCOME_SUCCESSFUL, OUTCOME_FAILED, OUTCOME_REVERTED or OUTCOME_TIMEOUT",
        )),
    }
}

fn outcome_out(o: Option<Outcome>) -> pb::Outcome {
    match o {
        None => pb::Outcome::Unspecified,
        Some(Outcome::Successful) => pb::Outcome::Successful,
        Some(Outcome::Failed) => pb::Outcome::Failed,
        Some(Outcome::Reverted) => pb::Outcome::Reverted,
        Some(Outcome::Timeout) => pb::Outcome::Timeout,
    }
}

pub fn handoff_out(contact_id: &str, e: &HistoryEntry) -> pb::Handoff {
    pb::Handoff {
        handoff_id: e.handoff_id.clone(),
        contact_id: contact_id.to_owned(),
        source_bot: e.from.clone(),
        target_bot: e.to.clone(),
        pattern: e.pattern.clone(),
        confidence: e.confidence,
        approved_at_unix_ms: e.at,
        acknowledged_at_unix_ms: e.acknowledged_at.unwrap_or(0),
        outcome: outcome_out(e.outcome) as i32,
        kind: e.kind.as_str().to_owned(),
        reason: e.reason.clone(),
    }
}

pub fn contact_out(
    contact_id: &str,
    c: &ContactState,
    chain_depth: u32,
    now: i64,
) -> pb::GetContactResponse {
    let live = c.live_context(now);
    pb::GetContactResponse {
        contact_id: contact_id.to_owned(),
        owner: c.owner.clone(),
        owner_since_unix_ms: c.owner_since,
        chain_depth,
        history: c
            .history
            .iter()
            .map(|e| handoff_out(contact_id, e))
            .collect(),
        context: live.map(context_out),
        context_expires_at_unix_ms: if live.is_some() {
            c.context_expires_at
        } else {
            0
        },
        deferral: c.deferral.as_ref().map(|d| pb::Deferral {
            source_bot: d.source.clone(),
            target_bot: d.target.clone(),
            deferred_at_unix_ms: d.deferred_at,
            tries: d.tries,
            status: d.status.as_str().to_owned(),
            handoff_id: d.handoff_id.clone(),
            detail: d.detail.clone(),
        }),
    }
}

/// Validates a probe's report: a configured bot, finite non-negative figures.
pub fn report_in(
    policy: &Policy,
    r: Option<pb::HealthReport>,
) -> Result<HealthReport, EngineError> {
    let r = r.ok_or_else(|| invalid("report", "is missing"))?;
    if policy.bot_ix(&r.bot).is_none() {
        return Err(invalid(
            "report.bot",
            format!("'{}' is not a configured bot", r.bot),
        ));
    }
    for (field, v) in [
        ("report.p50_ms", r.p50_ms),
        ("report.p95_ms", r.p95_ms),
        ("report.p99_ms", r.p99_ms),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(invalid(
                field,
                format!("must be a finite number >= 0, got {v}"),
            ));
        }
    }
    if !(r.error_rate.is_finite() && (0.0..=1.0).contains(&r.error_rate)) {
        return Err(invalid(
            "report.error_rate",
            format!("must be in [0, 1], got {}", r.error_rate),
        ));
    }
    Ok(HealthReport {
        bot: r.bot,
        window_ms: r.window_ms,
        sample_count: r.sample_count,
        p50_ms: r.p50_ms,
        p95_ms: r.p95_ms,
        p99_ms: r.p99_ms,
        error_rate: r.error_rate,
        observed_at: r.observed_at_unix_ms,
        received_at: 0,
    })
}

pub fn report_out(r: &HealthReport) -> pb::HealthReport {
    pb::HealthReport {
        bot: r.bot.clone(),
        window_ms: r.window_ms,
        sample_count: r.sample_count,
        p50_ms: r.p50_ms,
        p95_ms: r.p95_ms,
        p99_ms: r.p99_ms,
        error_rate: r.error_rate,
        observed_at_unix_ms: r.observed_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_policy::Config;

    fn request() -> pb::RequestHandoffRequest {
        pb::RequestHandoffRequest {
            contact_id: "c-1".into(),
            source_bot: "lead".into(),
            message: "hello".into(),
            ..Default::default()
        }
    }

    fn field_of(req: pb::RequestHandoffRequest) -> String {
        let policy = Policy::new(Config::default()).unwrap();
        match handoff_request(&policy, req) {
            Err(EngineError::Invalid(m)) => m,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn every_bad_field_is_named() {
        let sig = |target: &str, confidence| pb::Signal {
            target_bot: target.into(),
            confidence,
            pattern: String::new(),
        };
        let cases: Vec<(pb::RequestHandoffRequest, &str)> = vec![
            (
                pb::RequestHandoffRequest {
                    contact_id: String::new(),
                    ..request()
                },
                "field 'contact_id'",
            ),
            (
                pb::RequestHandoffRequest {
                    contact_id: "x".repeat(129),
                    ..request()
                },
                "field 'contact_id'",
            ),
            (
                pb::RequestHandoffRequest {
                    contact_id: "a\nb".into(),
                    ..request()
                },
                "field 'contact_id'",
            ),
            (
                pb::RequestHandoffRequest {
                    source_bot: "ghost".into(),
                    ..request()
                },
                "field 'source_bot'",
            ),
            (
                pb::RequestHandoffRequest {
                    message: "x".repeat(8193),
                    ..request()
                },
                "field 'message'",
            ),
            (
                pb::RequestHandoffRequest {
                    signals: vec![sig("buyer", 1.5)],
                    ..request()
                },
                "field 'signals[0].confidence'",
            ),
            (
                pb::RequestHandoffRequest {
                    signals: vec![sig("buyer", 0.5), sig("seller", f64::NAN)],
                    ..request()
                },
                "field 'signals[1].confidence'",
            ),
            (
                pb::RequestHandoffRequest {
                    signals: vec![sig("nobody", 0.5)],
                    ..request()
                },
                "field 'signals[0].target_bot'",
            ),
            (
                pb::RequestHandoffRequest {
                    request_id: "r".repeat(129),
                    ..request()
                },
                "field 'request_id'",
            ),
            (
                pb::RequestHandoffRequest {
                    context: Some(pb::ContextPacket {
                        conversation_summary: Some("x".repeat(70_000)),
                        ..Default::default()
                    }),
                    ..request()
                },
                "field 'context'",
            ),
        ];
        for (req, field) in cases {
            let msg = field_of(req);
            assert!(msg.starts_with(field), "{msg}");
        }
    }

    #[test]
    fn limits_are_inclusive() {
        let policy = Policy::new(Config::default()).unwrap();
        let ok = pb::RequestHandoffRequest {
            contact_id: "x".repeat(128),
            message: "m".repeat(8192),
            request_id: "r".repeat(128),
            ..request()
        };
        assert!(handoff_request(&policy, ok).is_ok());
    }
}
