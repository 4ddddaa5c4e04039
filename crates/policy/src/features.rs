//! What the intent model reads of a message (SPEC §2.2): the normalised
//! words of [`crate::text`], folded (accents dropped, long numbers made one
//! shape), stemmed per language with Snowball, marked when a negation
//! governs them, then hashed into word unigrams, word bigrams and character
//! n-grams of the unstemmed word.
//!
//! Training and serving call the same [`Featurizer`], configured from the
//! model file, so a model always sees features made the way it was trained.

use std::borrow::Cow;
use std::collections::HashMap;

use rust_stemmers::{Algorithm, Stemmer};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use crate::text::{Span, clauses, normalize, scan};

/// How a message is turned into features; stored in the model file.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSpec {
    /// Features hash into `2^bits` buckets.
    pub bits: u8,
    /// Character n-grams of each word, from `char_min` to `char_max` chars.
    pub char_min: u8,
    pub char_max: u8,
    /// Words read per message; longer messages are judged by their start
    /// (an 8 KiB message must still decide in microseconds).
    pub max_words: u32,
    /// A message longer than this many words is scored in windows of this
    /// many words (each overlapping the next by half), every intent taking
    /// its strongest window, so a long message reads like the short ones a
    /// model learned from; 0 scores every message whole.
    pub window_words: u32,
    /// A negation governs this many words after it, within its clause.
    pub negation_window: u8,
    /// Words that negate what follows them ("not", "no", "nunca").
    pub negations: Vec<String>,
    /// Words that end a clause, like punctuation ("but", "pero").
    pub clause_breaks: Vec<String>,
}

impl Default for FeatureSpec {
    fn default() -> Self {
        let words = |w: &[&str]| w.iter().map(|s| (*s).to_owned()).collect();
        Self {
            bits: 18,
            char_min: 3,
            char_max: 4,
            max_words: 96,
            window_words: 24,
            negation_window: 6,
            negations: words(&[
                "not", "no", "never", "dont", "don't", "doesn't", "doesnt", "didn't", "didnt",
                "isn't", "isnt", "aren't", "arent", "won't", "wont", "wouldn't", "wouldnt",
                "can't", "cant", "cannot", "nor", "neither", "nah", "nope", "nunca", "jamas", "ni",
                "tampoco", "nadie", "ningun", "ninguna",
            ]),
            clause_breaks: words(&[
                "but", "however", "although", "though", "just", "pero", "sino", "aunque", "solo",
            ]),
        }
    }
}

/// The language a message is stemmed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Es,
}

/// Function words that tell English from Spanish; after folding.
const ES_WORDS: &[&str] = &[
    "de",
    "la",
    "que",
    "el",
    "en",
    "y",
    "los",
    "las",
    "mi",
    "mis",
    "para",
    "con",
    "una",
    "un",
    "por",
    "es",
    "quiero",
    "queremos",
    "casa",
    "vender",
    "comprar",
    "del",
    "al",
    "lo",
    "se",
    "me",
    "como",
    "pero",
    "esta",
    "estoy",
    "estamos",
    "tengo",
    "hola",
    "si",
    "mas",
    "muy",
    "nuestra",
    "nuestro",
    "cuanto",
    "vale",
    "busco",
    "buscamos",
    "gracias",
    "porque",
    "xq",
    "q",
    "tambien",
    "ya",
    "donde",
    "hay",
    "su",
    "necesito",
    "ayuda",
    "favor",
    "hablar",
    "depa",
    "kiero",
    "pq",
    "tb",
    "vendo",
    "compro",
    "busco",
    "hipoteca",
    "departamento",
    "terreno",
    "usted",
    "ustedes",
];
const EN_WORDS: &[&str] = &[
    "the", "to", "i", "my", "and", "is", "want", "house", "for", "we", "of", "in", "it", "you",
    "a", "our", "home", "sell", "buy", "looking", "what", "how", "can", "this", "that", "with",
    "are", "be", "have", "just", "me", "on", "im", "i'm", "need", "hi", "hello", "thanks", "would",
    "like", "get", "do", "u", "wanna", "pls", "place", "will", "your", "about",
];

