//! Every number Baton decides with: one serde tree, parsed from TOML with
//! unknown keys rejected. `Config::default()` is the reference real-estate
//! deployment of SPEC §2 (lead, buyer, seller); `deploy/baton.toml` spells the
//! same defaults out for operators and a test keeps the two equal.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// The owner name of a contact that is with a person, not a bot.
pub const HUMAN: &str = "human";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub policy: PolicyConfig,
    pub health: HealthConfig,
    pub learning: LearningConfig,
    pub limits: Limits,
    pub classifier: ClassifierConfig,
    pub human: HumanConfig,
    pub bots: Vec<BotConfig>,
    pub routes: Vec<RouteConfig>,
    pub intents: Vec<IntentConfig>,
}

/// Thresholds and the loop, depth and rate gates (SPEC §2.3, §2.5–§2.8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Confidence a route needs by default; `[[routes]]` may override it.
    pub threshold: f64,
    /// Which bot wins a tie between intents, first = strongest.
    /// Sell-before-buy is the common order, hence seller first.
    pub priority: Vec<String>,
    /// The same pair, or a bounce back to a bot the contact left, within this window is a loop.
    #[serde(with = "humantime_serde")]
    pub circular_window: Duration,
    /// Approved bot-to-bot handoffs in one chain before the next request goes to a human.
    pub max_chain_depth: u32,
    /// Handoffs less than this apart belong to one chain.
    #[serde(with = "humantime_serde")]
    pub chain_gap: Duration,
    /// Approved handoffs per contact in any rolling `rate_window_short`.
    pub max_per_hour: u32,
    /// Approved handoffs per contact in any rolling `rate_window_long`.
    pub max_per_day: u32,
    /// The window `max_per_hour` counts over (an hour by default).
    #[serde(with = "humantime_serde")]
    pub rate_window_short: Duration,
    /// The window `max_per_day` counts over (24 hours by default).
    #[serde(with = "humantime_serde")]
    pub rate_window_long: Duration,
    /// How long a context packet stays readable after its last handoff.
    #[serde(with = "humantime_serde")]
    pub context_ttl: Duration,
    /// How long a decision is remembered by request id.
    #[serde(with = "humantime_serde")]
    pub decision_ttl: Duration,
    /// How long a request waits for the contact lock before `CONTACT_BUSY`.
    #[serde(with = "humantime_serde")]
    pub lock_wait: Duration,
    /// History entries kept per contact; must cover `max_per_day`.
    pub history_limit: usize,
}

/// The target-health gate (SPEC §2.7.5, §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// A target whose P95 exceeds `sla_factor` × its SLA is unhealthy.
    pub sla_factor: f64,
    /// A target whose error rate exceeds this is unhealthy.
    pub max_error_rate: f64,
    /// Reports over fewer samples than this are not evidence either way.
    pub min_samples: u64,
    /// A bot silent for longer than this after reporting is unhealthy.
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
    /// Treat a bot that never reported as unhealthy.
    pub strict: bool,
    /// `retry_after` given with `DEFERRED_UNHEALTHY`.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// How long a deferred handoff is kept for a retry when the target recovers.
    #[serde(with = "humantime_serde")]
    pub defer_window: Duration,
    /// Retries of one deferred handoff.
    pub defer_max_tries: u32,
    /// Attempts at a deferred handoff's contact lock, `policy.lock_wait`
    /// apart, when a live request holds it as the target recovers.
    pub defer_lock_attempts: u32,
}

/// Learned threshold adjustments (SPEC §2.9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LearningConfig {
    /// Outcomes kept per (route, pattern).
    pub window: usize,
    /// Outcomes needed before any adjustment.
    pub min_outcomes: usize,
    /// Success rate above which the threshold is lowered.
    pub lower_above: f64,
    pub lower_by: f64,
    /// Success rate below which the threshold is raised.
    pub raise_below: f64,
    pub raise_by: f64,
    /// Learned thresholds are clamped to `[min_threshold, max_threshold]`.
    pub min_threshold: f64,
    pub max_threshold: f64,
    /// Distinct patterns one route learns from (each keys an outcome
    /// window, a cache entry and a metric series); outcomes for a new
    /// pattern beyond it are refused.
    pub max_patterns_per_route: usize,
}

