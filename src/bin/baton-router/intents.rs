//! `baton-router train` and `baton-router eval`: make an intent model from
//! a labelled corpus, and measure one the way the router decides.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use baton_policy::features::FeatureSpec;
use baton_policy::model::NONE;
use baton_policy::{Config, Policy};
use baton_router::RouterConfig;
use baton_train::{TrainOptions, evaluate, parse};
use clap::Parser;

/// Train an intent model from a labelled JSON Lines corpus.
///
/// Each line is {"text": "...", "intent": "<bot id, none, or an escalation
/// class>", "pending": ["<bot id>", ...], "lang": "en"}. Every intent but
/// `none` becomes a class of the model; point `classifier.model` at the
/// output file to use it.
#[derive(Debug, Parser)]
#[command(name = "baton-router train")]
pub struct TrainArgs {
    /// Labelled corpus (JSON Lines).
    #[arg(long)]
    data: PathBuf,
    /// Where to write the model.
    #[arg(long)]
    out: PathBuf,
    /// Router configuration whose bots and escalation classes the intents
    /// must name (default: the built-in configuration).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Features hash into 2^bits buckets (8..=24).
    #[arg(long, default_value_t = 18)]
    bits: u8,
    /// Messages longer than this many words are scored in overlapping
    /// windows of this many words, each intent taking its strongest window
    /// (0 scores every message whole). Set it near the length of the longest
    /// training messages (train prints their 99th percentile); it travels in
    /// the model file.
    #[arg(long, default_value_t = FeatureSpec::default().window_words)]
    window_words: u32,
    /// L2 regularisation of the logistic regressions.
    #[arg(long, default_value_t = 0.01)]
    alpha: f64,
    /// A feature must occur in this many messages to get a weight.
    #[arg(long, default_value_t = 2)]
    min_count: usize,
    /// Held-out folds for probability calibration (0 keeps raw scores).
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// Iterations of the optimiser per regression.
    #[arg(long, default_value_t = 300)]
    max_iterations: u64,
}

/// Evaluate an intent model on a labelled corpus, deciding each message as
/// the router would from one source bot (nothing learned).
///
/// Prints accuracy, per-intent precision / recall / F1, a confusion matrix,
/// per-language accuracy, and accuracy and handoff rate per threshold.
#[derive(Debug, Parser)]
#[command(name = "baton-router eval")]
pub struct EvalArgs {
    /// Labelled corpus (JSON Lines), same format as for `train`.
    #[arg(long)]
    data: PathBuf,
    /// Model file (default: the one `classifier.model` names, built in unless set).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Router configuration: bots, thresholds, triggers, escalation classes.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The bot the messages arrive at.
    #[arg(long, default_value = "lead")]
    source: String,
    /// Exit with status 1 when the accuracy (0..1) is below this.
    #[arg(long)]
    min_accuracy: Option<f64>,
    /// Also list every message decided wrongly.
    #[arg(long)]
    show_misses: bool,
}

fn policy_config(path: Option<&Path>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(p) => RouterConfig::from_file(p)?.policy,
        None => Config::default(),
    })
}

/// The labels a corpus may use under `config`.
fn known_labels(config: &Config) -> BTreeSet<String> {
    let mut known: BTreeSet<String> = config.bots.iter().map(|b| b.id.clone()).collect();
    known.extend(config.classifier.escalate.iter().cloned());
    known.insert(NONE.to_owned());
    known
}

fn read_corpus(path: &Path, config: &Config) -> anyhow::Result<Vec<baton_train::Example>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read corpus {}", path.display()))?;
    parse(&text, Some(&known_labels(config))).with_context(|| format!("corpus {}", path.display()))
}

