//! Engine commands: run, tick, check, explain, simulate, classify.

use std::path::Path;
use std::sync::Arc;

use clap::Args;

use super::output::print_json;
use super::{Cli, CliResult, Failure, EXIT_FAILURE, EXIT_USAGE};
use crate::config::{self, Severity};
use crate::engine::Engine;
use crate::store::Store;

#[derive(Args, Debug)]
pub struct SimulateArgs {
    pub sequence: String,
    /// The lead's time zone [default: daemon.timezone]
    #[arg(long)]
    pub timezone: Option<String>,
    /// Enrollment time [default: --now, else the real clock]
    #[arg(long, value_name = "RFC3339", value_parser = super::parse_now)]
    pub start: Option<chrono::DateTime<chrono::Utc>>,
    /// The lead's region (holiday calendar)
    #[arg(long)]
    pub region: Option<String>,
    /// The rep whose clock to show alongside [default: the first rep]
    #[arg(long)]
    pub rep: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// The secret that signs unsubscribe links; required to send.
fn require_secret(cfg: &config::Config) -> Result<Vec<u8>, Failure> {
    config::secret(&cfg.daemon.secret_env).map(String::into_bytes).ok_or_else(|| {
        Failure::new(
            EXIT_FAILURE,
            format!(
                "environment variable {} is not set: it holds the secret that signs unsubscribe links (daemon.secret_env); \
                 set it to a long random string and keep it stable, e.g. export {0}=\"$(openssl rand -hex 32)\"",
                cfg.daemon.secret_env
            ),
        )
    })
}

async fn engine(cli: &Cli, clock: crate::clock::Clock) -> Result<Arc<Engine>, Failure> {
    let cfg = cli.load_config()?;
    let secret = require_secret(&cfg)?;
    let store = Store::open(&cfg.daemon.database_url).await?;
    Engine::new(cfg, store, clock, secret).map_err(|e| Failure::new(EXIT_FAILURE, e.to_string()))
}

pub async fn tick(cli: &Cli, json: bool) -> CliResult {
    let engine = engine(cli, cli.clock()).await?;
    engine.recover().await.map_err(|e| Failure::new(EXIT_FAILURE, e.to_string()))?;
    // Inboxes first, so that nothing goes out after a reply waiting there.
    // A broken inbox holds only its own rep (by inbox lag).
    for (rep, result) in crate::inbox::watch::sync_all_once(&engine.config(), &engine.store, &engine.clock).await {
        match result {
            Ok(r) => tracing::info!(rep = %rep, messages = r.uids.len(), acted = r.acted, "inbox synced"),
            Err(e) => match cli.log_format {
                super::LogFormat::Json => tracing::warn!(rep = %rep, error = %e, "inbox not synced; its sending waits (max_inbox_lag)"),
                super::LogFormat::Text => eprintln!("cadence: inbox of rep `{rep}` not synced: {e}; its sending waits (max_inbox_lag)"),
            },
        }
    }
    let stats = engine.run_until_idle().await.map_err(|e| Failure::new(EXIT_FAILURE, e.to_string()))?;
    let hygiene =
        crate::engine::hygiene::run_due(&engine, engine.clock.now()).await.map_err(|e| Failure::new(EXIT_FAILURE, e.to_string()))?;
    let agenda =
        crate::engine::agenda::run_due(&engine, engine.clock.now()).await.map_err(|e| Failure::new(EXIT_FAILURE, e.to_string()))?;
    engine.store.close().await;
    tracing::info!(
        sent = stats.sent,
        retrying = stats.retried,
        failed = stats.failed,
        bounced = stats.bounced,
        unknown = stats.unknown,
        resumed = stats.resumed,
        "tick done"
    );
    if json {
        let mut out = serde_json::to_value(&stats).expect("stats serialise");
        out["hygiene"] = serde_json::to_value(&hygiene).expect("hygiene serialises");
        out["agenda"] = serde_json::to_value(&agenda).expect("agenda serialises");
        print_json(&out);
    } else {
        println!(
            "tick at {}: {} sent, {} retrying, {} failed, {} bounced, {} unknown, {} resumed",
            engine.clock.now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            stats.sent,
            stats.retried,
            stats.failed,
            stats.bounced,
            stats.unknown,
            stats.resumed
        );
        if let Some(h) = &hygiene {
            let digests: Vec<String> = h.digest.iter().map(|d| format!("{} ({})", d.to, d.state)).collect();
            println!(
                "hygiene for {}: {} lead(s) flagged stale; digest: {}",
                h.fire_at,
                h.stale_count,
                if digests.is_empty() { "none".to_string() } else { digests.join(", ") }
            );
        }
        for a in &agenda {
            println!("agenda for {} ({}): {}", a.rep, a.fire_at, a.state);
        }
    }
    Ok(())
}

pub async fn run(cli: &Cli) -> CliResult {
    let cfg = cli.load_config()?;
    let missing = config::missing_secrets(&cfg);
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(ToString::to_string).collect();
        return Err(Failure::new(
            EXIT_FAILURE,
            format!(
                "{}\nset these environment variables before `cadence run` (export them, or under systemd put them in the EnvironmentFile)",
                list.join("\n")
            ),
        ));
    }
    // `--now` on the daemon starts its clock there, running at real speed.
    let clock = cli.now.map_or(crate::clock::Clock::System, crate::clock::Clock::starting_at);
    let engine = engine(cli, clock).await?;
    tracing::info!(database = %crate::store::redact_url(&cfg.daemon.database_url), reps = cfg.reps.len(), sequences = cfg.sequences.len(), "cadence started");
    engine.recover().await.map_err(|e| Failure::new(EXIT_FAILURE, e.to_string()))?;
    crate::engine::daemon::run(engine, cli.config_path()).await.map_err(|e| Failure::new(EXIT_FAILURE, format!("{e:#}")))?;
    tracing::info!("cadence stopped");
    Ok(())
}

