//! Labelled corpora: JSON Lines, one message per line,
//! `{"text": "...", "intent": "seller", "pending": ["buyer"], "lang": "en"}`.
//! `pending` (other intents the message also carries) and `lang` are
//! optional. Blank lines are skipped; any other bad line is an error that
//! names its line number.

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::TrainError;

/// One labelled message.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// 1-based line number in its file.
    pub line: usize,
    pub text: String,
    pub intent: String,
    pub pending: Vec<String>,
    pub lang: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    text: String,
    intent: String,
    #[serde(default)]
    pending: Vec<String>,
    #[serde(default)]
    lang: Option<String>,
}

/// Parses a corpus. Every intent and pending intent must be in `known`
/// when it is given.
pub fn parse(text: &str, known: Option<&BTreeSet<String>>) -> Result<Vec<Example>, TrainError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let l: Line = serde_json::from_str(raw).map_err(|e| TrainError::Line {
            line,
            problem: e.to_string(),
        })?;
        if l.text.trim().is_empty() {
            return Err(TrainError::Line {
                line,
                problem: "'text' is empty".into(),
            });
        }
        for label in std::iter::once(&l.intent).chain(&l.pending) {
            if label.trim().is_empty() {
                return Err(TrainError::Line {
                    line,
                    problem: "an intent is empty".into(),
                });
            }
            if let Some(known) = known
                && !known.contains(label)
            {
                return Err(TrainError::UnknownIntent {
                    line,
                    intent: label.clone(),
                    known: known.iter().cloned().collect::<Vec<_>>().join(", "),
                });
            }
        }
        if l.pending.contains(&l.intent) {
            return Err(TrainError::Line {
                line,
                problem: format!("'{}' is both the intent and pending", l.intent),
            });
        }
        out.push(Example {
            line,
            text: l.text,
            intent: l.intent,
            pending: l.pending,
            lang: l.lang,
        });
    }
    if out.is_empty() {
        return Err(TrainError::Empty);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> BTreeSet<String> {
        ["none", "seller", "buyer"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    }

    #[test]
    fn reads_lines_and_skips_blank_ones() {
        let text = "{\"text\":\"sell it\",\"intent\":\"seller\",\"pending\":[\"buyer\"],\"lang\":\"en\"}\n\n{\"text\":\"hola\",\"intent\":\"none\"}\n";
        let got = parse(text, Some(&known())).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].pending, vec!["buyer".to_owned()]);
        assert_eq!((got[1].line, got[1].lang.as_deref()), (3, None));
    }

    #[test]
    fn a_bad_line_is_named_by_its_number() {
        let text = "{\"text\":\"a\",\"intent\":\"none\"}\n{\"text\":\"b\"\n";
        let err = parse(text, None).unwrap_err();
        assert!(matches!(err, TrainError::Line { line: 2, .. }), "{err}");
        assert!(err.to_string().starts_with("line 2: "), "{err}");

        let text = "{\"text\":\"a\",\"intent\":\"none\",\"lable\":1}\n";
        let err = parse(text, None).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("lable"), "{err}");

        let text = "{\"text\":\"  \",\"intent\":\"none\"}\n";
        assert!(
            parse(text, None)
                .unwrap_err()
                .to_string()
                .contains("'text' is empty")
        );
    }

    #[test]
    fn an_unknown_intent_is_named() {
        let text = "{\"text\":\"a\",\"intent\":\"none\"}\n{\"text\":\"b\",\"intent\":\"renter\"}\n";
        let err = parse(text, Some(&known())).unwrap_err().to_string();
        assert_eq!(
            err,
            "line 2: unknown intent 'renter' (known: buyer, none, seller)"
        );
    }

    #[test]
    fn an_empty_corpus_is_an_error() {
        assert_eq!(parse("\n\n", None).unwrap_err(), TrainError::Empty);
    }
}
