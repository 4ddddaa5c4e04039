//! The built-in rule classifier (SPEC §2.2, §2.4): configured phrases with
//! weights per target bot, negation-aware, plus the human triggers.
//!
//! Patterns are indexed by their first word, so a message costs one hash
//! lookup per word rather than a scan of every pattern at every position.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use crate::features::Fnv;

use crate::config::Config;
use crate::text::{PatternWord, Tokens, pattern_words, tokenize_up_to};

/// Index of a bot in `Config::bots`.
pub type BotIx = usize;

#[derive(Debug)]
struct Pattern {
    /// The bot it points at; `None` for a human trigger.
    bot: Option<BotIx>,
    phrase: String,
    words: Vec<PatternWord>,
    weight: f64,
}

/// How strongly a message points at one bot, and the pattern that says so most.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BotScore<'a> {
    pub score: f64,
    pub pattern: &'a str,
}

/// What the classifier found in one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification<'a> {
    /// One entry per configured bot.
    pub scores: Vec<BotScore<'a>>,
    /// The first human trigger found, if any.
    pub human: Option<&'a str>,
}

#[derive(Debug)]
pub struct Classifier {
    patterns: Vec<Pattern>,
    /// Patterns whose first word is exact, by that word.
    by_first: HashMap<String, Vec<usize>, BuildHasherDefault<Fnv>>,
    /// Patterns whose first word is a prefix (`foreclos*`), by the prefix's
    /// first byte: tried at the words that start with that byte.
    prefix_first: Vec<Vec<usize>>,
    negations: Vec<String>,
    negation_window: usize,
    clause_breaks: Vec<String>,
    max_words: usize,
    bots: usize,
}

impl Classifier {
    /// Compiles the configured intents; `config` must have been validated.
    pub fn new(config: &Config) -> Self {
        let ix = |id: &str| config.bots.iter().position(|b| b.id == id);
        let mut patterns = Vec::new();
        for intent in &config.intents {
            let Some(bot) = ix(&intent.bot) else { continue };
            for p in &intent.patterns {
                patterns.push(Pattern {
                    bot: Some(bot),
                    phrase: p.phrase.clone(),
                    words: pattern_words(&p.phrase),
                    weight: p.weight,
                });
            }
        }
        for phrase in &config.human.patterns {
            patterns.push(Pattern {
                bot: None,
                phrase: phrase.clone(),
                words: pattern_words(phrase),
                weight: 1.0,
            });
        }
        let mut by_first: HashMap<String, Vec<usize>, BuildHasherDefault<Fnv>> = HashMap::default();
        let mut prefix_first = vec![Vec::new(); 256];
        for (i, p) in patterns.iter().enumerate() {
            match p.words.first() {
                Some(PatternWord::Exact(w)) => by_first.entry(w.clone()).or_default().push(i),
                Some(PatternWord::Prefix(w)) => match w.as_bytes().first() {
                    Some(&b) => prefix_first[usize::from(b)].push(i),
                    // An empty prefix matches every word.
                    None => (0..256).for_each(|b| prefix_first[b].push(i)),
                },
                None => {}
            }
        }
        Self {
            patterns,
            by_first,
            prefix_first,
            negations: config.classifier.negations.clone(),
            negation_window: config.classifier.negation_window,
            clause_breaks: config.classifier.clause_breaks.clone(),
            max_words: config.classifier.max_words,
            bots: config.bots.len(),
        }
    }

    pub fn tokenize(&self, message: &str) -> Tokens {
        tokenize_up_to(message, &self.clause_breaks, self.max_words)
    }

    /// Splits a text already normalised for at least `max_words` words.
    pub fn tokenize_normalized(&self, text: String) -> Tokens {
        Tokens::split(text, &self.clause_breaks, self.max_words)
    }

    /// Words of a message the phrase rules read.
    pub fn max_words(&self) -> usize {
        self.max_words
    }

