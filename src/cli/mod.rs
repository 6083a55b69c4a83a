//! The command line: argument parsing, printing, exit codes. Thin: the work
//! is in [`crate::ops`], the [`crate::engine`] and the [`crate::store`].

mod daemon;
mod import;
mod leads;
mod output;
mod report;

/// The CSV importer's row parser, for the fuzz target (fuzz/).
pub use import::parse_row;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};

use crate::clock::Clock;
use crate::config::{self, Config};
use crate::ops::{Ctx, OpError};
use crate::store::Store;

/// Exit codes of the contract.
pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_REFUSED: u8 = 3;

#[derive(Parser, Debug)]
#[command(name = "cadence", version, about = "Email-cadence automation for sales teams", propagate_version = true)]
pub struct Cli {
    /// Config file [default: $CADENCE_CONFIG, else config/cadence.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Database URL (overrides daemon.database_url and $CADENCE_DATABASE_URL)
    #[arg(long, global = true, value_name = "URL")]
    pub database: Option<String>,
    /// Log format on stderr
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The time this command acts at (RFC 3339), instead of the real clock
    #[arg(long, global = true, value_name = "RFC3339", value_parser = parse_now)]
    pub now: Option<DateTime<Utc>>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon: scheduler, inbox watchers, hygiene, HTTP API
    Run,
    /// One pass: sync every inbox once, then carry out everything due now
    Tick {
        #[arg(long)]
        json: bool,
    },
    /// Validate config, sequences and templates; list every problem
    Check {
        #[arg(long)]
        json: bool,
    },
    /// Create or update a lead and enroll it in a sequence
    Enroll(leads::EnrollArgs),
    /// Bulk-enroll leads from a CSV file (header row names the fields)
    Import(import::ImportArgs),
    /// List leads
    Leads(leads::LeadsArgs),
    /// One lead: fields, stage, enrollment and full timeline
    Show {
        email: String,
        #[arg(long)]
        json: bool,
    },
    /// Pause a lead's enrollment
    Pause { email: String },
    /// Resume a paused enrollment
    Resume { email: String },
    /// Stop a lead's enrollment
    Unenroll { email: String },
    /// Move a lead to a stage (or won / lost)
    Stage { email: String, stage: String },
    /// Log a manual touchpoint
    Note {
        email: String,
        text: String,
        #[arg(long, value_enum, default_value_t = NoteKind::Note)]
        kind: NoteKind,
    },
    /// Never email this address or @domain again
    Suppress { target: String },
    /// Pipeline health: stages, red flags, per-step figures, speed to lead
    Report {
        #[arg(long)]
        json: bool,
    },
    /// Render a template for a lead, headers included
    Preview { template: String, email: String },
    /// Why a lead's next email is or is not going out, and when it will
    Explain {
        email: String,
        #[arg(long)]
        json: bool,
    },
    /// The send times a new enrollment would get if nobody replied
    Simulate(daemon::SimulateArgs),
    /// What the inbox watcher makes of a message
    Classify {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NoteKind {
    Note,
    Call,
    Meeting,
}

fn parse_now(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time (e.g. 2026-12-01T09:00:00Z): {e}"))
}

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure { code, message: message.into() }
    }
}

impl From<OpError> for Failure {
    fn from(e: OpError) -> Self {
        let code = match &e {
            OpError::Refused(_) | OpError::Invalid(_) => EXIT_REFUSED,
            OpError::NotFound(_) | OpError::Usage(_) => EXIT_USAGE,
            OpError::Store(_) => EXIT_FAILURE,
        };
        Failure::new(code, e.to_string())
    }
}

impl From<crate::store::StoreError> for Failure {
    fn from(e: crate::store::StoreError) -> Self {
        Failure::new(EXIT_FAILURE, e.to_string())
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::new(EXIT_FAILURE, format!("{e:#}"))
    }
}

pub type CliResult = Result<(), Failure>;

impl Cli {
    pub fn config_path(&self) -> PathBuf {
        self.config
            .clone()
            .or_else(|| std::env::var_os("CADENCE_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("config/cadence.toml"))
    }

    pub fn clock(&self) -> Clock {
        Clock::from_option(self.now)
    }

    /// Loads the config; errors are printed in full and exit 1.
    pub fn load_config(&self) -> Result<Arc<Config>, Failure> {
        let path = self.config_path();
        match config::load(&path) {
            Ok((mut cfg, _warnings)) => {
                if let Some(url) = &self.database {
                    cfg.daemon.database_url = url.clone();
                }
                Ok(Arc::new(cfg))
            }
            Err(problems) => {
                Err(Failure::new(EXIT_FAILURE, format!("{problems}the config has errors; run `cadence check` for the full list")))
            }
        }
    }

    pub async fn ctx(&self) -> Result<Ctx, Failure> {
        let cfg = self.load_config()?;
        let store = Store::open(&cfg.daemon.database_url).await?;
        Ok(Ctx { cfg, store, clock: self.clock() })
    }
}

/// Runs the parsed command; returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let result = match &cli.command {
        Command::Run => daemon::run(&cli).await,
        Command::Tick { json } => daemon::tick(&cli, *json).await,
        Command::Check { json } => daemon::check(&cli, *json),
        Command::Enroll(args) => leads::enroll(&cli, args).await,
        Command::Import(args) => import::import(&cli, args).await,
        Command::Leads(args) => leads::list(&cli, args).await,
        Command::Show { email, json } => leads::show(&cli, email, *json).await,
        Command::Pause { email } => leads::pause(&cli, email).await,
        Command::Resume { email } => leads::resume(&cli, email).await,
        Command::Unenroll { email } => leads::unenroll(&cli, email).await,
        Command::Stage { email, stage } => leads::stage(&cli, email, stage).await,
        Command::Note { email, text, kind } => leads::note(&cli, email, text, *kind).await,
        Command::Suppress { target } => leads::suppress(&cli, target).await,
        Command::Report { json } => report::report(&cli, *json).await,
        Command::Preview { template, email } => leads::preview(&cli, template, email).await,
        Command::Explain { email, json } => daemon::explain(&cli, email, *json).await,
        Command::Simulate(args) => daemon::simulate(&cli, args),
        Command::Classify { file, json } => daemon::classify(file, *json),
    };
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("cadence: {}", f.message.trim_end());
            }
            ExitCode::from(f.code)
        }
    }
}
