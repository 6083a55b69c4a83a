//! The test rig: real servers on loopback and a throwaway project folder.
//!
//! Integration tests run against real Dovecot, PostgreSQL and SMTP servers
//! (DESIGN.md §7), so every helper here owns a real process or resource and
//! cleans it up on drop. Waiting is always "poll an observable condition
//! until a deadline", never a fixed sleep: the machines are small and shared,
//! so a sleep is either too short (flaky) or too long (slow).

// A toolkit: not every test binary build uses every helper.
#![allow(dead_code)]

pub mod dovecot;
pub mod postgres;
pub mod smtp;

use std::collections::HashSet;
use std::future::Future;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Loopback address every rig server listens on.
pub const HOST: &str = "127.0.0.1";

/// A loopback port that refuses connections for as long as the returned
/// socket lives: bound but never listening, so neither a test's server nor
/// a client's ephemeral port can take it meanwhile (a port merely found
/// free by [`free_port`] can be).
pub fn refused_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket.bind((Ipv4Addr::LOCALHOST, 0).into()).expect("bind an ephemeral loopback port");
    let port = socket.local_addr().expect("local address").port();
    (socket, port)
}

/// A loopback TCP port that was free a moment ago and that this process has
/// not handed out before.
///
/// Servers such as Dovecot cannot report a port they chose themselves, so the
/// port is picked first and written into their config. Remembering the ports
/// already handed out keeps two tests in this process from racing for one.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = guard.get_or_insert_with(HashSet::new);
    for _ in 0..100 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind an ephemeral loopback port");
        let port = listener.local_addr().expect("local address").port();
        if handed_out.insert(port) {
            return port;
        }
    }
    panic!("no fresh loopback port after 100 tries");
}

/// True when nothing listens on `port` on loopback (a bind succeeds).
pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// A `Command` for the `cadence` binary under test, with every `CADENCE_*`
/// variable of the test process removed so that only what the test sets
/// reaches the daemon.
pub fn cadence() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cadence"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CADENCE_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// How long a test waits for something that normally takes well under a
/// second (an email to arrive, a reply to be recorded, a daemon to start or
/// stop). Generous, because CI machines are shared and a debug build under a
/// full suite can stall for seconds; a wait returns as soon as its event
/// happens, so a passing test never pays it. Tests of a latency or a
/// timeout bound name their own, tighter limit.
pub const SETTLE: Duration = Duration::from_secs(60);

/// Poll interval: starts short so fast conditions are seen fast, then backs
/// off so a slow one does not burn a shared core.
fn next_backoff(current: Duration) -> Duration {
    (current * 2).min(Duration::from_millis(100))
}

const FIRST_BACKOFF: Duration = Duration::from_millis(5);

/// Polls `f` until it returns true; panics naming `what` once `timeout`
/// has passed.
pub async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    poll_until(what, timeout, || std::future::ready(f().then_some(()))).await
}

/// Like [`wait_until`] for a condition that must itself await (a query, a
/// network probe).
pub async fn wait_until_async<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    poll_until(what, timeout, || {
        let fut = f();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// Polls `f` until it yields `Some(value)` and returns the value; panics
/// naming `what` once `timeout` has passed. Each call of `f` is itself cut
/// off at the deadline, so a hung probe cannot outlast the timeout.
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut backoff = FIRST_BACKOFF;
    loop {
        if let Ok(Some(value)) = tokio::time::timeout_at(deadline, f()).await {
            return value;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep_until((now + backoff).min(deadline)).await;
        backoff = next_backoff(backoff);
    }
}

/// Blocking [`wait_until`] for places that cannot await (`Drop`, sync tests).
pub fn wait_until_blocking(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    let mut backoff = FIRST_BACKOFF;
    loop {
        if f() {
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(backoff.min(deadline - now));
        backoff = next_backoff(backoff);
    }
}

/// A throwaway cadence project: `config/`, `config/sequences/`, `templates/`
/// in a temp dir that is removed on drop, plus a SQLite database path inside
/// it.
pub struct TempProject {
    dir: tempfile::TempDir,
}

impl Default for TempProject {
    fn default() -> Self {
        Self::new()
    }
}

impl TempProject {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("cadence-it-").tempdir().expect("create temp project dir");
        for sub in ["config/sequences", "templates/partials"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("create project folders");
        }
        Self { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` to `relative` under the root, creating folders, and
    /// returns the absolute path.
    pub fn write(&self, relative: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent folders");
        }
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// `config/cadence.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config/cadence.toml")
    }

    pub fn write_config(&self, toml: &str) -> PathBuf {
        self.write("config/cadence.toml", toml)
    }

    /// `config/sequences/NAME.toml`.
    pub fn write_sequence(&self, name: &str, toml: &str) -> PathBuf {
        self.write(&format!("config/sequences/{name}.toml"), toml)
    }

    /// `templates/NAME.hbs` (`NAME` may be `partials/signature`).
    pub fn write_template(&self, name: &str, hbs: &str) -> PathBuf {
        self.write(&format!("templates/{name}.hbs"), hbs)
    }

    /// `<root>/cadence.db`; the file does not exist until something creates it.
    pub fn database_path(&self) -> PathBuf {
        self.dir.path().join("cadence.db")
    }

    /// `sqlite://<root>/cadence.db`, for `daemon.database_url`.
    pub fn database_url(&self) -> String {
        format!("sqlite://{}", self.database_path().display())
    }

    /// [`cadence()`] run from the project root, where `config/cadence.toml`
    /// is found by default.
    pub fn cadence(&self) -> Command {
        let mut cmd = cadence();
        cmd.current_dir(self.dir.path());
        cmd
    }
}
