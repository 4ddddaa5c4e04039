//! The trained intent model (SPEC §2.2): one-vs-rest logistic regression
//! over hashed features ([`crate::features`]), one calibrated probability per
//! intent. Inference is a sparse dot product: a message touches only the
//! weights of its own features.
//!
//! The file format is little-endian binary, checked whole before use:
//!
//! ```text
//! "BATONIM" 0x02                      magic and version
//! u8 bits, u8 char_min, u8 char_max, u8 negation_window, u32 max_words
//! u32 window_words                     (version 2; version 1 files lack it
//!                                       and read as the default, 24)
//! strings negations, strings clause_breaks   (u16 count, then u16 len + UTF-8 each)
//! u16 classes; per class: u16 len + UTF-8 name, f32 bias, f32 scale, f32 offset
//! u32 entries; per entry: u32 bucket, f32 weight per class (buckets ascending)
//! u32 stems; per stem: u8 language (0 English, 1 Spanish), word, stem (u16 len + UTF-8 each)
//! u64 digest of the training data
//! u32 FNV-1a checksum of every byte before it
//! ```
//!
//! The probability of class k is σ(scale_k · (bias_k + v · Σ w_k[b]) + offset_k),
//! where `scale` and `offset` come from Platt calibration on held-out folds.
//! A message longer than `window_words` words is scored in windows of that
//! many words, each overlapping the next by half; every class takes its
//! most probable window. A long message then reads like the short ones the
//! model learned from, and a small lean of many chatty words cannot add up
//! to an intent no sentence of it states.

use std::ops::Range;

use crate::features::{FeatureSpec, Features, Featurizer, GramSums, Lang};

/// The magic bytes, then the version byte.
const MAGIC: &[u8; 7] = b"BATONIM";
const VERSION: u8 = 2;

/// The label of messages that warrant no handoff.
pub const NONE: &str = "none";

/// Why a model file was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModelError {
    #[error("not a baton intent model (bad magic bytes)")]
    Magic,
    #[error("model file version {0} is not one this router reads (1 or 2)")]
    Version(u8),
    #[error("model file ends early at byte {0}")]
    Truncated(usize),
    #[error("model checksum mismatch: the file is damaged")]
    Checksum,
    #[error("model is invalid: {0}")]
    Invalid(String),
}

/// One intent the model scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Class {
    pub name: String,
    pub bias: f32,
    /// Platt calibration: `p = σ(scale · z + offset)`.
    pub scale: f32,
    pub offset: f32,
}

/// What a model makes of a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The calibrated probability of every class, in class order.
    pub probs: Vec<f64>,
    /// Per class, the words (by position) of the window that gave its
    /// probability: the whole message when it was scored whole.
    pub spans: Vec<Range<usize>>,
}

/// A loaded, validated model.
#[derive(Debug)]
pub struct IntentModel {
    featurizer: Featurizer,
    classes: Vec<Class>,
    weights: Weights,
    entries: usize,
    digest: u64,
}

/// The weights of the buckets that have any, found by rank in a bitmap.
/// A model weighs a few percent of its buckets: the bitmap and its ranks
/// (2^18 buckets: 64 KiB) stay in cache where a dense table of
/// 2^bits × classes floats would not.
#[derive(Debug)]
struct Weights {
    classes: usize,
    /// One block per 64 buckets.
    blocks: Vec<Block>,
    /// One row of `classes` weights per weighted bucket, in bucket order.
    rows: Vec<f32>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Block {
    /// Which of the block's buckets have a row.
    present: u64,
    /// Rows before the block's first bucket.
    rank: u32,
}

impl Weights {
    /// `entries` must be in bucket order and below `2^bits`.
    fn new(bits: u8, classes: usize, entries: &[(u32, Vec<f32>)]) -> Self {
        let mut blocks = vec![Block::default(); (1usize << bits).div_ceil(64)];
        let mut rows = Vec::with_capacity(entries.len() * classes);
        for (bucket, w) in entries {
            blocks[*bucket as usize / 64].present |= 1 << (bucket % 64);
            rows.extend_from_slice(w);
        }
        let mut rank = 0u32;
        for block in &mut blocks {
            block.rank = rank;
            rank += block.present.count_ones();
        }
        Self {
            classes,
            blocks,
            rows,
        }
    }

