//! A real SMTP server (aiosmtpd) for the integration tests.
//!
//! Each [`SmtpServer`] is its own `/usr/bin/python3` process on a
//! kernel-chosen loopback port, with its own temp dir: messages land there
//! byte-exact with their envelope, and faults can be changed while it runs
//! (the server re-reads `control.json` whenever it changes). The process is
//! killed on drop. See `smtp_server.py` for the file protocol.
//!
//! ```ignore
//! let server = SmtpServer::start(SmtpOptions::default());
//! server.set_faults(&[Fault::reply(Stage::Rcpt, "451 4.3.0 later").once()]);
//! // ... send through server.smtp_config() ...
//! let got = server.wait_for(1, Duration::from_secs(5));
//! assert_eq!(got[0].header("Subject").as_deref(), Some("Hi"));
//! ```
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const PYTHON: &str = "/usr/bin/python3";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/support/smtp_server.py");

/// How the server speaks TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServerTls {
    #[default]
    None,
    /// Plain connection that offers STARTTLS.
    StartTls,
    /// TLS from the first byte (SMTPS).
    Implicit,
}

#[derive(Clone, Debug, Default)]
pub struct SmtpOptions {
    pub tls: ServerTls,
    /// Require AUTH (PLAIN or LOGIN) with this user and password.
    pub auth: Option<(String, String)>,
    /// Faults active from the first connection.
    pub faults: Vec<Fault>,
    /// The server drops idle clients after this long (default 300 s).
    pub idle_timeout: Option<Duration>,
    /// Leave PIPELINING out of the EHLO answer (offered by default).
    pub no_pipelining: bool,
}

/// Where in the SMTP dialogue a fault fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Instead of the greeting.
    Connect,
    Ehlo,
    Mail,
    Rcpt,
    /// The DATA command itself (before 354).
    Data,
    /// After 354, once the first line of content has arrived.
    DataBody,
    /// After the final dot: the reply to the whole message.
    DataEnd,
}

impl Stage {
    fn key(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Ehlo => "ehlo",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::DataBody => "data_body",
            Stage::DataEnd => "data_end",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Answer with this line (e.g. `451 4.3.0 try later`); a 421, or any
    /// reply at connect, also closes the connection.
    Reply(String),
    /// Close the connection without answering.
    Drop,
    /// Never answer (the connection stays open).
    Hang,
}

/// One fault rule. The first matching rule fires.
#[derive(Clone, Debug)]
pub struct Fault {
    pub stage: Stage,
    pub action: Action,
    /// Only when this recipient is in the transaction.
    pub rcpt: Option<String>,
    /// Fire at most this many times (counted from the last `set_faults`).
    pub times: Option<u32>,
}

impl Fault {
    pub fn reply(stage: Stage, line: &str) -> Self {
        Fault { stage, action: Action::Reply(line.to_string()), rcpt: None, times: None }
    }

    pub fn drop_connection(stage: Stage) -> Self {
        Fault { stage, action: Action::Drop, rcpt: None, times: None }
    }

    pub fn hang(stage: Stage) -> Self {
        Fault { stage, action: Action::Hang, rcpt: None, times: None }
    }

    pub fn for_rcpt(mut self, address: &str) -> Self {
        self.rcpt = Some(address.to_string());
        self
    }

    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    pub fn once(self) -> Self {
        self.times(1)
    }

    fn to_json(&self) -> serde_json::Value {
        let (action, reply) = match &self.action {
            Action::Reply(line) => ("reply", Some(line.clone())),
            Action::Drop => ("drop", None),
            Action::Hang => ("hang", None),
        };
        json!({
            "stage": self.stage.key(),
            "action": action,
            "reply": reply,
            "rcpt": self.rcpt,
            "times": self.times,
        })
    }
}

/// One message as the server stored it.
#[derive(Clone, Debug)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// Exactly the bytes between DATA and the final dot, dot-unstuffed.
    pub raw: Vec<u8>,
}

