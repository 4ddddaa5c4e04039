//! Steps 2–5 of the decision pipeline (SPEC §2): score, pick the target,
//! human triggers, threshold. Everything here is memory-only: most messages
//! end in `STAY` right here, without touching storage.

use crate::classifier::{BotIx, Classifier};
use crate::config::{BUILTIN_MODEL, Config, NO_MODEL};
use crate::decision::GateCheck;
use crate::error::ConfigError;
use crate::features::Features;
use crate::learning::learned_threshold;
use crate::model::{IntentModel, NONE, Prediction};
use crate::text::normalize;

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

/// What a model class does when it fires.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    /// The `none` class, or a bot that is not a target here.
    Nothing,
    Bot(BotIx),
    Escalate,
}

/// Where a bot's score came from; the pattern is spelled out only when a
/// decision needs it, so the stay path allocates nothing for it.
#[derive(Debug, Clone, Copy)]
enum Why<'a> {
    Nothing,
    Phrase(&'a str),
    Model(usize),
    Signal(&'a str),
}

/// The compiled configuration: what the router decides with.
#[derive(Debug)]
pub struct Policy {
    config: Config,
    classifier: Classifier,
    model: Option<IntentModel>,
    /// What each model class means here, in the model's class order.
    roles: Vec<Role>,
    /// Base threshold per route, `source * bots + target`.
    thresholds: Vec<f64>,
    /// Tie-break rank per bot: lower wins; bots not in `policy.priority` share the last rank.
    rank: Vec<usize>,
}

impl Policy {
    /// Compiles `config` with the model it names: the built-in one, or none
    /// when `classifier.model = "off"`. A model file is read by the caller
    /// and given to [`Policy::with_model`].
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        let model = match config.classifier.model.as_str() {
            NO_MODEL => None,
            BUILTIN_MODEL => Some(IntentModel::builtin().map_err(|e| ConfigError::Invalid {
                key: "classifier.model".into(),
                problem: format!("built-in model: {e}"),
            })?),
            path => {
                return Err(ConfigError::Invalid {
                    key: "classifier.model".into(),
                    problem: format!("'{path}' must be loaded by the caller (Policy::with_model)"),
                });
            }
        };
        Self::with_model(config, model)
    }

    /// Compiles `config` with `model`; every model class must be `none`, an
    /// escalation class, or a configured bot.
    pub fn with_model(config: Config, model: Option<IntentModel>) -> Result<Self, ConfigError> {
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
        let mut roles = Vec::new();
        if let Some(m) = &model {
            for c in m.classes() {
                roles.push(if c.name == NONE {
                    Role::Nothing
                } else if config.classifier.escalate.contains(&c.name) {
                    Role::Escalate
                } else if let Some(b) = ix(&c.name) {
                    Role::Bot(b)
                } else {
                    return Err(ConfigError::Invalid {
                        key: "classifier.model".into(),
                        problem: format!(
                            "the model's intent '{}' is neither a configured bot, '{NONE}', \
                             nor in classifier.escalate",
                            c.name
                        ),
                    });
                });
            }
        }
        Ok(Self {
            classifier: Classifier::new(&config),
            model,
            roles,
            config,
            thresholds,
            rank,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn model(&self) -> Option<&IntentModel> {
        self.model.as_ref()
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

    /// The lowest threshold learning could give a route: below it a score
    /// stays whatever was learned, so its pattern need not be spelled out.
    fn threshold_floor(&self, source: BotIx, target: BotIx) -> f64 {
        self.base_threshold(source, target)
            .min(self.config.learning.min_threshold)
    }

    /// Steps 2–5: scores the message and its signals, picks the target,
    /// checks the human triggers and the threshold.
    pub fn assess(&self, message: &Message<'_>, learned: &impl Learned) -> Assessment {
        // One normalisation, read by both the phrase rules and the model.
        let model_words = self
            .model
            .as_ref()
            .map_or(0, |m| m.featurizer().max_words());
        let text = normalize(message.text, self.classifier.max_words().max(model_words));
        let tokens = self.classifier.tokenize_normalized(text);
        let found = self.classifier.classify(&tokens);
        let mut scores: Vec<(f64, Why<'_>)> = found
            .scores
            .iter()
            .map(|s| {
                if s.score > 0.0 {
                    (s.score, Why::Phrase(s.pattern))
                } else {
                    (0.0, Why::Nothing)
                }
            })
            .collect();
        let mut escalation: Option<String> = found.human.map(str::to_owned);
        let features = self.model.as_ref().map(|m| {
            m.featurizer()
                .features_scanned(tokens.text(), tokens.scanned())
        });
        let prediction = self
            .model
            .as_ref()
            .zip(features.as_ref())
            .map(|(model, f)| model.prediction(f));
        if let Some(prediction) = &prediction {
            let mut strongest_escalation: Option<(f64, usize)> = None;
            for (k, (&p, role)) in prediction.probs.iter().zip(&self.roles).enumerate() {
                match *role {
                    Role::Bot(b) if p > scores[b].0 => scores[b] = (p, Why::Model(k)),
                    Role::Escalate
                        if p >= self.config.classifier.escalate_at
                            && strongest_escalation.is_none_or(|(q, _)| p > q) =>
                    {
                        strongest_escalation = Some((p, k));
                    }
                    _ => {}
                }
            }
            if escalation.is_none()
                && let Some((_, k)) = strongest_escalation
            {
                escalation = Some(self.model_pattern(k, features.as_ref(), Some(prediction)));
            }
        }
        // The strongest signal per target wins, whether the bot's or ours.
        for s in message.signals {
            if s.confidence > scores[s.target].0 {
                let pattern = if s.pattern.is_empty() {
                    "signal"
                } else {
                    s.pattern.as_str()
                };
                scores[s.target] = (s.confidence, Why::Signal(pattern));
            }
        }
        let pattern_of = |why: Why<'_>| match why {
            Why::Nothing => String::new(),
            Why::Phrase(p) | Why::Signal(p) => p.to_owned(),
            Why::Model(k) => self.model_pattern(k, features.as_ref(), prediction.as_ref()),
        };
        let mut checks = Vec::with_capacity(3);

        if let Some(trigger) = escalation {
            let reason = format!("human trigger '{trigger}'");
            checks.push(GateCheck::new("human", false, reason.clone()));
            return Assessment {
                next: Next::Escalate,
                target: None,
                confidence: 1.0,
                threshold: 0.0,
                pattern: trigger,
                pending: Vec::new(),
                reason,
                checks,
            };
        }

        let target = match self.pick(message.source, &scores) {
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
        let (confidence, why) = scores[target];
        if confidence < self.threshold_floor(message.source, target) {
            let threshold = self.base_threshold(message.source, target);
            let reason = format!(
                "'{}' {confidence:.2} below threshold {threshold:.2}",
                self.bot_id(target)
            );
            checks.push(GateCheck::new("threshold", false, reason.clone()));
            return self.stay(checks, Some(target), confidence, threshold, "", reason);
        }
        let pattern = pattern_of(why);
        checks.push(GateCheck::new(
            "intent",
            true,
            format!("'{}' {confidence:.2} via '{pattern}'", self.bot_id(target)),
        ));
        let threshold = self.threshold(message.source, target, &pattern, learned);
        if confidence < threshold {
            let reason = format!(
                "'{}' {confidence:.2} below threshold {threshold:.2}",
                self.bot_id(target)
            );
            checks.push(GateCheck::new("threshold", false, reason.clone()));
            return self.stay(
                checks,
                Some(target),
                confidence,
                threshold,
                &pattern,
                reason,
            );
        }
        checks.push(GateCheck::new(
            "threshold",
            true,
            format!("{confidence:.2} >= {threshold:.2}"),
        ));
        let pending = scores
            .iter()
            .enumerate()
            .filter(|&(b, &(score, why))| {
                b != target
                    && b != message.source
                    && score > 0.0
                    && score >= self.threshold_floor(message.source, b)
                    && score >= self.threshold(message.source, b, &pattern_of(why), learned)
            })
            .map(|(b, _)| self.bot_id(b).to_owned())
            .collect();
        Assessment {
            next: Next::Handoff,
            target: Some(target),
            confidence,
            threshold,
            reason: format!(
                "'{}' {confidence:.2} >= threshold {threshold:.2}",
                self.bot_id(target)
            ),
            pattern,
            pending,
            checks,
        }
    }

    /// A model decision's pattern: `model/<intent>/<strongest word>`, so
    /// learning keeps thresholds per cause (SPEC §2.9). The word is one of
    /// the window that gave the intent its probability.
    fn model_pattern(
        &self,
        class: usize,
        features: Option<&Features>,
        prediction: Option<&Prediction>,
    ) -> String {
        let Some(model) = &self.model else {
            return String::new();
        };
        let name = &model.classes()[class].name;
        let span = prediction.map_or(0..usize::MAX, |p| p.spans[class].clone());
        match features.and_then(|f| model.strongest_in(f, class, span)) {
            Some(word) => format!("model/{name}/{word}"),
            None => format!("model/{name}"),
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

    /// Highest score, never the source. Scores within `classifier.tie_margin`
    /// of the highest go to the better configured priority; among equal
    /// priority the higher score wins, and an equal score is a tie.
    fn pick(&self, source: BotIx, scores: &[(f64, Why<'_>)]) -> Pick {
        let eligible = |b: usize| b != source && scores[b].0 > 0.0;
        let Some(top) = (0..scores.len())
            .filter(|&b| eligible(b))
            .map(|b| scores[b].0)
            .max_by(f64::total_cmp)
        else {
            return Pick::None;
        };
        let margin = self.config.classifier.tie_margin + f64::EPSILON;
        let near: Vec<BotIx> = (0..scores.len())
            .filter(|&b| eligible(b) && scores[b].0 >= top - margin)
            .collect();
        let Some(rank) = near.iter().map(|&b| self.rank[b]).min() else {
            return Pick::None;
        };
        let mut best: Vec<BotIx> = near.into_iter().filter(|&b| self.rank[b] == rank).collect();
        best.sort_by(|&a, &b| scores[b].0.total_cmp(&scores[a].0));
        match best[..] {
            [a, b, ..] if scores[a].0 - scores[b].0 <= f64::EPSILON => Pick::Tie(a, b),
            [a, ..] => Pick::Target(a),
            [] => Pick::None,
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
        let cases: [(&str, Next, Option<BotIx>); 12] = [
            ("I want to sell my house", Next::Handoff, Some(SELLER)),
            ("quiero vender mi casa", Next::Handoff, Some(SELLER)),
            (
                "I need to sell my house, what\u{2019}s my home worth?",
                Next::Handoff,
                Some(SELLER),
            ),
            ("we want to buy a home", Next::Handoff, Some(BUYER)),
            ("queremos comprar una casa", Next::Handoff, Some(BUYER)),
            (
                "I want to sell my house and buy a new one",
                Next::Handoff,
                Some(SELLER),
            ),
            (
                "Quiero vender mi casa y comprar una más pequeña",
                Next::Handoff,
                Some(SELLER),
            ),
            ("can I talk to a real person", Next::Escalate, None),
            ("quiero hablar con una persona real", Next::Escalate, None),
            ("I'm facing foreclosure", Next::Escalate, None),
            (
                "me van a embargar la casa, necesito un abogado",
                Next::Escalate,
                None,
            ),
            ("hi, thanks for getting back to me", Next::Stay, None),
        ];
        for (text, next, target) in cases {
            let a = assess(&p, LEAD, text, &[]);
            assert_eq!(a.next, next, "{text}: {a:?}");
            if next != Next::Stay {
                assert_eq!(a.target, target, "{text}: {a:?}");
            }
        }
        for both in [
            "I want to sell my house and buy a new one",
            "Quiero vender mi casa y comprar una más pequeña",
        ] {
            assert_eq!(
                assess(&p, LEAD, both, &[]).pending,
                vec!["buyer".to_owned()],
                "{both}"
            );
        }
        let sell = assess(&p, LEAD, "I want to sell my house", &[]);
        assert!(sell.confidence >= 0.7);
        assert!(sell.pending.is_empty());
    }

    #[test]
    fn negated_intents_stay() {
        let p = policy();
        for text in [
            "I'm not looking to buy, just curious about FHA",
            "not looking to buy, just curious",
            "I'm not looking to sell",
            "we don't want to sell our house",
            "no quiero vender",
            "no quiero vender mi casa",
            "no estamos buscando comprar",
            "nunca vendería mi casa",
        ] {
            let a = assess(&p, LEAD, text, &[]);
            assert_eq!(a.next, Next::Stay, "{text}: {a:?}");
        }
    }

    #[test]
    fn a_model_decision_names_its_intent_and_strongest_word() {
        let p = policy();
        let a = assess(&p, LEAD, "I want to sell my house", &[]);
        assert!(a.pattern.starts_with("model/seller/"), "{}", a.pattern);

        // Learning keys on that pattern: a lowered threshold for it applies.
        struct Lowered(String);
        impl Learned for Lowered {
            fn adjustment(&self, _: BotIx, _: BotIx, pattern: &str) -> f64 {
                if pattern == self.0 { -0.2 } else { 0.0 }
            }
        }
        let m = Message {
            source: LEAD,
            text: "I want to sell my house",
            signals: &[],
        };
        let lowered = p.assess(&m, &Lowered(a.pattern.clone()));
        assert_eq!(lowered.threshold, 0.5);
        assert_eq!(p.assess(&m, &NothingLearned).threshold, 0.7);
    }

    /// Small talk, one sentence each, that states no intent.
    const CHAT: [&str; 10] = [
        "Thanks so much for the info, I will check with my wife tonight.",
        "The weather has been great this week, we went to the beach on Sunday.",
        "My kids are starting school next month so things are busy.",
        "I saw your post on Facebook and it looked really nice.",
        "We had a barbecue with the neighbours last weekend.",
        "Our dog keeps barking at the mailman every morning lol.",
        "I work from home most days so I am usually free after five.",
        "Traffic on the highway was terrible today.",
        "Have a good evening and talk soon.",
        "My sister says hi, she remembers meeting you at the open house last year.",
    ];
    const CHARLA: [&str; 9] = [
        "Gracias por la información, lo voy a platicar con mi esposa esta noche.",
        "Hace muy buen tiempo esta semana, fuimos a la playa el domingo.",
        "Mis hijos empiezan la escuela el mes que viene así que andamos ocupados.",
        "Vi su publicación en Facebook y se veía muy bonita.",
        "El fin de semana hicimos una carne asada con los vecinos.",
        "Nuestro perro le ladra al cartero todas las mañanas jaja.",
        "Trabajo desde casa casi todos los días, normalmente estoy libre después de las cinco.",
        "El tráfico en la carretera estuvo terrible hoy.",
        "Que tenga buena noche y hablamos pronto.",
    ];

    /// `sentences` repeated in turn up to about `bytes`.
    fn chat(sentences: &[&str], bytes: usize) -> String {
        let mut out = String::new();
        for s in sentences.iter().cycle() {
            if out.len() >= bytes {
                break;
            }
            out.push_str(s);
            out.push(' ');
        }
        out
    }

    #[test]
    fn long_chat_with_no_intent_stays() {
        let p = policy();
        for text in [
            chat(&CHAT, 8192),
            chat(&CHAT[..1], 8192),
            chat(&CHARLA, 8192),
            CHARLA.join(" "),
            CHAT.join(" "),
        ] {
            let a = assess(&p, LEAD, &text, &[]);
            assert_eq!(a.next, Next::Stay, "{}: {a:?}", &text[..80]);
        }
    }

    #[test]
    fn long_chat_drifts_to_an_intent_when_scored_whole() {
        // Why windows exist: the same model reading these messages whole
        // hands them off, a small lean of many words adding up.
        let mut model = IntentModel::builtin().unwrap();
        let whole = model.featurizer().spec().clone();
        model = IntentModel::from_bytes(&{
            let mut m = model;
            m.featurizer_mut().set_window_words(0);
            m.to_bytes()
        })
        .unwrap();
        assert_eq!(whole.window_words, 24);
        let p = Policy::with_model(Config::default(), Some(model)).unwrap();
        let drifted = [chat(&CHAT[..1], 8192), chat(&CHARLA, 8192)]
            .iter()
            .filter(|text| assess(&p, LEAD, text, &[]).next == Next::Handoff)
            .count();
        assert!(drifted > 0);
    }

    #[test]
    fn an_intent_inside_a_long_message_is_found_in_its_window() {
        let p = policy();
        let cases = [
            (
                format!(
                    "{} Anyway we decided we want to sell our house this spring, can you help? {}",
                    CHAT[..4].join(" "),
                    CHAT[4..].join(" ")
                ),
                SELLER,
            ),
            (
                format!(
                    "{} We are looking to buy a 3 bedroom place near the school. {}",
                    CHAT[..3].join(" "),
                    CHAT[3..].join(" ")
                ),
                BUYER,
            ),
            (
                format!(
                    "{} Por cierto, queremos vender la casa antes del verano. {}",
                    CHARLA[..4].join(" "),
                    CHARLA[4..].join(" ")
                ),
                SELLER,
            ),
        ];
        for (text, target) in cases {
            let a = assess(&p, LEAD, &text, &[]);
            assert_eq!(a.next, Next::Handoff, "{text}: {a:?}");
            assert_eq!(a.target, Some(target), "{text}: {a:?}");
            // The pattern names a word of the window that decided.
            let word = a.pattern.rsplit('/').next().unwrap();
            let stems = [
                "sell", "vend", "buy", "bedroom", "place", "hous", "cas", "look",
            ];
            assert!(stems.iter().any(|s| word.starts_with(s)), "{}", a.pattern);
        }
        // A negation keeps its words however the windows fall.
        let text = format!(
            "{} I am not looking to sell the house, we just refinanced. {}",
            CHAT[..5].join(" "),
            CHAT[5..].join(" ")
        );
        assert_eq!(assess(&p, LEAD, &text, &[]).next, Next::Stay, "{text}");
    }

    #[test]
    fn a_model_must_fit_the_configured_bots() {
        let mut config = Config::default();
        config.bots.retain(|b| b.id != "buyer");
        config.policy.priority.retain(|b| b != "buyer");
        let err = Policy::new(config).unwrap_err();
        assert_eq!(
            err,
            ConfigError::Invalid {
                key: "classifier.model".into(),
                problem: "the model's intent 'buyer' is neither a configured bot, 'none', \
                          nor in classifier.escalate"
                    .into()
            }
        );
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
        assert_eq!(a.next, Next::Stay);
        assert_ne!(a.target, Some(SELLER));
        let a = assess(&p, LEAD, "hello", &[signal(BUYER, 0.99)]);
        assert_eq!(
            (a.target, a.confidence, a.pattern.as_str()),
            (Some(BUYER), 0.99, "model")
        );
        // The built-in model's own confidence is stronger than a weak signal.
        let a = assess(&p, LEAD, "we want to buy a home", &[signal(BUYER, 0.5)]);
        assert_eq!(a.target, Some(BUYER));
        assert!(
            a.confidence > 0.5 && a.pattern.starts_with("model/buyer/"),
            "{a:?}"
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
            classifier: crate::config::ClassifierConfig {
                model: crate::config::NO_MODEL.into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let p = Policy::new(config).unwrap();
        let a = assess(&p, 0, "I want a refund please", &[]);
        assert_eq!((a.next, a.target), (Next::Handoff, Some(1)));
    }
}
