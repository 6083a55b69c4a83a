//! The configuration model: files in, typed and validated values out.
//!
//! `config/cadence.toml`, `config/sequences/*.toml` and `templates/` are read
//! into raw serde structs, then validated into the types below. Validation
//! never stops at the first mistake: every problem is collected with its file,
//! key and (when the TOML parser gives one) line, so `cadence check` can list
//! them all at once. Secrets are never in these files: keys ending in `_env`
//! name environment variables, read when the value is needed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;

use crate::domain::{EmailAddress, Wait};
use crate::schedule::{Calendar, SendWindow};
use crate::templates::Templates;

mod load;
mod sequence;
mod tree;

#[cfg(test)]
mod tests;

pub use load::{load, load_with_env, missing_secrets, Problem, Problems, Severity, DATABASE_URL_ENV, DEFAULT_STAGES, HTTP_LISTEN_ENV};

/// Everything `cadence` needs to run, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file this was loaded from.
    pub source: PathBuf,
    /// The project root (the config file's folder's parent): relative paths
    /// resolve against it.
    pub root: PathBuf,
    pub daemon: Daemon,
    /// By name; always contains the daemon's default calendar.
    pub calendars: BTreeMap<String, Calendar>,
    /// Ordered open stages; `won` and `lost` are implied outcomes.
    pub stages: Vec<String>,
    pub hygiene: Hygiene,
    pub agenda: Agenda,
    pub report: ReportThresholds,
    pub reps: Vec<Rep>,
    /// By name (the file stem).
    pub sequences: BTreeMap<String, Sequence>,
    pub templates: Templates,
}

#[derive(Debug, Clone)]
pub struct Daemon {
    pub database_url: String,
    /// Default lead time zone.
    pub timezone: Tz,
    pub tick_interval: Duration,
    pub http_listen: String,
    /// Base of unsubscribe links, without a trailing slash.
    pub public_url: String,
    pub max_inbox_lag: Duration,
    /// Holiday calendar for leads without a region.
    pub calendar: String,
    pub secret_env: String,
    pub manager_token_env: Option<String>,
    /// Fraction (0.08 = 8%) of a rep's sends in 24 h that may bounce before
    /// the rep's sending pauses.
    pub bounce_pause_rate: f64,
}

#[derive(Debug, Clone)]
pub struct Hygiene {
    pub schedule: Option<cron::Schedule>,
    /// The expression as written, for messages.
    pub schedule_text: String,
    pub stale_after: Wait,
    pub digest_to: Vec<EmailAddress>,
}

/// The rep's day (`[agenda]`): `cadence agenda` and the morning email.
#[derive(Debug, Clone)]
pub struct Agenda {
    /// When each rep gets the agenda by email, read in the rep's time zone;
    /// `None` (the default) sends none.
    pub schedule: Option<cron::Schedule>,
    pub schedule_text: String,
    /// A lead in the last stage with no touch for this long is listed as
    /// going quiet.
    pub quiet_after: Wait,
}

/// Red-flag thresholds of the pipeline report (`[report]`).
#[derive(Debug, Clone)]
pub struct ReportThresholds {
    /// A stage holding more than this fraction of open leads is a bottleneck.
    pub bottleneck_share: f64,
    /// Fewer than this many leads in the first stage is a thin front.
    pub min_front: u64,
    /// More than this many in the last stage at once.
    pub max_last_stage: u64,
    /// A step due but unsent (or a task not done) for longer than this is
    /// overdue.
    pub overdue_after: Wait,
    /// A/B variants are compared only once each has this many sends.
    pub variant_min_sends: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    None,
    Starttls,
    Tls,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    Smtp,
    File,
}

#[derive(Debug, Clone)]
pub struct Rep {
    pub id: String,
    pub name: String,
    pub email: EmailAddress,
    pub daily_limit: u32,
    pub domain_daily_limit: Option<u32>,
    pub min_gap: Duration,
    pub timezone: Tz,
    pub signature: String,
    pub api_token_env: Option<String>,
    pub smtp: Smtp,
    pub dkim: Option<Dkim>,
    pub imap: Option<Imap>,
}

#[derive(Debug, Clone)]
pub struct Smtp {
    pub transport: TransportKind,
    /// Where the file transport writes `.eml` files (resolved against root).
    pub dir: PathBuf,
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub username: Option<String>,
    pub password_env: Option<String>,
    /// A private CA (PEM) to trust in addition to the public roots.
    pub ca_file: Option<PathBuf>,
    /// Per-step timeout (connect, each command, DATA).
    pub timeout: Duration,
    /// Connections kept open to this server.
    pub pool_size: usize,
    /// Transient failures tried before the send fails.
    pub max_attempts: u32,
}

#[derive(Debug, Clone)]
pub struct Dkim {
    pub domain: String,
    pub selector: String,
    pub private_key_file: Option<PathBuf>,
    pub private_key_env: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Imap {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub username: String,
    pub password_env: Option<String>,
    pub folder: String,
    pub ca_file: Option<PathBuf>,
    /// Poll interval for servers without IDLE.
    pub poll_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct Sequence {
    pub name: String,
    pub file: PathBuf,
    /// Stage the lead moves to on enrollment (never backwards).
    pub stage: Option<String>,
    /// Stage a reply moves the lead to (resolved: default is the next stage).
    pub reply_stage: Option<String>,
    /// Emails before the last chance; `None` means all steps.
    pub max_touches: Option<u32>,
    pub send_window: SendWindow,
    pub auto_reply_pause: Wait,
    pub same_company_stop: bool,
    pub steps: Vec<Step>,
    pub last_chance: Option<LastChance>,
    pub archive_after: Option<Wait>,
    /// Content hash of the file, recorded on each send.
    pub hash: String,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub wait: Wait,
    pub kind: StepKind,
}

#[derive(Debug, Clone)]
pub enum StepKind {
    Email {
        /// One template, or weighted A/B variants.
        templates: Vec<Variant>,
        new_thread: bool,
    },
    Task {
        task: String,
        instructions: String,
        timeout: Option<Wait>,
    },
}

#[derive(Debug, Clone)]
pub struct Variant {
    pub template: String,
    pub weight: u32,
}

#[derive(Debug, Clone)]
pub struct LastChance {
    pub wait: Wait,
    pub template: String,
}

impl Config {
    pub fn rep(&self, id: &str) -> Option<&Rep> {
        self.reps.iter().find(|r| r.id == id)
    }

    pub fn sequence(&self, name: &str) -> Option<&Sequence> {
        self.sequences.get(name)
    }

    /// The calendar for a lead's region, else the daemon's default.
    pub fn calendar_for(&self, region: Option<&str>) -> &Calendar {
        region
            .and_then(|r| self.calendars.get(r))
            .or_else(|| self.calendars.get(&self.daemon.calendar))
            .expect("validated: the default calendar exists")
    }

    /// Is `stage` one of the pipeline's stages or an outcome?
    pub fn is_stage(&self, stage: &str) -> bool {
        stage == "won" || stage == "lost" || self.stages.iter().any(|s| s == stage)
    }

    /// Position of a stage in the pipeline; outcomes come after every stage.
    pub fn stage_rank(&self, stage: &str) -> usize {
        self.stages.iter().position(|s| s == stage).unwrap_or(self.stages.len())
    }

    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.root.join(path)
        }
    }
}

/// Reads a secret named by an `*_env` key. The value never goes into logs or
/// error messages: only the variable's name does.
pub fn secret(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty())
}