/// A message as features: bucket ids (repeats count), the value each carries,
/// and where the plain word unigrams are, to name the strongest one.
#[derive(Debug, Default, Clone)]
pub struct Features {
    pub buckets: Vec<u32>,
    /// The summed weight rows of char n-grams a model scored ahead (see
    /// [`GramSums`]), one per class; empty when none were.
    pub summed: Vec<f32>,
    /// How many buckets `summed` stands for.
    pub summed_count: usize,
    /// `1 / sqrt(buckets)`, every bucket counted (`summed_count` too):
    /// every message's vector has unit-ish length.
    pub value: f32,
    /// (bucket, start, end in `stems`, word index) of each un-negated word
    /// unigram.
    words: Vec<(u32, u32, u32, u32)>,
    stems: String,
    pub lang: Option<Lang>,
    /// Per word, when the message is longer than the spec's window: where
    /// its buckets end in `buckets`, and its share of `summed` (see
    /// [`WordParts`]). Empty for a message scored whole.
    pub parts: WordParts,
}

/// What each word of a long message adds, so that windows of words can be
/// scored without making their features again.
#[derive(Debug, Default, Clone)]
pub struct WordParts {
    /// End of each word's buckets in [`Features::buckets`].
    pub ends: Vec<u32>,
    /// How many char n-grams each word adds through its summed rows.
    pub summed_counts: Vec<u32>,
    /// Each word's summed rows, one per class (zeros when it has none).
    pub summed: Vec<f32>,
}

impl WordParts {
    /// Words recorded; 0 for a message scored whole.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

impl Features {
    /// (bucket, stem) of each un-negated word unigram.
    pub fn words(&self) -> impl Iterator<Item = (u32, &str)> {
        self.words_in(0..usize::MAX)
    }

    /// (bucket, stem) of each un-negated word unigram among the words
    /// `range` (by position in the message).
    pub fn words_in(&self, range: std::ops::Range<usize>) -> impl Iterator<Item = (u32, &str)> {
        self.words
            .iter()
            .filter(move |w| range.contains(&(w.3 as usize)))
            .map(|&(b, s, e, _)| (b, &self.stems[s as usize..e as usize]))
    }
}

/// The char n-grams of the words a model was trained on, scored ahead:
/// per word, how many grams it has and the sums of their weight rows,
/// plain then negated. Scoring a known word then costs one lookup instead of
/// hashing and looking up each of its grams; the same lookup gives what the
/// lexicon knows of it and its stems (see [`Featurizer::set_gram_sums`]).
#[derive(Debug, Default)]
pub struct GramSums {
    classes: usize,
    words: FastMap<Box<str>, Known>,
}

/// Everything a featurizer needs of a word it knows, found in one lookup.
#[derive(Debug)]
struct Known {
    grams: u32,
    sums: Box<[f32]>,
    /// The lexicon's flags of the folded word.
    flags: u8,
    /// Its remembered stem per language (index `Lang as usize`).
    stems: [Option<Box<str>>; 2],
}

impl GramSums {
    pub fn new(classes: usize) -> Self {
        Self {
            classes,
            words: FastMap::default(),
        }
    }

    /// Records `word`'s gram count and its sums (`classes` plain, then
    /// `classes` negated).
    pub fn insert(&mut self, word: &str, count: u32, sums: Box<[f32]>) {
        debug_assert_eq!(sums.len(), 2 * self.classes);
        self.words.insert(
            word.into(),
            Known {
                grams: count,
                sums,
                flags: 0,
                stems: [None, None],
            },
        );
    }
}

/// FNV-1a as a `Hasher`: the featurizer's lookups are short words, where
/// SipHash costs more than the rest of the lookup.
#[derive(Default, Clone, Copy)]
pub struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let start = if self.0 == 0 { FNV_BASIS } else { self.0 };
        self.0 = bytes.iter().fold(start, |h, &b| eat(h, b));
    }
}

type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fnv>>;

