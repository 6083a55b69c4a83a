//! Reading and validating the files.
//!
//! Validation goes on after a mistake, with a default in place of the bad
//! value, so one run of `cadence check` lists every problem of every file.
//! The config is only handed out when no problem is an error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::NaiveDate;
use chrono_tz::Tz;

use super::sequence;
use super::tree::{self, Sink, Table, Val};
use super::{Agenda, Config, Daemon, Dkim, Hygiene, Imap, Rep, ReportThresholds, Smtp, TlsMode, TransportKind};
use crate::domain::{parse_timezone, EmailAddress, Wait};
use crate::schedule::Calendar;
use crate::templates::Templates;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One thing wrong (or worth a warning) in the config, located.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Problem {
    pub severity: Severity,
    pub file: PathBuf,
    /// Dotted key path, e.g. `reps[0].smtp.tls` or `steps[2].template`.
    pub key: Option<String>,
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}: {}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// All problems found; `load` fails when any is an error.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|p| p.severity == Severity::Error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter().filter(|p| p.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter().filter(|p| p.severity == Severity::Warning)
    }
}

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.0 {
            writeln!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// The pipeline when `[pipeline]` does not say (from the sales practice).
pub const DEFAULT_STAGES: &[&str] = &["prospecting", "qualification", "connecting", "closing"];
/// Environment variable that overrides `daemon.database_url`.
pub const DATABASE_URL_ENV: &str = "CADENCE_DATABASE_URL";
/// Environment variable that overrides `daemon.http_listen` (a service
/// manager or a second instance on one machine picks the port).
pub const HTTP_LISTEN_ENV: &str = "CADENCE_HTTP_LISTEN";

/// Loads and validates the config at `path`, its sequences and templates.
/// Returns the config with its warnings, or every problem found.
pub fn load(path: &Path) -> Result<(Config, Problems), Problems> {
    load_with_env(path, &|var| std::env::var(var).ok())
}

/// [`load`] with the environment supplied by the caller (tests, and any
/// caller that must not read the process environment).
pub fn load_with_env(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<(Config, Problems), Problems> {
    let mut problems = Vec::new();
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let root = match folder.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };

    // Templates first: sequences refer to them.
    let templates_dir = root.join("templates");
    let (templates, template_problems) = Templates::load_checked(&templates_dir);
    for (file, line, message) in template_problems {
        problems.push(Problem { severity: Severity::Error, file, key: None, line, message });
    }

    let mut secrets = Vec::new();
    let main = match std::fs::read_to_string(path) {
        Ok(src) => {
            let mut sink = Sink::new(path, &src, &mut problems);
            match tree::parse(path, &src) {
                Ok(node) => Some(main_file(&node, &mut sink, &root, env, &mut secrets)),
                Err(p) => {
                    sink.problems.push(p);
                    None
                }
            }
        }
        Err(e) => {
            problems.push(Problem {
                severity: Severity::Error,
                file: path.to_path_buf(),
                key: None,
                line: None,
                message: if e.kind() == std::io::ErrorKind::NotFound {
                    format!("cannot read: {e}; create a project with `cadence init`, or point --config (or CADENCE_CONFIG) at cadence.toml")
                } else {
                    format!("cannot read: {e}")
                },
            });
            None
        }
    };

    // Sequences are checked even when the main file is broken; stage names
    // are only checked against a pipeline that was read.
    let stages: Option<Vec<String>> = main.as_ref().map(|m| m.stages.clone());
    let sequences = sequence::load_all(&folder.join("sequences"), stages.as_deref(), &templates, &mut problems);

    for s in &secrets {
        if env(&s.var).filter(|v| !v.is_empty()).is_none() {
            problems.push(Problem {
                severity: Severity::Warning,
                file: path.to_path_buf(),
                key: Some(s.key.clone()),
                line: s.line,
                message: format!("environment variable {} is not set (`cadence run` refuses to start without it)", s.var),
            });
        }
    }

    let problems = Problems(problems);
    match main {
        Some(m) if !problems.has_errors() => {
            let config = Config {
                source: path.to_path_buf(),
                root,
                daemon: m.daemon,
                calendars: m.calendars,
                stages: m.stages,
                hygiene: m.hygiene,
                agenda: m.agenda,
                report: m.report,
                reps: m.reps,
                sequences,
                templates,
            };
            Ok((config, problems))
        }
        _ => Err(problems),
    }
}

/// Every `*_env` key whose variable is unset or empty, as errors: what
/// `cadence run` refuses to start with (`check` shows them as warnings).
pub fn missing_secrets(config: &Config) -> Vec<Problem> {
    missing_secrets_with(config, &|var| std::env::var(var).ok())
}

pub(crate) fn missing_secrets_with(config: &Config, env: &dyn Fn(&str) -> Option<String>) -> Vec<Problem> {
    let mut wanted: Vec<(String, &str)> = vec![("daemon.secret_env".into(), config.daemon.secret_env.as_str())];
    if let Some(v) = &config.daemon.manager_token_env {
        wanted.push(("daemon.manager_token_env".into(), v));
    }
    for (i, r) in config.reps.iter().enumerate() {
        if let Some(v) = &r.api_token_env {
            wanted.push((format!("reps[{i}].api_token_env"), v));
        }
        if r.smtp.transport == TransportKind::Smtp {
            if let Some(v) = &r.smtp.password_env {
                wanted.push((format!("reps[{i}].smtp.password_env"), v));
            }
        }
        if let Some(v) = r.dkim.as_ref().and_then(|d| d.private_key_env.as_deref()) {
            wanted.push((format!("reps[{i}].dkim.private_key_env"), v));
        }
        if let Some(v) = r.imap.as_ref().and_then(|m| m.password_env.as_deref()) {
            wanted.push((format!("reps[{i}].imap.password_env"), v));
        }
    }
    wanted
        .into_iter()
        .filter(|(_, var)| env(var).filter(|v| !v.is_empty()).is_none())
        .map(|(key, var)| Problem {
            severity: Severity::Error,
            file: config.source.clone(),
            key: Some(key),
            line: None,
            message: format!("environment variable {var} is not set"),
        })
        .collect()
}

/// What `cadence.toml` contributes to the config.
struct Main {
    daemon: Daemon,
    calendars: BTreeMap<String, Calendar>,
    stages: Vec<String>,
    hygiene: Hygiene,
    agenda: Agenda,
    report: ReportThresholds,
    reps: Vec<Rep>,
}

/// An `*_env` key seen in the file, to check against the environment.
struct SecretKey {
    key: String,
    line: Option<usize>,
    var: String,
}

fn main_file(node: &tree::Node, sink: &mut Sink, root: &Path, env: &dyn Fn(&str) -> Option<String>, secrets: &mut Vec<SecretKey>) -> Main {
    let mut top = Table::root(node);
    // [daemon]
    let mut d = top.table_or_empty(sink, "daemon");
    let mut database_url = d.str(sink, "database_url").map(|v| {
        check_database_url(sink, &v.key, Some(&v.span), &v.v, "");
        resolve_sqlite(&v.v, root)
    });
    if let Some(url) = env(DATABASE_URL_ENV).filter(|u| !u.is_empty()) {
        check_database_url(sink, "daemon.database_url", None, &url, &format!(" (from {DATABASE_URL_ENV})"));
        database_url = Some(url);
    }
    let timezone = timezone_or(&mut d, sink, "timezone", Tz::UTC);
    let tick_interval = d.duration_or(sink, "tick_interval", Duration::from_secs(5));
    if tick_interval.is_zero() {
        sink.error(&d.key_path("tick_interval"), None, "must be longer than 0s");
    }
    let listen_ok = |s: &str| s.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    let mut http_listen = d.str(sink, "http_listen").map(|v| {
        if !listen_ok(&v.v) {
            sink.error_at(&v, format!("{:?} is not HOST:PORT (e.g. 127.0.0.1:8025)", v.v));
        }
        v.v
    });
    if let Some(listen) = env(HTTP_LISTEN_ENV).filter(|u| !u.is_empty()) {
        if !listen_ok(&listen) {
            sink.error("daemon.http_listen", None, format!("{listen:?} (from {HTTP_LISTEN_ENV}) is not HOST:PORT (e.g. 127.0.0.1:8025)"));
        }
        http_listen = Some(listen);
    }
    let public_url = d.str(sink, "public_url").map(|v| {
        if !(v.v.starts_with("http://") || v.v.starts_with("https://")) || v.v.len() <= "https://".len() {
            sink.error_at(&v, format!("{:?} is not an http:// or https:// URL", v.v));
        }
        v.v.trim_end_matches('/').to_string()
    });
    let max_inbox_lag = d.duration_or(sink, "max_inbox_lag", Duration::from_secs(120));
    let calendar = d.str(sink, "calendar");
    let secret = secret_env(&mut d, sink, "secret_env", secrets);
    let secret = match secret {
        Some(s) => s,
        None => {
            if !d.has("secret_env") {
                secrets.push(SecretKey { key: "daemon.secret_env".into(), line: None, var: "CADENCE_SECRET".into() });
            }
            "CADENCE_SECRET".to_string()
        }
    };
    let manager_token_env = secret_env(&mut d, sink, "manager_token_env", secrets);
    let bounce_pause_rate = fraction(&mut d, sink, "bounce_pause_rate", 0.08);
    d.finish(sink);

    // [[calendars]]
    let mut calendars = BTreeMap::new();
    for mut c in top.tables(sink, "calendars") {
        let name = c.req_str(sink, "name");
        let mut holidays = BTreeSet::new();
        for h in c.str_list(sink, "holidays").unwrap_or_default() {
            match NaiveDate::parse_from_str(h.v.trim(), "%Y-%m-%d") {
                Ok(date) => {
                    holidays.insert(date);
                }
                Err(_) => sink.error_at(&h, format!("{:?} is not a date (YYYY-MM-DD)", h.v)),
            }
        }
        if let Some(name) = name {
            if name.v.trim().is_empty() {
                sink.error_at(&name, "a calendar needs a name");
            } else if calendars.contains_key(&name.v) {
                sink.error_at(&name, format!("calendar `{}` is defined twice", name.v));
            } else {
                calendars.insert(name.v.clone(), Calendar { name: name.v, holidays });
            }
        }
        c.finish(sink);
    }
    let calendar = match calendar {
        Some(v) => {
            if !calendars.contains_key(&v.v) {
                let known: Vec<&str> = calendars.keys().map(String::as_str).collect();
                sink.error_at(&v, format!("unknown calendar `{}` (defined: {})", v.v, list_or_none(&known)));
            }
            v.v
        }
        None => {
            calendars.entry("default".to_string()).or_insert_with(|| Calendar { name: "default".into(), holidays: BTreeSet::new() });
            "default".to_string()
        }
    };

    let daemon = Daemon {
        database_url: database_url.unwrap_or_else(|| resolve_sqlite("sqlite://cadence.db", root)),
        timezone,
        tick_interval,
        http_listen: http_listen.unwrap_or_else(|| "127.0.0.1:8025".into()),
        public_url: public_url.unwrap_or_else(|| "http://127.0.0.1:8025".into()),
        max_inbox_lag,
        calendar,
        secret_env: secret,
        manager_token_env,
        bounce_pause_rate,
    };

    // [pipeline]
    let mut p = top.table_or_empty(sink, "pipeline");
    let stages = match p.str_list(sink, "stages") {
        Some(list) => {
            let mut out: Vec<String> = Vec::new();
            for s in list {
                let name = s.v.trim();
                if name.is_empty() || name.chars().any(char::is_whitespace) {
                    sink.error_at(&s, format!("{:?} is not a stage name (no spaces; e.g. \"qualification\")", s.v));
                } else if name == "won" || name == "lost" {
                    sink.error_at(&s, format!("`{name}` is an outcome, always available; list only the open stages"));
                } else if out.iter().any(|o| o == name) {
                    sink.error_at(&s, format!("stage `{name}` is listed twice"));
                } else {
                    out.push(name.to_string());
                }
            }
            if out.is_empty() {
                sink.error(&p.key_path("stages"), None, "the pipeline needs at least one stage");
            }
            out
        }
        None => DEFAULT_STAGES.iter().map(|s| s.to_string()).collect(),
    };
    p.finish(sink);

    // [hygiene]
    let mut h = top.table_or_empty(sink, "hygiene");
    let schedule_text = h.str(sink, "schedule");
    let schedule = match &schedule_text {
        Some(v) if v.v.trim().is_empty() => None,
        Some(v) => cron_schedule(sink, v),
        None => cron::Schedule::from_str(DEFAULT_HYGIENE).ok(),
    };
    let schedule_text = schedule_text.map(|v| v.v).unwrap_or_else(|| DEFAULT_HYGIENE.to_string());
    let stale_after = h.wait_or(sink, "stale_after", Wait::Days(14));
    let mut digest_to = Vec::new();
    for a in h.str_list(sink, "digest_to").unwrap_or_default() {
        match EmailAddress::parse(&a.v) {
            Ok(e) => digest_to.push(e),
            Err(e) => sink.error_at(&a, e.to_string()),
        }
    }
    h.finish(sink);
    let hygiene = Hygiene { schedule, schedule_text, stale_after, digest_to };

    // [agenda]: the morning email is off unless a schedule is given.
    let mut a = top.table_or_empty(sink, "agenda");
    let agenda_text = a.str(sink, "schedule");
    let agenda_schedule = match &agenda_text {
        Some(v) if v.v.trim().is_empty() => None,
        Some(v) => cron_schedule(sink, v),
        None => None,
    };
    let quiet_after = a.wait_or(sink, "quiet_after", Wait::Days(5));
    a.finish(sink);
    let agenda = Agenda { schedule: agenda_schedule, schedule_text: agenda_text.map(|v| v.v).unwrap_or_default(), quiet_after };

    // [report]
    let mut r = top.table_or_empty(sink, "report");
    let report = ReportThresholds {
        bottleneck_share: fraction(&mut r, sink, "bottleneck_share", 0.5),
        min_front: r.int_in(sink, "min_front", 0, i64::MAX, 5u64),
        max_last_stage: r.int_in(sink, "max_last_stage", 0, i64::MAX, 20u64),
        overdue_after: r.wait_or(sink, "overdue_after", Wait::Days(1)),
        variant_min_sends: r.int_in(sink, "variant_min_sends", 1, i64::MAX, 100u64),
    };
    r.finish(sink);

    // [[reps]]
    let mut reps: Vec<Rep> = Vec::new();
    let rep_tables = top.tables(sink, "reps");
    if rep_tables.is_empty() {
        sink.warn("reps", None, "no [[reps]]: nothing can be sent");
    }
    let mut ids: Vec<String> = Vec::new();
    for mut t in rep_tables {
        // Duplicates are checked on the raw id, so a rep with other mistakes
        // still counts.
        if let Some(node) = t.node("id") {
            if let tree::Kind::Str(id) = &node.kind {
                if ids.contains(id) {
                    sink.error(&t.key_path("id"), Some(&node.span), format!("rep id `{id}` is used twice"));
                }
                ids.push(id.clone());
            }
        }
        if let Some(rep) = rep(&mut t, sink, root, &daemon, env, secrets) {
            reps.push(rep);
        }
        t.finish(sink);
    }

    // [[dkim]]: one key per sending domain, for every rep of that domain
    // (or below it) that has no [reps.dkim] of its own.
    let mut domain_keys: Vec<Dkim> = Vec::new();
    for mut k in top.tables(sink, "dkim") {
        let d = dkim_table(&mut k, sink, root, env, secrets);
        if !d.domain.is_empty() && domain_keys.iter().any(|o| o.domain.eq_ignore_ascii_case(&d.domain)) {
            sink.error(&k.key_path("domain"), None, format!("[[dkim]] for {} is given twice; keep one", d.domain));
        }
        domain_keys.push(d);
        k.finish(sink);
    }
    for (i, rep) in reps.iter_mut().enumerate() {
        let from = rep.email.domain().to_string();
        if rep.dkim.is_none() {
            rep.dkim =
                domain_keys.iter().filter(|d| crate::mailer::dkim::aligned(&d.domain, &from)).max_by_key(|d| d.domain.len()).cloned();
        } else if let Some(d) = &rep.dkim {
            if !d.domain.is_empty() && !crate::mailer::dkim::aligned(&d.domain, &from) {
                sink.warn(
                    &format!("reps[{i}].dkim.domain"),
                    None,
                    format!(
                        "signing as {} while sending from {}: DMARC will not count this signature; use the From domain ({from}) or a parent of it",
                        d.domain, rep.email
                    ),
                );
            }
        }
    }

    top.finish(sink);
    Main { daemon, calendars, stages, hygiene, agenda, report, reps }
}

/// A `[reps.dkim]` or `[[dkim]]` table. The key is read and parsed here, so
/// `cadence check` and every start refuse a key that cannot sign; a key in
/// an unset variable is only the usual missing-secret warning.
fn dkim_table(k: &mut Table, sink: &mut Sink, root: &Path, env: &dyn Fn(&str) -> Option<String>, secrets: &mut Vec<SecretKey>) -> Dkim {
    let domain = k.req_str(sink, "domain").map(|v| {
        let ok = !v.v.is_empty() && v.v.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !ok {
            sink.error_at(&v, format!("{:?} is not a domain name (e.g. example.com)", v.v));
        }
        v.v
    });
    let selector = k.req_str(sink, "selector").map(|v| {
        let ok = !v.v.is_empty()
            && v.v.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        if !ok {
            sink.error_at(&v, format!("{:?} is not a DKIM selector (letters, digits, `-`; e.g. \"cadence\")", v.v));
        }
        v.v
    });
    let file = k.str(sink, "private_key_file");
    let private_key_env = secret_env(k, sink, "private_key_env", secrets);
    if file.is_some() == private_key_env.is_some() {
        sink.error(
            &k.path.clone(),
            Some(&k.span.clone()),
            "give exactly one of private_key_file (a PEM file) and private_key_env (a variable holding the PEM)",
        );
    }
    let dkim = Dkim {
        domain: domain.unwrap_or_default(),
        selector: selector.unwrap_or_default(),
        private_key_file: file.as_ref().map(|v| root.join(&v.v)),
        private_key_env: private_key_env.clone(),
    };
    let key_is_set = private_key_env.as_deref().is_none_or(|var| env(var).is_some_and(|v| !v.is_empty()));
    if dkim.private_key_file.is_some() != dkim.private_key_env.is_some() && key_is_set {
        if let Err(why) = crate::mailer::dkim::read_key(&dkim, root, env) {
            match &file {
                Some(v) => sink.error_at(v, why),
                None => sink.error(&k.key_path("private_key_env"), None, why),
            }
        }
    }
    dkim
}

const DEFAULT_HYGIENE: &str = "0 0 7 * * Mon-Fri";

/// Reads an `*_env` key and remembers it for the environment check.
fn secret_env(t: &mut Table, sink: &mut Sink, key: &'static str, secrets: &mut Vec<SecretKey>) -> Option<String> {
    let v = t.str(sink, key)?;
    env_name(sink, &v)?;
    secrets.push(SecretKey { key: v.key.clone(), line: Some(sink.line(&v.span)), var: v.v.clone() });
    Some(v.v)
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

/// `*_env` keys name a variable; a value that looks like a secret pasted in
/// is refused before it can end up in a log.
fn env_name(sink: &mut Sink, v: &Val<String>) -> Option<()> {
    let ok =
        !v.v.is_empty() && !v.v.starts_with(|c: char| c.is_ascii_digit()) && v.v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Some(())
    } else {
        sink.error_at(
            v,
            "must name an environment variable (letters, digits, `_`; e.g. CADENCE_SMTP_PASSWORD), never hold the secret itself",
        );
        None
    }
}

fn check_database_url(sink: &mut Sink, key: &str, span: Option<&std::ops::Range<usize>>, url: &str, from: &str) {
    let ok = url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://");
    if !ok {
        sink.error(key, span, format!("{url:?}{from} is neither sqlite://PATH nor postgres://... (e.g. sqlite://cadence.db, postgres://cadence@localhost/cadence)"));
    }
}

/// A relative SQLite path in the file is relative to the project root, like
/// every other path there.
fn resolve_sqlite(url: &str, root: &Path) -> String {
    let Some(rest) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) else {
        return url.to_string();
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() || path == ":memory:" || Path::new(path).is_absolute() || root == Path::new(".") {
        return url.to_string();
    }
    let joined = root.join(path);
    match query {
        Some(q) => format!("sqlite://{}?{q}", joined.display()),
        None => format!("sqlite://{}", joined.display()),
    }
}

fn timezone_or(t: &mut Table, sink: &mut Sink, key: &'static str, default: Tz) -> Tz {
    let Some(v) = t.str(sink, key) else { return default };
    match parse_timezone(v.v.trim()) {
        Ok(tz) => tz,
        Err(m) => {
            sink.error_at(&v, m);
            default
        }
    }
}

fn fraction(t: &mut Table, sink: &mut Sink, key: &'static str, default: f64) -> f64 {
    let Some(v) = t.float(sink, key) else { return default };
    if !(v.v > 0.0 && v.v <= 1.0) {
        sink.error_at(&v, format!("must be a fraction between 0 and 1 (0.08 = 8%), not {}", v.v));
        return default;
    }
    v.v
}

fn cron_schedule(sink: &mut Sink, v: &Val<String>) -> Option<cron::Schedule> {
    let fields = v.v.split_whitespace().count();
    if !(6..=7).contains(&fields) {
        sink.error_at(v, format!("{:?} has {fields} fields; write 6 or 7, seconds first, with day names: \"0 0 7 * * Mon-Fri\"", v.v));
        return None;
    }
    match cron::Schedule::from_str(v.v.trim()) {
        Ok(s) => Some(s),
        Err(e) => {
            sink.error_at(v, format!("{:?} is not a cron expression ({e}); e.g. \"0 0 7 * * Mon-Fri\"", v.v));
            None
        }
    }
}

fn tls_or(t: &mut Table, sink: &mut Sink, default: TlsMode) -> TlsMode {
    let Some(v) = t.str(sink, "tls") else { return default };
    match v.v.as_str() {
        "none" => TlsMode::None,
        "starttls" => TlsMode::Starttls,
        "tls" => TlsMode::Tls,
        other => {
            sink.error_at(&v, format!("{other:?} is not a TLS mode: none | starttls | tls"));
            default
        }
    }
}

fn existing_file(t: &mut Table, sink: &mut Sink, key: &'static str, root: &Path) -> Option<PathBuf> {
    let v = t.str(sink, key)?;
    let path = root.join(&v.v);
    if !path.is_file() {
        sink.error_at(&v, format!("file {} does not exist", path.display()));
    }
    Some(path)
}

fn rep(
    t: &mut Table,
    sink: &mut Sink,
    root: &Path,
    daemon: &Daemon,
    env: &dyn Fn(&str) -> Option<String>,
    secrets: &mut Vec<SecretKey>,
) -> Option<Rep> {
    let id = t.req_str(sink, "id");
    if let Some(id) = &id {
        if id.v.is_empty() || !id.v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            sink.error_at(id, format!("{:?} is not a rep id (letters, digits, `_`, `-`)", id.v));
        }
    }
    let name = t.req_str(sink, "name");
    if let Some(n) = &name {
        if n.v.chars().any(char::is_control) || n.v.trim().is_empty() {
            sink.error_at(n, "a rep name is one non-empty line (it goes into the From header)");
        }
    }
    let email = t.req_str(sink, "email").and_then(|v| match EmailAddress::parse(&v.v) {
        Ok(e) => Some(e),
        Err(e) => {
            sink.error_at(&v, e.to_string());
            None
        }
    });
    let daily_limit = t.int_in(sink, "daily_limit", 0, i64::from(u32::MAX), 200u32);
    let domain_daily_limit = t.opt_int_in(sink, "domain_daily_limit", 0, i64::from(u32::MAX));
    let min_gap = t.duration_or(sink, "min_gap", Duration::ZERO);
    let timezone = timezone_or(t, sink, "timezone", daemon.timezone);
    let signature = t.string_or(sink, "signature", "");
    let api_token_env = secret_env(t, sink, "api_token_env", secrets);

    let smtp = match t.table(sink, "smtp") {
        Some(mut s) => {
            let smtp = smtp(&mut s, sink, root, secrets);
            s.finish(sink);
            smtp
        }
        None => {
            if !t.has("smtp") {
                sink.error(
                    &t.key_path("smtp"),
                    Some(&t.span),
                    "missing [reps.smtp]: how this rep sends (transport = \"file\" writes .eml files; \"smtp\" needs a host)",
                );
            }
            None
        }
    };

    let dkim = t.table(sink, "dkim").map(|mut k| {
        let d = dkim_table(&mut k, sink, root, env, secrets);
        k.finish(sink);
        d
    });

    let imap = match t.table(sink, "imap") {
        Some(mut m) => {
            let imap = imap(&mut m, sink, root, email.as_ref(), secrets);
            m.finish(sink);
            Some(imap)
        }
        None => {
            sink.warn(
                &t.key_path("imap"),
                Some(&t.span),
                "no [reps.imap]: no reply detection for this rep (replies will not stop its sequences)",
            );
            None
        }
    };

    Some(Rep {
        id: id?.v,
        name: name?.v,
        email: email?,
        daily_limit,
        domain_daily_limit,
        min_gap,
        timezone,
        signature,
        api_token_env,
        smtp: smtp?,
        dkim,
        imap,
    })
}

