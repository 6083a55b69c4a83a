//! The IMAP watcher: moves each rep's new inbox messages to the inbound
//! handler, once, in UID order, and proves the inbox is in sync.
//!
//! Why it is shaped this way:
//!
//! - **Position lives in the store, not in memory.** UIDVALIDITY and the last
//!   UID handled are saved per mailbox after every small batch, so a crash or
//!   a restart resumes where it stopped. A changed UIDVALIDITY invalidates
//!   every UID we know, so the whole folder is read again; the handler
//!   de-duplicates by Message-ID (or content hash), so nothing is recorded
//!   twice.
//! - **A batch is the unit of work.** The handler gets a whole fetch batch
//!   and records it in one transaction: per-message transactions and
//!   look-ups were what made a full inbox slow to read.
//! - **A store failure never skips mail.** The saved position only moves past
//!   batches the handler accepted (committed); the failing batch is read
//!   again next time, whole.
//! - **`synced_at` is a promise.** It is written only at the end of a
//!   complete sync. The engine holds a rep's sending when it is older than
//!   `max_inbox_lag`, so IDLE is re-issued (and the inbox re-synced) at least
//!   every `max_inbox_lag / 2`: a quiet inbox keeps its rep sending, a dead
//!   connection stops it.
//! - **Every network step has a timeout**, and the long-running [`watch`]
//!   reconnects with capped, jittered exponential backoff, so a hung or
//!   restarted server costs at most a minute of lag, never a stuck task.
//! - **Secrets stay secret.** The password is read from the variable
//!   `password_env` names, at connect time; errors and logs name the variable,
//!   the server and the user, never the value.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_imap::error::Error as ImapError;
use async_imap::imap_proto::{Response, Status};
use async_imap::types::UnsolicitedResponse;
use async_imap::Client;
use futures::TryStreamExt;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch::Receiver;
use tokio::time::timeout;

use crate::clock::Clock;
use crate::config::{Config, Imap, TlsMode};
use crate::engine::inbound::Classified;
use crate::store::{Store, StoreError};

/// Limit for one network step (connect, TLS handshake, greeting, login, one
/// command, one FETCH response). Generous: a slow server is not a dead one.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Limit for one whole connect-and-sync of one inbox in [`sync_all_once`]
/// (`cadence tick`), so one hung server cannot hold the others' sends.
pub const SYNC_ALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Messages larger than this are not downloaded (they are skipped and the
/// position moves past them). Replies, bounces and out-of-office notes are
/// small; a 25 MB attachment is still read.
pub const MAX_MESSAGE_BYTES: u32 = 50 * 1024 * 1024;

/// Bodies are fetched in batches of at most this many messages or bytes; the
/// position is saved after each batch. Three batches are held at a time:
/// one recorded while the next is classified and the one after it fetched
/// (classifying was a third of each batch's time when it waited for the
/// fetch). Each batch is recorded in one transaction, so a larger one costs
/// fewer commits: 11,500 replies/s with 50, 16,800 with 500 (10,000
/// replies, 2 cores). After a crash at most a batch is read again, and
/// recording it again changes nothing.
pub const BATCH_MESSAGES: usize = 500;
const BATCH_BYTES: u64 = 16 * 1024 * 1024;

/// Servers drop an IDLE after 29 minutes; re-issuing well before that also
/// notices a connection that died silently.
const MAX_IDLE: Duration = Duration::from_secs(10 * 60);

/// Reconnect backoff: first delay and cap.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// The byte stream under a session: plain TCP or TLS, one type for all
/// three `tls` modes.
pub trait ImapStream: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> ImapStream for T {}

/// A logged-in IMAP session, whatever the transport.
pub type Session = async_imap::Session<Box<dyn ImapStream>>;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("rep {0:?} has no [reps.imap] settings")]
    NoImap(String),
    #[error("{server}: imap.password_env is not set, so there is no password to log in as {user:?}")]
    NoPasswordEnv { server: String, user: String },
    #[error("{server}: the environment variable {var} (imap.password_env) is not set or empty")]
    MissingPassword { server: String, var: String },
    #[error("imap.ca_file {path}: {detail}")]
    CaFile { path: PathBuf, detail: String },
    #[error("{server}: cannot connect: {source}")]
    Connect { server: String, source: std::io::Error },
    #[error("{server}: {step} timed out after {after:?}")]
    Timeout { server: String, step: &'static str, after: Duration },
    #[error("{server}: TLS certificate not trusted ({detail}); set imap.ca_file for a private CA")]
    Certificate { server: String, detail: String },
    #[error("{server}: TLS: {detail}")]
    Tls { server: String, detail: String },
    #[error("{server}: login as {user:?} rejected: {detail}")]
    Login { server: String, user: String, detail: String },
    #[error("{server}: {step}: {source}")]
    Imap { server: String, step: &'static str, source: ImapError },
    #[error("{server}: {detail}")]
    Protocol { server: String, detail: String },
    #[error("recording an inbound message: {0}")]
    Store(#[from] StoreError),
}

impl WatchError {
    /// True for problems only a change of settings or environment fixes
    /// (retrying as-is fails the same way).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            WatchError::NoImap(_)
                | WatchError::NoPasswordEnv { .. }
                | WatchError::MissingPassword { .. }
                | WatchError::CaFile { .. }
                | WatchError::Certificate { .. }
                | WatchError::Login { .. }
        )
    }
}

