//! `baton-router`: parse the configuration, set up logs, serve until
//! SIGTERM/SIGINT, drain.

use anyhow::Context;
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
    baton_router::init_logging(config.server.log_format);
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let store = server::open_store(&config).await?;
    let engine = server::engine(&config, store).await?;
    server::serve(config, engine, listener, server::signal()).await
}
