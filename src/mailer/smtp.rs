//! SMTP delivery over connections we open and pool ourselves.
//!
//! lettre's stock `AsyncSmtpTransport` leaves Nagle on and writes the final
//! `\r\n.\r\n` as its own flush, so every message waits for the server's
//! delayed ACK (about 40 ms: 22 messages per second per connection); its pool
//! also sends a NOOP before every reused message. So we dial the socket
//! ourselves (`TCP_NODELAY`), hand it to lettre's `AsyncSmtpConnection`, and
//! keep a few idle connections per rep.
//!
//! We also drive MAIL, RCPT, DATA and the body one by one instead of
//! `AsyncSmtpConnection::send`, because the outcome depends on *where* a
//! failure happened: a refusal at RCPT is a bounce; a connection lost after
//! the final dot may have delivered the message and must never be retried.
//! To know whether the dot left, the socket is wrapped in [`Counted`], which
//! counts completed flushes (under TLS too: tokio-rustls flushes the inner
//! stream only after writing every record). It also holds the content back
//! until the dot is written, so the two leave in one write: the dot has
//! left exactly when that flush completed, as before.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, Certificate, CertificateStore, TlsParameters};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::timeout;

use super::{Prepared, SendError};
use crate::config::{Smtp, TlsMode};

/// Idle connections older than this are closed rather than reused: servers
/// drop idle clients (Postfix after 300 s, many relays after 60 s), and a
/// stale socket costs a failed round trip.
const MAX_IDLE: Duration = Duration::from_secs(50);

/// Where in the SMTP dialogue a failure happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Connect,
    Greeting,
    StartTls,
    Auth,
    Mail,
    Rcpt,
    Data,
    /// Sending the content; `dot_sent` once `\r\n.\r\n` has left.
    Content {
        dot_sent: bool,
    },
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Greeting => "greeting/EHLO",
            Stage::StartTls => "STARTTLS",
            Stage::Auth => "AUTH",
            Stage::Mail => "MAIL FROM",
            Stage::Rcpt => "RCPT TO",
            Stage::Data => "DATA",
            Stage::Content { dot_sent: false } => "message content",
            Stage::Content { dot_sent: true } => "end of DATA",
        }
    }
}

/// A failure before classification: what went wrong and where.
#[derive(Debug)]
struct Failure {
    stage: Stage,
    cause: Cause,
}

#[derive(Debug)]
enum Cause {
    Smtp(lettre::transport::smtp::Error),
    Timeout(Duration),
    /// Already classified (bad config, missing secret...).
    Classified(SendError),
}

impl Failure {
    fn new(stage: Stage, cause: Cause) -> Self {
        Failure { stage, cause }
    }

    /// A reused connection the server had already closed: nothing was
    /// accepted, so a fresh connection may try again at once.
    fn is_stale_connection(&self) -> bool {
        if self.stage != Stage::Mail {
            return false;
        }
        match &self.cause {
            Cause::Smtp(e) => match e.status() {
                Some(code) => u16::from(code) == 421,
                None => !e.is_client(),
            },
            _ => false,
        }
    }

    /// The server answered and the session is still usable.
    fn server_replied(&self) -> bool {
        matches!(&self.cause, Cause::Smtp(e) if e.status().is_some())
    }

    fn classify(self, server: &str) -> SendError {
        let stage = self.stage;
        let at = stage.name();
        match self.cause {
            Cause::Classified(e) => e,
            Cause::Timeout(t) => {
                let msg = format!("{server}: no answer within {}s at {at}", t.as_secs_f32());
                if stage == (Stage::Content { dot_sent: true }) {
                    SendError::Unknown(msg)
                } else {
                    SendError::Transient(msg)
                }
            }
            Cause::Smtp(e) => classify_smtp(stage, server, &e),
        }
    }
}

fn classify_smtp(stage: Stage, server: &str, e: &lettre::transport::smtp::Error) -> SendError {
    let at = stage.name();
    if let Some(code) = e.status() {
        let code = u16::from(code);
        let message = format!("{server} at {at}: {e}");
        return match code {
            400..=499 => SendError::Transient(message),
            _ if stage == Stage::Auth => SendError::Local(format!(
                "authentication refused by {message}; check smtp.username and the password in the variable named by smtp.password_env"
            )),
            _ => SendError::Permanent { code, recipient: refuses_recipient(stage, code, &e.to_string()), message },
        };
    }
    if let Some(cert) = certificate_error(e) {
        return SendError::Local(format!("{server}: TLS certificate not trusted ({cert}); set smtp.ca_file for a private CA"));
    }
    if e.is_client() {
        return SendError::Local(format!("{server} at {at}: {e}"));
    }
    let detail = e.to_string();
    let message = if detail.ends_with("incomplete response") {
        format!("{server}: connection closed by the server at {at}")
    } else {
        format!("{server}: connection failed at {at}: {detail}")
    };
    if stage == (Stage::Content { dot_sent: true }) {
        SendError::Unknown(message)
    } else {
        SendError::Transient(message)
    }
}

