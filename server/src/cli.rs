//! The command line: what `matrixon` can be asked to do besides serving.

use std::{io::BufRead, path::PathBuf, sync::Arc};

use clap::{Parser, Subcommand};

use crate::{Config, clock::SystemClock};

/// `matrixon [--config PATH] [COMMAND]`.
#[derive(Debug, Parser)]
#[command(
    name = "matrixon",
    version,
    about = "A Matrix homeserver with an Ethereum-native identity layer"
)]
pub struct Cli {
    /// Configuration file (TOML). Without one, the built-in defaults apply.
    #[arg(long, short, env = "MATRIXON_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
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
    /// Export a local user's data (profile, account data, devices, wallets, memberships, the
    /// events they sent, their uploads) as JSON Lines, for a data-protection request.
    ExportUser {
        /// The user, e.g. `@alice:example.org`.
        user_id: String,
        /// The file to write; it must not exist yet.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Write a consistent copy of the SQLite database to a new file, while the server runs
    /// (for PostgreSQL, use pg_dump; see docs/operations.md).
    Backup {
        /// The file to write; it must not exist yet.
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

/// What the binary should do after the command ran.
#[derive(Debug)]
pub enum Outcome {
    /// Print this to standard output and exit.
    Print(String),
    /// Serve with this configuration until a signal arrives.
    Serve(Box<Config>),
}

/// Runs a parsed command line with the given environment (for `MATRIXON_*` overrides).
pub async fn execute(cli: Cli, env: Vec<(String, String)>) -> anyhow::Result<Outcome> {
    if let Some(Command::GenerateConfig) = cli.command {
        return Ok(Outcome::Print(crate::config::TEMPLATE.to_owned()));
    }
    let config = Config::load(cli.config.as_deref(), env)?;
    match cli.command {
        None | Some(Command::Run) | Some(Command::GenerateConfig) => {
            Ok(Outcome::Serve(Box::new(config)))
        }
        Some(Command::RegisterUser {
            username,
            password,
            admin,
        }) => {
            let password = match password {
                Some(password) => password,
                None => read_password(&username)?,
            };
            if password.is_empty() {
                anyhow::bail!("the password must not be empty");
            }
            let services = crate::server::services(config, Arc::new(SystemClock)).await?;
            let created = services
                .create_account(&username, Some(password), admin, None)
                .await;
            services.store.close().await;
            Ok(Outcome::Print(format!(
                "{}\n",
                created.map_err(|e| anyhow::anyhow!("{e}"))?
            )))
        }
        Some(Command::ExportUser { user_id, out }) => {
            let user_id = ruma::UserId::parse(user_id.as_str())
                .map_err(|e| anyhow::anyhow!("{user_id} is not a user ID: {e}"))?;
            existing_database(&config.database.url)?;
            if out.exists() {
                anyhow::bail!("{} exists already: name a new file", out.display());
            }
            let services = crate::server::services(config, Arc::new(SystemClock)).await?;
            let mut file = match tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&out)
                .await
            {
                Ok(file) => file,
                Err(e) => {
                    services.store.close().await;
                    anyhow::bail!("{}: {e}", out.display());
                }
            };
            let written = services.export_user(&user_id, &mut file).await;
            services.store.close().await;
            if written.is_err() {
                drop(file);
                let _ = tokio::fs::remove_file(&out).await;
            }
            let lines = written.map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(Outcome::Print(format!(
                "Exported {user_id} to {} ({lines} lines)\n",
                out.display()
            )))
        }
        Some(Command::Backup { out }) => {
            existing_database(&config.database.url)?;
            let store =
                crate::store::Store::connect(&config.database.url, config.database.max_connections)
                    .await?;
            let written = store.backup_to(&out).await;
            store.close().await;
            written?;
            Ok(Outcome::Print(format!(
                "Backed up {} to {}\n",
                config.database.url,
                out.display()
            )))
        }
        Some(Command::CreateRegistrationToken {
            token,
            uses,
            expires_in,
        }) => {
            let services = crate::server::services(config, Arc::new(SystemClock)).await?;
            let created = services
                .create_registration_token(token, uses, expires_in)
                .await;
            services.store.close().await;
            Ok(Outcome::Print(format!(
                "{}\n",
                created.map_err(|e| anyhow::anyhow!("{e}"))?
            )))
        }
    }
}

/// Refuses a SQLite database file that does not exist: a command run from the wrong
/// directory (or with the wrong configuration) must not create and back up an empty one.
fn existing_database(url: &str) -> anyhow::Result<()> {
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return Ok(());
    };
    let path = rest.trim_start_matches("//");
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path == ":memory:" || std::path::Path::new(path).exists() {
        return Ok(());
    }
    anyhow::bail!(
        "no database at {path} (database.url = {url}): run this where the server runs, with its configuration"
    )
}

fn read_password(username: &str) -> anyhow::Result<String> {
    eprintln!("Password for {username} (one line on standard input):");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
