//! Steps 2–5 of the decision pipeline (SPEC §2): score, pick the target,
//! human triggers, threshold. Everything here is memory-only: most messages
//! end in `STAY` right here, without touching storage.

use crate::classifier::{BotIx, Classifier};
use crate::config::Config;
use crate::decision::GateCheck;
use crate::error::ConfigError;
use crate::learning::learned_threshold;

/// A bot's own classifier signal, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    pub target: BotIx,
    pub confidence: f64,
    pub pattern: String,
}

/// The part of a request the memory-only steps read.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub source: BotIx,
    pub text: &'a str,
    pub signals: &'a [Signal],
}

/// Learned threshold adjustments by (source, target, pattern).
pub trait Learned {
    fn adjustment(&self, source: BotIx, target: BotIx, pattern: &str) -> f64;
}

/// No learning yet: every adjustment is zero.
pub struct NothingLearned;

impl Learned for NothingLearned {
    fn adjustment(&self, _: BotIx, _: BotIx, _: &str) -> f64 {
        0.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Answer `STAY` now; no storage.
    Stay,
    /// A human trigger fired: escalate under the contact lock.
    Escalate,
    /// Above threshold: run the gates under the contact lock.
    Handoff,
}

/// The outcome of the memory-only steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    pub next: Next,
    pub target: Option<BotIx>,
    pub confidence: f64,
    pub threshold: f64,
    pub pattern: String,
    /// Other bots whose intents also fired, for the next bot to know.
    pub pending: Vec<String>,
    pub reason: String,
    pub checks: Vec<GateCheck>,
}

/// The compiled configuration: what the router decides with.
#[derive(Debug)]
pub struct Policy {
    config: Config,
    classifier: Classifier,
    /// Base threshold per route, `source * bots + target`.
    thresholds: Vec<f64>,
    /// Tie-break rank per bot: lower wins; bots not in `policy.priority` share the last rank.
    rank: Vec<usize>,
}

