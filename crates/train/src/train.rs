//! Training: one-vs-rest logistic regression (linfa-logistic, L-BFGS with
//! L2 regularisation) over the hashed features of [`baton_policy::features`],
//! then Platt calibration of each intent's score on held-out folds, so the
//! probability a decision compares with its threshold means what it says.

use std::collections::{BTreeSet, HashMap};

use baton_policy::features::{FeatureSpec, Featurizer};
use baton_policy::model::{Class, IntentModel, NONE};
use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};

use crate::TrainError;
use crate::corpus::Example;

/// Knobs of a training run; the defaults made the built-in model.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub spec: FeatureSpec,
    /// L2 weight of the logistic regressions.
    pub alpha: f64,
    /// A feature must occur in this many messages to get a weight.
    pub min_count: usize,
    /// Held-out folds for calibration; 0 or 1 keeps the raw scores.
    pub folds: usize,
    pub max_iterations: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            spec: FeatureSpec::default(),
            alpha: 0.01,
            min_count: 2,
            folds: 5,
            max_iterations: 300,
        }
    }
}

/// A sparse row: (column, value).
type Row = Vec<(usize, f64)>;

/// One class's weights, intercept, and calibration scale and offset.
type Fitted = (Vec<f64>, f64, f64, f64);

/// Trains a model on `examples`. Every intent but `none` becomes a class;
/// a message is a positive example of its intent and of its pending ones.
/// `digest` identifies the training data and is stored in the model.
pub fn train(
    examples: &[Example],
    options: &TrainOptions,
    digest: u64,
    progress: &mut dyn FnMut(String),
) -> Result<IntentModel, TrainError> {
    let featurizer = Featurizer::new(options.spec.clone());
    let feats: Vec<_> = examples
        .iter()
        .map(|e| featurizer.features(&e.text))
        .collect();

    // Columns: buckets seen in at least `min_count` messages.
    let mut df: HashMap<u32, usize> = HashMap::new();
    for f in &feats {
        let uniq: BTreeSet<u32> = f.buckets.iter().copied().collect();
        for b in uniq {
            *df.entry(b).or_default() += 1;
        }
    }
    let mut buckets: Vec<u32> = df
        .into_iter()
        .filter(|&(_, n)| n >= options.min_count.max(1))
        .map(|(b, _)| b)
        .collect();
    buckets.sort_unstable();
    if buckets.is_empty() {
        return Err(TrainError::Training(
            "no feature occurs often enough".into(),
        ));
    }
    let column: HashMap<u32, usize> = buckets.iter().enumerate().map(|(i, &b)| (b, i)).collect();
    let rows: Vec<Row> = feats
        .iter()
        .map(|f| {
            let mut row: HashMap<usize, f64> = HashMap::new();
            for b in &f.buckets {
                if let Some(&c) = column.get(b) {
                    *row.entry(c).or_default() += f64::from(f.value);
                }
            }
            let mut row: Row = row.into_iter().collect();
            row.sort_unstable_by_key(|&(c, _)| c);
            row
        })
        .collect();

    let labels: BTreeSet<&str> = examples
        .iter()
        .flat_map(|e| {
            std::iter::once(e.intent.as_str()).chain(e.pending.iter().map(String::as_str))
        })
        .filter(|l| *l != NONE)
        .collect();
    if labels.is_empty() {
        return Err(TrainError::Training(
            "the corpus has no intent besides 'none'".into(),
        ));
    }

    let d = buckets.len();
    progress(format!(
        "{} messages, {} features, {} classes",
        rows.len(),
        d,
        labels.len()
    ));
    // Classes are independent fits: one thread each.
    let fitted: Vec<Result<Fitted, TrainError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = labels
            .iter()
            .map(|label| {
                let (rows, examples) = (&rows, examples);
                scope.spawn(move || {
                    let y: Vec<bool> = examples
                        .iter()
                        .map(|e| e.intent == *label || e.pending.iter().any(|p| p == label))
                        .collect();
                    let positives = y.iter().filter(|&&v| v).count();
                    if positives == 0 || positives == y.len() {
                        return Err(TrainError::Training(format!(
                            "intent '{label}' needs both positive and negative examples"
                        )));
                    }
                    let all: Vec<usize> = (0..rows.len()).collect();
                    let (w, bias) = fit(rows, &y, &all, d, options)?;
                    let (scale, offset) = calibrate(rows, &y, d, options)?;
                    Ok((w, bias, scale, offset))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(TrainError::Training("a training thread panicked".into()))
                })
            })
            .collect()
    });
    let mut classes = Vec::with_capacity(labels.len());
    let mut weights: Vec<Vec<f32>> = vec![Vec::with_capacity(labels.len()); d];
    for (label, result) in labels.iter().zip(fitted) {
        let (w, bias, scale, offset) = result?;
        progress(format!(
            "class '{label}': calibration scale {scale:.3} offset {offset:.3}"
        ));
        for (col, wc) in weights.iter_mut().zip(&w) {
            col.push(*wc as f32);
        }
        classes.push(Class {
            name: (*label).to_owned(),
            bias: bias as f32,
            scale: scale as f32,
            offset: offset as f32,
        });
    }
    let entries = buckets
        .into_iter()
        .zip(weights)
        .filter(|(_, w)| w.iter().any(|v| *v != 0.0))
        .collect();
    let mut model = IntentModel::new(options.spec.clone(), classes, entries, digest)
        .map_err(|e| TrainError::Training(e.to_string()))?;
    remember_stems(&mut model, examples);
    Ok(model)
}