    fn row(&self, bucket: u32) -> Option<&[f32]> {
        let (block, bit) = (bucket as usize / 64, bucket % 64);
        let b = self.blocks.get(block)?;
        if b.present >> bit & 1 == 0 {
            return None;
        }
        let r = b.rank as usize + (b.present & ((1u64 << bit) - 1)).count_ones() as usize;
        Some(&self.rows[r * self.classes..(r + 1) * self.classes])
    }

    /// (bucket, row) of every weighted bucket, in bucket order.
    fn iter(&self) -> impl Iterator<Item = (u32, &[f32])> {
        let buckets = self.blocks.iter().enumerate().flat_map(|(i, b)| {
            (0..64u32)
                .filter(move |bit| b.present >> bit & 1 == 1)
                .map(move |bit| i as u32 * 64 + bit)
        });
        buckets.zip(self.rows.chunks_exact(self.classes))
    }
}

/// The model built into the binary, trained on `data/intents/train.jsonl`.
pub const DEFAULT_MODEL: &[u8] = include_bytes!("../model/default.bim");

impl IntentModel {
    /// Builds a model from trained parts. `weights[b]` holds one weight per
    /// class for bucket `b`; buckets absent from the map weigh nothing.
    pub fn new(
        spec: FeatureSpec,
        classes: Vec<Class>,
        entries: Vec<(u32, Vec<f32>)>,
        digest: u64,
    ) -> Result<Self, ModelError> {
        if spec.bits < 8 || spec.bits > 24 {
            return invalid(format!("feature bits {} outside 8..=24", spec.bits));
        }
        if spec.char_min > spec.char_max || spec.char_max > 8 {
            return invalid(format!(
                "char n-gram range {}..={} is not within 0..=8",
                spec.char_min, spec.char_max
            ));
        }
        if spec.max_words == 0 {
            return invalid("max_words is 0".into());
        }
        if spec.window_words > spec.max_words {
            return invalid(format!(
                "window_words {} is above max_words {}",
                spec.window_words, spec.max_words
            ));
        }
        if classes.is_empty() || classes.len() > 256 {
            return invalid(format!("{} classes (1..=256 allowed)", classes.len()));
        }
        for (i, c) in classes.iter().enumerate() {
            if c.name.is_empty() {
                return invalid(format!("class {i} has an empty name"));
            }
            if classes[..i].iter().any(|o| o.name == c.name) {
                return invalid(format!("class '{}' appears twice", c.name));
            }
            if ![c.bias, c.scale, c.offset].iter().all(|v| v.is_finite()) {
                return invalid(format!("class '{}' has a non-finite parameter", c.name));
            }
        }
        let k = classes.len();
        let size = 1usize << spec.bits;
        let mut last: Option<u32> = None;
        for (bucket, w) in &entries {
            if (*bucket as usize) >= size {
                return invalid(format!("bucket {bucket} outside 2^{}", spec.bits));
            }
            if last.is_some_and(|l| l >= *bucket) {
                return invalid(format!("bucket {bucket} out of order or repeated"));
            }
            last = Some(*bucket);
            if w.len() != k || !w.iter().all(|v| v.is_finite()) {
                return invalid(format!("bucket {bucket} has bad weights"));
            }
        }
        Ok(Self {
            weights: Weights::new(spec.bits, k, &entries),
            featurizer: Featurizer::new(spec),
            classes,
            entries: entries.len(),
            digest,
        })
    }

    /// The model that ships in the binary.
    pub fn builtin() -> Result<Self, ModelError> {
        Self::from_bytes(DEFAULT_MODEL)
    }

    pub fn classes(&self) -> &[Class] {
        &self.classes
    }

    pub fn class_ix(&self, name: &str) -> Option<usize> {
        self.classes.iter().position(|c| c.name == name)
    }

    pub fn featurizer(&self) -> &Featurizer {
        &self.featurizer
    }

    /// Remembers the stems of the words a model was trained on (see
    /// [`Featurizer::learn_stems`]); they travel in the model file.
    pub fn featurizer_mut(&mut self) -> &mut Featurizer {
        &mut self.featurizer
    }