    /// Scores every bot (independent matches combine as 1 − Π(1 − weight))
    /// and finds the first human trigger.
    pub fn classify(&self, tokens: &Tokens) -> Classification<'_> {
        let mut matched = vec![false; self.patterns.len()];
        for start in 0..tokens.len() {
            let word = tokens.word(start);
            let exact = self.by_first.get(word).map_or(&[][..], Vec::as_slice);
            let prefixed = word
                .as_bytes()
                .first()
                .map_or(&[][..], |&b| self.prefix_first[usize::from(b)].as_slice());
            for &i in exact.iter().chain(prefixed) {
                if !matched[i] && self.matches_at(tokens, &self.patterns[i], start) {
                    matched[i] = true;
                }
            }
        }
        let mut miss = vec![1.0f64; self.bots];
        let mut best: Vec<(f64, &str)> = vec![(0.0, ""); self.bots];
        let mut human = None;
        for (p, _) in self.patterns.iter().zip(&matched).filter(|(_, m)| **m) {
            match p.bot {
                Some(bot) => {
                    miss[bot] *= 1.0 - p.weight;
                    if p.weight > best[bot].0 {
                        best[bot] = (p.weight, &p.phrase);
                    }
                }
                None => {
                    human.get_or_insert(p.phrase.as_str());
                }
            }
        }
        let scores = miss
            .iter()
            .zip(best)
            .map(|(m, (_, pattern))| BotScore {
                score: 1.0 - m,
                pattern,
            })
            .collect();
        Classification { scores, human }
    }

    /// Whether `p` occurs at `start`, within one clause, and un-negated.
    fn matches_at(&self, tokens: &Tokens, p: &Pattern, start: usize) -> bool {
        let n = p.words.len();
        if start + n > tokens.len() {
            return false;
        }
        let clause = tokens.clause(start);
        p.words
            .iter()
            .enumerate()
            .all(|(k, w)| tokens.clause(start + k) == clause && w.matches(tokens.word(start + k)))
            && !self.negated(tokens, start)
    }

    /// A negation word up to `negation_window` words before `start`, in the same clause.
    fn negated(&self, tokens: &Tokens, start: usize) -> bool {
        let clause = tokens.clause(start);
        (start.saturating_sub(self.negation_window)..start).any(|i| {
            tokens.clause(i) == clause && self.negations.iter().any(|n| n == tokens.word(i))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phrases() -> Config {
        Config {
            intents: crate::config::example_phrase_intents(),
            ..Config::default()
        }
    }

    fn scores(message: &str) -> (f64, f64) {
        let config = phrases();
        let c = Classifier::new(&config);
        let s = c.classify(&c.tokenize(message)).scores;
        (s[2].score, s[1].score) // seller, buyer
    }

    #[test]
    fn one_clear_sentence_reaches_the_threshold() {
        let (seller, buyer) = scores("I want to sell my house");
        assert!(seller >= 0.7, "{seller}");
        assert_eq!(buyer, 0.0);
    }

    #[test]
    fn curly_and_straight_apostrophes_score_the_same() {
        let curly = scores("I need to sell my house, what\u{2019}s my home worth?");
        let straight = scores("I need to sell my house, what's my home worth?");
        assert_eq!(curly, straight);
        assert!(curly.0 >= 0.7);
    }

    #[test]
    fn negation_cancels_the_intent_in_its_clause_only() {
        let (_, buyer) = scores("I'm not looking to buy, just curious about FHA");
        assert!(buyer < 0.7, "{buyer}");
        let (_, buyer) = scores("I'm not looking to sell, I want to buy a house");
        assert!(buyer >= 0.7, "{buyer}");
    }

    #[test]
    fn a_pattern_counts_once_however_often_it_occurs() {
        assert_eq!(scores("sell"), scores("sell sell sell. sell!"));
    }

    #[test]
    fn human_triggers() {
        let config = Config::default();
        let c = Classifier::new(&config);
        let t = |m: &str| c.classify(&c.tokenize(m)).human.map(str::to_owned);
        assert_eq!(
            t("can I talk to a real person").as_deref(),
            Some("real person")
        );
        assert_eq!(t("I'm facing foreclosure").as_deref(), Some("foreclos*"));
        assert_eq!(t("I am not facing foreclosure"), None);
        assert_eq!(t("I want to sell my house"), None);
    }
}
