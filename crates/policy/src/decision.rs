//! What the pipeline returns: the decision, and why.

use serde::{Deserialize, Serialize};

use crate::context::ContextPacket;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Decision {
    Stay,
    Approved,
    EscalatedHuman,
    BlockedCircular,
    RateLimited,
    DeferredUnhealthy,
    ContactBusy,
    NotOwner,
}

impl Decision {
    pub const ALL: [Decision; 8] = [
        Decision::Stay,
        Decision::Approved,
        Decision::EscalatedHuman,
        Decision::BlockedCircular,
        Decision::RateLimited,
        Decision::DeferredUnhealthy,
        Decision::ContactBusy,
        Decision::NotOwner,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Stay => "STAY",
            Decision::Approved => "APPROVED",
            Decision::EscalatedHuman => "ESCALATED_HUMAN",
            Decision::BlockedCircular => "BLOCKED_CIRCULAR",
            Decision::RateLimited => "RATE_LIMITED",
            Decision::DeferredUnhealthy => "DEFERRED_UNHEALTHY",
            Decision::ContactBusy => "CONTACT_BUSY",
            Decision::NotOwner => "NOT_OWNER",
        }
    }

    /// Whether the contact's owner changes with this decision.
    pub fn moves_contact(self) -> bool {
        matches!(self, Decision::Approved | Decision::EscalatedHuman)
    }
}

/// One step of the pipeline and how it went, for the bot developer reading why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateCheck {
    pub gate: String,
    pub passed: bool,
    pub detail: String,
}

impl GateCheck {
    pub fn new(gate: &str, passed: bool, detail: String) -> Self {
        Self {
            gate: gate.to_owned(),
            passed,
            detail,
        }
    }
}

/// A complete decision, as returned and as remembered by request id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub decision: Decision,
    pub target: String,
    pub confidence: f64,
    pub threshold: f64,
    pub pattern: String,
    pub reason: String,
    pub gates: Vec<GateCheck>,
    pub handoff_id: String,
    pub retry_after_ms: u64,
    pub pending_intents: Vec<String>,
    pub context: Option<ContextPacket>,
}