    /// Digest of the training data this model was made from.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// Buckets with a non-zero weight.
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Scores the char n-grams of every word the model knows ahead, so a
    /// message's known words cost one lookup each (see [`GramSums`]).
    pub fn sum_grams(&mut self) {
        let k = self.classes.len();
        let mut sums = GramSums::new(k);
        for word in self.featurizer.vocabulary() {
            let mut row = vec![0.0f32; 2 * k];
            let mut count = 0;
            for (neg, part) in [false, true].into_iter().zip(row.chunks_exact_mut(k)) {
                let buckets = self.featurizer.gram_buckets(word, neg);
                count = buckets.len() as u32;
                for b in buckets {
                    if let Some(w) = self.weights.row(b) {
                        for (z, w) in part.iter_mut().zip(w) {
                            *z += w;
                        }
                    }
                }
            }
            sums.insert(word, count, row.into_boxed_slice());
        }
        self.featurizer.set_gram_sums(sums);
    }

    /// The calibrated probability of every class, in class order.
    pub fn predict(&self, features: &Features) -> Vec<f64> {
        self.prediction(features).probs
    }

    /// Every class's calibrated probability and the window that gave it:
    /// the whole message, or for a long one (see [`Features::parts`]) the
    /// class's most probable window of `window_words` words.
    pub fn prediction(&self, features: &Features) -> Prediction {
        let k = self.classes.len();
        let n = features.parts.len();
        let window = self.featurizer.spec().window_words as usize;
        if window == 0 || n <= window {
            let mut z = if features.summed.len() == k {
                features.summed.clone()
            } else {
                vec![0.0f32; k]
            };
            self.add_rows(&features.buckets, &mut z);
            return Prediction {
                probs: self.probabilities(&z, features.value),
                spans: vec![0..usize::MAX; k],
            };
        }
        // Running sums over the words: a window's sums are two lookups.
        let parts = &features.parts;
        let summed = parts.summed.len() == n * k;
        let mut prefix = vec![0.0f32; (n + 1) * k];
        let mut counts = vec![0u32; n + 1];
        let mut start = 0usize;
        for i in 0..n {
            let (done, next) = prefix.split_at_mut((i + 1) * k);
            let row = &mut next[..k];
            row.copy_from_slice(&done[i * k..]);
            if summed {
                for (z, w) in row.iter_mut().zip(&parts.summed[i * k..(i + 1) * k]) {
                    *z += w;
                }
            }
            let end = parts.ends[i] as usize;
            self.add_rows(&features.buckets[start..end], row);
            counts[i + 1] = counts[i] + (end - start) as u32 + parts.summed_counts[i];
            start = end;
        }
        let stride = (window / 2).max(1);
        let mut best = Prediction {
            probs: vec![-1.0; k],
            spans: vec![0..0; k],
        };
        let mut z = vec![0.0f32; k];
        let mut s = 0;
        loop {
            let e = (s + window).min(n);
            for (c, zc) in z.iter_mut().enumerate() {
                *zc = prefix[e * k + c] - prefix[s * k + c];
            }
            let count = counts[e] - counts[s];
            let value = if count == 0 {
                0.0
            } else {
                (count as f32).sqrt().recip()
            };
            for (c, p) in self.probabilities(&z, value).into_iter().enumerate() {
                if p > best.probs[c] {
                    best.probs[c] = p;
                    best.spans[c] = s..e;
                }
            }
            if e == n {
                return best;
            }
            s = (s + stride).min(n - window);
        }
    }

    /// Adds the weight row of every bucket that has one to `z`.
    fn add_rows(&self, buckets: &[u32], z: &mut [f32]) {
        for &b in buckets {
            if let Some(row) = self.weights.row(b) {
                for (zi, w) in z.iter_mut().zip(row) {
                    *zi += w;
                }
            }
        }
    }

    /// Calibrated probabilities from summed weights `z` and the feature value.
    fn probabilities(&self, z: &[f32], value: f32) -> Vec<f64> {
        self.classes
            .iter()
            .zip(z)
            .map(|(c, s)| {
                let logit = c.scale * (c.bias + value * s) + c.offset;
                1.0 / (1.0 + (-f64::from(logit)).exp())
            })
            .collect()
    }

