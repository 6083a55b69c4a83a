//! A real Dovecot IMAP server per test, on loopback ports picked first.
//!
//! Inbox tests must see what a real server does (IDLE timing, UIDVALIDITY,
//! literal handling), so each test gets its own Dovecot with a generated
//! config in a temp dir: passwd-file users with plaintext passwords, sdbox
//! mail owned by `nobody:nogroup` (mail users cannot be root), plaintext IMAP
//! and implicit-TLS IMAPS with a throwaway CA. Failed logins cost nothing
//! (`auth_failure_delay = 0`, anvil penalty off). Dovecot runs in its own
//! process group so that stopping it also ends the `imap` processes that
//! serve open connections (an IDLE keeps one alive). Messages are placed by
//! IMAP APPEND over the wire, as a mail client or MTA would.
//!
//! Needs root (Dovecot switches to `nobody` for mail and `dovenull` for
//! logins), `/usr/sbin/dovecot`, `doveadm` and `openssl`: `scripts/test`
//! installs them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_imap::{Client, Session};
use futures::TryStreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;

use super::{free_port, port_is_free, wait_until_blocking, HOST};

const DOVECOT: &str = "/usr/sbin/dovecot";
const DOVEADM: &str = "/usr/bin/doveadm";
/// Dovecot greets in about 30 ms; the margin is for a loaded CI machine.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// An IMAP session as the tests use it.
pub type ImapSession = Session<TcpStream>;

pub struct Dovecot {
    /// Config, passwords, certificates, logs and mail; removed on drop.
    dir: tempfile::TempDir,
    imap_port: u16,
    imaps_port: u16,
    users: Vec<(String, String)>,
    /// The master process, leader of the process group; `None` when stopped.
    master: Option<Child>,
}