fn smtp(s: &mut Table, sink: &mut Sink, root: &Path, secrets: &mut Vec<SecretKey>) -> Option<Smtp> {
    let transport = match s.str(sink, "transport") {
        None => TransportKind::Smtp,
        Some(v) => match v.v.as_str() {
            "smtp" => TransportKind::Smtp,
            "file" => TransportKind::File,
            other => {
                sink.error_at(&v, format!("{other:?} is not a transport: smtp | file"));
                TransportKind::Smtp
            }
        },
    };
    let dir = root.join(s.string_or(sink, "dir", "outbox"));
    let host = if transport == TransportKind::Smtp { s.req_str(sink, "host") } else { s.str(sink, "host") };
    let tls = tls_or(s, sink, TlsMode::Starttls);
    let default_port = match tls {
        TlsMode::None => 25,
        TlsMode::Starttls => 587,
        TlsMode::Tls => 465,
    };
    let port = s.int_in(sink, "port", 1, 65535, default_port);
    let username = s.str(sink, "username").map(|v| v.v);
    let password_env = secret_env(s, sink, "password_env", secrets);
    let ca_file = existing_file(s, sink, "ca_file", root);
    let timeout = s.duration_or(sink, "timeout", Duration::from_secs(30));
    let pool_size = s.int_in(sink, "pool_size", 1, 1000, 4usize);
    let max_attempts = s.int_in(sink, "max_attempts", 1, 100, 5u32);
    Some(Smtp {
        transport,
        dir,
        host: host.map(|h| h.v).unwrap_or_default(),
        port,
        tls,
        username,
        password_env,
        ca_file,
        timeout,
        pool_size,
        max_attempts,
    })
}

fn imap(m: &mut Table, sink: &mut Sink, root: &Path, email: Option<&EmailAddress>, secrets: &mut Vec<SecretKey>) -> Imap {
    let host = m.req_str(sink, "host").map(|v| v.v).unwrap_or_default();
    let tls = tls_or(m, sink, TlsMode::Starttls);
    let port = m.int_in(sink, "port", 1, 65535, if tls == TlsMode::Tls { 993 } else { 143 });
    let username = m.str(sink, "username").map(|v| v.v).or_else(|| email.map(|e| e.to_string())).unwrap_or_default();
    let password_env = secret_env(m, sink, "password_env", secrets);
    let folder = m.string_or(sink, "folder", "INBOX");
    let ca_file = existing_file(m, sink, "ca_file", root);
    let poll_interval = m.duration_or(sink, "poll_interval", Duration::from_secs(60));
    Imap { host, port, tls, username, password_env, folder, ca_file, poll_interval }
}