/// Input limits checked before anything else (SPEC §2.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub contact_id_bytes: usize,
    pub message_bytes: usize,
    pub context_bytes: usize,
    pub request_id_bytes: usize,
    pub signals: usize,
    /// A handoff id a bot sends back (`AcknowledgeHandoff`, `RecordOutcome`);
    /// the router's own are a UUID, ':' and the contact id.
    pub handoff_id_bytes: usize,
    /// A signal's pattern: it keys learning windows and metric labels.
    pub pattern_bytes: usize,
}

/// Text normalisation and negation (SPEC §2.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifierConfig {
    /// Words that negate a pattern following them in the same clause.
    pub negations: Vec<String>,
    /// How many words before a match a negation reaches.
    pub negation_window: usize,
    /// Words that start a new clause, like punctuation does.
    pub clause_breaks: Vec<String>,
    /// The intent model: `builtin` (the one shipped in the binary), `off`
    /// (configured phrases and bot signals only), or the path of a model
    /// file made by `baton-router train`.
    pub model: String,
    /// Model classes that send a contact to a person (SPEC §2.4).
    pub escalate: Vec<String>,
    /// Probability of an escalation class at which the model escalates;
    /// below the route threshold on purpose: recall first.
    pub escalate_at: f64,
    /// Words of a message the phrase rules read: an 8 KiB message costs
    /// what its start costs. (The model reads as many as its file says.)
    pub max_words: usize,
    /// Intent scores this close count as a tie, settled by `policy.priority`
    /// ("sell and buy" fires both intents with near-equal confidence).
    pub tie_margin: f64,
}

/// `classifier.model` value for the model built into the binary.
pub const BUILTIN_MODEL: &str = "builtin";
/// `classifier.model` value that turns the model off.
pub const NO_MODEL: &str = "off";

/// Explicit requests for a person and legal or financial topics (SPEC §2.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HumanConfig {
    pub patterns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotConfig {
    pub id: String,
    /// The P95 latency this bot promises.
    #[serde(with = "humantime_serde")]
    pub sla_p95: Duration,
}

/// A per-route threshold override.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub from: String,
    pub to: String,
    pub threshold: f64,
}

/// The patterns that send a contact to `bot`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentConfig {
    pub bot: String,
    pub patterns: Vec<PatternConfig>,
}

/// A phrase of whole words (a trailing `*` on a word matches any ending)
/// and the confidence it carries on its own. Several matches combine as
/// independent evidence: 1 − Π(1 − weight).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternConfig {
    pub phrase: String,
    pub weight: f64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            threshold: 0.7,
            priority: strings(&["seller", "buyer"]),
            circular_window: Duration::from_secs(30 * 60),
            max_chain_depth: 3,
            chain_gap: Duration::from_secs(24 * 3600),
            max_per_hour: 3,
            max_per_day: 10,
            rate_window_short: Duration::from_secs(3600),
            rate_window_long: Duration::from_secs(24 * 3600),
            context_ttl: Duration::from_secs(24 * 3600),
            decision_ttl: Duration::from_secs(24 * 3600),
            lock_wait: Duration::from_millis(250),
            history_limit: 64,
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            sla_factor: 1.2,
            max_error_rate: 0.10,
            min_samples: 20,
            stale_after: Duration::from_secs(30),
            strict: false,
            retry_after: Duration::from_secs(30),
            defer_window: Duration::from_secs(30 * 60),
            defer_max_tries: 3,
            defer_lock_attempts: 3,
        }
    }
}

