//! From the domain to the wire: plain mapping, nothing to check.

use baton_policy::{
    ContactState, ContextPacket, Decision, GateCheck, HealthReport, HistoryEntry, Outcome, Verdict,
};
use baton_proto::v1 as pb;

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
