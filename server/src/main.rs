//! The `matrixon` binary: parse the command line, then serve or run an operator command.

use std::process::ExitCode;

use clap::Parser;
use matrixon::{
    Config, Server,
    cli::{Cli, Outcome, execute},
    config::LogFormat,
};
use tracing_subscriber::EnvFilter;

/// Many small short-lived allocations from many tasks on a few threads: mimalloc serves
/// them with less work and fragmentation than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_logging(config: &Config) {
    // ruma's authorization checks report every passed check at info: quiet unless asked for.
    let quiet = |filter: EnvFilter| match "ruma_state_res=warn".parse() {
        Ok(directive) if !config.log.level.contains("ruma_state_res") => {
            filter.add_directive(directive)
        }
        _ => filter,
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level).map(quiet))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match execute(Cli::parse(), std::env::vars().collect()).await {
        Ok(Outcome::Print(text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Ok(Outcome::Serve(config)) => {
            init_logging(&config);
            match serve(*config).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!("{err:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(err) => {
            eprintln!("matrixon: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let server = Server::start(config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    server.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
