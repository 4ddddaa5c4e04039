//! `baton-router`: parse the configuration, set up logs, serve until
//! SIGTERM/SIGINT, drain. `baton-router train` and `baton-router eval`
//! make and measure intent models; `baton-router check` reports on the
//! embedded store's file.

mod check;
mod intents;

use anyhow::Context;
use baton_router::telemetry::Telemetry;
use baton_router::{Args, RouterConfig, server};
use clap::Parser;

/// mimalloc: a decision allocates a few dozen small strings and vectors,
/// and glibc's allocator cost more than the decision's own work.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<std::process::ExitCode> {
    let mut argv = std::env::args_os();
    let command = argv.nth(1);
    match command.as_ref().and_then(|c| c.to_str()) {
        Some("train") => {
            let args = intents::TrainArgs::parse_from(std::env::args_os().skip(1));
            intents::train(args)?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Some("eval") => {
            let args = intents::EvalArgs::parse_from(std::env::args_os().skip(1));
            Ok(if intents::eval(args)? {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            })
        }
        Some("check") => {
            let args = check::CheckArgs::parse_from(std::env::args_os().skip(1));
            Ok(if check::check(args)? {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            })
        }
        _ => {
            serve(Args::parse())?;
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

#[tokio::main]
async fn serve(args: Args) -> anyhow::Result<()> {
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
    let engine = server::engine(&config, std::sync::Arc::clone(&store)).await?;
    let served = server::serve(config, engine, listener, server::signal()).await;
    server::close_store(store.as_ref()).await;
    telemetry.shutdown();
    served
}