    /// The plain word of the message that pushes hardest towards `class`:
    /// what a decision's pattern names, so learning can tell causes apart.
    pub fn strongest<'f>(&self, features: &'f Features, class: usize) -> Option<&'f str> {
        self.strongest_in(features, class, 0..usize::MAX)
    }

    /// [`Self::strongest`] among the words `span` (a [`Prediction`]'s).
    pub fn strongest_in<'f>(
        &self,
        features: &'f Features,
        class: usize,
        span: Range<usize>,
    ) -> Option<&'f str> {
        features
            .words_in(span)
            .map(|(b, w)| (self.weights.row(b).map_or(0.0, |r| r[class]), w))
            .filter(|(weight, _)| *weight > 0.0)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, w)| w)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let spec = self.featurizer.spec();
        let k = self.classes.len();
        let mut out = Vec::with_capacity(64 + self.entries * (4 + 4 * k));
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&[
            spec.bits,
            spec.char_min,
            spec.char_max,
            spec.negation_window,
        ]);
        out.extend_from_slice(&spec.max_words.to_le_bytes());
        out.extend_from_slice(&spec.window_words.to_le_bytes());
        put_strings(&mut out, &spec.negations);
        put_strings(&mut out, &spec.clause_breaks);
        out.extend_from_slice(&(k as u16).to_le_bytes());
        for c in &self.classes {
            put_str(&mut out, &c.name);
            for v in [c.bias, c.scale, c.offset] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out.extend_from_slice(&(self.entries as u32).to_le_bytes());
        for (b, w) in self.weights.iter() {
            out.extend_from_slice(&b.to_le_bytes());
            for v in w {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        let stems: Vec<(Lang, &str, &str)> = [Lang::En, Lang::Es]
            .into_iter()
            .flat_map(|lang| {
                self.featurizer
                    .known_stems(lang)
                    .into_iter()
                    .map(move |(w, s)| (lang, w, s))
            })
            .collect();
        out.extend_from_slice(&(stems.len() as u32).to_le_bytes());
        for (lang, word, stem) in stems {
            out.push(lang as u8);
            put_str(&mut out, word);
            put_str(&mut out, stem);
        }
        out.extend_from_slice(&self.digest.to_le_bytes());
        let sum = fnv32(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Parses and validates a model file; never panics on any input.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ModelError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(ModelError::Magic);
        }
        if bytes.len() < MAGIC.len() + 5 {
            return Err(ModelError::Truncated(bytes.len()));
        }
        let version = bytes[MAGIC.len()];
        if !(1..=VERSION).contains(&version) {
            return Err(ModelError::Version(version));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 4);
        let mut r = Reader {
            bytes: body,
            at: MAGIC.len() + 1,
        };
        let head = r.take(4)?;
        let (bits, char_min, char_max, negation_window) = (head[0], head[1], head[2], head[3]);
        let max_words = r.u32()?;
        let window_words = if version >= 2 {
            r.u32()?
        } else {
            FeatureSpec::default().window_words.min(max_words)
        };
        let negations = r.strings()?;
        let clause_breaks = r.strings()?;
        let k = usize::from(r.u16()?);
        let mut classes = Vec::with_capacity(k);
        for _ in 0..k {
            classes.push(Class {
                name: r.string()?,
                bias: r.f32()?,
                scale: r.f32()?,
                offset: r.f32()?,
            });
        }
        let n = r.u32()? as usize;
        if n.saturating_mul(4 + 4 * k) > body.len() {
            return Err(ModelError::Truncated(body.len()));
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let bucket = r.u32()?;
            let w = (0..k).map(|_| r.f32()).collect::<Result<Vec<_>, _>>()?;
            entries.push((bucket, w));
        }
        let n = r.u32()? as usize;
        if n.saturating_mul(5) > body.len() {
            return Err(ModelError::Truncated(body.len()));
        }
        let mut stems = Vec::with_capacity(n);
        for _ in 0..n {
            let lang = match r.take(1)?[0] {
                0 => Lang::En,
                1 => Lang::Es,
                other => return invalid(format!("unknown stem language {other}")),
            };
            stems.push((lang, r.string()?, r.string()?));
        }
        let digest = r.u64()?;
        if r.at != body.len() {
            return invalid(format!("{} unexpected bytes at the end", body.len() - r.at));
        }
        if fnv32(body).to_le_bytes() != sum {
            return Err(ModelError::Checksum);
        }
        let spec = FeatureSpec {
            bits,
            char_min,
            char_max,
            max_words,
            window_words,
            negation_window,
            negations,
            clause_breaks,
        };
        let mut model = Self::new(spec, classes, entries, digest)?;
        for (lang, word, stem) in stems {
            model.featurizer.insert_stem(lang, &word, &stem);
        }
        model.sum_grams();
        Ok(model)
    }
}

fn invalid<T>(problem: String) -> Result<T, ModelError> {
    Err(ModelError::Invalid(problem))
}

/// FNV-1a, 32 bits: a cheap check that catches damaged files.
pub fn fnv32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_strings(out: &mut Vec<u8>, items: &[String]) {
    out.extend_from_slice(&(items.len() as u16).to_le_bytes());
    for s in items {
        put_str(out, s);
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ModelError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(ModelError::Truncated(self.bytes.len()))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ModelError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u16(&mut self) -> Result<u16, ModelError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, ModelError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, ModelError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn f32(&mut self) -> Result<f32, ModelError> {
        Ok(f32::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, ModelError> {
        let n = usize::from(self.u16()?);
        let at = self.at;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| ModelError::Invalid(format!("string at byte {at} is not UTF-8")))
    }

    fn strings(&mut self) -> Result<Vec<String>, ModelError> {
        let n = usize::from(self.u16()?);
        (0..n).map(|_| self.string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> IntentModel {
        let spec = FeatureSpec {
            bits: 10,
            ..FeatureSpec::default()
        };
        let f = Featurizer::new(spec.clone());
        let sell = f.features("sell").words().next().unwrap().0;
        let classes = vec![
            Class {
                name: "none".into(),
                bias: 0.0,
                scale: 1.0,
                offset: 0.0,
            },
            Class {
                name: "seller".into(),
                bias: -1.0,
                scale: 1.0,
                offset: 0.0,
            },
        ];
        IntentModel::new(spec, classes, vec![(sell, vec![-2.0, 9.0])], 7).unwrap()
    }

    #[test]
    fn round_trips_through_bytes() {
        let m = tiny();
        let back = IntentModel::from_bytes(&m.to_bytes()).unwrap();
        assert_eq!(back.classes(), m.classes());
        assert_eq!(back.digest(), 7);
        assert_eq!(back.entries(), 1);
        let f = back.featurizer().features("sell");
        assert_eq!(
            back.predict(&f),
            m.predict(&m.featurizer().features("sell"))
        );
        assert_eq!(back.strongest(&f, 1), Some("sell"));
        assert_eq!(back.strongest(&f, 0), None);
    }

    #[test]
    fn scores_the_words_it_was_given() {
        let m = tiny();
        let sell = m.predict(&m.featurizer().features("sell"));
        let other = m.predict(&m.featurizer().features("hello"));
        assert!(sell[1] > 0.99, "{sell:?}");
        assert!(other[1] < 0.5, "{other:?}");
    }

    #[test]
    fn damaged_files_are_refused_without_a_panic() {
        let good = tiny().to_bytes();
        assert_eq!(
            IntentModel::from_bytes(b"hello").unwrap_err(),
            ModelError::Magic
        );
        assert_eq!(IntentModel::from_bytes(&[]).unwrap_err(), ModelError::Magic);
        for cut in [9, 20, good.len() / 2, good.len() - 1] {
            assert!(
                IntentModel::from_bytes(&good[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut flipped = good.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x40;
        assert!(IntentModel::from_bytes(&flipped).is_err());
        let mut longer = good[..good.len() - 4].to_vec();
        longer.push(0);
        let sum = fnv32(&longer);
        longer.extend_from_slice(&sum.to_le_bytes());
        assert_eq!(
            IntentModel::from_bytes(&longer).unwrap_err(),
            ModelError::Invalid("1 unexpected bytes at the end".into())
        );
        // Every prefix and every single-byte change is refused or parsed, never a panic.
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] = b[i].wrapping_add(1);
            let _ = IntentModel::from_bytes(&b);
        }
    }

    /// `bytes` (a version 2 file) as version 1 wrote it: no window.
    fn as_version_1(bytes: &[u8]) -> Vec<u8> {
        let mut v1 = bytes[..bytes.len() - 4].to_vec();
        v1[7] = 1;
        v1.drain(16..20);
        let sum = fnv32(&v1);
        v1.extend_from_slice(&sum.to_le_bytes());
        v1
    }

    #[test]
    fn version_1_files_read_with_the_default_window() {
        let mut m = tiny();
        m.featurizer_mut().set_window_words(10);
        let v2 = IntentModel::from_bytes(&m.to_bytes()).unwrap();
        assert_eq!(v2.featurizer().spec().window_words, 10);
        let v1 = IntentModel::from_bytes(&as_version_1(&m.to_bytes())).unwrap();
        assert_eq!(v1.featurizer().spec().window_words, 24);
        assert_eq!(v1.classes(), m.classes());
    }

    #[test]
    fn an_unknown_version_or_a_window_above_max_words_is_refused() {
        let mut bytes = tiny().to_bytes();
        bytes[7] = 3;
        assert_eq!(
            IntentModel::from_bytes(&bytes).unwrap_err(),
            ModelError::Version(3)
        );
        let spec = FeatureSpec {
            bits: 10,
            max_words: 20,
            window_words: 21,
            ..FeatureSpec::default()
        };
        let class = Class {
            name: "seller".into(),
            bias: 0.0,
            scale: 1.0,
            offset: 0.0,
        };
        assert_eq!(
            IntentModel::new(spec, vec![class], vec![], 0).unwrap_err(),
            ModelError::Invalid("window_words 21 is above max_words 20".into())
        );
    }

    #[test]
    fn a_long_message_is_scored_in_windows_each_class_taking_its_strongest() {
        let mut m = tiny();
        let text = format!("{}sell{}", "hello ".repeat(40), " hello".repeat(40));
        let windowed = m.prediction(&m.featurizer().features(&text));
        // "sell" is word 40: the deciding window (24 words) holds it.
        assert_eq!(windowed.spans[1].len(), 24);
        assert!(windowed.spans[1].contains(&40), "{windowed:?}");
        assert_eq!(
            m.strongest_in(
                &m.featurizer().features(&text),
                1,
                windowed.spans[1].clone()
            ),
            Some("sell")
        );
        // The window scores as a message of its own words would.
        let alone = m.predict(&m.featurizer().features(&format!(
            "{}sell{}",
            "hello ".repeat(4),
            " hello".repeat(19)
        )));
        assert!(
            (windowed.probs[1] - alone[1]).abs() < 0.02,
            "{windowed:?} {alone:?}"
        );
        // Read whole, the one word drowns in the rest.
        m.featurizer_mut().set_window_words(0);
        let whole = m.prediction(&m.featurizer().features(&text));
        assert_eq!(whole.spans[1], 0..usize::MAX);
        assert!(
            whole.probs[1] < windowed.probs[1] - 0.1,
            "{whole:?} {windowed:?}"
        );
        // A message within the window is scored whole either way.
        let short = m.featurizer().features("hello sell hello");
        assert!(short.parts.is_empty());
    }

    #[test]
    fn the_builtin_model_loads() {
        let m = IntentModel::builtin().unwrap();
        let names: Vec<&str> = m.classes().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["buyer", "human", "legal", "seller"]);
        assert!(DEFAULT_MODEL.len() <= 5 * 1024 * 1024);
    }

    #[test]
    fn words_scored_ahead_score_as_their_grams_do() {
        let summed = IntentModel::builtin().unwrap();
        let mut plain = IntentModel::builtin().unwrap();
        let k = plain.classes().len();
        plain.featurizer_mut().set_gram_sums(GramSums::new(k));
        let long = format!(
            "{} but we might sell the condo next year {}",
            "thanks for the tips on the neighbourhood ".repeat(5),
            "zxqv kids school ".repeat(10)
        );
        for text in [
            "I want to sell my house, what\u{2019}s it worth?",
            "not looking to buy, just curious",
            "Quiero vender mi casa y comprar una más pequeña",
            "no quiero vender todavía",
            "Hola, ¿cuánto vale mi depa? Tb queremos comprar algo más grande",
            "can someone from your office call me",
            "zxqv unseenword 350000",
            &long,
        ] {
            let a = summed.featurizer().features(text);
            let b = plain.featurizer().features(text);
            assert_eq!(a.value, b.value, "{text}");
            // One lookup per known word finds the same language and stems.
            assert_eq!(a.lang, b.lang, "{text}");
            assert_eq!(
                a.words().collect::<Vec<_>>(),
                b.words().collect::<Vec<_>>(),
                "{text}"
            );
            if text.starts_with("zxqv") {
                // Unknown words keep their char n-grams as buckets.
                assert!(a.buckets.len() > a.summed_count);
            } else {
                assert!(
                    a.summed_count > 0 && a.buckets.len() < b.buckets.len(),
                    "{text}"
                );
            }
            for (p, q) in summed.predict(&a).iter().zip(plain.predict(&b)) {
                assert!((p - q).abs() < 1e-5, "{text}: {p} vs {q}");
            }
        }
    }
}