/// Is a 5xx about the recipient (a bounce) rather than the sender or the
/// content? Always at RCPT; after DATA only for the user-unknown family.
fn refuses_recipient(stage: Stage, code: u16, text: &str) -> bool {
    match stage {
        Stage::Rcpt => true,
        Stage::Content { .. } => {
            matches!(code, 550 | 551 | 553)
                && (text.contains("5.1.") || {
                    let t = text.to_ascii_lowercase();
                    ["user unknown", "no such user", "unknown user", "mailbox unavailable"].iter().any(|p| t.contains(p))
                })
        }
        _ => false,
    }
}

/// Digs the rustls certificate error out of lettre's error chain.
/// `io::Error::source()` skips the wrapped error, so look inside by hand.
fn certificate_error(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return match tls {
                rustls::Error::InvalidCertificate(_) => Some(tls.to_string()),
                _ => None,
            };
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if let Some(inner) = io.get_ref() {
                current = Some(inner);
                continue;
            }
        }
        current = err.source();
    }
    None
}

/// TLS settings made once per rep: the public roots plus the private CA.
#[derive(Clone)]
struct TlsSetup {
    /// For implicit TLS, where we wrap the socket ourselves.
    rustls: Arc<rustls::ClientConfig>,
    /// For STARTTLS, which lettre performs on its connection.
    lettre: TlsParameters,
    server_name: ServerName<'static>,
}

impl TlsSetup {
    fn new(host: &str, ca_file: Option<&std::path::Path>) -> Result<Self, SendError> {
        let mut extra: Vec<CertificateDer<'static>> = Vec::new();
        let mut params = TlsParameters::builder(host.to_string()).certificate_store(CertificateStore::WebpkiRoots);
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|e| SendError::Local(format!("cannot read smtp.ca_file {}: {e}", path.display())))?;
            extra = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<_, _>>()
                .map_err(|e| SendError::Local(format!("smtp.ca_file {}: {e}", path.display())))?;
            if extra.is_empty() {
                return Err(SendError::Local(format!("smtp.ca_file {} holds no PEM certificate", path.display())));
            }
            let cert = Certificate::from_pem(&pem).map_err(|e| SendError::Local(format!("smtp.ca_file {}: {e}", path.display())))?;
            params = params.add_root_certificate(cert);
        }
        let lettre = params.build_rustls().map_err(|e| SendError::Local(format!("TLS setup for {host}: {e}")))?;

        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in extra {
            roots.add(cert).map_err(|e| SendError::Local(format!("smtp.ca_file: {e}")))?;
        }
        let provider =
            rustls::crypto::CryptoProvider::get_default().cloned().unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
        let rustls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| SendError::Local(format!("TLS setup for {host}: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name =
            ServerName::try_from(host.to_string()).map_err(|e| SendError::Local(format!("smtp.host {host:?} for TLS: {e}")))?;
        Ok(TlsSetup { rustls: Arc::new(rustls), lettre, server_name })
    }
}

/// What a connection's [`Counted`] socket shares with the code driving it.
#[derive(Debug, Default)]
struct Wire {
    /// Completed flushes (see the module docs).
    flushes: AtomicU64,
    /// While set, writes are kept back and flushes do nothing: the content
    /// of a message then leaves with its final dot in one write, instead
    /// of lettre's write and flush of each (one packet and one system call
    /// fewer a message, for us and for the server).
    hold: AtomicBool,
}

/// A socket that counts its completed flushes and can hold writes back
/// (see [`Wire`]).
#[derive(Debug)]
struct Counted<S> {
    inner: S,
    wire: Arc<Wire>,
    /// Bytes written while held, or after, until a flush sends them.
    held: Vec<u8>,
    peer: SocketAddr,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        // Once anything is held, later bytes queue behind it.
        if self.wire.hold.load(Ordering::SeqCst) || !self.held.is_empty() {
            self.held.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.wire.hold.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(()));
        }
        let this = &mut *self;
        while !this.held.is_empty() {
            match Pin::new(&mut this.inner).poll_write(cx, &this.held) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => drop(this.held.drain(..n)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        if let Poll::Ready(Ok(())) = result {
            this.wire.flushes.fetch_add(1, Ordering::SeqCst);
        }
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S> AsyncTokioStream for Counted<S>
where
    S: AsyncRead + AsyncWrite + Send + Sync + Unpin + std::fmt::Debug,
{
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer)
    }
}

