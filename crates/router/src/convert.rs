//! Between the wire (`baton.v1`) and the domain. Every request is validated
//! here and only here, against SPEC §2.1 and the configured limits: each
//! error names its field and shows at most a short prefix of the value, and
//! nothing is stored. Bytes that are not UTF-8 never get this far: the codec
//! refuses them, naming the field (`baton_proto::codec`). The way out is
//! plain mapping ([`out`]).

mod out;
mod text;

use baton_policy::{
    BotIx, Budget, ContextPacket, HealthReport, Outcome, Policy, PropertyPreferences, Signal,
};
use baton_proto::v1 as pb;
use prost::Message as _;

use crate::engine::HandoffRequest;
use crate::error::EngineError;

pub use out::{
    contact_out, context_out, decision_out, gates_out, handoff_out, record_out, report_out,
    verdict_out,
};
pub use text::{ECHO_CHARS, echo, printable};

fn invalid(field: &str, problem: impl std::fmt::Display) -> EngineError {
    EngineError::Invalid(format!("field '{field}' {problem}"))
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

/// An id or pattern: at most `max` bytes of printable text, and not empty
/// when `required`.
fn id_text(field: &str, value: &str, max: usize, required: bool) -> Result<(), EngineError> {
    if value.is_empty() {
        return if required {
            Err(invalid(field, "is required"))
        } else {
            Ok(())
        };
    }
    at_most(field, value.len(), max, "bytes")?;
    match value.char_indices().find(|(_, c)| !printable(*c)) {
        Some((at, c)) => Err(invalid(
            field,
            format!(
                "must be printable text, has U+{:04X} at byte {at}",
                u32::from(c)
            ),
        )),
        None => Ok(()),
    }
}

/// Checks a contact id: 1..=`limits.contact_id_bytes` bytes of printable text.
pub fn contact_id(policy: &Policy, id: &str) -> Result<(), EngineError> {
    id_text(
        "contact_id",
        id,
        policy.config().limits.contact_id_bytes,
        true,
    )
}

/// Checks a handoff id a bot sends back: 1..=`limits.handoff_id_bytes`
/// bytes of printable text.
pub fn handoff_id(policy: &Policy, id: &str) -> Result<(), EngineError> {
    id_text(
        "handoff_id",
        id,
        policy.config().limits.handoff_id_bytes,
        true,
    )
}

/// A configured bot, named by field `field`.
pub fn bot(policy: &Policy, field: &str, id: &str) -> Result<BotIx, EngineError> {
    if id.is_empty() {
        return Err(invalid(field, "is required"));
    }
    policy
        .bot_ix(id)
        .ok_or_else(|| invalid(field, format!("'{}' is not a configured bot", echo(id))))
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

/// Validates a `RequestHandoff`.
pub fn handoff_request(
    policy: &Policy,
    req: pb::RequestHandoffRequest,
) -> Result<HandoffRequest, EngineError> {
    let limits = &policy.config().limits;
    contact_id(policy, &req.contact_id)?;
    let source = bot(policy, "source_bot", &req.source_bot)?;
    at_most("message", req.message.len(), limits.message_bytes, "bytes")?;
    at_most("signals", req.signals.len(), limits.signals, "entries")?;
    let mut signals = Vec::with_capacity(req.signals.len());
    for (i, s) in req.signals.into_iter().enumerate() {
        let target = bot(policy, &format!("signals[{i}].target_bot"), &s.target_bot)?;
        if !(s.confidence.is_finite() && (0.0..=1.0).contains(&s.confidence)) {
            return Err(invalid(
                &format!("signals[{i}].confidence"),
                format!("must be a finite number in [0, 1], got {}", s.confidence),
            ));
        }
        id_text(
            &format!("signals[{i}].pattern"),
            &s.pattern,
            limits.pattern_bytes,
            false,
        )?;
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

/// Validates a `GetContext`: a contact id, and the reading bot when named.
pub fn get_context(policy: &Policy, req: &pb::GetContextRequest) -> Result<(), EngineError> {
    contact_id(policy, &req.contact_id)?;
    if !req.bot.is_empty() {
        bot(policy, "bot", &req.bot)?;
    }
    Ok(())
}

/// Validates an `AcknowledgeHandoff`: the handoff id and the acknowledging
/// bot (the contact id is optional).
pub fn acknowledge(
    policy: &Policy,
    req: &pb::AcknowledgeHandoffRequest,
) -> Result<(), EngineError> {
    if !req.contact_id.is_empty() {
        contact_id(policy, &req.contact_id)?;
    }
    handoff_id(policy, &req.handoff_id)?;
    bot(policy, "bot", &req.bot)?;
    Ok(())
}

/// Validates a `RecordOutcome`; returns the outcome.
pub fn record_outcome(
    policy: &Policy,
    req: &pb::RecordOutcomeRequest,
) -> Result<Outcome, EngineError> {
    handoff_id(policy, &req.handoff_id)?;
    outcome_in(req.outcome)
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

/// Validates a `WatchHandoffs`: the watching bot.
pub fn watch_handoffs(
    policy: &Policy,
    req: &pb::WatchHandoffsRequest,
) -> Result<BotIx, EngineError> {
    bot(policy, "bot", &req.bot)
}

/// Validates a `GetContact`.
pub fn get_contact(policy: &Policy, req: &pb::GetContactRequest) -> Result<(), EngineError> {
    contact_id(policy, &req.contact_id)
}

/// Validates a `ReleaseContact`: the contact, the bot that takes it, and a
/// reason no longer than a message.
pub fn release_contact(
    policy: &Policy,
    req: &pb::ReleaseContactRequest,
) -> Result<BotIx, EngineError> {
    contact_id(policy, &req.contact_id)?;
    let owner = bot(policy, "owner", &req.owner)?;
    let max = policy.config().limits.message_bytes;
    at_most("reason", req.reason.len(), max, "bytes")?;
    Ok(owner)
}

/// Validates a `WatchDecisions`: each filter, when set.
pub fn watch_decisions(
    policy: &Policy,
    req: &pb::WatchDecisionsRequest,
) -> Result<(), EngineError> {
    if !req.contact_id.is_empty() {
        contact_id(policy, &req.contact_id)?;
    }
    if !req.bot.is_empty() {
        bot(policy, "bot", &req.bot)?;
    }
    Ok(())
}

/// Validates a probe's report: a configured bot, finite non-negative figures.
pub fn report_in(
    policy: &Policy,
    r: Option<pb::HealthReport>,
) -> Result<(BotIx, HealthReport), EngineError> {
    let r = r.ok_or_else(|| invalid("report", "is missing"))?;
    let ix = bot(policy, "report.bot", &r.bot)?;
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
    Ok((
        ix,
        HealthReport {
            bot: r.bot,
            window_ms: r.window_ms,
            sample_count: r.sample_count,
            p50_ms: r.p50_ms,
            p95_ms: r.p95_ms,
            p99_ms: r.p99_ms,
            error_rate: r.error_rate,
            observed_at: r.observed_at_unix_ms,
            received_at: 0,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_policy::Config;

    fn policy() -> Policy {
        Policy::new(Config::default()).unwrap()
    }

    fn request() -> pb::RequestHandoffRequest {
        pb::RequestHandoffRequest {
            contact_id: "c-1".into(),
            source_bot: "lead".into(),
            message: "hello".into(),
            ..Default::default()
        }
    }

    fn message<T: std::fmt::Debug>(result: Result<T, EngineError>) -> String {
        match result {
            Err(EngineError::Invalid(m)) => m,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    fn field_of(req: pb::RequestHandoffRequest) -> String {
        message(handoff_request(&policy(), req))
    }

    fn sig(target: &str, confidence: f64) -> pb::Signal {
        pb::Signal {
            target_bot: target.into(),
            confidence,
            pattern: String::new(),
        }
    }

    #[test]
    fn every_bad_field_is_named() {
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
        let ok = pb::RequestHandoffRequest {
            contact_id: "x".repeat(128),
            message: "m".repeat(8192),
            request_id: "r".repeat(128),
            signals: vec![pb::Signal {
                pattern: "p".repeat(128),
                ..sig("buyer", 0.5)
            }],
            ..request()
        };
        assert!(handoff_request(&policy(), ok).is_ok());
    }

    #[test]
    fn ids_must_be_printable_and_spaces_are_fine() {
        for bad in [
            "a\u{202E}b",  // right-to-left override
            "a\u{200B}b",  // zero-width space
            "\u{FEFF}abc", // byte order mark
            "a\u{2028}b",  // line separator
            "a\u{2029}b",  // paragraph separator
            "a\u{E000}b",  // private use
            "a\u{FFFF}b",  // non-character
            "a\u{1F}b",    // control
        ] {
            let msg = field_of(pb::RequestHandoffRequest {
                contact_id: bad.into(),
                ..request()
            });
            assert!(
                msg.starts_with("field 'contact_id' must be printable text, has U+"),
                "{bad:?}: {msg}"
            );
        }
        let msg = field_of(pb::RequestHandoffRequest {
            contact_id: "ab\u{202E}c".into(),
            ..request()
        });
        assert_eq!(
            msg,
            "field 'contact_id' must be printable text, has U+202E at byte 2"
        );
        for good in ["lead 42", "José Núñez", "客户-7", "a\u{A0}b"] {
            let req = pb::RequestHandoffRequest {
                contact_id: good.into(),
                ..request()
            };
            assert!(handoff_request(&policy(), req).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn patterns_are_bounded_and_printable() {
        let with_pattern = |pattern: String| pb::RequestHandoffRequest {
            signals: vec![pb::Signal {
                pattern,
                ..sig("buyer", 0.9)
            }],
            ..request()
        };
        assert_eq!(
            field_of(with_pattern("p".repeat(129))),
            "field 'signals[0].pattern' is 129 bytes, more than 128"
        );
        assert!(
            field_of(with_pattern("a\u{1F}b".into()))
                .starts_with("field 'signals[0].pattern' must be printable text")
        );
        let mut config = Config::default();
        config.limits.pattern_bytes = 8;
        let policy = Policy::new(config).unwrap();
        let msg = message(handoff_request(&policy, with_pattern("p".repeat(9))));
        assert_eq!(msg, "field 'signals[0].pattern' is 9 bytes, more than 8");
    }

    #[test]
    fn handoff_ids_are_bounded_for_every_rpc_that_takes_one() {
        let p = policy();
        let id = |n: usize| "h".repeat(n);
        let outcome = |handoff_id: String| pb::RecordOutcomeRequest {
            handoff_id,
            outcome: pb::Outcome::Successful as i32,
        };
        let ack = |handoff_id: String| pb::AcknowledgeHandoffRequest {
            handoff_id,
            bot: "buyer".into(),
            ..Default::default()
        };
        let too_long = "field 'handoff_id' is 193 bytes, more than 192";
        assert_eq!(message(record_outcome(&p, &outcome(id(193)))), too_long);
        assert_eq!(message(acknowledge(&p, &ack(id(193)))), too_long);
        assert_eq!(
            message(acknowledge(&p, &ack(String::new()))),
            "field 'handoff_id' is required"
        );
        assert_eq!(
            record_outcome(&p, &outcome(id(192))).unwrap(),
            Outcome::Successful
        );
        acknowledge(&p, &ack(id(192))).unwrap();
        // The router's own ids fit: a UUID, ':' and the longest contact id.
        let own = format!("{}:{}", "u".repeat(36), "c".repeat(128));
        acknowledge(&p, &ack(own)).unwrap();
    }

    #[test]
    fn every_request_is_validated_here() {
        let p = policy();
        let long = "x".repeat(1 << 20);
        let cases: Vec<(String, &str)> = vec![
            (
                message(get_context(
                    &p,
                    &pb::GetContextRequest {
                        contact_id: "a\u{200B}".into(),
                        bot: "buyer".into(),
                    },
                )),
                "field 'contact_id'",
            ),
            (
                message(get_context(
                    &p,
                    &pb::GetContextRequest {
                        contact_id: "c".into(),
                        bot: long.clone(),
                    },
                )),
                "field 'bot'",
            ),
            (
                message(acknowledge(
                    &p,
                    &pb::AcknowledgeHandoffRequest {
                        contact_id: String::new(),
                        handoff_id: "h".into(),
                        bot: String::new(),
                    },
                )),
                "field 'bot' is required",
            ),
            (
                message(record_outcome(
                    &p,
                    &pb::RecordOutcomeRequest {
                        handoff_id: "h".into(),
                        outcome: 0,
                    },
                )),
                "field 'outcome'",
            ),
            (
                message(watch_handoffs(
                    &p,
                    &pb::WatchHandoffsRequest { bot: long.clone() },
                )),
                "field 'bot'",
            ),
            (
                message(get_contact(
                    &p,
                    &pb::GetContactRequest {
                        contact_id: long.clone(),
                    },
                )),
                "field 'contact_id' is 1048576 bytes, more than 128",
            ),
            (
                message(release_contact(
                    &p,
                    &pb::ReleaseContactRequest {
                        contact_id: "c".into(),
                        owner: "ghost".into(),
                        reason: String::new(),
                    },
                )),
                "field 'owner' 'ghost' is not a configured bot",
            ),
            (
                message(release_contact(
                    &p,
                    &pb::ReleaseContactRequest {
                        contact_id: "c".into(),
                        owner: "buyer".into(),
                        reason: long.clone(),
                    },
                )),
                "field 'reason'",
            ),
            (
                message(watch_decisions(
                    &p,
                    &pb::WatchDecisionsRequest {
                        contact_id: "a\u{2029}".into(),
                        ..Default::default()
                    },
                )),
                "field 'contact_id'",
            ),
            (
                message(report_in(
                    &p,
                    Some(pb::HealthReport {
                        bot: long.clone(),
                        ..Default::default()
                    }),
                )),
                "field 'report.bot'",
            ),
        ];
        for (msg, expected) in cases {
            assert!(msg.starts_with(expected), "{msg}");
            assert!(msg.len() < 300, "echoes too much: {} bytes", msg.len());
        }
        // Filters left empty are not errors.
        watch_decisions(&p, &pb::WatchDecisionsRequest::default()).unwrap();
        get_context(
            &p,
            &pb::GetContextRequest {
                contact_id: "c".into(),
                bot: String::new(),
            },
        )
        .unwrap();
    }

    #[test]
    fn error_messages_echo_a_short_prefix_only() {
        let msg = field_of(pb::RequestHandoffRequest {
            source_bot: "g".repeat(1 << 20),
            ..request()
        });
        assert_eq!(
            msg,
            format!(
                "field 'source_bot' '{}…' is not a configured bot",
                "g".repeat(ECHO_CHARS)
            )
        );
        let msg = field_of(pb::RequestHandoffRequest {
            signals: vec![sig("\u{202E}tsohg", 0.5)],
            ..request()
        });
        assert_eq!(
            msg,
            "field 'signals[0].target_bot' '\\u{202e}tsohg' is not a configured bot"
        );
    }
}