/// Stores the stems of every training word in the model, so serving looks
/// them up rather than running Snowball (the features are the same).
pub fn remember_stems(model: &mut IntentModel, examples: &[Example]) {
    let featurizer = model.featurizer_mut();
    for e in examples {
        let words = featurizer.words(&e.text);
        let lang = featurizer.language(&e.text, &words);
        featurizer.learn_stems(lang, words.iter().map(|(w, _)| w.as_str()));
    }
}

/// Fits one binary logistic regression on the rows in `subset`; returns the
/// weights and the intercept, oriented so that positive means `true`.
fn fit(
    rows: &[Row],
    y: &[bool],
    subset: &[usize],
    d: usize,
    options: &TrainOptions,
) -> Result<(Vec<f64>, f64), TrainError> {
    // f32 halves the memory the optimiser streams through; plenty for text.
    let mut x = Array2::<f32>::zeros((subset.len(), d));
    for (r, &i) in subset.iter().enumerate() {
        for &(c, v) in &rows[i] {
            x[[r, c]] = v as f32;
        }
    }
    let targets = Array1::from_iter(subset.iter().map(|&i| y[i]));
    let data = Dataset::new(x, targets);
    let fitted = LogisticRegression::default()
        .alpha(options.alpha as f32)
        .max_iterations(options.max_iterations)
        .fit(&data)
        .map_err(|e| TrainError::Training(e.to_string()))?;
    let w: Vec<f64> = fitted.params().iter().map(|&v| f64::from(v)).collect();
    let b = f64::from(fitted.intercept());
    // Which label linfa's sign favours is an implementation detail: orient
    // the weights by the data, so a positive score means `true`.
    let (mut pos, mut neg) = ((0.0, 0usize), (0.0, 0usize));
    for &i in subset {
        let z = b + rows[i].iter().map(|&(c, v)| w[c] * v).sum::<f64>();
        let side = if y[i] { &mut pos } else { &mut neg };
        side.0 += z;
        side.1 += 1;
    }
    if pos.0 / pos.1.max(1) as f64 >= neg.0 / neg.1.max(1) as f64 {
        Ok((w, b))
    } else {
        Ok((w.into_iter().map(|v| -v).collect(), -b))
    }
}

/// Platt scaling: the raw score of each message, from a model that did not
/// see it, fitted to its label by a one-feature logistic regression.
fn calibrate(
    rows: &[Row],
    y: &[bool],
    d: usize,
    options: &TrainOptions,
) -> Result<(f64, f64), TrainError> {
    let k = options.folds;
    if k < 2 {
        return Ok((1.0, 0.0));
    }
    let mut z = vec![0.0; rows.len()];
    for fold in 0..k {
        let train: Vec<usize> = (0..rows.len()).filter(|i| i % k != fold).collect();
        let (w, b) = fit(rows, y, &train, d, options)?;
        for i in (0..rows.len()).filter(|i| i % k == fold) {
            z[i] = b + rows[i].iter().map(|&(c, v)| w[c] * v).sum::<f64>();
        }
    }
    let x =
        Array2::from_shape_vec((z.len(), 1), z).map_err(|e| TrainError::Training(e.to_string()))?;
    let rows1: Vec<Row> = x.column(0).iter().map(|&v| vec![(0, v)]).collect();
    let all: Vec<usize> = (0..rows1.len()).collect();
    let calib = TrainOptions {
        alpha: 1e-4,
        ..options.clone()
    };
    let (w, b) = fit(&rows1, y, &all, 1, &calib)?;
    Ok((w[0], b))
}

/// FNV-1a, 64 bits, of the training file: the model remembers its data.
pub fn digest(bytes: &[u8]) -> u64 {
    baton_policy::features::fnv64(bytes)
}