/// What one [`sync_once`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    pub mailbox: String,
    pub uid_validity: u32,
    /// The stored UIDVALIDITY differed, so the folder was read from UID 1.
    pub reset: bool,
    /// UIDs given to the handler, ascending.
    pub uids: Vec<u32>,
    /// How many of those changed something (a reply, bounce... acted on for
    /// the first time); a message read again, or matching no lead, does not.
    pub acted: usize,
    /// UIDs larger than [`MAX_MESSAGE_BYTES`], passed over.
    pub skipped: Vec<u32>,
    /// The position saved at the end.
    pub last_uid: u32,
}

/// Receives the new messages' bytes, a fetch batch at a time, in UID
/// order. The seam between moving mail and acting on it: the daemon uses
/// [`Inbound`], tests count calls.
pub trait Handler: Send {
    /// What [`Handler::prepare`] makes of a batch's bytes.
    type Prepared: Send + 'static;
    /// The work on a batch that needs only its bytes (classifying). It runs
    /// on a blocking thread while the batch before is being recorded.
    fn prepare(raws: Vec<Vec<u8>>) -> Self::Prepared;
    /// Processes one prepared batch, all or nothing: `Ok(n)` when it is
    /// done and `n` of its messages changed something (the others were
    /// already processed, ignored or unmatched). An error stops the sync
    /// before the batch, which is read again next time.
    fn handle(&mut self, batch: Self::Prepared) -> impl Future<Output = Result<usize, StoreError>> + Send;
}

/// The real handler: classify, then match and record through
/// [`crate::engine::inbound::handle`] (one transaction per batch), timed by
/// the clock.
pub struct Inbound<'a> {
    pub cfg: &'a Config,
    pub store: &'a Store,
    pub rep_id: &'a str,
    pub clock: &'a Clock,
}

impl Handler for Inbound<'_> {
    type Prepared = Classified;

    fn prepare(raws: Vec<Vec<u8>>) -> Classified {
        Classified::of(&raws)
    }

    async fn handle(&mut self, batch: Classified) -> Result<usize, StoreError> {
        let handled = crate::engine::inbound::handle(self.cfg, self.store, self.rep_id, &batch, self.clock.now()).await?;
        for h in &handled {
            tracing::debug!(rep = self.rep_id, kind = ?h.kind, lead = ?h.lead, ignored = ?h.ignored, new = h.outcome.new, "inbound message");
        }
        // `outcome.new` is set only when the message was matched and recorded.
        Ok(handled.iter().filter(|h| h.outcome.new).count())
    }
}

