//! Text normalisation and tokenising for the intent classifier: Unicode
//! NFKC, lower case, curly quotes made straight, then words split into
//! clauses at punctuation and at configured clause words ("but").

use unicode_normalization::UnicodeNormalization;

/// A message made ready for matching: its normalised text and the words in it.
#[derive(Debug, Default)]
pub struct Tokens {
    text: String,
    /// Every word of `text`, before clause words are taken out (see [`scan`]).
    scanned: Vec<Span>,
    /// Byte range of each word in `text`, and the clause it belongs to.
    words: Vec<Span>,
}

/// A word's byte range in its text, and a clause number.
pub type Span = (usize, usize, u32);

impl Tokens {
    /// Splits an already normalised text (see [`normalize`]).
    pub fn split(text: String, clause_breaks: &[String], max_words: usize) -> Self {
        let scanned = scan(&text);
        let words = clauses(&text, &scanned, clause_breaks, max_words);
        Self {
            text,
            scanned,
            words,
        }
    }

    /// Every word of the text as [`scan`] found it, for a reader that
    /// splits clauses at other words (see [`clauses`]).
    pub fn scanned(&self) -> &[Span] {
        &self.scanned
    }

    /// The normalised text.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    pub fn word(&self, i: usize) -> &str {
        let (start, end, _) = self.words[i];
        &self.text[start..end]
    }

    pub fn clause(&self, i: usize) -> u32 {
        self.words[i].2
    }
}

/// Maps the typographic quotes people and phones produce to ASCII ones, so
/// "what’s" and "what's" are the same word.
fn straighten(c: char) -> char {
    match c {
        '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' | '\u{2032}' | '\u{02BC}' | '`' => '\'',
        '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' | '\u{2033}' => '"',
        other => other,
    }
}

/// Normalises `message` and splits it into words and clauses.
pub fn tokenize(message: &str, clause_breaks: &[String]) -> Tokens {
    tokenize_up_to(message, clause_breaks, usize::MAX)
}

/// [`tokenize`], reading no further than `max_words` words: an 8 KiB message
/// costs what its start costs.
pub fn tokenize_up_to(message: &str, clause_breaks: &[String], max_words: usize) -> Tokens {
    Tokens::split(normalize(message, max_words), clause_breaks, max_words)
}

/// NFKC, lower case and straight quotes, of no more of `message` than can
/// hold `max_words` words.
pub fn normalize(message: &str, max_words: usize) -> String {
    // Words average well under 16 bytes with their separators: normalise
    // only the part that can hold `max_words` of them, cut at a char boundary.
    let mut cut = message.len().min(max_words.saturating_mul(16));
    while !message.is_char_boundary(cut) {
        cut += 1;
    }
    let message = &message[..cut];
    // ASCII is its own NFKC form and has no curly quotes: only case to fold.
    if message.is_ascii() {
        message.to_ascii_lowercase()
    } else {
        let mut text = String::with_capacity(message.len());
        for c in message.nfkc().map(straighten) {
            text.extend(c.to_lowercase());
        }
        text
    }
}

/// The byte range and clause of each of the first `max_words` words of a
/// normalised `text`, clause words taken out.
pub fn split(text: &str, clause_breaks: &[String], max_words: usize) -> Vec<Span> {
    clauses(text, &scan(text), clause_breaks, max_words)
}

/// Every word of a normalised `text` (bounded by [`normalize`]), numbered
/// by the clause punctuation before it. One scan serves readers that split
/// clauses at different words.
pub fn scan(text: &str) -> Vec<Span> {
    let mut words = Vec::with_capacity(text.len() / 5 + 1);
    let mut clause = 0u32;
    let mut start: Option<usize> = None;
    if text.is_ascii() {
        // The same rules over bytes (an ASCII char is alphanumeric exactly
        // when its byte is), a word at a time.
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if !bytes[i].is_ascii_alphanumeric() {
                if is_clause_mark(char::from(bytes[i])) {
                    clause += 1;
                }
                i += 1;
                continue;
            }
            let begin = i;
            loop {
                while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
                    i += 1;
                }
                // An apostrophe between two letters stays in the word.
                if bytes.get(i) == Some(&b'\'')
                    && bytes.get(i + 1).is_some_and(u8::is_ascii_alphanumeric)
                {
                    i += 2;
                    continue;
                }
                break;
            }
            words.push((begin, i, clause));
        }
    } else {
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            // An apostrophe belongs to a word only between two letters (what's, don't).
            let in_word = c.is_alphanumeric()
                || (c == '\''
                    && start.is_some()
                    && chars.peek().is_some_and(|&(_, n)| n.is_alphanumeric()));
            if in_word {
                start.get_or_insert(i);
                continue;
            }
            if let Some(s) = start.take() {
                words.push((s, i, clause));
            }
            if is_clause_mark(c) {
                clause += 1;
            }
        }
    }
    if let Some(s) = start {
        words.push((s, text.len(), clause));
    }
    words
}

