//! The `matrixon` command: run the server, print a configuration, operator helpers.

use std::{io::BufRead, path::PathBuf, process::ExitCode, sync::Arc};

use clap::{Parser, Subcommand};
use matrixon::{Config, Server, clock::SystemClock, config::LogFormat};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "matrixon",
    version,
    about = "A Matrix homeserver with an Ethereum-native identity layer"
)]
struct Cli {
    /// Configuration file (TOML). Without one, the built-in defaults apply.
    #[arg(long, short, env = "MATRIXON_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Run,
    /// Print a fully commented configuration file with every key and its default.
    GenerateConfig,
    /// Create a local user.
    RegisterUser {
        /// The user name (localpart), e.g. `alice`.
        username: String,
        /// The password; read from standard input when omitted.
        #[arg(long)]
        password: Option<String>,
        /// Make the user a server administrator.
        #[arg(long)]
        admin: bool,
    },
    /// Create a registration token for `registration.tokens_required`.
    CreateRegistrationToken {
        /// The token text; random when omitted.
        #[arg(long)]
        token: Option<String>,
        /// How many registrations it allows; unlimited when omitted.
        #[arg(long)]
        uses: Option<u32>,
        /// Seconds until it expires; never when omitted.
        #[arg(long)]
        expires_in: Option<u64>,
    },
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
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
    let cli = Cli::parse();
    if let Some(Command::GenerateConfig) = cli.command {
        print!("{}", matrixon::config::TEMPLATE);
        return ExitCode::SUCCESS;
    }
    let config = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("matrixon: {err}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let result = match cli.command {
        None | Some(Command::Run) => run(config).await,
        Some(Command::RegisterUser {
            username,
            password,
            admin,
        }) => register_user(config, username, password, admin).await,
        Some(Command::CreateRegistrationToken {
            token,
            uses,
            expires_in,
        }) => create_registration_token(config, token, uses, expires_in).await,
        Some(Command::GenerateConfig) => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("matrixon: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
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
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

async fn register_user(
    config: Config,
    username: String,
    password: Option<String>,
    admin: bool,
) -> anyhow::Result<()> {
    let password = match password {
        Some(password) => password,
        None => {
            eprintln!("Password for {username} (one line on standard input):");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if password.is_empty() {
        anyhow::bail!("the password must not be empty");
    }
    let services = matrixon::server::services(config, Arc::new(SystemClock)).await?;
    let user_id = services
        .create_account(&username, Some(password), admin, None)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    services.store.close().await;
    println!("{user_id}");
    Ok(())
}

async fn create_registration_token(
    config: Config,
    token: Option<String>,
    uses: Option<u32>,
    expires_in: Option<u64>,
) -> anyhow::Result<()> {
    let services = matrixon::server::services(config, Arc::new(SystemClock)).await?;
    let token = services
        .create_registration_token(token, uses, expires_in)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    services.store.close().await;
    println!("{token}");
    Ok(())
}
