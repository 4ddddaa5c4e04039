//! The context packet that moves with a contact (SPEC §5) and how packets merge.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub min: f64,
    pub max: f64,
    pub currency: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PropertyPreferences {
    pub locations: Vec<String>,
    pub property_types: Vec<String>,
    pub bedrooms_min: Option<u32>,
    pub bathrooms_min: Option<u32>,
    pub must_haves: Vec<String>,
}

/// What bots extracted about a contact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContextPacket {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub property_preferences: Option<PropertyPreferences>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub property_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qualification_score: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_summary: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub answered_questions: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pending_intents: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

impl ContextPacket {
    /// Folds a later bot's packet into this one: a field the later packet
    /// sets wins, a field it leaves unset keeps the earlier answer; answered
    /// questions, pending intents and attributes accumulate. Every question
    /// field that is set counts as answered, so the next bot does not re-ask.
    pub fn merge(&mut self, later: ContextPacket) {
        fn keep<T>(slot: &mut Option<T>, later: Option<T>) {
            if later.is_some() {
                *slot = later;
            }
        }
        keep(&mut self.budget, later.budget);
        keep(&mut self.timeline, later.timeline);
        keep(&mut self.property_preferences, later.property_preferences);
        keep(&mut self.property_address, later.property_address);
        keep(&mut self.temperature, later.temperature);
        keep(&mut self.qualification_score, later.qualification_score);
        keep(&mut self.conversation_summary, later.conversation_summary);
        let mut answered = later.answered_questions;
        let fields = [
            ("budget", self.budget.is_some()),
            ("timeline", self.timeline.is_some()),
            ("property_preferences", self.property_preferences.is_some()),
            ("property_address", self.property_address.is_some()),
        ];
        answered.extend(
            fields
                .into_iter()
                .filter(|(_, set)| *set)
                .map(|(name, _)| name.to_owned()),
        );
        append_unique(&mut self.answered_questions, answered);
        append_unique(&mut self.pending_intents, later.pending_intents);
        self.attributes.extend(later.attributes);
    }
}

/// Appends `later` to `list` and drops every repeat, keeping the first of
/// each in order. One hash set over both lists: a bot may send 10,000
/// answered questions within the context limit, and a search of the list
/// per item made each approval quadratic in them.
fn append_unique(list: &mut Vec<String>, later: Vec<String>) {
    list.extend(later);
    let first: Vec<bool> = {
        let mut seen = HashSet::with_capacity(list.len());
        list.iter().map(|item| seen.insert(item.as_str())).collect()
    };
    let mut first = first.into_iter();
    list.retain(|_| first.next().unwrap_or(true));
}

/// Appends `item` unless `list` has it: for a handful of items (a contact's
/// pending intents); a whole list goes through [`append_unique`].
pub(crate) fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_fields_win_earlier_answers_stay_and_lists_accumulate() {
        let mut packet = ContextPacket {
            timeline: Some("3 months".into()),
            budget: Some(Budget {
                min: 300_000.0,
                max: 450_000.0,
                currency: "USD".into(),
            }),
            answered_questions: vec!["motivation".into()],
            attributes: BTreeMap::from([("source".into(), "web".into())]),
            ..Default::default()
        };
        packet.merge(ContextPacket {
            property_address: Some("12 Elm St".into()),
            timeline: None,
            temperature: Some("hot".into()),
            answered_questions: vec!["motivation".into(), "condition".into()],
            attributes: BTreeMap::from([("beds".into(), "3".into())]),
            ..Default::default()
        });
        assert_eq!(packet.timeline.as_deref(), Some("3 months"));
        assert_eq!(packet.property_address.as_deref(), Some("12 Elm St"));
        assert_eq!(packet.temperature.as_deref(), Some("hot"));
        assert_eq!(
            packet.answered_questions,
            vec![
                "motivation",
                "condition",
                "budget",
                "timeline",
                "property_address"
            ]
        );
        assert_eq!(packet.attributes.len(), 2);
    }

    #[test]
    fn ten_thousand_distinct_questions_merge_once_each_in_order() {
        let questions: Vec<String> = (0..10_000).map(|i| format!("q{i}")).collect();
        let mut packet = ContextPacket {
            answered_questions: vec!["q5".into(), "motivation".into()],
            timeline: Some("3 months".into()),
            ..Default::default()
        };
        let mut later = questions.clone();
        later.push("q17".into()); // a repeat within the later packet
        packet.merge(ContextPacket {
            answered_questions: later,
            ..Default::default()
        });
        let mut expected = vec!["q5".to_owned(), "motivation".to_owned()];
        expected.extend(questions.into_iter().filter(|q| q != "q5"));
        expected.push("timeline".into());
        assert_eq!(packet.answered_questions, expected);
        assert_eq!(packet.answered_questions.len(), 10_002);
        // Merging the same packet again adds nothing.
        let again = packet.clone();
        packet.merge(again.clone());
        assert_eq!(packet, again);
    }
}