pub fn train(args: TrainArgs) -> anyhow::Result<()> {
    let config = policy_config(args.config.as_deref())?;
    let bytes = std::fs::read(&args.data)
        .with_context(|| format!("cannot read corpus {}", args.data.display()))?;
    let examples = read_corpus(&args.data, &config)?;
    let options = TrainOptions {
        spec: FeatureSpec {
            bits: args.bits,
            window_words: args.window_words,
            ..FeatureSpec::default()
        },
        alpha: args.alpha,
        min_count: args.min_count,
        folds: args.folds,
        max_iterations: args.max_iterations,
    };
    if !(8..=24).contains(&args.bits) {
        bail!("--bits {} is outside 8..=24", args.bits);
    }
    let max_words = FeatureSpec::default().max_words;
    if args.window_words > max_words {
        bail!(
            "--window-words {} is above the {max_words} words a message is read to",
            args.window_words
        );
    }
    if !(args.alpha.is_finite() && args.alpha >= 0.0) {
        bail!("--alpha {} must be a non-negative number", args.alpha);
    }
    let mut lengths: Vec<usize> = {
        let featurizer = baton_policy::features::Featurizer::new(options.spec.clone());
        examples
            .iter()
            .map(|e| featurizer.words(&e.text).len())
            .collect()
    };
    lengths.sort_unstable();
    if let Some(&p99) = lengths.get(lengths.len() * 99 / 100) {
        eprintln!(
            "train: 99% of messages have at most {p99} words; --window-words is {}",
            args.window_words
        );
    }
    let started = std::time::Instant::now();
    let model = baton_train::train(
        &examples,
        &options,
        baton_train::digest(&bytes),
        &mut |line| eprintln!("train: {line}"),
    )?;
    // The model must compile against the configuration it was made for.
    Policy::with_model(
        config,
        Some(baton_policy::IntentModel::from_bytes(&model.to_bytes())?),
    )
    .context("the trained model does not fit the configuration")?;
    let out = model.to_bytes();
    let tmp = args.out.with_extension("tmp");
    std::fs::write(&tmp, &out).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let classes: Vec<&str> = model.classes().iter().map(|c| c.name.as_str()).collect();
    println!(
        "trained on {} messages in {:.1}s: classes {}, {} weighted features, {} bytes -> {}",
        examples.len(),
        started.elapsed().as_secs_f64(),
        classes.join(", "),
        model.entries(),
        out.len(),
        args.out.display()
    );
    Ok(())
}

/// Returns whether the accuracy floor (if any) was met.
pub fn eval(args: EvalArgs) -> anyhow::Result<bool> {
    let mut config = policy_config(args.config.as_deref())?;
    let policy = match &args.model {
        Some(path) => {
            config.classifier.model = path.display().to_string();
            baton_router::model::policy(&config)?
        }
        None => baton_router::model::policy(&config)?,
    };
    let Some(source) = policy.bot_ix(&args.source) else {
        bail!("--source '{}' is not a configured bot", args.source);
    };
    if let Some(min) = args.min_accuracy
        && !(0.0..=1.0).contains(&min)
    {
        bail!("--min-accuracy {min} is not in [0, 1]");
    }
    let examples = read_corpus(&args.data, policy.config())?;
    let report = evaluate(&policy, source, &examples);
    // A reader that closes the pipe early (`| head`) ends the report, not the process.
    if let Err(e) = print_report(&report, &policy, args.show_misses)
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(e).context("cannot write the report");
    }
    match args.min_accuracy {
        Some(min) if report.accuracy() < min => {
            eprintln!(
                "accuracy {:.2}% is below --min-accuracy {:.2}%",
                100.0 * report.accuracy(),
                100.0 * min
            );
            Ok(false)
        }
        _ => Ok(true),
    }
}

fn print_report(
    report: &baton_train::Report,
    policy: &Policy,
    show_misses: bool,
) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    write!(out, "{report}")?;
    if show_misses {
        writeln!(out, "\nmisses (line, label -> decided, text):")?;
        for (line, text, gold, got) in &report.misses {
            writeln!(out, "{line:>5} {gold} -> {got}: {text}")?;
            if let Some(model) = policy.model() {
                let probs = model.predict(&model.featurizer().features(text));
                let shown: Vec<String> = model
                    .classes()
                    .iter()
                    .zip(probs)
                    .map(|(c, p)| format!("{} {p:.2}", c.name))
                    .collect();
                writeln!(out, "      {}", shown.join("  "))?;
            }
        }
    }
    out.flush()
}