impl Received {
    /// The first header with this name (case-insensitive), unfolded, as
    /// written on the wire (not RFC 2047 decoded).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers(name).into_iter().next()
    }

    /// Every header with this name, in order.
    pub fn headers(&self, name: &str) -> Vec<String> {
        self.header_fields().into_iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v).collect()
    }

    /// All header fields in order, unfolded.
    pub fn header_fields(&self) -> Vec<(String, String)> {
        let text = String::from_utf8_lossy(self.head());
        let mut out: Vec<(String, String)> = Vec::new();
        for line in text.split("\r\n") {
            if line.starts_with(' ') || line.starts_with('\t') {
                if let Some(last) = out.last_mut() {
                    last.1.push_str(line);
                }
            } else if let Some((k, v)) = line.split_once(':') {
                out.push((k.to_string(), v.trim_start().to_string()));
            }
        }
        out
    }

    /// The header block, without the blank line.
    pub fn head(&self) -> &[u8] {
        match find(&self.raw, b"\r\n\r\n") {
            Some(i) => &self.raw[..i],
            None => &self.raw,
        }
    }

    /// Everything after the blank line.
    pub fn body(&self) -> &[u8] {
        match find(&self.raw, b"\r\n\r\n") {
            Some(i) => &self.raw[i + 4..],
            None => &[],
        }
    }

    pub fn parsed(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default().parse(&self.raw).expect("received message parses")
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Counters from the server's event log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SmtpStats {
    /// Accepted connections (after the TLS handshake for implicit TLS).
    pub connections: usize,
    pub messages: usize,
    pub mail: usize,
    /// MAIL commands that arrived together with the next command.
    pub mail_pipelined: usize,
    pub rcpt: usize,
    pub noop: usize,
    pub rset: usize,
    pub quit: usize,
    pub auth_ok: usize,
    pub auth_failed: usize,
    pub faults_fired: usize,
}

pub struct SmtpServer {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    tls: ServerTls,
    ca_file: Option<PathBuf>,
    auth: Option<(String, String)>,
    password_env: Option<String>,
}

impl SmtpServer {
    /// Starts a server and returns once it is listening (bounded: panics
    /// with the server's output after 15 s or if it exits).
    pub fn start(options: SmtpOptions) -> SmtpServer {
        let dir = tempfile::Builder::new().prefix("cadence-smtp-").tempdir().expect("temp dir");
        let root = dir.path();

        let mut config = json!({
            "tls": match options.tls {
                ServerTls::None => "none",
                ServerTls::StartTls => "starttls",
                ServerTls::Implicit => "tls",
            },
            "timeout": options.idle_timeout.unwrap_or(Duration::from_secs(300)).as_secs_f64(),
            "pipelining": !options.no_pipelining,
        });
        let mut ca_file = None;
        if options.tls != ServerTls::None {
            let (ca, cert, key) = make_certs(root);
            config["cert"] = json!(cert);
            config["key"] = json!(key);
            ca_file = Some(ca);
        }
        if let Some((user, password)) = &options.auth {
            config["auth"] = json!({"user": user, "password": password});
        }
        fs::write(root.join("config.json"), config.to_string()).expect("write config");
        write_control(root, &options.faults);

        let log = fs::File::create(root.join("server.log")).expect("server log");
        let child = Command::new(PYTHON)
            .arg(SCRIPT)
            .arg(root)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PYTHON} {SCRIPT}: {e}"));

