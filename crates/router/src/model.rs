//! The intent model the policy runs with: built in, off, or read from the
//! file `classifier.model` names. Reading the file is the router's job; the
//! policy crate only parses and validates bytes.

use std::path::Path;

use anyhow::Context;
use baton_policy::config::{BUILTIN_MODEL, NO_MODEL};
use baton_policy::{Config, IntentModel, Policy};

/// Reads and validates a model file; the error names the file.
pub fn load(path: &Path) -> anyhow::Result<IntentModel> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read model file {}", path.display()))?;
    IntentModel::from_bytes(&bytes).with_context(|| format!("model file {}", path.display()))
}

/// Compiles `config` with the model it names.
pub fn policy(config: &Config) -> anyhow::Result<Policy> {
    match config.classifier.model.as_str() {
        BUILTIN_MODEL | NO_MODEL => Ok(Policy::new(config.clone())?),
        path => {
            let model = load(Path::new(path)).context("config key 'classifier.model'")?;
            Ok(Policy::with_model(config.clone(), Some(model))?)
        }
    }
}
