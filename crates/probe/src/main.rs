//! `baton-probe`: parse the configuration, set up logs, measure and report
//! until SIGTERM/SIGINT, then close the report stream.

use baton_probe::{Args, Probe, ProbeConfig};
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = ProbeConfig::load(&args)?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    baton_probe::init_logging(config.log_format);
    let probe = Probe::start(config).await?;
    baton_probe::signal().await;
    tracing::info!("shutting down: closing the report stream");
    probe.stop().await;
    tracing::info!("stopped");
    Ok(())
}