impl Default for LearningConfig {
    fn default() -> Self {
        Self {
            window: 100,
            min_outcomes: 10,
            lower_above: 0.8,
            lower_by: 0.05,
            raise_below: 0.5,
            raise_by: 0.1,
            min_threshold: 0.5,
            max_threshold: 0.95,
            max_patterns_per_route: 1_000,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            contact_id_bytes: 128,
            message_bytes: 8 * 1024,
            context_bytes: 64 * 1024,
            request_id_bytes: 128,
            signals: 16,
            handoff_id_bytes: 192,
            pattern_bytes: 128,
        }
    }
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        Self {
            negations: strings(&[
                "not", "no", "never", "don't", "dont", "doesn't", "didn't", "isn't", "aren't",
                "won't", "wouldn't", "can't", "cannot", "nor", "neither",
            ]),
            negation_window: 3,
            clause_breaks: strings(&["but", "however", "although", "though"]),
            model: BUILTIN_MODEL.to_owned(),
            escalate: strings(&["human", "legal"]),
            escalate_at: 0.5,
            max_words: 160,
            tie_margin: 0.1,
        }
    }
}

impl Default for HumanConfig {
    fn default() -> Self {
        Self {
            patterns: strings(&[
                "real person",
                "a human",
                "real human",
                "not a bot",
                "talk to someone",
                "speak to someone",
                "talk to a person",
                "speak to a person",
                "live agent",
                "representative",
                "foreclos*",
                "bankrupt*",
                "attorney",
                "lawyer",
                "probate",
                "divorc*",
                "lawsuit",
                "legal advice",
                "short sale",
                "judgment lien",
                "tax lien",
                "behind on payments",
                "behind on my payments",
                "behind on my mortgage",
                "notice of default",
                "evict*",
                "persona real",
                "un humano",
                "hablar con una persona",
                "hablar con alguien",
                "abogad*",
                "bancarrota",
                "quiebra",
                "embargar*",
                "divorcio",
                "sucesion",
                "sucesión",
            ]),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let bot = |id: &str, ms| BotConfig {
            id: id.to_owned(),
            sla_p95: Duration::from_millis(ms),
        };
        Self {
            policy: PolicyConfig::default(),
            health: HealthConfig::default(),
            learning: LearningConfig::default(),
            limits: Limits::default(),
            classifier: ClassifierConfig::default(),
            human: HumanConfig::default(),
            bots: vec![bot("lead", 1500), bot("buyer", 1800), bot("seller", 1800)],
            routes: Vec::new(),
            // The built-in model scores intents; phrases are for teams that want rules too.
            intents: Vec::new(),
        }
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Phrase rules for the reference bots: what Baton scored with before it had
/// a trained model. Kept as an example of `[[intents]]` and as the
/// baseline the model is benchmarked against.
pub fn example_phrase_intents() -> Vec<IntentConfig> {
    let intent = |bot: &str, patterns: &[(&str, f64)]| IntentConfig {
        bot: bot.to_owned(),
        patterns: patterns
            .iter()
            .map(|(phrase, weight)| PatternConfig {
                phrase: (*phrase).to_owned(),
                weight: *weight,
            })
            .collect(),
    };
    vec![
        intent(
            "seller",
            &[
                ("sell my house", 0.8),
                ("sell my home", 0.8),
                ("sell my condo", 0.8),
                ("sell my place", 0.8),
                ("sell our house", 0.8),
                ("sell our home", 0.8),
                ("list my house", 0.75),
                ("list my home", 0.75),
                ("want to sell", 0.75),
                ("need to sell", 0.75),
                ("looking to sell", 0.75),
                ("my home worth", 0.75),
                ("my house worth", 0.75),
                ("home valuation", 0.7),
                ("sell", 0.45),
                ("selling", 0.45),
            ],
        ),
        intent(
            "buyer",
            &[
                ("buy a house", 0.8),
                ("buy a home", 0.8),
                ("buy a condo", 0.8),
                ("buy a new", 0.75),
                ("want to buy", 0.75),
                ("looking to buy", 0.75),
                ("looking for a house", 0.7),
                ("looking for a home", 0.7),
                ("pre approved", 0.7),
                ("preapproved", 0.7),
                ("down payment", 0.45),
                ("mortgage", 0.4),
                ("fha", 0.3),
                ("buy", 0.45),
                ("buying", 0.45),
            ],
        ),
    ]
}

impl Config {
    /// Parses a TOML document (unknown keys are errors) and validates it.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn bot(&self, id: &str) -> Option<&BotConfig> {
        self.bots.iter().find(|b| b.id == id)
    }

    /// Checks every cross-reference and range; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, problem: String| {
            Err(ConfigError::Invalid {
                key: key.to_owned(),
                problem,
            })
        };
        if self.bots.is_empty() {
            return bad("bots", "at least one bot must be configured".into());
        }
        let mut ids = HashSet::new();
        for (i, bot) in self.bots.iter().enumerate() {
            if bot.id.is_empty() || bot.id == HUMAN || !bot.id.chars().all(|c| c.is_ascii_graphic())
            {
                return bad(
                    &format!("bots[{i}].id"),
                    format!(
                        "'{}' is not a usable bot id (printable ASCII, not '{HUMAN}')",
                        bot.id
                    ),
                );
            }
            if !ids.insert(bot.id.as_str()) {
                return bad(
                    &format!("bots[{i}].id"),
                    format!("duplicate bot '{}'", bot.id),
                );
            }
        }
        let known = |key: String, id: &str| {
            if ids.contains(id) {
                Ok(())
            } else {
                bad(&key, format!("'{id}' is not a configured bot"))
            }
        };
        for (i, id) in self.policy.priority.iter().enumerate() {
            known(format!("policy.priority[{i}]"), id)?;
        }
        for (i, route) in self.routes.iter().enumerate() {
            known(format!("routes[{i}].from"), &route.from)?;
            known(format!("routes[{i}].to"), &route.to)?;
            unit(&format!("routes[{i}].threshold"), route.threshold)?;
        }
        for (i, intent) in self.intents.iter().enumerate() {
            known(format!("intents[{i}].bot"), &intent.bot)?;
            for (j, p) in intent.patterns.iter().enumerate() {
                if p.phrase.split_whitespace().next().is_none() {
                    return bad(
                        &format!("intents[{i}].patterns[{j}].phrase"),
                        "is empty".into(),
                    );
                }
                if !(p.weight > 0.0 && p.weight <= 1.0) {
                    return bad(
                        &format!("intents[{i}].patterns[{j}].weight"),
                        format!("{} is not in (0, 1]", p.weight),
                    );
                }
            }
        }
        for (i, p) in self.human.patterns.iter().enumerate() {
            if p.split_whitespace().next().is_none() {
                return bad(&format!("human.patterns[{i}]"), "is empty".into());
            }
        }
        unit("policy.threshold", self.policy.threshold)?;
        unit("classifier.escalate_at", self.classifier.escalate_at)?;
        if !(0.0..=0.5).contains(&self.classifier.tie_margin) {
            return bad(
                "classifier.tie_margin",
                format!("{} is not in [0, 0.5]", self.classifier.tie_margin),
            );
        }
        if !(1..=100_000).contains(&self.classifier.max_words) {
            return bad(
                "classifier.max_words",
                format!("{} is not in 1..=100000", self.classifier.max_words),
            );
        }
        if self.classifier.model.trim().is_empty() {
            return bad(
                "classifier.model",
                format!("is empty (use '{BUILTIN_MODEL}', '{NO_MODEL}' or a model file)"),
            );
        }
        unit("health.max_error_rate", self.health.max_error_rate)?;
        unit("learning.lower_above", self.learning.lower_above)?;
        unit("learning.raise_below", self.learning.raise_below)?;
        unit("learning.min_threshold", self.learning.min_threshold)?;
        unit("learning.max_threshold", self.learning.max_threshold)?;
        unit("learning.lower_by", self.learning.lower_by)?;
        unit("learning.raise_by", self.learning.raise_by)?;
        if self.learning.min_threshold > self.learning.max_threshold {
            return bad(
                "learning.min_threshold",
                "exceeds learning.max_threshold".into(),
            );
        }
        if self.learning.min_outcomes == 0 || self.learning.window < self.learning.min_outcomes {
            return bad(
                "learning.window",
                "must be at least learning.min_outcomes, which must be above zero".into(),
            );
        }
        if !(1..=1_000_000).contains(&self.learning.max_patterns_per_route) {
            return bad(
                "learning.max_patterns_per_route",
                format!(
                    "{} is not in 1..=1000000",
                    self.learning.max_patterns_per_route
                ),
            );
        }
        if !(self.health.sla_factor.is_finite() && self.health.sla_factor > 0.0) {
            return bad("health.sla_factor", "must be a positive number".into());
        }
        if self.policy.max_chain_depth == 0 {
            return bad("policy.max_chain_depth", "must be above zero".into());
        }
        let needed = self.policy.max_per_day.max(self.policy.max_chain_depth) as usize;
        if self.policy.history_limit < needed {
            return bad(
                "policy.history_limit",
                format!("must be at least {needed} to enforce the depth and daily limits"),
            );
        }
        for (key, max) in [
            ("policy.max_per_hour", self.policy.max_per_hour),
            ("policy.max_per_day", self.policy.max_per_day),
        ] {
            if max == 0 {
                return bad(key, "must be above zero".into());
            }
        }
        self.validate_durations()?;
        if self.policy.rate_window_short > self.policy.rate_window_long {
            return bad(
                "policy.rate_window_short",
                "exceeds policy.rate_window_long".into(),
            );
        }
        if !(1..=100).contains(&self.health.defer_lock_attempts) {
            return bad(
                "health.defer_lock_attempts",
                format!("{} is not in 1..=100", self.health.defer_lock_attempts),
            );
        }
        self.validate_base_thresholds()?;
        self.validate_limits()
    }