/// Makes [`Features`] from text; built once from a [`FeatureSpec`].
pub struct Featurizer {
    spec: FeatureSpec,
    /// What a folded word tells: [`ES`], [`EN`], [`NEGATION`] (one lookup
    /// per word for all three).
    lexicon: FastMap<Box<str>, u8>,
    en: Stemmer,
    es: Stemmer,
    /// Known stems per language (index `Lang as usize`): a lookup instead
    /// of a Snowball run for the words a model was trained on.
    known: [FastMap<Box<str>, Box<str>>; 2],
    /// Char n-grams scored ahead by the model this featurizer serves.
    gram_sums: Option<GramSums>,
    mask: u64,
}

impl std::fmt::Debug for Featurizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Featurizer")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

// Feature kinds, mixed into the hash so a word and a char n-gram never share a key.
const WORD: u8 = 1;
const BIGRAM: u8 = 2;
const CHARS: u8 = 3;

/// The longest char n-gram [`Featurizer::ascii_char_grams`] makes (a model
/// file allows no longer ones).
const FAST_GRAMS: usize = 8;

// What a word of the lexicon tells.
const ES: u8 = 1;
const EN: u8 = 2;
const NEGATION: u8 = 4;

impl Featurizer {
    pub fn new(spec: FeatureSpec) -> Self {
        let mut lexicon: FastMap<Box<str>, u8> = FastMap::default();
        let negations = spec.negations.iter().map(|w| fold(w).into_owned());
        for (words, flag) in [
            (
                ES_WORDS.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>(),
                ES,
            ),
            (EN_WORDS.iter().map(|w| (*w).to_owned()).collect(), EN),
            (negations.collect(), NEGATION),
        ] {
            for w in words {
                *lexicon.entry(w.into_boxed_str()).or_default() |= flag;
            }
        }
        Self {
            mask: (1u64 << spec.bits) - 1,
            spec,
            lexicon,
            en: Stemmer::create(Algorithm::English),
            es: Stemmer::create(Algorithm::Spanish),
            known: [FastMap::default(), FastMap::default()],
            gram_sums: None,
        }
    }

