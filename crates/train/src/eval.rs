//! Evaluation: every message goes through the same [`Policy::assess`] the
//! router runs (from one source bot, nothing learned), and what it decides
//! is compared with the label: `none` for a stay, the target bot for a
//! handoff, the escalation class for a person.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use baton_policy::{Message, Next, NothingLearned, Policy};

use crate::corpus::Example;

/// Thresholds the report tabulates.
pub const THRESHOLDS: [f64; 10] = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95];

/// What the policy decided for one message, in label terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Predicted {
    pub intent: String,
    pub pending: Vec<String>,
    /// The best handoff target and its confidence, whatever the threshold.
    pub candidate: Option<(String, f64)>,
    pub escalated: bool,
}

/// Accuracy and handoff rate at one threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct AtThreshold {
    pub threshold: f64,
    pub accuracy: f64,
    pub handoff_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

/// Everything `baton-router eval` prints.
#[derive(Debug, Clone)]
pub struct Report {
    pub total: usize,
    pub correct: usize,
    /// Intent and pending intents both right.
    pub exact: usize,
    pub per_intent: BTreeMap<String, Scores>,
    /// `confusion[gold][predicted]`.
    pub confusion: BTreeMap<String, BTreeMap<String, usize>>,
    pub per_lang: BTreeMap<String, (usize, usize)>,
    pub thresholds: Vec<AtThreshold>,
    /// `none` messages with a negation word, and how many were handed off.
    pub negated: (usize, usize),
    /// Messages labelled with an escalation class, and how many escalated.
    pub escalations: (usize, usize),
    pub misses: Vec<(usize, String, String, String)>,
}

impl Report {
    pub fn accuracy(&self) -> f64 {
        ratio(self.correct, self.total)
    }

    pub fn lang_accuracy(&self, lang: &str) -> Option<f64> {
        self.per_lang.get(lang).map(|&(c, n)| ratio(c, n))
    }