    /// Every duration is bounded by [`MAX_DURATION`], so `now + ttl` cannot
    /// overflow; those that would switch a rule off at zero must be above it.
    fn validate_durations(&self) -> Result<(), ConfigError> {
        let p = &self.policy;
        let h = &self.health;
        let durations = [
            ("policy.circular_window", p.circular_window, false),
            ("policy.chain_gap", p.chain_gap, false),
            ("policy.rate_window_short", p.rate_window_short, true),
            ("policy.rate_window_long", p.rate_window_long, true),
            ("policy.context_ttl", p.context_ttl, true),
            ("policy.decision_ttl", p.decision_ttl, true),
            ("policy.lock_wait", p.lock_wait, true),
            ("health.stale_after", h.stale_after, true),
            ("health.retry_after", h.retry_after, false),
            ("health.defer_window", h.defer_window, false),
        ];
        for (key, value, nonzero) in durations {
            duration(key, value, nonzero)?;
        }
        for (i, bot) in self.bots.iter().enumerate() {
            duration(&format!("bots[{i}].sla_p95"), bot.sla_p95, true)?;
        }
        Ok(())
    }

    /// Learning clamps a threshold to `[learning.min_threshold,
    /// learning.max_threshold]`: a base threshold outside that range would be
    /// moved the wrong way by it (0.4 raised to 0.5 by successes), so it is
    /// refused rather than silently inverted.
    fn validate_base_thresholds(&self) -> Result<(), ConfigError> {
        let (lo, hi) = (self.learning.min_threshold, self.learning.max_threshold);
        let within = |key: String, t: f64| {
            if (lo..=hi).contains(&t) {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    key,
                    problem: format!(
                        "{t} is outside [learning.min_threshold, learning.max_threshold] = \
                         [{lo}, {hi}], where learning would move it the wrong way"
                    ),
                })
            }
        };
        within("policy.threshold".into(), self.policy.threshold)?;
        for (i, route) in self.routes.iter().enumerate() {
            within(format!("routes[{i}].threshold"), route.threshold)?;
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let sizes = [
            ("limits.contact_id_bytes", l.contact_id_bytes),
            ("limits.message_bytes", l.message_bytes),
            ("limits.context_bytes", l.context_bytes),
            ("limits.request_id_bytes", l.request_id_bytes),
            ("limits.handoff_id_bytes", l.handoff_id_bytes),
            ("limits.pattern_bytes", l.pattern_bytes),
        ];
        for (key, size) in sizes {
            if size == 0 {
                return Err(ConfigError::Invalid {
                    key: key.to_owned(),
                    problem: "must be above zero".into(),
                });
            }
        }
        // The router's own handoff ids must pass the limit bots are held to.
        let own = HANDOFF_ID_PREFIX_BYTES.saturating_add(l.contact_id_bytes);
        if l.handoff_id_bytes < own {
            return Err(ConfigError::Invalid {
                key: "limits.handoff_id_bytes".into(),
                problem: format!(
                    "must be at least {own}: a handoff id is a UUID, ':' and the contact id \
                     (limits.contact_id_bytes)"
                ),
            });
        }
        Ok(())
    }
}