impl Policy {
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        let n = config.bots.len();
        let mut thresholds = vec![config.policy.threshold; n * n];
        let ix = |id: &str| config.bots.iter().position(|b| b.id == id);
        for route in &config.routes {
            if let (Some(from), Some(to)) = (ix(&route.from), ix(&route.to)) {
                thresholds[from * n + to] = route.threshold;
            }
        }
        let rank = config
            .bots
            .iter()
            .map(|b| {
                config
                    .policy
                    .priority
                    .iter()
                    .position(|p| *p == b.id)
                    .unwrap_or(usize::MAX)
            })
            .collect();
        Ok(Self {
            classifier: Classifier::new(&config),
            config,
            thresholds,
            rank,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn bot_ix(&self, id: &str) -> Option<BotIx> {
        self.config.bots.iter().position(|b| b.id == id)
    }

    pub fn bot_id(&self, ix: BotIx) -> &str {
        &self.config.bots[ix].id
    }

    pub fn base_threshold(&self, source: BotIx, target: BotIx) -> f64 {
        self.thresholds[source * self.config.bots.len() + target]
    }

    /// The threshold of a route and pattern after learning.
    pub fn threshold(
        &self,
        source: BotIx,
        target: BotIx,
        pattern: &str,
        learned: &impl Learned,
    ) -> f64 {
        let base = self.base_threshold(source, target);
        let adjustment = learned.adjustment(source, target, pattern);
        learned_threshold(base, adjustment, &self.config.learning)
    }

    /// Steps 2–5: scores the message and its signals, picks the target,
    /// checks the human triggers and the threshold.
    pub fn assess(&self, message: &Message<'_>, learned: &impl Learned) -> Assessment {
        let tokens = self.classifier.tokenize(message.text);
        let found = self.classifier.classify(&tokens);
        let mut scores: Vec<(f64, &str)> =
            found.scores.iter().map(|s| (s.score, s.pattern)).collect();
        // The strongest signal per target wins, whether the bot's or ours.
        for s in message.signals {
            if s.confidence > scores[s.target].0 {
                let pattern = if s.pattern.is_empty() {
                    "signal"
                } else {
                    s.pattern.as_str()
                };
                scores[s.target] = (s.confidence, pattern);
            }
        }
        let mut checks = Vec::with_capacity(3);
        let pick = self.pick(message.source, &scores);

        if let Some(trigger) = found.human {
            let reason = format!("human trigger '{trigger}'");
            checks.push(GateCheck::new("human", false, reason.clone()));
            return Assessment {
                next: Next::Escalate,
                target: None,
                confidence: 1.0,
                threshold: 0.0,
                pattern: trigger.to_owned(),
                pending: Vec::new(),
                reason,
                checks,
            };
        }

        let target = match pick {
            Pick::None => return self.stay(checks, None, 0.0, 0.0, "", "no handoff intent".into()),
            Pick::Tie(a, b) => {
                let reason = format!(
                    "tie between '{}' and '{}' at {:.2}",
                    self.bot_id(a),
                    self.bot_id(b),
                    scores[a].0
                );
                return self.stay(checks, None, scores[a].0, 0.0, "", reason);
            }
            Pick::Target(t) => t,
        };
        let (confidence, pattern) = scores[target];
        checks.push(GateCheck::new(
            "intent",
            true,
            format!("'{}' {confidence:.2} via '{pattern}'", self.bot_id(target)),
        ));
        let threshold = self.threshold(message.source, target, pattern, learned);
        if confidence < threshold {
            let reason = format!(
                "'{}' {confidence:.2} below threshold {threshold:.2}",
                self.bot_id(target)
            );
            checks.push(GateCheck::new("threshold", false, reason.clone()));
            return self.stay(checks, Some(target), confidence, threshold, pattern, reason);
        }
        checks.push(GateCheck::new(
            "threshold",
            true,
            format!("{confidence:.2} >= {threshold:.2}"),
        ));
        let pending = scores
            .iter()
            .enumerate()
            .filter(|&(b, &(score, p))| {
                b != target
                    && b != message.source
                    && score > 0.0
                    && score >= self.threshold(message.source, b, p, learned)
            })
            .map(|(b, _)| self.bot_id(b).to_owned())
            .collect();
        Assessment {
            next: Next::Handoff,
            target: Some(target),
            confidence,
            threshold,
            pattern: pattern.to_owned(),
            pending,
            reason: format!(
                "'{}' {confidence:.2} >= threshold {threshold:.2}",
                self.bot_id(target)
            ),
            checks,
        }
    }

    fn stay(
        &self,
        checks: Vec<GateCheck>,
        target: Option<BotIx>,
        confidence: f64,
        threshold: f64,
        pattern: &str,
        reason: String,
    ) -> Assessment {
        Assessment {
            next: Next::Stay,
            target,
            confidence,
            threshold,
            pattern: pattern.to_owned(),
            pending: Vec::new(),
            reason,
            checks,
        }
    }

    /// Highest score, never the source; equal scores go to the better
    /// configured priority, and equal priority is a tie.
    fn pick(&self, source: BotIx, scores: &[(f64, &str)]) -> Pick {
        let mut best: Option<BotIx> = None;
        let mut tie: Option<BotIx> = None;
        for (b, &(score, _)) in scores.iter().enumerate() {
            if b == source || score <= 0.0 {
                continue;
            }
            let Some(cur) = best else {
                best = Some(b);
                continue;
            };
            let (cs, bs) = (scores[cur].0, score);
            if bs > cs + f64::EPSILON {
                best = Some(b);
                tie = None;
            } else if (bs - cs).abs() <= f64::EPSILON {
                match self.rank[b].cmp(&self.rank[cur]) {
                    std::cmp::Ordering::Less => {
                        best = Some(b);
                        tie = None;
                    }
                    std::cmp::Ordering::Equal => tie = Some(b),
                    std::cmp::Ordering::Greater => {}
                }
            }
        }
        match (best, tie) {
            (None, _) => Pick::None,
            (Some(a), Some(b)) => Pick::Tie(a, b),
            (Some(a), None) => Pick::Target(a),
        }
    }
}

enum Pick {
    None,
    Tie(BotIx, BotIx),
    Target(BotIx),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BotConfig;
    use std::time::Duration;

    const LEAD: BotIx = 0;
    const BUYER: BotIx = 1;
    const SELLER: BotIx = 2;

    fn policy() -> Policy {
        Policy::new(Config::default()).unwrap()
    }

    fn assess(p: &Policy, source: BotIx, text: &str, signals: &[Signal]) -> Assessment {
        p.assess(
            &Message {
                source,
                text,
                signals,
            },
            &NothingLearned,
        )
    }

    fn signal(target: BotIx, confidence: f64) -> Signal {
        Signal {
            target,
            confidence,
            pattern: "model".into(),
        }
    }

    #[test]
    fn intent_table() {
        let p = policy();
        let cases: [(&str, Next, Option<BotIx>); 6] = [
            ("I want to sell my house", Next::Handoff, Some(SELLER)),
            (
                "I need to sell my house, what\u{2019}s my home worth?",
                Next::Handoff,
                Some(SELLER),
            ),
            (
                "I'm not looking to buy, just curious about FHA",
                Next::Stay,
                Some(BUYER),
            ),
            (
                "I want to sell my house and buy a new one",
                Next::Handoff,
                Some(SELLER),
            ),
            ("can I talk to a real person", Next::Escalate, None),
            ("I'm facing foreclosure", Next::Escalate, None),
        ];
        for (text, next, target) in cases {
            let a = assess(&p, LEAD, text, &[]);
            assert_eq!((a.next, a.target), (next, target), "{text}: {a:?}");
        }
        let both = assess(&p, LEAD, "I want to sell my house and buy a new one", &[]);
        assert_eq!(both.pending, vec!["buyer".to_owned()]);
        let sell = assess(&p, LEAD, "I want to sell my house", &[]);
        assert!(sell.confidence >= 0.7);
        assert!(sell.pending.is_empty());
    }

    #[test]
    fn confidence_exactly_at_the_threshold_approves() {
        let p = policy();
        let at = assess(&p, LEAD, "hello", &[signal(BUYER, 0.7)]);
        assert_eq!(
            (at.next, at.target, at.threshold),
            (Next::Handoff, Some(BUYER), 0.7)
        );
        let below = assess(&p, LEAD, "hello", &[signal(BUYER, 0.6999)]);
        assert_eq!(below.next, Next::Stay);
    }

    #[test]
    fn never_the_source_and_the_strongest_signal_wins() {
        let p = policy();
        let a = assess(&p, SELLER, "I want to sell my house", &[]);
        assert_eq!((a.next, a.target), (Next::Stay, None));
        let a = assess(&p, LEAD, "I want to sell my house", &[signal(BUYER, 0.99)]);
        assert_eq!(
            (a.target, a.confidence, a.pattern.as_str()),
            (Some(BUYER), 0.99, "model")
        );
    }

    #[test]
    fn ties_go_to_priority_and_equal_priority_stays() {
        let p = policy();
        let a = assess(&p, LEAD, "hi", &[signal(BUYER, 0.8), signal(SELLER, 0.8)]);
        assert_eq!(a.target, Some(SELLER));
        assert_eq!(a.pending, vec!["buyer".to_owned()]);
        let mut config = Config::default();
        config.policy.priority.clear();
        let p = Policy::new(config).unwrap();
        let a = assess(&p, LEAD, "hi", &[signal(BUYER, 0.8), signal(SELLER, 0.8)]);
        assert_eq!(a.next, Next::Stay);
        assert!(a.reason.starts_with("tie"), "{}", a.reason);
    }

    #[test]
    fn per_route_thresholds_and_learned_adjustments_apply() {
        let mut config = Config::default();
        config.routes.push(crate::config::RouteConfig {
            from: "lead".into(),
            to: "buyer".into(),
            threshold: 0.9,
        });
        let p = Policy::new(config).unwrap();
        assert_eq!(
            assess(&p, LEAD, "x", &[signal(BUYER, 0.85)]).next,
            Next::Stay
        );
        assert_eq!(
            assess(&p, LEAD, "x", &[signal(SELLER, 0.85)]).next,
            Next::Handoff
        );

        struct Lowered;
        impl Learned for Lowered {
            fn adjustment(&self, s: BotIx, t: BotIx, pattern: &str) -> f64 {
                if (s, t, pattern) == (LEAD, SELLER, "model") {
                    -0.05
                } else {
                    0.0
                }
            }
        }
        let p = policy();
        let m = Message {
            source: LEAD,
            text: "x",
            signals: &[signal(SELLER, 0.66)],
        };
        let a = p.assess(&m, &Lowered);
        assert_eq!((a.next, a.threshold), (Next::Handoff, 0.65));
        assert_eq!(p.assess(&m, &NothingLearned).next, Next::Stay);
    }

    #[test]
    fn other_teams_bots_work_without_a_rebuild() {
        let config = Config {
            bots: vec![
                BotConfig {
                    id: "support".into(),
                    sla_p95: Duration::from_secs(1),
                },
                BotConfig {
                    id: "billing".into(),
                    sla_p95: Duration::from_secs(1),
                },
            ],
            intents: vec![crate::config::IntentConfig {
                bot: "billing".into(),
                patterns: vec![crate::config::PatternConfig {
                    phrase: "refund".into(),
                    weight: 0.9,
                }],
            }],
            policy: crate::config::PolicyConfig {
                priority: vec![],
                ..Default::default()
            },
            ..Default::default()
        };
        let p = Policy::new(config).unwrap();
        let a = assess(&p, 0, "I want a refund please", &[]);
        assert_eq!((a.next, a.target), (Next::Handoff, Some(1)));
    }
}