    pub fn escalation_recall(&self) -> f64 {
        ratio(self.escalations.1, self.escalations.0)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// What `policy` decides for `text` from `source`.
pub fn predict(policy: &Policy, source: usize, text: &str) -> Predicted {
    let a = policy.assess(
        &Message {
            source,
            text,
            signals: &[],
        },
        &NothingLearned,
    );
    let candidate = a
        .target
        .map(|t| (policy.bot_id(t).to_owned(), a.confidence));
    match a.next {
        Next::Escalate => Predicted {
            intent: escalation_class(policy, text),
            pending: Vec::new(),
            candidate,
            escalated: true,
        },
        Next::Handoff => Predicted {
            intent: candidate.as_ref().map(|c| c.0.clone()).unwrap_or_default(),
            pending: a.pending,
            candidate,
            escalated: false,
        },
        Next::Stay => Predicted {
            intent: "none".into(),
            pending: Vec::new(),
            candidate,
            escalated: false,
        },
    }
}

/// Which escalation class an escalated message belongs to: the model's most
/// probable one, or the first configured when no model is used.
fn escalation_class(policy: &Policy, text: &str) -> String {
    let escalate = &policy.config().classifier.escalate;
    let fallback = escalate.first().cloned().unwrap_or_else(|| "human".into());
    let Some(model) = policy.model() else {
        return fallback;
    };
    let probs = model.predict(&model.featurizer().features(text));
    model
        .classes()
        .iter()
        .zip(probs)
        .filter(|(c, _)| escalate.contains(&c.name))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(fallback, |(c, _)| c.name.clone())
}

/// Runs every example from `source` and tallies the report.
pub fn evaluate(policy: &Policy, source: usize, examples: &[Example]) -> Report {
    let escalate = &policy.config().classifier.escalate;
    let featurizer = policy.model().map(|m| m.featurizer());
    let negations = &policy.config().classifier.negations;
    let mut r = Report {
        total: examples.len(),
        correct: 0,
        exact: 0,
        per_intent: BTreeMap::new(),
        confusion: BTreeMap::new(),
        per_lang: BTreeMap::new(),
        thresholds: Vec::new(),
        negated: (0, 0),
        escalations: (0, 0),
        misses: Vec::new(),
    };
    let mut at: Vec<(usize, usize)> = vec![(0, 0); THRESHOLDS.len()];
    let mut labels: BTreeSet<String> = BTreeSet::new();
    let mut pairs = Vec::with_capacity(examples.len());
    for e in examples {
        let p = predict(policy, source, &e.text);
        let right = p.intent == e.intent;
        r.correct += usize::from(right);
        let mut want: Vec<&String> = e.pending.iter().collect();
        let mut got: Vec<&String> = p.pending.iter().collect();
        want.sort();
        got.sort();
        r.exact += usize::from(right && want == got);
        let lang = e.lang.clone().unwrap_or_else(|| "?".into());
        let entry = r.per_lang.entry(lang).or_default();
        entry.0 += usize::from(right);
        entry.1 += 1;
        *r.confusion
            .entry(e.intent.clone())
            .or_default()
            .entry(p.intent.clone())
            .or_default() += 1;
        labels.insert(e.intent.clone());
        labels.insert(p.intent.clone());
        if escalate.contains(&e.intent) {
            r.escalations.0 += 1;
            r.escalations.1 += usize::from(p.escalated);
        }
        let negated = e.intent == "none" && has_negation(featurizer, negations, &e.text);
        if negated {
            r.negated.0 += 1;
            r.negated.1 += usize::from(!p.escalated && p.intent != "none");
        }
        for (i, &t) in THRESHOLDS.iter().enumerate() {
            let intent = if p.escalated {
                p.intent.as_str()
            } else {
                match &p.candidate {
                    Some((bot, c)) if *c >= t => bot.as_str(),
                    _ => "none",
                }
            };
            at[i].0 += usize::from(intent == e.intent);
            at[i].1 += usize::from(!p.escalated && intent != "none");
        }
        if !right {
            r.misses
                .push((e.line, e.text.clone(), e.intent.clone(), p.intent.clone()));
        }
        pairs.push((e.intent.clone(), p.intent));
    }
    for label in labels {
        let tp = pairs
            .iter()
            .filter(|(g, p)| *g == label && *p == label)
            .count();
        let gold = pairs.iter().filter(|(g, _)| *g == label).count();
        let pred = pairs.iter().filter(|(_, p)| *p == label).count();
        let precision = ratio(tp, pred);
        let recall = ratio(tp, gold);
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        r.per_intent.insert(
            label,
            Scores {
                precision,
                recall,
                f1,
                support: gold,
            },
        );
    }
    r.thresholds = THRESHOLDS
        .iter()
        .zip(at)
        .map(|(&threshold, (c, h))| AtThreshold {
            threshold,
            accuracy: ratio(c, r.total),
            handoff_rate: ratio(h, r.total),
        })
        .collect();
    r
}

/// Whether a negation word governs any word of `text`.
fn has_negation(
    featurizer: Option<&baton_policy::features::Featurizer>,
    negations: &[String],
    text: &str,
) -> bool {
    match featurizer {
        Some(f) => f.negated(&f.words(text)).iter().any(|n| *n),
        None => {
            let lower = text.to_lowercase();
            lower
                .split(|c: char| !c.is_alphanumeric() && c != '\'')
                .any(|w| negations.iter().any(|n| n == w))
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "messages {}  accuracy {:.2}%  exact (with pending) {:.2}%",
            self.total,
            100.0 * self.accuracy(),
            100.0 * ratio(self.exact, self.total)
        )?;
        for (lang, &(c, n)) in &self.per_lang {
            writeln!(
                f,
                "  lang {lang:<4} {:>6.2}%  ({c}/{n})",
                100.0 * ratio(c, n)
            )?;
        }
        writeln!(
            f,
            "escalation recall {:.2}% ({}/{})  handoffs on negated intents {} of {}",
            100.0 * self.escalation_recall(),
            self.escalations.1,
            self.escalations.0,
            self.negated.1,
            self.negated.0
        )?;
        writeln!(f, "\nintent      precision  recall     f1  support")?;
        for (label, s) in &self.per_intent {
            writeln!(
                f,
                "{label:<10} {:>9.3} {:>7.3} {:>6.3} {:>8}",
                s.precision, s.recall, s.f1, s.support
            )?;
        }
        let labels: Vec<&String> = self.per_intent.keys().collect();
        write!(f, "\nconfusion (rows: label, columns: decided)\n{:<10}", "")?;
        for l in &labels {
            write!(f, " {:>7}", truncate(l))?;
        }
        writeln!(f)?;
        for gold in &labels {
            write!(f, "{:<10}", truncate(gold))?;
            for pred in &labels {
                let n = self
                    .confusion
                    .get(*gold)
                    .and_then(|row| row.get(*pred))
                    .copied()
                    .unwrap_or(0);
                write!(f, " {n:>7}")?;
            }
            writeln!(f)?;
        }
        writeln!(f, "\nthreshold  accuracy  handoff rate")?;
        for t in &self.thresholds {
            writeln!(
                f,
                "{:>9.2} {:>8.2}% {:>12.2}%",
                t.threshold,
                100.0 * t.accuracy,
                100.0 * t.handoff_rate
            )?;
        }
        Ok(())
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(7).collect()
}
