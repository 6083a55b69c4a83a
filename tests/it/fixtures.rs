//! A standard cadence project for the integration tests: one rep (file or
//! SMTP transport, optional IMAP), a four-step sequence and short templates.

#![allow(dead_code)]

use std::process::Output;

use serde_json::Value;

use crate::support::TempProject;

pub const SECRET: &str = "test-secret-5f1c2a";

/// What the standard project is built with.
#[derive(Clone, Debug)]
pub struct Opts {
    /// `None`: file transport into `outbox/`; `Some(port)`: SMTP on loopback.
    pub smtp_port: Option<u16>,
    /// IMAP port and password for user `nik`.
    pub imap: Option<(u16, String)>,
    pub daily_limit: u32,
    pub domain_daily_limit: Option<u32>,
    pub holidays: Vec<&'static str>,
    pub max_touches: u32,
    pub extra_daemon: String,
    pub max_attempts: u32,
    pub smtp_timeout: &'static str,
    pub pool_size: u32,
    /// A second rep `ana` (ana@vendor.test) sending through SMTP on this port.
    pub second_rep_smtp: Option<u16>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            smtp_port: None,
            imap: None,
            daily_limit: 200,
            domain_daily_limit: None,
            holidays: vec!["2026-12-25", "2027-01-01"],
            max_touches: 4,
            extra_daemon: String::new(),
            max_attempts: 5,
            smtp_timeout: "5s",
            pool_size: 4,
            second_rep_smtp: None,
        }
    }
}

pub struct Project {
    pub tmp: TempProject,
    pub opts: Opts,
    /// The database the project's config names: a SQLite file in the
    /// project, or a fresh PostgreSQL database (see [`backend`]).
    pub db_url: String,
    _pg: Option<crate::support::postgres::TestDatabase>,
}

/// Which database the integration suite runs on: SQLite files by default,
/// a fresh PostgreSQL database per project when `CADENCE_TEST_BACKEND=postgres`
/// (scripts/test runs the suite once each way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn backend() -> Backend {
    match std::env::var("CADENCE_TEST_BACKEND").as_deref() {
        Ok("postgres") => Backend::Postgres,
        Ok("sqlite") | Err(_) => Backend::Sqlite,
        Ok(other) => panic!("CADENCE_TEST_BACKEND={other:?}: use sqlite or postgres"),
    }
}

/// A fresh PostgreSQL database, from sync or async test code alike.
pub fn fresh_pg() -> crate::support::postgres::TestDatabase {
    std::thread::spawn(|| tokio::runtime::Runtime::new().expect("runtime").block_on(crate::support::postgres::fresh_database()))
        .join()
        .expect("create a PostgreSQL test database")
}

impl Project {
    pub fn new(opts: Opts) -> Project {
        Project::on(backend(), opts)
    }