struct Conn {
    smtp: AsyncSmtpConnection,
    wire: Arc<Wire>,
    idle_since: Instant,
    /// The server offers PIPELINING (RFC 2920).
    pipelining: bool,
}

/// The connections of one rep's SMTP account.
pub(crate) struct SmtpPool {
    host: String,
    port: u16,
    /// `host:port`, for messages.
    server: String,
    mode: TlsMode,
    tls: Option<TlsSetup>,
    username: Option<String>,
    password_env: Option<String>,
    timeout: Duration,
    client_id: ClientId,
    idle: Mutex<Vec<Conn>>,
    /// At most `pool_size` connections open (busy or idle) at once.
    slots: Semaphore,
}

impl SmtpPool {
    pub(crate) fn new(smtp: &Smtp, ca_file: Option<&std::path::Path>) -> Result<Self, SendError> {
        let tls = match smtp.tls {
            TlsMode::None => None,
            TlsMode::Starttls | TlsMode::Tls => Some(TlsSetup::new(&smtp.host, ca_file)?),
        };
        Ok(SmtpPool {
            host: smtp.host.clone(),
            port: smtp.port,
            server: format!("{}:{}", smtp.host, smtp.port),
            mode: smtp.tls,
            tls,
            username: smtp.username.clone(),
            password_env: smtp.password_env.clone(),
            timeout: if smtp.timeout.is_zero() { Duration::from_secs(30) } else { smtp.timeout },
            client_id: ClientId::default(),
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(smtp.pool_size.max(1)),
        })
    }

    /// Sends one message: `Ok` once the server accepted the end of DATA.
    pub(crate) async fn send(&self, p: &Prepared) -> Result<(), SendError> {
        let _slot = self.slots.acquire().await.map_err(|_| SendError::Local("SMTP pool closed".into()))?;
        let (mut conn, reused) = match self.take_idle() {
            Some(conn) => (conn, true),
            None => (self.connect().await.map_err(|f| f.classify(&self.server))?, false),
        };
        let mut result = self.transact(&mut conn, p).await;
        if reused && result.as_ref().is_err_and(Failure::is_stale_connection) {
            tracing::debug!(server = %self.server, "pooled SMTP connection was stale; reconnecting");
            drop(conn);
            conn = self.connect().await.map_err(|f| f.classify(&self.server))?;
            result = self.transact(&mut conn, p).await;
        }
        match result {
            Ok(()) => {
                conn.idle_since = Instant::now();
                self.idle.lock().expect("pool lock").push(conn);
                Ok(())
            }
            Err(failure) => {
                if failure.server_replied() {
                    // A polite goodbye; the connection is dropped either way.
                    let _ = timeout(Duration::from_millis(500), conn.smtp.quit()).await;
                }
                Err(failure.classify(&self.server))
            }
        }
    }