fn server_of(imap: &Imap) -> String {
    format!("{}:{}", imap.host, imap.port)
}

/// Awaits `fut` for at most [`STEP_TIMEOUT`].
async fn timed<T>(server: &str, step: &'static str, fut: impl Future<Output = T>) -> Result<T, WatchError> {
    timeout(STEP_TIMEOUT, fut).await.map_err(|_| WatchError::Timeout { server: server.to_string(), step, after: STEP_TIMEOUT })
}

fn imap_err<'a>(server: &'a str, step: &'static str) -> impl FnOnce(ImapError) -> WatchError + 'a {
    move |source| WatchError::Imap { server: server.to_string(), step, source }
}

/// Opens a logged-in session to `imap` (TLS as configured, certificates
/// verified against the public roots plus `imap.ca_file`, resolved against
/// `root`). The password comes from the variable `imap.password_env` names.
pub async fn connect(imap: &Imap, root: &Path) -> Result<Session, WatchError> {
    let server = server_of(imap);
    let var =
        imap.password_env.as_deref().ok_or_else(|| WatchError::NoPasswordEnv { server: server.clone(), user: imap.username.clone() })?;
    let password =
        crate::config::secret(var).ok_or_else(|| WatchError::MissingPassword { server: server.clone(), var: var.to_string() })?;
    connect_with_password(imap, root, &password).await
}

/// [`connect`] with the password given.
pub async fn connect_with_password(imap: &Imap, root: &Path, password: &str) -> Result<Session, WatchError> {
    let server = server_of(imap);
    let tls = match imap.tls {
        TlsMode::None => None,
        TlsMode::Starttls | TlsMode::Tls => Some(tls_setup(imap, root)?),
    };
    let tcp = timed(&server, "connect", TcpStream::connect((imap.host.as_str(), imap.port)))
        .await?
        .map_err(|source| WatchError::Connect { server: server.clone(), source })?;
    let _ = tcp.set_nodelay(true);

    let stream: Box<dyn ImapStream> = match (imap.tls, tls) {
        (TlsMode::Tls, Some((config, name))) => Box::new(handshake(&server, config, name, tcp).await?),
        (TlsMode::Starttls, Some((config, name))) => {
            let mut client = Client::new(tcp);
            greeting(&server, &mut client).await?;
            timed(&server, "STARTTLS", client.run_command_and_check_ok("STARTTLS", None)).await?.map_err(|e| match e {
                ImapError::No(d) | ImapError::Bad(d) => {
                    WatchError::Tls { server: server.clone(), detail: format!("server refused STARTTLS: {d}") }
                }
                e => imap_err(&server, "STARTTLS")(e),
            })?;
            Box::new(handshake(&server, config, name, client.into_inner()).await?)
        }
        _ => Box::new(tcp),
    };

    let mut client = Client::new(stream);
    if imap.tls != TlsMode::Starttls {
        greeting(&server, &mut client).await?;
    }
    let login = timed(&server, "LOGIN", client.login(&imap.username, password)).await?;
    login.map_err(|(e, _client)| match e {
        ImapError::No(detail) | ImapError::Bad(detail) => WatchError::Login { server: server.clone(), user: imap.username.clone(), detail },
        e => imap_err(&server, "LOGIN")(e),
    })
}

/// Reads the server's greeting: anything but `* OK` (or `* PREAUTH`) means
/// the server will not talk to us.
async fn greeting<T: ImapStream>(server: &str, client: &mut Client<T>) -> Result<(), WatchError> {
    let resp = timed(server, "greeting", client.read_response())
        .await?
        .map_err(|e| imap_err(server, "greeting")(e.into()))?
        .ok_or_else(|| WatchError::Protocol { server: server.to_string(), detail: "connection closed before the greeting".into() })?;
    match resp.parsed() {
        Response::Data { status: Status::Ok | Status::PreAuth, .. } => Ok(()),
        other => Err(WatchError::Protocol { server: server.to_string(), detail: format!("unexpected greeting: {other:?}") }),
    }
}