    /// A project on a given backend, whatever the suite's default.
    pub fn on(backend: Backend, opts: Opts) -> Project {
        let tmp = TempProject::new();
        let (db_url, pg) = match backend {
            Backend::Sqlite => (tmp.database_url(), None),
            Backend::Postgres => {
                let db = fresh_pg();
                (db.url().to_string(), Some(db))
            }
        };
        let smtp = match opts.smtp_port {
            None => "transport = \"file\"\ndir = \"outbox\"".to_string(),
            Some(port) => format!(
                "transport = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\ntimeout = \"{}\"\npool_size = {}\nmax_attempts = {}",
                opts.smtp_timeout, opts.pool_size, opts.max_attempts
            ),
        };
        let imap = match &opts.imap {
            None => String::new(),
            Some((port, _)) => format!(
                "\n  [reps.imap]\n  host = \"127.0.0.1\"\n  port = {port}\n  tls = \"none\"\n  username = \"nik\"\n  password_env = \"CADENCE_IMAP_PASSWORD_NIK\"\n  folder = \"INBOX\"\n"
            ),
        };
        let second = match opts.second_rep_smtp {
            None => String::new(),
            Some(port) => format!(
                "\n[[reps]]\nid = \"ana\"\nname = \"Ana Second\"\nemail = \"ana@vendor.test\"\ntimezone = \"UTC\"\n  [reps.smtp]\n  transport = \"smtp\"\n  host = \"127.0.0.1\"\n  port = {port}\n  tls = \"none\"\n  timeout = \"5s\"\n"
            ),
        };
        let domain_cap = opts.domain_daily_limit.map_or(String::new(), |n| format!("domain_daily_limit = {n}\n"));
        let holidays = opts.holidays.iter().map(|h| format!("\"{h}\"")).collect::<Vec<_>>().join(", ");
        tmp.write_config(&format!(
            r#"[daemon]
database_url = "{db}"
timezone = "UTC"
tick_interval = "1s"
http_listen = "127.0.0.1:0"
public_url = "https://cadence.test"
max_inbox_lag = "2m"
secret_env = "CADENCE_SECRET"
{extra}

[[calendars]]
name = "default"
holidays = [{holidays}]

[[calendars]]
name = "id"
holidays = ["2026-12-25", "2026-12-31"]

[pipeline]
stages = ["prospecting", "qualification", "connecting", "closing"]

[[reps]]
id = "nik"
name = "Nik Levnaich"
email = "nik@vendor.test"
daily_limit = {daily}
{domain_cap}timezone = "America/Regina"
signature = "Nik\nVendor Co."
  [reps.smtp]
  {smtp}
{imap}{second}"#,
            db = db_url,
            extra = opts.extra_daemon,
            daily = opts.daily_limit,
        ));
        tmp.write_sequence(
            "outreach",
            &format!(
                r#"stage = "connecting"
reply_stage = "closing"
max_touches = {max}
send_window = {{ days = "Mon-Fri", start = "09:00", end = "17:00" }}
auto_reply_pause = "3 days"

[[steps]]
wait = "0s"
template = "intro"

[[steps]]
wait = "3 business days"
template = "bump"

[[steps]]
wait = "2 days"
template = "value"

[[steps]]
wait = "4 hours"
template = "final"

[last_chance]
wait = "5 business days"
template = "breakup"

[archive]
after = "7 days"
"#,
                max = opts.max_touches
            ),
        );
        // Always open: for tests that run the daemon on the real clock.
        tmp.write_sequence(
            "always",
            "send_window = { days = \"Mon-Sun\", start = \"00:00\", end = \"24:00\" }\n\n[[steps]]\nwait = \"0s\"\ntemplate = \"intro\"\n\n[[steps]]\nwait = \"2 days\"\ntemplate = \"bump\"\n",
        );
        tmp.write_template("intro", "---\nsubject: \"Quick question about {{default company \\\"your team\\\"}}\"\n---\nHi {{default first_name \"there\"}},\n\nstep {{step}} for {{default company \"your team\"}}.\n\n{{> signature}}\nUnsubscribe: {{unsubscribe_url}}\n");
        for (name, line) in [
            ("bump", "Just bumping this up."),
            ("value", "Here is a case study."),
            ("final", "One more thought."),
            ("breakup", "Should I close your file?"),
        ] {
            tmp.write_template(name, &format!("---\nsubject: \"{name}\"\n---\nHi {{{{default first_name \"there\"}}}},\n\n{line} (step {{{{step}}}})\n\n{{{{> signature}}}}\n"));
        }
        tmp.write_template("partials/signature", "{{rep.name}}\n{{rep.signature}}");
        Project { tmp, opts, db_url, _pg: pg }
    }

    pub fn file() -> Project {
        Project::new(Opts::default())
    }