impl Dovecot {
    /// Starts Dovecot with these `(user, password)` accounts and waits until
    /// it greets. Panics (with Dovecot's log) if it does not come up.
    pub async fn start(users: &[(&str, &str)]) -> Dovecot {
        let dir = tempfile::Builder::new().prefix("cadence-dovecot-").tempdir().expect("create Dovecot temp dir");
        // Login processes run as dovenull and must reach the password file.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod Dovecot dir");
        let mut dovecot = Dovecot {
            dir,
            imap_port: 0,
            imaps_port: 0,
            users: users.iter().map(|(u, p)| (u.to_string(), p.to_string())).collect(),
            master: None,
        };
        dovecot.prepare_files();
        // A port picked free can be taken by someone else before Dovecot
        // binds it (other test processes share the machine): pick again.
        for attempt in 1..=3 {
            dovecot.imap_port = free_port();
            dovecot.imaps_port = free_port();
            dovecot.write_config();
            match dovecot.spawn_and_wait().await {
                Ok(()) => return dovecot,
                Err(log) if attempt < 3 && log.contains("Address already in use") => continue,
                Err(log) => panic!("Dovecot did not start:\n{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    pub fn host(&self) -> &'static str {
        HOST
    }

    /// Plaintext IMAP port (STARTTLS is offered too).
    pub fn port(&self) -> u16 {
        self.imap_port
    }

    /// Implicit-TLS IMAP port; the certificate is for `localhost` and
    /// `127.0.0.1`, signed by [`Dovecot::ca_cert_path`].
    pub fn imaps_port(&self) -> u16 {
        self.imaps_port
    }

    /// PEM of the throwaway CA that signed the server certificate.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("dovecot.conf")
    }

    /// Dovecot's log so far, for assertion messages.
    pub fn log(&self) -> String {
        let mut log = fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default();
        log.push_str(&fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default());
        log
    }

    pub fn password(&self, user: &str) -> &str {
        self.users.iter().find(|(u, _)| u == user).map(|(_, p)| p.as_str()).unwrap_or_else(|| panic!("no Dovecot user {user:?}"))
    }

    /// A plaintext IMAP client whose greeting has been read, not logged in.
    pub async fn connect(&self) -> Client<TcpStream> {
        let stream =
            TcpStream::connect((HOST, self.imap_port)).await.unwrap_or_else(|e| panic!("connect to Dovecot on {}: {e}", self.imap_port));
        let mut client = Client::new(stream);
        client.read_response().await.expect("read IMAP greeting").expect("IMAP greeting");
        client
    }

    /// A logged-in plaintext IMAP session for `user`.
    pub async fn login(&self, user: &str) -> ImapSession {
        self.connect()
            .await
            .login(user, self.password(user))
            .await
            .map_err(|(e, _)| e)
            .unwrap_or_else(|e| panic!("IMAP login as {user}: {e}\n{}", self.log()))
    }

    /// Places `raw` in `user`'s `folder` by IMAP APPEND, creating the folder
    /// if it does not exist.
    pub async fn append(&self, user: &str, folder: &str, raw: &[u8]) {
        self.append_all(user, folder, [raw]).await
    }

    /// APPENDs each message in order over one connection.
    pub async fn append_all<'a>(&self, user: &str, folder: &str, messages: impl IntoIterator<Item = &'a [u8]>) {
        let mut session = self.login(user).await;
        if !folder.eq_ignore_ascii_case("INBOX") {
            // NO "already exists" is fine; any real problem fails the APPEND.
            let _ = session.create(folder).await;
        }
        for raw in messages {
            session.append(folder, None, None, raw).await.unwrap_or_else(|e| panic!("APPEND to {user}/{folder}: {e}"));
        }
        session.logout().await.expect("IMAP logout");
    }

    /// The folder's current UIDVALIDITY, as a client sees it on SELECT.
    pub async fn uid_validity(&self, user: &str, folder: &str) -> u32 {
        let mut session = self.login(user).await;
        let mailbox = session.select(folder).await.unwrap_or_else(|e| panic!("SELECT {folder}: {e}"));
        session.logout().await.expect("IMAP logout");
        mailbox.uid_validity.expect("Dovecot reports UIDVALIDITY")
    }

    /// Gives the folder a new UIDVALIDITY (messages stay), as after a server
    /// migration: a client must then forget every UID it cached for it.
    /// Returns the new value. Works for INBOX too, which IMAP cannot delete.
    pub async fn uid_validity_reset(&self, user: &str, folder: &str) -> u32 {
        let old = self.uid_validity(user, folder).await;
        let new = old.checked_add(1).unwrap_or(1);
        self.doveadm(&["mailbox", "update", "-u", user, "--uid-validity", &new.to_string(), folder]);
        new
    }

    /// Runs `doveadm -c <config> ARGS` and returns its stdout; panics on
    /// failure.
    pub fn doveadm(&self, args: &[&str]) -> String {
        let out = Command::new(DOVEADM).arg("-c").arg(self.config_path()).args(args).output().expect("run doveadm");
        assert!(
            out.status.success(),
            "doveadm {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn is_running(&self) -> bool {
        self.master.is_some()
    }

    /// Kills Dovecot and every process it started (open connections drop),
    /// and returns once its ports are released: killed login processes
    /// close the listening sockets as they die, a moment after the master.
    /// Mail and ports are kept for [`Dovecot::start_again`]. Idempotent.
    pub fn stop(&mut self) {
        if self.kill() {
            let (imap, imaps) = (self.imap_port, self.imaps_port);
            wait_until_blocking("the stopped Dovecot's ports to be released", READY_TIMEOUT, || port_is_free(imap) && port_is_free(imaps));
        }
    }

    /// Kills every process, without waiting for the ports; false if it was
    /// not running.
    fn kill(&mut self) -> bool {
        let Some(mut master) = self.master.take() else {
            return false;
        };
        // The master leads its own process group: kill the whole group.
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", master.id())]).status();
        let _ = master.kill();
        let _ = master.wait();
        // A stale pid file makes the next start report "already running".
        let _ = fs::remove_file(self.dir.path().join("run/master.pid"));
        true
    }

    /// Starts Dovecot again on the same ports with the same mail, after
    /// [`Dovecot::stop`].
    pub async fn start_again(&mut self) {
        self.stop();
        if let Err(log) = self.spawn_and_wait().await {
            panic!("Dovecot did not start again:\n{log}");
        }
    }

    /// Spawns the master and waits for the IMAP greeting and the IMAPS
    /// listener. On failure returns the log (the master is stopped).
    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        let stderr = fs::File::create(self.dir.path().join("stderr.log")).expect("stderr log");
        let master = Command::new(DOVECOT)
            .arg("-F")
            .arg("-c")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().expect("clone log handle"))
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {DOVECOT}: {e} (run scripts/test to install it)"));
        self.master = Some(master);
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let mut backoff = Duration::from_millis(5);
        loop {
            if let Some(status) = self.master.as_mut().and_then(|m| m.try_wait().ok().flatten()) {
                self.master = None;
                return Err(format!("dovecot exited with {status}\n{}", self.log()));
            }
            if greets(self.imap_port).await && TcpStream::connect((HOST, self.imaps_port)).await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let log = self.log();
                self.stop();
                return Err(format!("no IMAP greeting within {READY_TIMEOUT:?}\n{log}"));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(100));
        }
    }

    /// Password file, mail root, certificates: everything but the config,
    /// which names the ports.
    fn prepare_files(&self) {
        let dir = self.dir.path();
        let passwd: String = self.users.iter().map(|(u, p)| format!("{u}:{{PLAIN}}{p}\n")).collect();
        fs::write(dir.join("passwd"), passwd).expect("write passwd file");
        fs::set_permissions(dir.join("passwd"), fs::Permissions::from_mode(0o644)).expect("chmod passwd file");
        for sub in ["run", "state", "mail"] {
            fs::create_dir_all(dir.join(sub)).expect("create Dovecot folders");
        }
        run(Command::new("chown").arg("nobody:nogroup").arg(dir.join("mail")));
        make_certificates(dir);
    }

    fn write_config(&self) {
        let dir = self.dir.path().display();
        let config = format!(
            r#"# Generated by the cadence test rig.
base_dir = {dir}/run
state_dir = {dir}/state
instance_name = cadence-it-{imap}
log_path = {dir}/dovecot.log
protocols = imap
listen = {HOST}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
auth_verbose = yes
ssl = yes
ssl_cert = <{dir}/server.pem
ssl_key = <{dir}/server.key
ssl_min_protocol = TLSv1.2
mail_location = sdbox:~/mail
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={dir}/mail/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \Sent
    auto = create
  }}
  mailbox Trash {{
    special_use = \Trash
    auto = create
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = {HOST}
    port = {imap}
  }}
  inet_listener imaps {{
    address = {HOST}
    port = {imaps}
    ssl = yes
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
protocol imap {{
  mail_max_userip_connections = 1000
}}
"#,
            imap = self.imap_port,
            imaps = self.imaps_port,
        );
        fs::write(self.config_path(), config).expect("write dovecot.conf");
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.kill();
    }
}

