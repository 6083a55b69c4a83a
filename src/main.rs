//! The `cadence` binary: parse arguments, set up logging, hand over to the
//! library.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use cadence::cli::{self, Cli, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let default_level = if matches!(cli.command, cli::Command::Run) { "info" } else { "warn" };
    // A mistyped RUST_LOG must not silence the daemon: say so and fall back.
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!(
                "cadence: RUST_LOG={spec:?} is not a valid filter ({e}); logging at {default_level}. \
                 Examples: RUST_LOG=info, RUST_LOG=warn,cadence=debug"
            );
            EnvFilter::new(default_level)
        }),
        _ => EnvFilter::new(default_level),
    };
    // Colours only on a terminal: a journal or a log file gets plain text.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match cli.log_format {
        // One object per line; the field names (`timestamp`, `level`,
        // `target`, `message`, then the event's own fields) are a contract.
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_span_list(false).with_target(true).init(),
        LogFormat::Text => builder.init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cadence: cannot start the async runtime: {e}; check the process limits (ulimit -u, systemd TasksMax)");
            return ExitCode::from(cli::EXIT_FAILURE);
        }
    };
    // The command runs as a task on the runtime's workers, not on this
    // thread: a future given to `block_on` runs outside the worker pool, so
    // the daemon's claim loop was one more busy thread than there are
    // workers, woken across threads at each step. Spawned, `scripts/bench`
    // dispatch went from a median of 10,564 to 11,331 emails/s (5
    // alternating pairs, 4 won) with less CPU per email.
    runtime.block_on(async {
        match tokio::spawn(cli::run(cli)).await {
            Ok(code) => code,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    })
}