/// The rustls client config (public roots plus `ca_file`) and the name the
/// certificate must carry (a DNS name or an IP address).
fn tls_setup(imap: &Imap, root: &Path) -> Result<(Arc<rustls::ClientConfig>, ServerName<'static>), WatchError> {
    let server = server_of(imap);
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = &imap.ca_file {
        let path = if ca.is_absolute() { ca.clone() } else { root.join(ca) };
        let ca_err = |detail: String| WatchError::CaFile { path: path.clone(), detail };
        let pem = std::fs::read(&path).map_err(|e| ca_err(e.to_string()))?;
        let certs: Vec<CertificateDer<'static>> =
            rustls_pemfile::certs(&mut pem.as_slice()).collect::<Result<_, _>>().map_err(|e| ca_err(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_err("holds no PEM certificate".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
        }
    }
    let provider =
        rustls::crypto::CryptoProvider::get_default().cloned().unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WatchError::Tls { server: server.clone(), detail: e.to_string() })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(imap.host.clone())
        .map_err(|e| WatchError::Tls { server, detail: format!("imap.host {:?} is not a valid TLS server name: {e}", imap.host) })?;
    Ok((Arc::new(config), name))
}

async fn handshake(
    server: &str,
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, WatchError> {
    let connector = tokio_rustls::TlsConnector::from(config);
    timed(server, "TLS handshake", connector.connect(name, tcp)).await?.map_err(|e| {
        let rustls_err = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match rustls_err {
            Some(err @ rustls::Error::InvalidCertificate(_)) => {
                WatchError::Certificate { server: server.to_string(), detail: err.to_string() }
            }
            _ => WatchError::Tls { server: server.to_string(), detail: e.to_string() },
        }
    })
}

/// Forgets what the server said unasked so far; true if it announced new
/// messages (EXISTS or RECENT).
fn drain_unsolicited(session: &mut Session) -> bool {
    let mut news = false;
    while let Ok(r) = session.unsolicited_responses.try_recv() {
        news |= matches!(r, UnsolicitedResponse::Exists(_) | UnsolicitedResponse::Recent(_));
    }
    news
}

/// Hands every message of `imap.folder` after the saved position to
/// `handler`, in UID order, saving the position as it goes and `synced_at`
/// at the end. Reads the folder from the start when UIDVALIDITY changed.
pub async fn sync_once<H: Handler>(
    session: &mut Session,
    rep_id: &str,
    imap: &Imap,
    store: &Store,
    clock: &Clock,
    handler: &mut H,
) -> Result<SyncReport, WatchError> {
    let server = server_of(imap);
    let folder = imap.folder.as_str();
    // Whatever arrived before this SELECT is covered by it.
    drain_unsolicited(session);
    let mailbox = timed(&server, "SELECT", session.select(folder)).await?.map_err(imap_err(&server, "SELECT"))?;
    let uid_validity = mailbox
        .uid_validity
        .ok_or_else(|| WatchError::Protocol { server: server.clone(), detail: format!("SELECT {folder} reported no UIDVALIDITY") })?;
    let state = store.mailbox_state(rep_id, folder).await?;
    let same_validity = state.uid_validity == Some(i64::from(uid_validity));
    let start_after = if same_validity { u32::try_from(state.last_uid).unwrap_or(0) } else { 0 };
    let mut report = SyncReport {
        mailbox: folder.to_string(),
        uid_validity,
        reset: state.uid_validity.is_some() && !same_validity,
        last_uid: start_after,
        ..SyncReport::default()
    };
    if report.reset {
        tracing::info!(rep = rep_id, mailbox = folder, old = ?state.uid_validity, new = uid_validity, "UIDVALIDITY changed: reading the whole folder again");
    }
    // Until this sync completes, the inbox is as (un)synced as before.
    let old_synced = state.synced_at.unwrap_or(0);

    let nothing_new = mailbox.exists == 0 || mailbox.uid_next.is_some_and(|next| next <= start_after.saturating_add(1));
    if !nothing_new {
        // Sizes first: cheap, and lets us pass over huge messages unread.
        // `N:*` always includes the highest UID, even when it is below N.
        let mut listed: Vec<(u32, u32)> = Vec::new();
        {
            let query = format!("{}:*", start_after.saturating_add(1));
            let mut stream = timed(&server, "UID FETCH sizes", session.uid_fetch(&query, "(UID RFC822.SIZE)"))
                .await?
                .map_err(imap_err(&server, "UID FETCH"))?;
            while let Some(f) = timed(&server, "UID FETCH sizes", stream.try_next()).await?.map_err(imap_err(&server, "UID FETCH"))? {
                if let (Some(uid), Some(size)) = (f.uid, f.size) {
                    if uid > start_after {
                        listed.push((uid, size));
                    }
                }
            }
        }
        listed.sort_unstable();
        listed.dedup_by_key(|(uid, _)| *uid);

        let position = Position { rep_id, folder, uid_validity, synced_at: old_synced };
        // Three batches in flight: one is fetched while the one before it is
        // classified (on a blocking thread) and the one before that is
        // recorded. The recording side takes them in UID order.
        let (ready, fetched) = tokio::sync::mpsc::channel(1);
        let fetching = async {
            let ready = ready;
            for batch in batches(&listed) {
                let f = fetch_prepared::<H>(session, &server, batch).await?;
                if ready.send((batch, f)).await.is_err() {
                    break; // the recording side stopped on an error
                }
            }
            Ok(())
        };
        let recording = async {
            let mut fetched = fetched;
            while let Some((batch, f)) = fetched.recv().await {
                hand_over(batch, f, handler, store, &position, &mut report).await?;
            }
            Ok(())
        };
        // What was fetched before a fetch error is still recorded.
        let (f, r): (Result<(), WatchError>, Result<(), WatchError>) = futures::future::join(fetching, recording).await;
        r?;
        f?;
    }
    store.save_mailbox_state(rep_id, folder, i64::from(uid_validity), i64::from(report.last_uid), clock.now_ms()).await?;
    Ok(report)
}

/// Fetches the bodies of `batch`'s messages (those not too large), in UID
/// order; a message expunged since the listing is missing.
async fn fetch_bodies(session: &mut Session, server: &str, batch: &[(u32, u32)]) -> Result<Vec<(u32, Vec<u8>)>, WatchError> {
    let wanted: Vec<u32> = batch.iter().filter(|(_, size)| *size <= MAX_MESSAGE_BYTES).map(|(uid, _)| *uid).collect();
    let mut bodies: Vec<(u32, Vec<u8>)> = Vec::with_capacity(wanted.len());
    if !wanted.is_empty() {
        let set = wanted.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let mut stream = timed(server, "UID FETCH bodies", session.uid_fetch(&set, "(UID BODY.PEEK[])"))
            .await?
            .map_err(imap_err(server, "UID FETCH"))?;
        while let Some(f) = timed(server, "UID FETCH bodies", stream.try_next()).await?.map_err(imap_err(server, "UID FETCH"))? {
            // Unasked FETCH responses (flag changes) carry no body.
            if let (Some(uid), Some(body)) = (f.uid, f.body()) {
                if wanted.binary_search(&uid).is_ok() {
                    bodies.push((uid, body.to_vec()));
                }
            }
        }
    }
    bodies.sort_unstable_by_key(|(uid, _)| *uid);
    bodies.dedup_by_key(|(uid, _)| *uid);
    Ok(bodies)
}

/// A fetched batch: the UIDs read, and their messages being prepared by
/// the handler.
struct Fetched<P> {
    uids: Vec<u32>,
    prepared: tokio::task::JoinHandle<P>,
}

/// Fetches `batch`'s bodies and starts preparing them on a blocking thread
/// (the messages too large to read, and those expunged since the
/// listing, are left out); `None` when there is nothing to read.
async fn fetch_prepared<H: Handler>(
    session: &mut Session,
    server: &str,
    batch: &[(u32, u32)],
) -> Result<Option<Fetched<H::Prepared>>, WatchError> {
    let (uids, raws): (Vec<u32>, Vec<Vec<u8>>) = fetch_bodies(session, server, batch).await?.into_iter().unzip();
    if raws.is_empty() {
        return Ok(None);
    }
    let prepared = tokio::task::spawn_blocking(move || H::prepare(raws));
    Ok(Some(Fetched { uids, prepared }))
}

/// Where a sync saves its progress.
struct Position<'a> {
    rep_id: &'a str,
    folder: &'a str,
    uid_validity: u32,
    /// The `synced_at` to keep until the sync completes.
    synced_at: i64,
}

/// Hands one fetched batch to `handler` and, once it is recorded, saves
/// the position after the batch (passing over messages too large to read
/// and those expunged since the listing). On an error the position stays
/// before the batch: all of it is read again.
async fn hand_over<H: Handler>(
    batch: &[(u32, u32)],
    fetched: Option<Fetched<H::Prepared>>,
    handler: &mut H,
    store: &Store,
    at: &Position<'_>,
    report: &mut SyncReport,
) -> Result<(), WatchError> {
    for &(uid, size) in batch.iter().filter(|(_, size)| *size > MAX_MESSAGE_BYTES) {
        tracing::warn!(
            rep = at.rep_id,
            mailbox = at.folder,
            uid,
            size,
            limit = MAX_MESSAGE_BYTES,
            "message too large to read; passed over"
        );
        report.skipped.push(uid);
    }
    if let Some(Fetched { uids, prepared }) = fetched {
        let prepared = prepared.await.expect("preparing a batch does not panic");
        report.acted += handler.handle(prepared).await?;
        report.uids.extend(uids);
    }
    report.last_uid = batch.last().map_or(report.last_uid, |(uid, _)| *uid);
    store.save_mailbox_state(at.rep_id, at.folder, i64::from(at.uid_validity), i64::from(report.last_uid), at.synced_at).await?;
    Ok(())
}

/// Splits `(uid, size)` pairs into fetch batches bounded in count and bytes
/// (a message over the byte bound travels alone).
fn batches(listed: &[(u32, u32)]) -> Vec<&[(u32, u32)]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (i, (_, size)) in listed.iter().enumerate() {
        let size = if *size > MAX_MESSAGE_BYTES { 0 } else { u64::from(*size) };
        if i > start && (i - start >= BATCH_MESSAGES || bytes + size > BATCH_BYTES) {
            out.push(&listed[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < listed.len() {
        out.push(&listed[start..]);
    }
    out
}

/// Connects to `rep`'s inbox, syncs it once with the real handler, logs out.
pub async fn sync_rep(cfg: &Config, store: &Store, clock: &Clock, rep_id: &str) -> Result<SyncReport, WatchError> {
    let imap = cfg.rep(rep_id).and_then(|r| r.imap.as_ref()).ok_or_else(|| WatchError::NoImap(rep_id.to_string()))?;
    let mut session = connect(imap, &cfg.root).await?;
    let mut handler = Inbound { cfg, store, rep_id, clock };
    let report = sync_once(&mut session, rep_id, imap, store, clock, &mut handler).await;
    // Polite but bounded: the sync result does not depend on it.
    let _ = timeout(Duration::from_secs(5), session.logout()).await;
    report
}

/// Syncs every rep that has `[reps.imap]`, concurrently, each within
/// [`SYNC_ALL_TIMEOUT`] (`cadence tick`). One broken inbox does not stop
/// the others; results come in config order.
pub async fn sync_all_once(cfg: &Config, store: &Store, clock: &Clock) -> Vec<(String, Result<SyncReport, WatchError>)> {
    let jobs = cfg.reps.iter().filter(|r| r.imap.is_some()).map(|rep| async move {
        let server = rep.imap.as_ref().map(server_of).unwrap_or_default();
        let result = timeout(SYNC_ALL_TIMEOUT, sync_rep(cfg, store, clock, &rep.id)).await.unwrap_or(Err(WatchError::Timeout {
            server,
            step: "inbox sync",
            after: SYNC_ALL_TIMEOUT,
        }));
        (rep.id.clone(), result)
    });
    futures::future::join_all(jobs).await
}

/// Watches one rep's inbox until `shutdown` turns true (or its sender is
/// dropped): connect, sync, then wait for mail with IDLE (re-issued every
/// `min(10 min, max_inbox_lag / 2)`, each wake followed by a sync that also
/// refreshes `synced_at`) or, on servers without IDLE, poll every
/// `imap.poll_interval`. Any failure is logged and followed by a reconnect
/// after a jittered backoff (1 s doubling to 60 s, reset by a good sync).
///
/// `config` is read at each (re)connect and each sync, so a reload applies
/// (a change of server settings reconnects); if the rep disappears or loses
/// `[reps.imap]`, the watcher returns. `on_event` is called after every sync
/// that handed at least one message to the handler (the daemon wakes the
/// engine with it).
pub async fn watch<C, E>(rep_id: String, config: C, store: Store, clock: Clock, mut shutdown: Receiver<bool>, on_event: E)
where
    C: Fn() -> Arc<Config> + Send + Sync,
    E: Fn(&SyncReport) + Send + Sync,
{
    let mut backoff = Backoff::default();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let Some(imap) = imap_of(&config(), &rep_id) else {
            tracing::info!(rep = %rep_id, "the rep has no [reps.imap] any more; its inbox watcher stops");
            return;
        };
        let run = watch_connection(&rep_id, &imap, &config, &store, &clock, &on_event, &mut backoff);
        let outcome = tokio::select! {
            _ = stop_requested(&mut shutdown) => return,
            r = run => r,
        };
        match outcome {
            Ok(()) => tracing::info!(rep = %rep_id, "IMAP settings changed; reconnecting"),
            Err(e) => {
                let delay = backoff.next_delay();
                if e.is_config() {
                    tracing::error!(rep = %rep_id, error = %e, retry_in = ?delay, "inbox watcher cannot sync; sending for this rep is held until it can");
                } else {
                    tracing::warn!(rep = %rep_id, error = %e, retry_in = ?delay, "inbox watcher lost its connection; reconnecting");
                }
                tokio::select! {
                    _ = stop_requested(&mut shutdown) => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

fn imap_of(cfg: &Config, rep_id: &str) -> Option<Imap> {
    cfg.rep(rep_id).and_then(|r| r.imap.clone())
}

/// Resolves once a stop is requested (or nobody can request one any more).
async fn stop_requested(shutdown: &mut Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Would a session opened with `a` still serve `b`?
fn same_server(a: &Imap, b: &Imap) -> bool {
    a.host == b.host
        && a.port == b.port
        && a.tls == b.tls
        && a.username == b.username
        && a.password_env == b.password_env
        && a.folder == b.folder
        && a.ca_file == b.ca_file
}

/// One connection's life: returns `Ok(())` when the settings changed (so
/// the caller reconnects) and an error when the connection failed.
async fn watch_connection<C, E>(
    rep_id: &str,
    imap: &Imap,
    config: &C,
    store: &Store,
    clock: &Clock,
    on_event: &E,
    backoff: &mut Backoff,
) -> Result<(), WatchError>
where
    C: Fn() -> Arc<Config> + Send + Sync,
    E: Fn(&SyncReport) + Send + Sync,
{
    let server = server_of(imap);
    let cfg = config();
    let mut session = connect(imap, &cfg.root).await?;
    let caps = timed(&server, "CAPABILITY", session.capabilities()).await?.map_err(imap_err(&server, "CAPABILITY"))?;
    let idle = caps.has_str("IDLE");
    tracing::info!(rep = rep_id, server = %server, folder = %imap.folder, idle, "inbox watcher connected");
    loop {
        let cfg = config();
        match imap_of(&cfg, rep_id) {
            Some(now) if same_server(imap, &now) => {}
            _ => return Ok(()),
        }
        let mut handler = Inbound { cfg: &cfg, store, rep_id, clock };
        let report = sync_once(&mut session, rep_id, imap, store, clock, &mut handler).await?;
        backoff.reset();
        if !report.uids.is_empty() {
            tracing::info!(rep = rep_id, messages = report.uids.len(), acted = report.acted, "inbox synced");
            on_event(&report);
        }
        // Mail announced while we were syncing: sync again right away.
        if drain_unsolicited(&mut session) {
            continue;
        }
        let lag = cfg.daemon.max_inbox_lag;
        if idle {
            let idle_for = (lag / 2).clamp(Duration::from_secs(1), MAX_IDLE);
            session = idle_once(&server, session, idle_for).await?;
        } else {
            tokio::time::sleep(imap.poll_interval.max(Duration::from_secs(1))).await;
        }
    }
}

/// Sends IDLE and returns when the server reports a change or `idle_for`
/// has passed, after ending the IDLE.
async fn idle_once(server: &str, session: Session, idle_for: Duration) -> Result<Session, WatchError> {
    let mut handle = session.idle();
    timed(server, "IDLE", handle.init()).await?.map_err(imap_err(server, "IDLE"))?;
    {
        // Keepalives (`* OK Still here`) restart the library's own timer,
        // so the deadline is ours.
        let (wait, _interrupt) = handle.wait_with_timeout(idle_for);
        tokio::select! {
            r = wait => { r.map_err(imap_err(server, "IDLE"))?; }
            _ = tokio::time::sleep(idle_for) => {}
        }
    }
    timed(server, "IDLE DONE", handle.done()).await?.map_err(imap_err(server, "IDLE DONE"))
}

/// Reconnect delays: 1 s doubling to 60 s, each scaled by a random factor
/// in [0.5, 1] so that many watchers do not reconnect in step.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_FIRST }
    }
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        use rand::Rng as _;
        let base = self.next;
        self.next = (self.next * 2).min(BACKOFF_CAP);
        base.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
    }

    fn reset(&mut self) {
        self.next = BACKOFF_FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        let mut base = BACKOFF_FIRST;
        for d in &delays {
            assert!(*d >= base / 2 && *d <= base, "{d:?} not within [{:?}, {base:?}]", base / 2);
            base = (base * 2).min(BACKOFF_CAP);
        }
        assert!(delays[9] >= BACKOFF_CAP / 2);
        b.reset();
        assert!(b.next_delay() <= BACKOFF_FIRST);
    }

    #[test]
    fn batches_bound_count_and_bytes_and_cover_everything() {
        let n = BATCH_MESSAGES as u32;
        let small: Vec<(u32, u32)> = (1..=2 * n + 20).map(|u| (u, 1000)).collect();
        let b = batches(&small);
        assert_eq!(b.iter().map(|s| s.len()).collect::<Vec<_>>(), vec![BATCH_MESSAGES, BATCH_MESSAGES, 20]);

        let big = vec![(1, 10 * 1024 * 1024), (2, 10 * 1024 * 1024), (3, 100), (4, MAX_MESSAGE_BYTES + 1), (5, 100)];
        let b = batches(&big);
        assert_eq!(b.iter().map(|s| s.iter().map(|(u, _)| *u).collect::<Vec<_>>()).collect::<Vec<_>>(), vec![vec![1], vec![2, 3, 4, 5]]);
        assert!(batches(&[]).is_empty());
    }
}
