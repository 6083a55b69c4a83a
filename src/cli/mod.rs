//! The command line: argument parsing, printing, exit codes. Thin: the work
//! is in [`crate::ops`], the [`crate::engine`] and the [`crate::store`].

mod daemon;
mod generate;
mod import;
pub mod init;
mod leads;
mod output;
mod report;
mod tasks;

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
    /// Manual steps (calls, LinkedIn, custom) waiting for a rep
    Tasks {
        /// Only this rep's tasks
        #[arg(long)]
        rep: Option<String>,
        /// Only tasks open longer than [report] overdue_after
        #[arg(long)]
        overdue: bool,
        #[arg(long)]
        json: bool,
    },
    /// Mark a task done or skipped
    Task {
        #[command(subcommand)]
        action: tasks::TaskAction,
    },
    /// A rep's day: tasks due, replies awaiting an answer, late-stage leads going quiet, emails today
    Agenda {
        #[arg(long)]
        rep: Option<String>,
        /// The day (YYYY-MM-DD) in the rep's time zone [default: today]
        #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
        date: Option<chrono::NaiveDate>,
        #[arg(long)]
        json: bool,
    },
    /// What the inbox watcher makes of a message
    Classify {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Write a working starter project (config, a sequence, templates) into DIR; never overwrites
    Init {
        /// Project folder, created if missing
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Print a shell completion script (e.g. `cadence completions bash > /etc/bash_completion.d/cadence`)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per subcommand into --dir
    Man {
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NoteKind {
    Note,
    Call,
    Meeting,
}

fn parse_date(s: &str) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|e| format!("{s:?} is not a date like 2026-12-07: {e}"))
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
        let hint = match &e {
            OpError::NotFound(m) if m.starts_with("no lead ") => " (`cadence leads` lists them; addresses match case-insensitively)",
            _ => "",
        };
        Failure::new(code, format!("{e}{hint}"))
    }
}

impl From<crate::store::StoreError> for Failure {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        let hint = match &e {
            StoreError::Open { url, .. } if url.starts_with("sqlite:") => {
                "; check that its folder exists and is writable by this user (daemon.database_url or CADENCE_DATABASE_URL)"
            }
            StoreError::Open { .. } => {
                "; check that PostgreSQL is running and that the URL's host, user, password and database are right (daemon.database_url or CADENCE_DATABASE_URL)"
            }
            StoreError::BadUrl(_) => " (e.g. sqlite://cadence.db or postgres://cadence@localhost/cadence)",
            StoreError::Migrate(_) => "; was the database written by a newer cadence? Use that version, or restore a backup",
            _ => "",
        };
        Failure::new(EXIT_FAILURE, format!("{e}{hint}"))
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

    /// [`Cli::ctx`] for a bulk writer: see [`Store::open_bulk`].
    pub async fn bulk_ctx(&self) -> Result<Ctx, Failure> {
        let cfg = self.load_config()?;
        let store = Store::open_bulk(&cfg.daemon.database_url).await?;
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
        Command::Tasks { rep, overdue, json } => tasks::list(&cli, rep.as_deref(), *overdue, *json).await,
        Command::Task { action } => tasks::finish(&cli, action).await,
        Command::Agenda { rep, date, json } => tasks::agenda(&cli, rep.as_deref(), *date, *json).await,
        Command::Init { dir } => init::init(dir),
        Command::Completions { shell } => generate::completions(*shell),
        Command::Man { dir } => generate::man(dir.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(f) => {
            if !f.message.is_empty() {
                // With JSON logs, stderr stays one JSON object per line.
                match cli.log_format {
                    LogFormat::Json => tracing::error!(exit_code = f.code, "{}", f.message.trim_end()),
                    LogFormat::Text => eprintln!("cadence: {}", f.message.trim_end()),
                }
            }
            ExitCode::from(f.code)
        }
    }
}