    /// Remembers the stems of `words` in `lang`; they are what Snowball
    /// gives, so features do not change, they only cost less.
    pub fn learn_stems<'w>(&mut self, lang: Lang, words: impl IntoIterator<Item = &'w str>) {
        for w in words {
            if w.len() > 3 && !self.known[lang as usize].contains_key(w) {
                let stem = self.snowball(lang, w).into_owned();
                self.known[lang as usize].insert(w.into(), stem.into());
            }
        }
    }

    /// Every remembered (word, stem) in `lang`, sorted.
    pub fn known_stems(&self, lang: Lang) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = self.known[lang as usize]
            .iter()
            .map(|(w, s)| (w.as_ref(), s.as_ref()))
            .collect();
        out.sort_unstable();
        out
    }

    /// Remembers a stem as read from a model file.
    pub fn insert_stem(&mut self, lang: Lang, word: &str, stem: &str) {
        self.known[lang as usize].insert(word.into(), stem.into());
    }

    /// Every word whose stem is remembered, in either language, and the
    /// lexicon's: the words worth scoring ahead.
    pub fn vocabulary(&self) -> Vec<&str> {
        let mut words: Vec<&str> = self
            .known
            .iter()
            .flat_map(|m| m.keys().map(AsRef::as_ref))
            .chain(self.lexicon.keys().map(AsRef::as_ref))
            .chain(std::iter::once("#num"))
            .collect();
        words.sort_unstable();
        words.dedup();
        words
    }

    /// The char n-gram buckets of a (shaped) word, as a message makes them.
    pub fn gram_buckets(&self, word: &str, neg: bool) -> Vec<u32> {
        let mut out = Vec::new();
        self.char_grams(&fold(word), neg, &mut out);
        out
    }

    /// From now on, the char n-grams of the words in `sums` are not made
    /// into buckets but added as their sums ([`Features::summed`]).
    /// Each such word also carries its lexicon flags and the stems
    /// remembered so far, so a known word of a message costs one lookup.
    pub fn set_gram_sums(&mut self, mut sums: GramSums) {
        for (word, known) in &mut sums.words {
            known.flags = self.flags(word);
            for lang in [Lang::En, Lang::Es] {
                known.stems[lang as usize] = self.known[lang as usize].get(word).cloned();
            }
        }
        self.gram_sums = Some(sums);
    }

    pub fn spec(&self) -> &FeatureSpec {
        &self.spec
    }

    /// Scores messages longer than `words` in windows (0: whole); see
    /// [`FeatureSpec::window_words`].
    pub fn set_window_words(&mut self, words: u32) {
        self.spec.window_words = words.min(self.spec.max_words);
    }

    /// Normalises and splits into clauses; accents stay until after stemming
    /// (Snowball reads "vendí" better than "vendi").
    pub fn words(&self, message: &str) -> Vec<(String, u32)> {
        let text = normalize(message, self.max_words());
        self.word_slices(&text)
            .into_iter()
            .map(|(w, c)| (w.to_owned(), c))
            .collect()
    }

    /// The shaped words of a normalised text and their clauses, borrowed from it.
    fn word_slices<'t>(&self, text: &'t str) -> Vec<(&'t str, u32)> {
        self.shaped(text, &scan(text))
    }

    /// The shaped words of `text` as split at this featurizer's clause words.
    fn shaped<'t>(&self, text: &'t str, scanned: &[Span]) -> Vec<(&'t str, u32)> {
        clauses(text, scanned, &self.spec.clause_breaks, self.max_words())
            .into_iter()
            .map(|(s, e, c)| (shape(&text[s..e]), c))
            .collect()
    }

    /// What the lexicon knows of each word.
    fn lexicon_flags<W: AsRef<str>>(&self, words: &[(W, u32)]) -> Vec<u8> {
        words.iter().map(|(w, _)| self.flags(w.as_ref())).collect()
    }

    /// What the lexicon knows of one word ([`ES`], [`EN`], [`NEGATION`]).
    fn flags(&self, word: &str) -> u8 {
        self.lexicon.get(fold(word).as_ref()).copied().unwrap_or(0)
    }

    /// Words this featurizer reads of a message.
    pub fn max_words(&self) -> usize {
        self.spec.max_words as usize
    }

    /// Guesses English or Spanish from function words, and from the marks
    /// only Spanish uses (ñ, ¿, ¡, accents) in `message`; English on a draw.
    pub fn language<W: AsRef<str>>(&self, message: &str, words: &[(W, u32)]) -> Lang {
        language_of(message, &self.lexicon_flags(words))
    }

    /// The folded stem of `word`.
    pub fn stem<'a>(&'a self, lang: Lang, word: &'a str) -> Cow<'a, str> {
        // Short words are their own stems; Snowball costs more than it gives there.
        if word.len() <= 3 {
            return fold(word);
        }
        if let Some(stem) = self.known[lang as usize].get(word) {
            return Cow::Borrowed(stem);
        }
        self.snowball(lang, word)
    }

    fn snowball<'a>(&self, lang: Lang, word: &'a str) -> Cow<'a, str> {
        let stem = match lang {
            Lang::En => self.en.stem(word),
            Lang::Es => self.es.stem(word),
        };
        match stem {
            Cow::Borrowed(b) => fold(b),
            Cow::Owned(o) => Cow::Owned(fold(&o).into_owned()),
        }
    }

    /// Which words a negation governs: the `negation_window` words after a
    /// negation word, within its clause. The negation word itself is not.
    pub fn negated<W: AsRef<str>>(&self, words: &[(W, u32)]) -> Vec<bool> {
        self.negated_by(words, &self.lexicon_flags(words))
    }

    fn negated_by<W>(&self, words: &[(W, u32)], flags: &[u8]) -> Vec<bool> {
        let mut out = vec![false; words.len()];
        let window = usize::from(self.spec.negation_window);
        for (i, (_, clause)) in words.iter().enumerate() {
            if flags[i] & NEGATION == 0 {
                continue;
            }
            for j in i + 1..(i + 1 + window).min(words.len()) {
                if words[j].1 != *clause {
                    break;
                }
                out[j] = true;
            }
        }
        out
    }

    /// Every feature of `message`.
    pub fn features(&self, message: &str) -> Features {
        let text = normalize(message, self.max_words());
        self.features_normalized(&text)
    }

    /// Every feature of a text normalised by [`normalize`] (which the
    /// router's phrase rules share, so a message is normalised once).
    pub fn features_normalized(&self, text: &str) -> Features {
        self.features_scanned(text, &scan(text))
    }

    /// Every feature of a normalised text whose words [`scan`] found
    /// already (the phrase rules scan it too).
    pub fn features_scanned(&self, text: &str, scanned: &[Span]) -> Features {
        let words = self.shaped(text, scanned);
        // One lookup per word the model knows; the lexicon for the rest.
        let known: Vec<Option<&Known>> = match &self.gram_sums {
            Some(g) => words.iter().map(|(w, _)| g.words.get(*w)).collect(),
            None => vec![None; words.len()],
        };
        let flags: Vec<u8> = words
            .iter()
            .zip(&known)
            .map(|((w, _), k)| k.map_or_else(|| self.flags(w), |k| k.flags))
            .collect();
        let lang = language_of(text, &flags);
        let negated = self.negated_by(&words, &flags);
        let mut f = Features {
            buckets: Vec::with_capacity(words.len() * 12),
            summed: Vec::new(),
            summed_count: 0,
            words: Vec::with_capacity(words.len()),
            stems: String::with_capacity(tokens_len(&words)),
            lang: Some(lang),
            value: 0.0,
            parts: WordParts::default(),
        };
        let window = self.spec.window_words as usize;
        let windowed = window > 0 && words.len() > window;
        let classes = self.gram_sums.as_ref().map_or(0, |g| g.classes);
        if windowed {
            f.parts.ends.reserve(words.len());
            f.parts.summed_counts.reserve(words.len());
            f.parts.summed.reserve(words.len() * classes);
        }
        let mut prev: Option<(Cow<'_, str>, u32)> = None;
        for (i, &(word, clause)) in words.iter().enumerate() {
            let neg = negated[i];
            let stem = match known[i].and_then(|k| k.stems[lang as usize].as_deref()) {
                Some(stem) if word.len() > 3 => Cow::Borrowed(stem),
                _ => self.stem(lang, word),
            };
            let b = self.bucket(WORD, neg, &[stem.as_bytes()]);
            f.buckets.push(b);
            if !neg {
                let start = f.stems.len() as u32;
                f.stems.push_str(&stem);
                f.words.push((b, start, f.stems.len() as u32, i as u32));
            }
            if let Some((p, pc)) = &prev
                && *pc == clause
            {
                f.buckets
                    .push(self.bucket(BIGRAM, neg, &[p.as_bytes(), b" ", stem.as_bytes()]));
            }
            match self.gram_sums.as_ref().zip(known[i]) {
                Some((g, Known { grams, sums, .. })) => {
                    let (k, count) = (g.classes, grams);
                    let part = if neg { &sums[k..] } else { &sums[..k] };
                    if f.summed.is_empty() {
                        f.summed = vec![0.0; k];
                    }
                    for (z, w) in f.summed.iter_mut().zip(part) {
                        *z += w;
                    }
                    f.summed_count += *count as usize;
                    if windowed {
                        f.parts.summed_counts.push(*count);
                        f.parts.summed.extend_from_slice(part);
                    }
                }
                None => {
                    self.char_grams(&fold(word), neg, &mut f.buckets);
                    if windowed {
                        f.parts.summed_counts.push(0);
                        f.parts.summed.extend(std::iter::repeat_n(0.0, classes));
                    }
                }
            }
            if windowed {
                f.parts.ends.push(f.buckets.len() as u32);
            }
            prev = Some((stem, clause));
        }
        let n = f.buckets.len() + f.summed_count;
        f.value = if n == 0 {
            0.0
        } else {
            (n as f32).sqrt().recip()
        };
        f
    }

    fn char_grams(&self, word: &str, neg: bool, out: &mut Vec<u32>) {
        let (lo, hi) = (
            usize::from(self.spec.char_min),
            usize::from(self.spec.char_max),
        );
        if lo == 0 {
            return;
        }
        if word.is_ascii() && hi <= FAST_GRAMS {
            self.ascii_char_grams(word.as_bytes(), lo, hi, neg, out);
            return;
        }
        let mut padded = String::with_capacity(word.len() + 2);
        padded.push('<');
        padded.push_str(word);
        padded.push('>');
        let bounds: Vec<usize> = padded
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(padded.len()))
            .collect();
        let chars = bounds.len() - 1;
        for n in lo..=hi.min(chars) {
            for s in 0..=chars - n {
                let gram = &padded.as_bytes()[bounds[s]..bounds[s + n]];
                out.push(self.bucket(CHARS, neg, &[gram]));
            }
        }
    }

    /// The char n-grams of an ASCII word, in the order of the general case
    /// (every 3-gram, then every 4-gram, ...), hashed in one pass: FNV reads
    /// left to right, so a gram's hash is its prefix's hash and one byte more.
    fn ascii_char_grams(&self, word: &[u8], lo: usize, hi: usize, neg: bool, out: &mut Vec<u32>) {
        // The padded word "<word>".
        let mut small = [0u8; 64];
        let long;
        let padded: &[u8] = if word.len() + 2 <= small.len() {
            small[0] = b'<';
            small[1..=word.len()].copy_from_slice(word);
            small[word.len() + 1] = b'>';
            &small[..word.len() + 2]
        } else {
            long = [b"<", word, b">"].concat();
            &long
        };
        let len = padded.len();
        let top = hi.min(len);
        if lo > top {
            return;
        }
        // Where the grams of each length start in `out`.
        let mut at = [0usize; FAST_GRAMS + 1];
        let mut next = out.len();
        for (n, start) in at.iter_mut().enumerate().take(top + 1).skip(lo) {
            *start = next;
            next += len - n + 1;
        }
        out.resize(next, 0);
        let seed = self.start(CHARS, neg);
        for s in 0..=len - lo {
            let mut h = seed;
            for (i, &b) in padded[s..len.min(s + top)].iter().enumerate() {
                h = eat(h, b);
                let n = i + 1;
                if n >= lo {
                    out[at[n] + s] = self.fold_hash(h);
                }
            }
        }
    }

    /// FNV-1a over the kind, the negation mark and the parts, folded to `bits`.
    fn bucket(&self, kind: u8, neg: bool, parts: &[&[u8]]) -> u32 {
        let mut h = self.start(kind, neg);
        for part in parts {
            for &b in *part {
                h = eat(h, b);
            }
        }
        self.fold_hash(h)
    }

    fn start(&self, kind: u8, neg: bool) -> u64 {
        eat(eat(FNV_BASIS, kind), u8::from(neg))
    }

    fn fold_hash(&self, h: u64) -> u32 {
        ((h ^ (h >> 29)) & self.mask) as u32
    }
}