    /// Runs `cadence ARGS` in the project with the test secrets set.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.tmp.cadence();
        cmd.env("CADENCE_SECRET", SECRET);
        if let Some((_, pw)) = &self.opts.imap {
            cmd.env("CADENCE_IMAP_PASSWORD_NIK", pw);
        }
        cmd.args(args).output().expect("run cadence")
    }

    /// Runs and asserts exit 0, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cadence {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            out.status.code(),
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Runs with `--json` appended and parses stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let s = self.ok(&a);
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("cadence {args:?} --json printed no JSON ({e}):\n{s}"))
    }

    /// Enrolls `email` (with a company and a time zone) at `now`.
    pub fn enroll(&self, email: &str, tz: &str, now: &str) {
        self.ok(&["enroll", email, "--sequence", "outreach", "--first-name", "Ana", "--company", "Acme", "--timezone", tz, "--now", now]);
    }

    pub fn tick(&self, now: &str) -> Value {
        self.json(&["tick", "--now", now])
    }

    /// `.eml` files written by the file transport.
    pub fn outbox(&self) -> Vec<String> {
        let dir = self.tmp.root().join("outbox");
        let mut files: Vec<_> = std::fs::read_dir(&dir).map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
        files.sort();
        files.iter().map(|p| std::fs::read_to_string(p).expect("read eml")).collect()
    }

    pub fn pg(&self) -> Option<&crate::support::postgres::TestDatabase> {
        self._pg.as_ref()
    }

    pub fn is_postgres(&self) -> bool {
        self._pg.is_some()
    }

    /// Runs SQL on the project's database (sqlite3 or psql); rows as
    /// `a|b` lines, NULL as empty, like sqlite3's default output.
    pub fn sql(&self, sql: &str) -> String {
        let out = if self.is_postgres() {
            let mut child = std::process::Command::new("psql")
                .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", &self.db_url, "-f", "-"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("psql");
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(sql.as_bytes()).unwrap();
            child.wait_with_output().expect("psql")
        } else {
            // Wait for the daemon's write lock like cadence does, rather than fail.
            std::process::Command::new("sqlite3")
                .args(["-cmd", ".timeout 10000"])
                .arg(self.tmp.database_path())
                .arg(sql)
                .output()
                .expect("sqlite3")
        };
        assert!(out.status.success(), "{sql}: {}", text(&out.stderr));
        text(&out.stdout).trim().to_string()
    }

    /// Rows in `table`, 0 when the schema was never created (nothing opened
    /// the database).
    pub fn count(&self, table: &str) -> usize {
        let exists = if self.is_postgres() {
            self.sql(&format!("SELECT count(*) FROM information_schema.tables WHERE table_name = '{table}'")) != "0"
        } else {
            self.tmp.database_path().exists() && self.sql(&format!("SELECT count(*) FROM sqlite_master WHERE name = '{table}'")) != "0"
        };
        if exists {
            self.sql(&format!("SELECT count(*) FROM {table}")).parse().unwrap()
        } else {
            0
        }
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A `cadence run` process of a test project; killed on drop.
pub struct Daemon {
    pub child: std::process::Child,
    pub log: std::path::PathBuf,
}

impl Project {
    /// Starts `cadence run` (real clock) with extra environment variables.
    pub fn spawn_run(&self, env: &[(&str, &str)]) -> Daemon {
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let log = self.tmp.root().join(format!("run-{}.log", RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = self.tmp.cadence();
        // Debug for cadence itself: a failed test prints this log.
        cmd.env("CADENCE_SECRET", SECRET).env("RUST_LOG", "info,cadence=debug");
        if let Some((_, pw)) = &self.opts.imap {
            cmd.env("CADENCE_IMAP_PASSWORD_NIK", pw);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.arg("run").stdout(file.try_clone().unwrap()).stderr(file).spawn().expect("spawn cadence run");
        Daemon { child, log }
    }
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The HTTP API's address, from the daemon's `http listening` log line.
    pub fn http_addr(&self) -> String {
        let mut addr = None;
        crate::support::wait_until_blocking("the daemon's HTTP address in its log", crate::support::SETTLE, || {
            addr = self.log().lines().find(|l| l.contains("http listening")).and_then(|l| {
                let rest = &l[l.find("addr=")? + 5..];
                Some(rest.split_whitespace().next()?.to_string())
            });
            addr.is_some()
        });
        addr.expect("address")
    }

    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().expect("kill").success();
        assert!(ok, "kill -{sig} failed");
    }

    /// SIGKILL, and reap it.
    pub fn kill9(mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (bounded) for the exit status.
    pub fn terminate(mut self, limit: std::time::Duration) -> std::process::ExitStatus {
        self.signal("TERM");
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "cadence run did not exit within {limit:?} of SIGTERM:\n{}", self.log());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failed test shows what the daemon was doing.
        if std::thread::panicking() {
            eprintln!("--- log of cadence run ({}) ---\n{}--- end of log ---", self.log.display(), self.log());
        }
    }
}
