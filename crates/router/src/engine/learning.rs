//! The learned-threshold cache: outcome windows per route and pattern, fed
//! by outcomes recorded here and by other routers through the store.

use baton_policy::OutcomeWindow;
use baton_store::RouteKey;

use super::{Engine, LearnedThreshold, Learning, read, write};

impl Engine {
    /// Puts a window into the cache; returns the route's threshold with it.
    pub(super) fn learn(&self, key: &RouteKey, window: OutcomeWindow) -> f64 {
        let (Some(s), Some(t)) = (
            self.policy.bot_ix(&key.source),
            self.policy.bot_ix(&key.target),
        ) else {
            return self.policy.config().policy.threshold;
        };
        let adjustment = window.adjustment(&self.policy.config().learning);
        let mut learned = write(&self.learned);
        let n = learned.bots;
        learned.routes[s * n + t].insert(key.pattern.clone(), Learning { window, adjustment });
        self.policy.threshold(s, t, &key.pattern, &*learned)
    }

    /// Every route and pattern with outcomes, and its threshold now.
    pub fn learned_thresholds(&self) -> Vec<LearnedThreshold> {
        let learned = read(&self.learned);
        let n = learned.bots;
        let mut out = Vec::new();
        for (ix, patterns) in learned.routes.iter().enumerate() {
            let (s, t) = (ix / n, ix % n);
            for (pattern, l) in patterns {
                out.push(LearnedThreshold {
                    key: RouteKey {
                        source: self.policy.bot_id(s).to_owned(),
                        target: self.policy.bot_id(t).to_owned(),
                        pattern: pattern.clone(),
                    },
                    base: self.policy.base_threshold(s, t),
                    adjustment: l.adjustment,
                    threshold: self.policy.threshold(s, t, pattern, &*learned),
                    outcomes: l.window.outcomes(),
                    successes: l.window.successes(),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}