fn is_clause_mark(c: char) -> bool {
    matches!(c, '.' | ',' | ';' | ':' | '!' | '?' | '\n' | '(' | ')')
}

/// The first `max_words` words of `scanned` that are not `clause_breaks`;
/// each clause word starts a new clause, as punctuation does.
pub fn clauses(
    text: &str,
    scanned: &[Span],
    clause_breaks: &[String],
    max_words: usize,
) -> Vec<Span> {
    let mut words = Vec::with_capacity(scanned.len().min(max_words));
    let mut breaks = 0u32;
    for &(start, end, clause) in scanned {
        if words.len() >= max_words {
            break;
        }
        let word = &text[start..end];
        if clause_breaks.iter().any(|b| {
            b.len() == word.len() && b.as_bytes().first() == word.as_bytes().first() && b == word
        }) {
            breaks += 1;
            continue;
        }
        words.push((start, end, clause + breaks));
    }
    words
}

/// One word of a pattern: exact, or a prefix when written with a trailing `*`.
#[derive(Debug, Clone, PartialEq)]
pub enum PatternWord {
    Exact(String),
    Prefix(String),
}

impl PatternWord {
    pub fn matches(&self, word: &str) -> bool {
        match self {
            PatternWord::Exact(w) => w == word,
            PatternWord::Prefix(p) => word.starts_with(p.as_str()),
        }
    }
}

/// Splits a configured phrase into pattern words, normalised like messages are.
pub fn pattern_words(phrase: &str) -> Vec<PatternWord> {
    let wild: Vec<bool> = phrase
        .split_whitespace()
        .map(|w| w.ends_with('*'))
        .collect();
    let tokens = tokenize(phrase, &[]);
    // A phrase like "pre-approved" tokenises into two words; a trailing `*`
    // applies to the last word of the whitespace-separated piece that carried it.
    let mut out = Vec::with_capacity(tokens.len());
    let pieces: Vec<&str> = phrase.split_whitespace().collect();
    let mut k = 0;
    for (piece, wild) in pieces.iter().zip(wild) {
        let n = tokenize(piece, &[]).len();
        for j in 0..n {
            let word = tokens.word(k).to_owned();
            k += 1;
            out.push(if wild && j + 1 == n {
                PatternWord::Prefix(word)
            } else {
                PatternWord::Exact(word)
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(t: &Tokens) -> Vec<(&str, u32)> {
        (0..t.len()).map(|i| (t.word(i), t.clause(i))).collect()
    }

    #[test]
    fn normalises_case_width_and_quotes() {
        let t = tokenize("What’s MY Ｈｏｍｅ worth?", &[]);
        assert_eq!(
            words(&t),
            vec![("what's", 0), ("my", 0), ("home", 0), ("worth", 0)]
        );
    }

    #[test]
    fn punctuation_and_clause_words_split_clauses() {
        let breaks = vec!["but".to_owned()];
        let t = tokenize("not selling, but buying. 'ok'", &breaks);
        assert_eq!(
            words(&t),
            vec![("not", 0), ("selling", 0), ("buying", 2), ("ok", 3)]
        );
    }

    #[test]
    fn ascii_and_unicode_texts_split_alike() {
        let breaks = vec!["but".to_owned()];
        let ascii = "don't sell, but 'buy' it's ok... 'tis x'";
        let unicode = format!("{ascii} é");
        let a = split(ascii, &breaks, 100);
        let u = split(&unicode, &breaks, 100);
        assert_eq!(a.len(), 7);
        assert_eq!(u[..a.len()], a[..]);
        assert_eq!(u.len(), a.len() + 1);
        // Clause words are not counted against max_words.
        assert_eq!(split(ascii, &breaks, 3), a[..3]);
    }

    #[test]
    fn pattern_words_support_prefixes_and_hyphens() {
        assert_eq!(
            pattern_words("foreclos* pre-approved"),
            vec![
                PatternWord::Prefix("foreclos".into()),
                PatternWord::Exact("pre".into()),
                PatternWord::Exact("approved".into()),
            ]
        );
    }
}