    /// Says QUIT on the idle connections (for a clean shutdown).
    pub(crate) async fn close(&self) {
        let idle: Vec<Conn> = std::mem::take(&mut *self.idle.lock().expect("pool lock"));
        for mut conn in idle {
            let _ = timeout(self.timeout, conn.smtp.quit()).await;
        }
    }

    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().expect("pool lock");
        while let Some(conn) = idle.pop() {
            if conn.idle_since.elapsed() < MAX_IDLE && !conn.smtp.has_broken() {
                return Some(conn);
            }
        }
        None
    }

    async fn step<T>(
        &self,
        stage: Stage,
        fut: impl std::future::Future<Output = Result<T, lettre::transport::smtp::Error>>,
    ) -> Result<T, Failure> {
        match timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Failure::new(stage, Cause::Smtp(e))),
            Err(_) => Err(Failure::new(stage, Cause::Timeout(self.timeout))),
        }
    }

    async fn connect(&self) -> Result<Conn, Failure> {
        let t = self.timeout;
        let local = |e: SendError| Failure::new(Stage::Connect, Cause::Classified(e));
        // Read the secret first: a missing variable must not cost a connection.
        let credentials = match (&self.username, &self.password_env) {
            (None, _) => None,
            (Some(_), None) => return Err(local(SendError::Local(
                    "smtp.username is set but smtp.password_env is not: add password_env = \"VAR\", naming the variable that holds the password"
                        .into(),
                ))),
            (Some(user), Some(var)) => match crate::config::secret(var) {
                Some(password) => Some(Credentials::new(user.clone(), password)),
                None => return Err(local(SendError::Local(format!("SMTP password variable {var} is not set: set it in the daemon's environment (for systemd: the EnvironmentFile)")))),
            },
        };

        let tcp = match timeout(t, TcpStream::connect((self.host.as_str(), self.port))).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                return Err(local(SendError::Transient(format!(
                    "cannot connect to {}: {e} (check smtp.host and smtp.port, and that the server is up)",
                    self.server
                ))))
            }
            Err(_) => return Err(Failure::new(Stage::Connect, Cause::Timeout(t))),
        };
        let transient = |what: &str, e: io::Error| {
            Failure::new(Stage::Connect, Cause::Classified(SendError::Transient(format!("{}: {what}: {e}", self.server))))
        };
        tcp.set_nodelay(true).map_err(|e| transient("TCP_NODELAY", e))?;
        let peer = tcp.peer_addr().map_err(|e| transient("peer address", e))?;
        let wire = Arc::new(Wire::default());

        let stream: Box<dyn AsyncTokioStream> = match (self.mode, &self.tls) {
            (TlsMode::Tls, Some(tls)) => {
                let connector = tokio_rustls::TlsConnector::from(tls.rustls.clone());
                let handshake = connector.connect(tls.server_name.clone(), tcp);
                let stream = match timeout(t, handshake).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        return Err(local(match certificate_error(&e) {
                            Some(cert) => SendError::Local(format!(
                                "{}: TLS certificate not trusted ({cert}); set smtp.ca_file for a private CA",
                                self.server
                            )),
                            None => SendError::Transient(format!("{}: TLS handshake failed: {e}", self.server)),
                        }))
                    }
                    Err(_) => return Err(Failure::new(Stage::Connect, Cause::Timeout(t))),
                };
                Box::new(Counted { inner: stream, wire: wire.clone(), held: Vec::new(), peer })
            }
            _ => Box::new(Counted { inner: tcp, wire: wire.clone(), held: Vec::new(), peer }),
        };

        let mut smtp = self.step(Stage::Greeting, AsyncSmtpConnection::connect_with_transport(stream, &self.client_id)).await?;

        if let (TlsMode::Starttls, Some(tls)) = (self.mode, &self.tls) {
            if !smtp.server_info().supports_feature(Extension::StartTls) {
                return Err(Failure::new(
                    Stage::StartTls,
                    Cause::Classified(SendError::Local(format!(
                        "{} does not offer STARTTLS (smtp.tls = \"starttls\"): use tls = \"tls\" for implicit TLS (usually port 465), or check smtp.port",
                        self.server
                    ))),
                ));
            }
            self.step(Stage::StartTls, smtp.starttls(tls.lettre.clone(), &self.client_id)).await?;
        }

        // lettre keeps only the EHLO keywords it knows, and PIPELINING is not
        // one of them: ask again (before AUTH, after which some servers
        // refuse a new EHLO) and read the keyword off the answer.
        let ehlo = self.step(Stage::Greeting, smtp.command(Ehlo::new(self.client_id.clone()))).await?;
        let pipelining = ehlo.message().any(|line| line.split_whitespace().next().is_some_and(|k| k.eq_ignore_ascii_case("PIPELINING")));

        if let Some(credentials) = credentials {
            self.step(Stage::Auth, smtp.auth(&[Mechanism::Plain, Mechanism::Login], &credentials)).await?;
        }

        Ok(Conn { smtp, wire, idle_since: Instant::now(), pipelining })
    }

    /// MAIL, RCPT and DATA. With PIPELINING the three go in one write and
    /// their answers are read in order: one round trip instead of three,
    /// which doubled what a connection carries. The outcome is the first
    /// refusal, at the stage it answers (a refused RCPT is a bounce either
    /// way); the answers after it (the server's 503s) are read too.
    async fn envelope(&self, conn: &mut Conn, mail: Mail, rcpt: Rcpt) -> Result<(), Failure> {
        let smtp = &mut conn.smtp;
        if !conn.pipelining {
            self.step(Stage::Mail, smtp.command(mail)).await?;
            self.step(Stage::Rcpt, smtp.command(rcpt)).await?;
            self.step(Stage::Data, smtp.command(Data)).await?;
            return Ok(());
        }
        let mut outcome = self.step(Stage::Mail, smtp.command(format!("{mail}{rcpt}{Data}"))).await.map(drop);
        for stage in [Stage::Rcpt, Stage::Data] {
            // A lost connection or a timeout: nothing more will come.
            if outcome.as_ref().is_err_and(|f| !f.server_replied()) {
                break;
            }
            let answer = self.step(stage, smtp.read_response()).await.map(drop);
            match (&outcome, answer) {
                (Ok(()), answer) => outcome = answer,
                (Err(_), Err(f)) if !f.server_replied() => break,
                (Err(_), _) => {}
            }
        }
        outcome
    }

    async fn transact(&self, conn: &mut Conn, p: &Prepared) -> Result<(), Failure> {
        let local = |stage, msg: String| Failure::new(stage, Cause::Classified(SendError::Local(msg)));
        let from: lettre::Address = p.from.as_str().parse().map_err(|e| local(Stage::Mail, format!("sender {}: {e}", p.from)))?;
        let to: lettre::Address = p.to.as_str().parse().map_err(|e| local(Stage::Rcpt, format!("recipient {}: {e}", p.to)))?;

        let info = conn.smtp.server_info();
        let mut params = Vec::new();
        if !p.from.as_str().is_ascii() || !p.to.as_str().is_ascii() {
            if !info.supports_feature(Extension::SmtpUtfEight) {
                return Err(local(Stage::Mail, format!("{} does not accept non-ASCII addresses (SMTPUTF8)", self.server)));
            }
            params.push(MailParameter::SmtpUtfEight);
        }
        if !p.bytes.is_ascii() {
            if !info.supports_feature(Extension::EightBitMime) {
                return Err(local(Stage::Mail, format!("{} does not accept 8-bit content (8BITMIME)", self.server)));
            }
            params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }

        self.envelope(conn, Mail::new(Some(from), params), Rcpt::new(to, vec![])).await?;
        let smtp = &mut conn.smtp;

        // lettre always writes `\r\n.\r\n`: drop our final CRLF so the server
        // stores exactly the bytes we built.
        let body = p.bytes.strip_suffix(b"\r\n").unwrap_or(&p.bytes);
        let wire = conn.wire.clone();
        // Flush count when the body was written; the next flush sends it
        // and the dot together.
        let body_done = AtomicU64::new(u64::MAX);
        let parts = std::iter::once(body).chain(std::iter::from_fn(|| {
            wire.hold.store(false, Ordering::SeqCst);
            body_done.store(wire.flushes.load(Ordering::SeqCst), Ordering::SeqCst);
            None
        }));
        conn.wire.hold.store(true, Ordering::SeqCst);
        let result = timeout(self.timeout, smtp.message_iter(parts)).await;
        // Released even if the body's write failed, so that a QUIT can go.
        conn.wire.hold.store(false, Ordering::SeqCst);
        let dot_sent = {
            let mark = body_done.load(Ordering::SeqCst);
            mark != u64::MAX && conn.wire.flushes.load(Ordering::SeqCst) > mark
        };
        let stage = Stage::Content { dot_sent };
        match result {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Failure::new(stage, Cause::Smtp(e))),
            Err(_) => Err(Failure::new(stage, Cause::Timeout(self.timeout))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipient_refusals() {
        assert!(refuses_recipient(Stage::Rcpt, 550, "550 no"));
        assert!(refuses_recipient(Stage::Rcpt, 554, "554 policy"));
        assert!(refuses_recipient(Stage::Content { dot_sent: true }, 550, "550 5.1.1 user unknown"));
        assert!(!refuses_recipient(Stage::Content { dot_sent: true }, 554, "554 5.7.1 spam"));
        assert!(!refuses_recipient(Stage::Mail, 553, "553 5.1.8 bad sender"));
    }

    #[test]
    fn timeouts_after_the_dot_are_unknown() {
        let t = Duration::from_secs(1);
        let after = Failure::new(Stage::Content { dot_sent: true }, Cause::Timeout(t));
        assert!(matches!(after.classify("s"), SendError::Unknown(_)));
        let before = Failure::new(Stage::Content { dot_sent: false }, Cause::Timeout(t));
        assert!(matches!(before.classify("s"), SendError::Transient(_)));
        let rcpt = Failure::new(Stage::Rcpt, Cause::Timeout(t));
        assert!(rcpt.classify("s").is_transient());
    }
}