/// English or Spanish from the lexicon flags of a message's words, and
/// from the marks only Spanish uses; English on a draw.
fn language_of(message: &str, flags: &[u8]) -> Lang {
    let es = flags.iter().filter(|f| *f & ES != 0).count();
    let en = flags.iter().filter(|f| *f & EN != 0).count();
    let marks = !message.is_ascii() && message.chars().any(|c| "ñÑ¿¡áéíóúÁÉÍÓÚ".contains(c));
    if es + 2 * usize::from(marks) > en {
        Lang::Es
    } else {
        Lang::En
    }
}

const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// One byte into an FNV-1a (64-bit) hash.
fn eat(h: u64, b: u8) -> u64 {
    (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
}

/// FNV-1a, 64 bits, of `bytes`: the one hash behind feature buckets, the
/// featurizer's lookups and a model's digest of its training data.
pub fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_BASIS, |h, &b| eat(h, b))
}

fn tokens_len(words: &[(&str, u32)]) -> usize {
    words.iter().map(|(w, _)| w.len()).sum()
}

/// Drops accents (folded Spanish is how many people type it anyway).
fn fold(word: &str) -> Cow<'_, str> {
    if word.is_ascii() {
        return Cow::Borrowed(word);
    }
    Cow::Owned(word.nfd().filter(|c| !is_combining_mark(*c)).collect())
}

