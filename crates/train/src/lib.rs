//! Trains and evaluates Baton's intent model (SPEC §2.2): reads labelled
//! JSON Lines corpora, fits the model with linfa, and measures a model the
//! way the router uses it. Kept out of the pure policy crate, which only
//! runs models, so the router's decision path carries no training code.

#![forbid(unsafe_code)]

pub mod corpus;
pub mod eval;
pub mod train;

pub use corpus::{Example, parse};
pub use eval::{Report, evaluate};
pub use train::{TrainOptions, digest, train};

/// The train crate's one error type.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TrainError {
    #[error("line {line}: {problem}")]
    Line { line: usize, problem: String },
    #[error("line {line}: unknown intent '{intent}' (known: {known})")]
    UnknownIntent {
        line: usize,
        intent: String,
        known: String,
    },
    #[error("the corpus has no examples")]
    Empty,
    #[error("training failed: {0}")]
    Training(String),
}
