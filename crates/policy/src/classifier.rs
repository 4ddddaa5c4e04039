//! The built-in rule classifier (SPEC §2.2, §2.4): configured phrases with
//! weights per target bot, negation-aware, plus the human triggers.

use crate::config::Config;
use crate::text::{PatternWord, Tokens, pattern_words, tokenize};

/// Index of a bot in `Config::bots`.
pub type BotIx = usize;

#[derive(Debug)]
struct Pattern {
    bot: BotIx,
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

#[derive(Debug)]
pub struct Classifier {
    patterns: Vec<Pattern>,
    human: Vec<Pattern>,
    negations: Vec<String>,
    negation_window: usize,
    clause_breaks: Vec<String>,
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
                    bot,
                    phrase: p.phrase.clone(),
                    words: pattern_words(&p.phrase),
                    weight: p.weight,
                });
            }
        }
        let human = config
            .human
            .patterns
            .iter()
            .map(|phrase| Pattern {
                bot: 0,
                phrase: phrase.clone(),
                words: pattern_words(phrase),
                weight: 1.0,
            })
            .collect();
        Self {
            patterns,
            human,
            negations: config.classifier.negations.clone(),
            negation_window: config.classifier.negation_window,
            clause_breaks: config.classifier.clause_breaks.clone(),
            bots: config.bots.len(),
        }
    }

    pub fn tokenize(&self, message: &str) -> Tokens {
        tokenize(message, &self.clause_breaks)
    }

    /// Scores every bot; independent matches combine as 1 − Π(1 − weight).
    pub fn score(&self, tokens: &Tokens) -> Vec<BotScore<'_>> {
        let mut miss = vec![1.0f64; self.bots];
        let mut best: Vec<(f64, &str)> = vec![(0.0, ""); self.bots];
        for p in &self.patterns {
            if self.find(tokens, p) {
                miss[p.bot] *= 1.0 - p.weight;
                if p.weight > best[p.bot].0 {
                    best[p.bot] = (p.weight, &p.phrase);
                }
            }
        }
        miss.iter()
            .zip(best)
            .map(|(m, (_, pattern))| BotScore {
                score: 1.0 - m,
                pattern,
            })
            .collect()
    }

    /// The first human trigger in the message, if any.
    pub fn human_trigger(&self, tokens: &Tokens) -> Option<&str> {
        self.human
            .iter()
            .find(|p| self.find(tokens, p))
            .map(|p| p.phrase.as_str())
    }

    /// Whether `p` occurs, un-negated, within one clause of `tokens`.
    fn find(&self, tokens: &Tokens, p: &Pattern) -> bool {
        let n = p.words.len();
        if n == 0 || tokens.len() < n {
            return false;
        }
        (0..=tokens.len() - n).any(|start| {
            let clause = tokens.clause(start);
            p.words.iter().enumerate().all(|(k, w)| {
                tokens.clause(start + k) == clause && w.matches(tokens.word(start + k))
            }) && !self.negated(tokens, start)
        })
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

    fn scores(message: &str) -> (f64, f64) {
        let config = Config::default();
        let c = Classifier::new(&config);
        let s = c.score(&c.tokenize(message));
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
    fn human_triggers() {
        let config = Config::default();
        let c = Classifier::new(&config);
        let t = |m: &str| c.human_trigger(&c.tokenize(m)).map(str::to_owned);
        assert_eq!(
            t("can I talk to a real person").as_deref(),
            Some("real person")
        );
        assert_eq!(t("I'm facing foreclosure").as_deref(), Some("foreclos*"));
        assert_eq!(t("I want to sell my house"), None);
    }
}