pub fn check(cli: &Cli, json: bool) -> CliResult {
    let path = cli.config_path();
    let (problems, ok) = match config::load(&path) {
        // Missing secrets are warnings here (they are errors for `run`).
        Ok((_, warnings)) => (warnings.0, true),
        Err(p) => (p.0, false),
    };
    let errors = problems.iter().filter(|p| p.severity == Severity::Error).count();
    let warnings = problems.len() - errors;
    if json {
        print_json(&serde_json::json!({ "ok": ok && errors == 0, "errors": errors, "warnings": warnings, "problems": problems }));
    } else {
        for p in &problems {
            println!("{p}");
        }
        if errors == 0 {
            println!("{}: ok ({warnings} warning(s))", path.display());
        } else {
            println!("{}: {errors} error(s), {warnings} warning(s)", path.display());
        }
    }
    if errors > 0 || !ok {
        return Err(Failure::new(EXIT_FAILURE, ""));
    }
    Ok(())
}

pub async fn explain(cli: &Cli, email: &str, json: bool) -> CliResult {
    let ctx = cli.ctx().await?;
    let e = crate::engine::explain::explain(&ctx, email).await?;
    if json {
        print_json(&e);
    } else {
        print!("{}", e.to_text());
    }
    Ok(())
}

pub fn simulate(cli: &Cli, a: &SimulateArgs) -> CliResult {
    let cfg = cli.load_config()?;
    let start = a.start.or(cli.now).unwrap_or_else(|| crate::clock::Clock::System.now());
    let tz = match &a.timezone {
        Some(t) => crate::domain::parse_timezone(t).map_err(|e| Failure::new(EXIT_USAGE, format!("--timezone: {e}")))?,
        None => cfg.daemon.timezone,
    };
    if let Some(r) = &a.region {
        if !cfg.calendars.contains_key(r) {
            return Err(Failure::new(
                EXIT_USAGE,
                format!(
                    "--region {r}: no [[calendars]] named {r:?} (known: {})",
                    cfg.calendars.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    let rep = match &a.rep {
        Some(r) => Some(cfg.rep(r).ok_or_else(|| Failure::new(EXIT_USAGE, format!("--rep {r}: no such rep")))?),
        None => cfg.reps.first(),
    };
    let sim = crate::engine::explain::simulate(&cfg, &a.sequence, tz, a.region.as_deref(), rep, start)
        .map_err(|e| Failure::new(EXIT_USAGE, e))?;
    if a.json {
        print_json(&sim);
    } else {
        print!("{}", sim.to_text());
    }
    Ok(())
}

pub fn classify(file: &Path, json: bool) -> CliResult {
    let raw = std::fs::read(file).map_err(|e| Failure::new(EXIT_FAILURE, format!("cannot read {}: {e}", file.display())))?;
    let verdict = crate::inbox::classify::classify(&raw);
    if json {
        print_json(&verdict);
    } else {
        print!("{}", verdict.to_text());
    }
    Ok(())
}
