//! `baton-router check`: what redb makes of the embedded store's file,
//! without changing it; with `--repair`, redb repairs what it can after the
//! file is copied aside.

use std::path::PathBuf;

use clap::Parser;

/// Check the embedded store's file, `baton.redb` in the data directory.
///
/// Prints whether redb opens it, whether it was shut down cleanly, the
/// result of redb's integrity check, and the rows of each table. Exits 0
/// when the router would start on the file as it is, 1 otherwise. The file
/// is left as it is unless `--repair` is given.
#[derive(Debug, Parser)]
#[command(name = "baton-router check")]
pub struct CheckArgs {
    /// Directory of the embedded store.
    #[arg(long, env = "BATON_DATA_DIR")]
    data_dir: PathBuf,
    /// Let redb repair a damaged file it can repair, which may lose the
    /// latest writes; the file is first copied to `baton.redb.bak-<unix
    /// seconds>` beside it. A file redb cannot repair is left untouched.
    #[arg(long)]
    repair: bool,
}

/// Prints the report; returns whether the file is readable and intact.
pub fn check(args: CheckArgs) -> anyhow::Result<bool> {
    let report = baton_store::check(&args.data_dir, args.repair)?;
    print!("{report}");
    Ok(report.readable())
}
