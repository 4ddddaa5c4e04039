//! The model built into the binary is the one `baton-router train` makes
//! from the committed corpus: retrain it when `data/intents/train.jsonl`
//! changes (README, "Decision quality").

use std::path::Path;

use baton_policy::IntentModel;
use baton_train::{digest, parse};

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

#[test]
fn the_builtin_model_was_trained_on_the_committed_corpus() {
    let corpus = std::fs::read(repo("data/intents/train.jsonl")).unwrap();
    let model = IntentModel::builtin().unwrap();
    assert_eq!(
        model.digest(),
        digest(&corpus),
        "crates/policy/model/default.bim is stale: run \
         `cargo run --release -- train --data data/intents/train.jsonl --out crates/policy/model/default.bim`"
    );
}

#[test]
fn the_committed_corpora_are_well_formed_and_large_enough() {
    let train = std::fs::read_to_string(repo("data/intents/train.jsonl")).unwrap();
    let test = std::fs::read_to_string(repo("data/intents/test.jsonl")).unwrap();
    let train = parse(&train, None).unwrap();
    let test = parse(&test, None).unwrap();
    let all: Vec<_> = train.iter().chain(&test).collect();
    assert!(all.len() >= 2000, "{}", all.len());
    let spanish = all
        .iter()
        .filter(|e| e.lang.as_deref() == Some("es"))
        .count();
    assert!(
        spanish * 4 >= all.len(),
        "{spanish} Spanish of {}",
        all.len()
    );
    for intent in ["seller", "buyer", "human", "legal", "none"] {
        assert!(test.iter().any(|e| e.intent == intent), "{intent} in test");
    }
    assert!(test.iter().any(|e| e.pending == vec!["buyer".to_owned()]));
}
