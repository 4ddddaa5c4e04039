//! `baton-router check`: what redb makes of the embedded store's file, and
//! what its journal would replay, without changing either; with `--repair`,
//! each damaged one is repaired as far as it can be after a copy is kept.

use std::path::PathBuf;

use clap::Parser;

/// Check the embedded store's file, `baton.redb` in the data directory, and
/// its journal, `baton.journal.0` and `.1`.
///
/// Prints whether redb opens the file, whether it was shut down cleanly, the
/// result of redb's integrity check, how many journal records the router
/// would replay at start, and the rows of each table as the router would
/// serve them. Exits 0 when the router would start on them as they are, 1
/// otherwise. Nothing is changed unless `--repair` is given.
#[derive(Debug, Parser)]
#[command(name = "baton-router check")]
pub struct CheckArgs {
    /// Directory of the embedded store.
    #[arg(long, env = "BATON_DATA_DIR")]
    data_dir: PathBuf,
    /// Let redb repair a damaged file it can repair, which may lose the
    /// latest writes, and cut a journal damaged before its last record at
    /// the damage (what follows it is not replayed). Each file is first
    /// copied to `<name>.bak-<unix seconds>` beside it. A file redb cannot
    /// repair is left untouched.
    #[arg(long)]
    repair: bool,
}

/// Prints the report; returns whether the file is readable and intact.
pub fn check(args: CheckArgs) -> anyhow::Result<bool> {
    let report = baton_store::check(&args.data_dir, args.repair)?;
    print!("{report}");
    Ok(report.readable())
}