        let mut server = SmtpServer { child, dir, port: 0, tls: options.tls, ca_file, auth: options.auth.clone(), password_env: None };
        server.port = server.await_ready(Duration::from_secs(15));
        if let Some((_, password)) = &options.auth {
            let var = format!("CADENCE_IT_SMTP_PASSWORD_{}", server.port);
            std::env::set_var(&var, password);
            server.password_env = Some(var);
        }
        server
    }

    fn await_ready(&mut self, limit: Duration) -> u16 {
        let ready = self.dir.path().join("ready");
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(text) = fs::read_to_string(&ready) {
                // Written after `listen()`: the port accepts from now on. (A
                // probe connection would show up in the stats.)
                if let Ok(port) = text.trim().parse::<u16>() {
                    return port;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("SMTP test server exited ({status}) before listening:\n{}", self.server_log());
            }
            if Instant::now() > deadline {
                panic!("SMTP test server not listening after {limit:?}:\n{}", self.server_log());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn tls(&self) -> ServerTls {
        self.tls
    }

    /// The private CA that signed the server's certificate (TLS modes).
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// The env var holding the AUTH password (set by `start`).
    pub fn password_env(&self) -> Option<&str> {
        self.password_env.as_deref()
    }

    /// A rep SMTP config pointing here: TLS mode, CA, user and password
    /// variable filled in; 10 s timeout, pool of 4.
    pub fn smtp_config(&self) -> cadence::config::Smtp {
        use cadence::config::{TlsMode, TransportKind};
        cadence::config::Smtp {
            transport: TransportKind::Smtp,
            dir: PathBuf::from("outbox"),
            host: self.host().to_string(),
            port: self.port,
            tls: match self.tls {
                ServerTls::None => TlsMode::None,
                ServerTls::StartTls => TlsMode::Starttls,
                ServerTls::Implicit => TlsMode::Tls,
            },
            username: self.auth.as_ref().map(|(u, _)| u.clone()),
            password_env: self.password_env.clone(),
            ca_file: self.ca_file.clone(),
            timeout: Duration::from_secs(10),
            pool_size: 4,
            max_attempts: 3,
        }
    }

    /// Replaces the fault rules (their fire counts start again).
    pub fn set_faults(&self, faults: &[Fault]) {
        write_control(self.dir.path(), faults);
    }

    pub fn clear_faults(&self) {
        self.set_faults(&[]);
    }

    /// Every message received so far, in arrival order.
    pub fn messages(&self) -> Vec<Received> {
        let folder = self.dir.path().join("messages");
        let mut emls: Vec<PathBuf> = fs::read_dir(&folder)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "eml")).collect())
            .unwrap_or_default();
        emls.sort();
        emls.into_iter()
            .map(|eml| {
                let meta: serde_json::Value =
                    serde_json::from_slice(&fs::read(eml.with_extension("json")).expect("envelope file")).expect("envelope json");
                Received {
                    mail_from: meta["mail_from"].as_str().unwrap_or_default().to_string(),
                    rcpt_to: meta["rcpt_to"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                        .unwrap_or_default(),
                    raw: fs::read(&eml).expect("message file"),
                }
            })
            .collect()
    }

    pub fn message_count(&self) -> usize {
        fs::read_dir(self.dir.path().join("messages"))
            .map(|rd| rd.filter_map(|e| e.ok()).filter(|e| e.path().extension().is_some_and(|x| x == "eml")).count())
            .unwrap_or(0)
    }

    /// Waits (blocking, bounded) until at least `n` messages arrived.
    /// Call from async tests only once the sends are done, or use
    /// [`SmtpServer::wait_for_async`].
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        loop {
            if self.message_count() >= n {
                return self.messages();
            }
            if Instant::now() > deadline {
                self.panic_waiting(n, limit);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub async fn wait_for_async(&self, n: usize, limit: Duration) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        loop {
            if self.message_count() >= n {
                return self.messages();
            }
            if Instant::now() > deadline {
                self.panic_waiting(n, limit);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn panic_waiting(&self, n: usize, limit: Duration) -> ! {
        panic!(
            "expected {n} message(s) at the SMTP test server within {limit:?}, got {}; stats {:?}\n{}",
            self.message_count(),
            self.stats(),
            self.server_log()
        )
    }

    pub fn stats(&self) -> SmtpStats {
        let text = fs::read_to_string(self.dir.path().join("events.log")).unwrap_or_default();
        let mut s = SmtpStats::default();
        for line in text.lines() {
            match line.split(' ').next().unwrap_or("") {
                "connect" => s.connections += 1,
                "message" => s.messages += 1,
                "mail" => {
                    s.mail += 1;
                    s.mail_pipelined += usize::from(line.ends_with(" pipelined"));
                }
                "rcpt" => s.rcpt += 1,
                "noop" => s.noop += 1,
                "rset" => s.rset += 1,
                "quit" => s.quit += 1,
                "auth_ok" => s.auth_ok += 1,
                "auth_fail" => s.auth_failed += 1,
                "fault" => s.faults_fired += 1,
                _ => {}
            }
        }
        s
    }

    /// The server's stdout/stderr, for failure messages.
    pub fn server_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_control(dir: &Path, faults: &[Fault]) {
    let rules: Vec<serde_json::Value> = faults.iter().map(Fault::to_json).collect();
    let tmp = dir.join("control.json.tmp");
    fs::write(&tmp, json!({ "rules": rules }).to_string()).expect("write control");
    fs::rename(&tmp, dir.join("control.json")).expect("install control");
}

/// A private CA and a server certificate for `localhost` and 127.0.0.1.
fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca = dir.join("ca.pem");
    let ca_key = dir.join("ca.key");
    let cert = dir.join("server.pem");
    let key = dir.join("server.key");
    let csr = dir.join("server.csr");
    let ext = dir.join("server.ext");
    fs::write(
        &ext,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n\
         basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\n",
    )
    .expect("write ext");
    let p = |p: &Path| p.to_str().expect("utf-8 temp path").to_string();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &p(&ca_key),
        "-out",
        &p(&ca),
        "-days",
        "30",
        "-subj",
        "/CN=cadence test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &p(&key),
        "-out",
        &p(&csr),
        "-subj",
        "/CN=localhost",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(&ca),
        "-CAkey",
        &p(&ca_key),
        "-CAcreateserial",
        "-out",
        &p(&cert),
        "-days",
        "30",
        "-extfile",
        &p(&ext),
    ]);
    (ca, cert, key)
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    assert!(out.status.success(), "openssl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}
