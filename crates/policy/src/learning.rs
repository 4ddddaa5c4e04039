//! Learned threshold adjustments (SPEC §2.9): per (route, pattern), the last
//! `window` outcomes move the route's threshold once there are enough of them.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::config::LearningConfig;

/// How a handoff went, as reported by a bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Successful,
    Failed,
    Reverted,
    Timeout,
}

/// The most recent outcomes of one (route, pattern), newest last.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutcomeWindow {
    recent: VecDeque<bool>,
}

impl OutcomeWindow {
    pub fn record(&mut self, outcome: Outcome, config: &LearningConfig) {
        self.recent.push_back(outcome == Outcome::Successful);
        while self.recent.len() > config.window {
            self.recent.pop_front();
        }
    }

    pub fn outcomes(&self) -> usize {
        self.recent.len()
    }

    pub fn successes(&self) -> usize {
        self.recent.iter().filter(|s| **s).count()
    }

    /// What to add to the route's threshold: nothing below `min_outcomes`,
    /// `-lower_by` above `lower_above` success, `+raise_by` below `raise_below`.
    pub fn adjustment(&self, config: &LearningConfig) -> f64 {
        let n = self.recent.len();
        if n < config.min_outcomes {
            return 0.0;
        }
        let rate = self.successes() as f64 / n as f64;
        if rate > config.lower_above {
            -config.lower_by
        } else if rate < config.raise_below {
            config.raise_by
        } else {
            0.0
        }
    }
}

/// A route's threshold after learning, clamped and rounded to 1e-4 so that
/// 0.7 − 0.05 is exactly 0.65 and a signal of 0.65 meets it.
pub fn learned_threshold(base: f64, adjustment: f64, config: &LearningConfig) -> f64 {
    if adjustment == 0.0 {
        return base;
    }
    let t = (base + adjustment).clamp(config.min_threshold, config.max_threshold);
    (t * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(successes: usize, failures: usize) -> OutcomeWindow {
        let c = LearningConfig::default();
        let mut w = OutcomeWindow::default();
        for _ in 0..successes {
            w.record(Outcome::Successful, &c);
        }
        for _ in 0..failures {
            w.record(Outcome::Failed, &c);
        }
        w
    }

    fn threshold(w: &OutcomeWindow) -> f64 {
        let c = LearningConfig::default();
        learned_threshold(0.7, w.adjustment(&c), &c)
    }

    #[test]
    fn nine_outcomes_change_nothing() {
        assert_eq!(threshold(&window(9, 0)), 0.7);
        assert_eq!(threshold(&window(0, 9)), 0.7);
    }

    #[test]
    fn nine_of_ten_successful_lowers_to_0_65() {
        assert_eq!(threshold(&window(9, 1)), 0.65);
    }

    #[test]
    fn exactly_eight_of_ten_changes_nothing() {
        assert_eq!(threshold(&window(8, 2)), 0.7);
    }

    #[test]
    fn two_of_ten_raises_by_a_tenth() {
        assert_eq!(threshold(&window(2, 8)), 0.8);
    }

    #[test]
    fn only_the_last_hundred_count_and_results_are_clamped() {
        let c = LearningConfig::default();
        // 100 failures then 100 successes: the failures have left the window.
        let w = window(0, 100);
        let mut w2 = w.clone();
        for _ in 0..100 {
            w2.record(Outcome::Successful, &c);
        }
        assert_eq!(w2.outcomes(), 100);
        assert_eq!(threshold(&w2), 0.65);
        assert_eq!(learned_threshold(0.9, 0.1, &c), 0.95);
        assert_eq!(learned_threshold(0.52, -0.05, &c), 0.5);
    }
}
