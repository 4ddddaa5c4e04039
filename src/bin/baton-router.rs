//! `baton-router`: parse the configuration, set up logs, serve until
//! SIGTERM/SIGINT, drain.

use anyhow::Context;
use baton_router::telemetry::Telemetry;
use baton_router::{Args, RouterConfig, server};
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = RouterConfig::load(&args)?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    let s = &config.server;
    let telemetry = Telemetry::init(s.log_format, s.otlp_endpoint.as_deref(), s.metrics_interval)?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let store = server::open_store(&config).await?;
    let engine = server::engine(&config, store).await?;
    let served = server::serve(config, engine, listener, server::signal()).await;
    telemetry.shutdown();
    served
}