/// The longest duration any key may hold: far beyond any sensible TTL or
/// window, far below what overflows millisecond arithmetic on the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 31_557_600);

/// What a handoff id adds to its contact id: a UUID (36) and ':'.
pub const HANDOFF_ID_PREFIX_BYTES: usize = 37;

/// Checks a duration key: at most [`MAX_DURATION`] ("10y"), and above zero
/// when `nonzero`.
pub fn duration(key: &str, value: Duration, nonzero: bool) -> Result<(), ConfigError> {
    let problem = if value > MAX_DURATION {
        format!(
            "{} is longer than the 10y any duration may be",
            humantime_serde::re::humantime::format_duration(value)
        )
    } else if nonzero && value.is_zero() {
        "must be above zero".to_owned()
    } else {
        return Ok(());
    };
    Err(ConfigError::Invalid {
        key: key.to_owned(),
        problem,
    })
}

fn unit(key: &str, value: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            key: key.to_owned(),
            problem: format!("{value} is not in [0, 1]"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_spec() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.policy.threshold, 0.7);
        assert_eq!(c.policy.max_chain_depth, 3);
        assert_eq!(c.policy.max_per_hour, 3);
        assert_eq!(c.policy.max_per_day, 10);
        assert_eq!(c.policy.circular_window, Duration::from_secs(1800));
        assert_eq!(c.health.sla_factor, 1.2);
        assert_eq!(c.health.min_samples, 20);
        assert_eq!(c.bot("buyer").unwrap().sla_p95, Duration::from_millis(1800));
        assert_eq!(c.bot("lead").unwrap().sla_p95, Duration::from_millis(1500));
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = Config::from_toml("[policy]\nthreshhold = 0.8\n").unwrap_err();
        assert!(err.to_string().contains("threshhold"), "{err}");
    }

    #[test]
    fn partial_files_keep_the_other_defaults() {
        let c =
            Config::from_toml("[policy]\nthreshold = 0.8\ncircular_window = \"10m\"\n").unwrap();
        assert_eq!(c.policy.threshold, 0.8);
        assert_eq!(c.policy.circular_window, Duration::from_secs(600));
        assert_eq!(c.policy.max_per_day, 10);
        assert_eq!(c.bots.len(), 3);
    }

    #[test]
    fn other_teams_configure_their_own_bots() {
        let text = r#"
            [policy]
            priority = ["billing"]
            [[bots]]
            id = "support"
            sla_p95 = "1s"
            [[bots]]
            id = "billing"
            sla_p95 = "2s"
            [[intents]]
            bot = "billing"
            patterns = [{ phrase = "refund", weight = 0.9 }]
        "#;
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c.bots.len(), 2);
        assert_eq!(c.intents[0].patterns[0].phrase, "refund");
    }

    #[test]
    fn bad_references_and_ranges_name_the_key() {
        let cases = [
            ("[policy]\nthreshold = 1.5\n", "policy.threshold"),
            (
                "[[routes]]\nfrom = \"lead\"\nto = \"nobody\"\nthreshold = 0.6\n",
                "routes[0].to",
            ),
            ("[[bots]]\nid = \"human\"\nsla_p95 = \"1s\"\n", "bots[0].id"),
            ("[policy]\nhistory_limit = 2\n", "policy.history_limit"),
            ("[policy]\npriority = [\"ghost\"]\n", "policy.priority[0]"),
        ];
        for (text, key) in cases {
            let err = Config::from_toml(text).unwrap_err();
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn the_former_literals_default_to_their_old_values() {
        let c = Config::default();
        assert_eq!(c.policy.rate_window_short, Duration::from_secs(3600));
        assert_eq!(c.policy.rate_window_long, Duration::from_secs(24 * 3600));
        assert_eq!(c.health.defer_lock_attempts, 3);
        assert_eq!(c.limits.handoff_id_bytes, 192);
        assert_eq!(c.limits.pattern_bytes, 128);
        let c = Config::from_toml(
            "[policy]\nrate_window_short = \"2h\"\nrate_window_long = \"7d\"\n\
             [health]\ndefer_lock_attempts = 5\n",
        )
        .unwrap();
        assert_eq!(c.policy.rate_window_short, Duration::from_secs(7200));
        assert_eq!(c.policy.rate_window_long, Duration::from_secs(7 * 86_400));
        assert_eq!(c.health.defer_lock_attempts, 5);
    }

    #[test]
    fn silent_bad_values_are_refused_naming_the_key() {
        let route =
            |t: f64| format!("[[routes]]\nfrom = \"lead\"\nto = \"buyer\"\nthreshold = {t}\n");
        let (low, high) = (route(0.4), route(0.97));
        let cases = [
            (
                "[limits]\nmessage_bytes = 0\n",
                "limits.message_bytes",
                "above zero",
            ),
            (
                "[learning]\nmax_patterns_per_route = 0\n",
                "learning.max_patterns_per_route",
                "not in 1..=1000000",
            ),
            (
                "[limits]\ncontext_bytes = 0\n",
                "limits.context_bytes",
                "above zero",
            ),
            (
                "[limits]\npattern_bytes = 0\n",
                "limits.pattern_bytes",
                "above zero",
            ),
            (
                "[limits]\nhandoff_id_bytes = 100\n",
                "limits.handoff_id_bytes",
                "at least 165",
            ),
            (
                "[policy]\ncontext_ttl = \"1000000000y\"\n",
                "policy.context_ttl",
                "10y",
            ),
            (
                "[policy]\ndecision_ttl = \"11y\"\n",
                "policy.decision_ttl",
                "10y",
            ),
            (
                "[health]\ndefer_window = \"1000000000y\"\n",
                "health.defer_window",
                "10y",
            ),
            (
                "[policy]\npriority = []\n[[bots]]\nid = \"a\"\nsla_p95 = \"1000000000y\"\n",
                "bots[0].sla_p95",
                "10y",
            ),
            (
                "[health]\nstale_after = \"0s\"\n",
                "health.stale_after",
                "above zero",
            ),
            (
                "[policy]\nrate_window_short = \"0s\"\n",
                "policy.rate_window_short",
                "above zero",
            ),
            (
                "[policy]\nrate_window_short = \"2d\"\n",
                "policy.rate_window_short",
                "exceeds policy.rate_window_long",
            ),
            (
                "[policy]\nmax_per_hour = 0\n",
                "policy.max_per_hour",
                "above zero",
            ),
            (
                "[health]\ndefer_lock_attempts = 0\n",
                "health.defer_lock_attempts",
                "1..=100",
            ),
            // Learning would raise 0.4 to 0.5 on success, lower 0.97 to 0.95 on failure.
            (low.as_str(), "routes[0].threshold", "wrong way"),
            (high.as_str(), "routes[0].threshold", "wrong way"),
            (
                "[policy]\nthreshold = 0.97\n",
                "policy.threshold",
                "wrong way",
            ),
            (
                "[learning]\nmin_threshold = 0.75\n",
                "policy.threshold",
                "[0.75, 0.95]",
            ),
        ];
        for (text, key, problem) in cases {
            let err = Config::from_toml(text).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("config key '{key}' ")) && err.contains(problem),
                "{text}: {err}"
            );
        }
        // The bounds themselves are accepted.
        let c = Config::from_toml(&format!(
            "{}{}[policy]\ncontext_ttl = \"10y\"\n[limits]\nhandoff_id_bytes = 165\n",
            route(0.5),
            route(0.95).replace("buyer", "seller"),
        ))
        .unwrap();
        assert_eq!(c.policy.context_ttl, MAX_DURATION);
    }
}