/// True when a connection to `port` gets an IMAP `* OK` greeting.
async fn greets(port: u16) -> bool {
    let probe = async {
        let stream = TcpStream::connect((HOST, port)).await.ok()?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await.ok()?;
        Some(line.starts_with("* OK"))
    };
    matches!(tokio::time::timeout(Duration::from_secs(2), probe).await, Ok(Some(true)))
}

/// A CA and a `localhost`/`127.0.0.1` server certificate signed by it
/// (rustls refuses a CA certificate used as the server's own).
fn make_certificates(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    run(Command::new("openssl")
        .args(["req", "-x509", "-nodes", "-days", "3650"])
        .args(ec)
        .args(["-subj", "/CN=cadence test CA"])
        .args(["-keyout", "ca.key", "-out", "ca.pem"])
        .current_dir(dir));
    run(Command::new("openssl")
        .args(["req", "-nodes"])
        .args(ec)
        .args(["-subj", "/CN=localhost"])
        .args(["-keyout", "server.key", "-out", "server.csr"])
        .current_dir(dir));
    fs::write(
        dir.join("server.ext"),
        "subjectAltName = DNS:localhost, IP:127.0.0.1\n\
         basicConstraints = CA:FALSE\n\
         keyUsage = digitalSignature\n\
         extendedKeyUsage = serverAuth\n",
    )
    .expect("write certificate extensions");
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "3650", "-in", "server.csr"])
        .args(["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"])
        .args(["-extfile", "server.ext", "-out", "server.pem"])
        .current_dir(dir));
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e} (run scripts/test to install it)"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Fetches every message of `folder` as raw bytes, in UID order.
pub async fn fetch_all(session: &mut ImapSession, folder: &str) -> Vec<Vec<u8>> {
    let mailbox = session.select(folder).await.unwrap_or_else(|e| panic!("SELECT {folder}: {e}"));
    if mailbox.exists == 0 {
        return Vec::new();
    }
    let fetches: Vec<_> =
        session.uid_fetch("1:*", "BODY.PEEK[]").await.expect("UID FETCH").try_collect().await.expect("read FETCH responses");
    let mut with_uid: Vec<_> = fetches.iter().map(|f| (f.uid.expect("FETCH UID"), f.body().expect("FETCH body").to_vec())).collect();
    with_uid.sort_by_key(|(uid, _)| *uid);
    with_uid.into_iter().map(|(_, body)| body).collect()
}
