//! Baton's decision rules, pure: no I/O, no async, the clock passed in as
//! Unix milliseconds. The router asks [`Policy::assess`] for the memory-only
//! steps of SPEC §2 and, under the contact lock, [`gates::run_gates`] for the
//! rest; [`ContactState`] applies an approved handoff.

#![forbid(unsafe_code)]

pub mod classifier;
pub mod config;
pub mod contact;
pub mod context;
pub mod decision;
pub mod error;
pub mod features;
pub mod gates;
pub mod health;
pub mod learning;
pub mod model;
pub mod policy;
pub mod settle;
pub mod text;

pub use classifier::BotIx;
pub use config::{Config, HUMAN, LearningConfig};
pub use contact::{ContactState, Deferral, DeferralStatus, EntryKind, HistoryEntry};
pub use context::{Budget, ContextPacket, PropertyPreferences};
pub use decision::{Decision, GateCheck, Verdict};
pub use error::ConfigError;
pub use gates::{GateInput, GateResult, run_gates};
pub use health::{HealthReport, HealthStatus, assess_health};
pub use learning::{Outcome, OutcomeWindow};
pub use model::{IntentModel, ModelError};
pub use policy::{Assessment, Learned, Message, Next, NothingLearned, Policy, Signal};
pub use settle::{DeferredChange, Retried, Settlement, settle, settle_deferred};

use std::time::Duration;

/// Milliseconds since the Unix epoch: the clock every rule is given.
pub type UnixMs = i64;

/// A duration in whole milliseconds, saturating.
pub fn ms(d: Duration) -> UnixMs {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