/// Numbers of three digits or more (prices, years, zip codes) are one shape;
/// short ones stay, since "2" and "4" are words in texting.
fn shape(word: &str) -> &str {
    if word.len() >= 3 && word.bytes().all(|b| b.is_ascii_digit()) {
        "#num"
    } else {
        word
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f() -> Featurizer {
        Featurizer::new(FeatureSpec::default())
    }

    fn stems(message: &str) -> Vec<String> {
        let f = f();
        let words = f.words(message);
        let lang = f.language(message, &words);
        words
            .iter()
            .map(|(w, _)| f.stem(lang, w).into_owned())
            .collect()
    }

    #[test]
    fn english_words_are_stemmed_in_english() {
        assert_eq!(
            stems("We’re LISTING, sold, purchasing"),
            vec!["we'r", "list", "sold", "purchas"]
        );
    }

    #[test]
    fn spanish_words_are_folded_and_stemmed_in_spanish() {
        let f = f();
        let text = "Quiero vender mi casa y comprar una más pequeña";
        assert_eq!(f.language(text, &f.words(text)), Lang::Es);
        assert_eq!(
            f.language("I want to sell", &f.words("I want to sell")),
            Lang::En
        );
        assert_eq!(
            stems("Quiero vender mi casa y comprar una más pequeña"),
            vec![
                "quier", "vend", "mi", "cas", "y", "compr", "una", "mas", "pequen"
            ]
        );
        // Short messages: the accent tells.
        assert_eq!(stems("vendiendo, vendí"), vec!["vend", "vend"]);
        assert_eq!(stems("vendo casa"), vec!["vend", "cas"]);
    }

    #[test]
    fn full_width_and_numbers_are_normalised() {
        let f = f();
        let words: Vec<String> = f
            .words("ＳＥＬＬ for 350000 in 2 wks")
            .into_iter()
            .map(|(w, _)| w)
            .collect();
        assert_eq!(words, vec!["sell", "for", "#num", "in", "2", "wks"]);
    }

    fn negated(message: &str) -> Vec<(String, bool)> {
        let f = f();
        let words = f.words(message);
        let neg = f.negated(&words);
        words.into_iter().map(|(w, _)| w).zip(neg).collect()
    }

    #[test]
    fn negation_reaches_to_the_end_of_its_clause_only() {
        let got = negated("not looking to buy, just curious");
        let marked: Vec<&str> = got
            .iter()
            .filter(|(_, n)| *n)
            .map(|(w, _)| w.as_str())
            .collect();
        assert_eq!(marked, vec!["looking", "to", "buy"]);

        let got = negated("no quiero vender pero quiero comprar");
        let marked: Vec<&str> = got
            .iter()
            .filter(|(_, n)| *n)
            .map(|(w, _)| w.as_str())
            .collect();
        assert_eq!(marked, vec!["quiero", "vender"]);
    }

    #[test]
    fn negated_words_hash_apart_from_plain_ones() {
        let f = f();
        let plain = f.features("sell");
        let negated = f.features("not sell");
        // "sell" under "not" shares no feature with a plain "sell".
        assert!(plain.buckets.iter().all(|b| !negated.buckets.contains(b)));
        assert_eq!(
            plain.words().collect::<Vec<_>>(),
            vec![(plain.buckets[0], "sell")]
        );
        assert!(negated.words().all(|(_, w)| w != "sell"));
    }

    #[test]
    fn long_messages_are_read_up_to_max_words() {
        let f = f();
        let long = "word ".repeat(5000);
        assert_eq!(f.words(&long).len(), 96);
        assert!(f.features(&long).buckets.len() < 96 * 16);
    }

    #[test]
    fn features_are_deterministic() {
        let f = f();
        let a = f.features("I wanna sell my condo b4 summer 🏠");
        let b = f.features("I wanna sell my condo b4 summer 🏠");
        assert_eq!(a.buckets, b.buckets);
        assert!(a.buckets.iter().all(|&b| b < 1 << 18));
    }
}
