//! The IMAP watcher against a real Dovecot: position kept across sessions,
//! UIDVALIDITY resets, store failures, TLS, login errors, IDLE, restarts and
//! the all-reps sync of `cadence tick`.

use std::path::Path;
use std::sync::{Arc, Once};
use std::time::Duration;

use cadence::clock::Clock;
use cadence::config::{Config, Imap, TlsMode};
use cadence::inbox::watch::{self, connect, connect_with_password, sync_all_once, sync_once, sync_rep, Handler, SyncReport, WatchError};
use cadence::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::fixtures::{Opts, Project, SECRET};
use crate::support::dovecot::Dovecot;
use crate::support::{refused_port, wait_until_async};

const USER: &str = "nik";
const PASSWORD: &str = "pw";
/// Every test's Dovecot uses the same password, so this variable is set once
/// for the whole process and never changes.
const PASSWORD_VAR: &str = "CADENCE_IT_WATCH_IMAP_PASSWORD";
const MON_10_REGINA: &str = "2026-03-02T16:00:00Z";
/// Generous: a reconnect after a restart waits a backoff of a few seconds.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

fn set_password_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::env::set_var(PASSWORD_VAR, PASSWORD));
}

fn now() -> DateTime<Utc> {
    MON_10_REGINA.parse().expect("timestamp")
}

fn imap_for(dovecot: &Dovecot) -> Imap {
    set_password_env();
    Imap {
        host: "127.0.0.1".into(),
        port: dovecot.port(),
        tls: TlsMode::None,
        username: USER.into(),
        password_env: Some(PASSWORD_VAR.into()),
        folder: "INBOX".into(),
        ca_file: None,
        poll_interval: Duration::from_secs(60),
    }
}

/// A message from someone who is not a lead, with a unique Message-ID.
fn stranger(n: u32) -> Vec<u8> {
    format!(
        "From: Someone <someone{n}@elsewhere.test>\r\n\
         To: Nik <nik@vendor.test>\r\n\
         Subject: note {n}\r\n\
         Message-ID: <note-{n}@elsewhere.test>\r\n\
         Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n\
         \r\n\
         Hello number {n}.\r\n"
    )
    .into_bytes()
}

fn message_id(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .lines()
        .find_map(|l| l.strip_prefix("Message-ID: ").or_else(|| l.strip_prefix("Message-Id: ")).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("no Message-ID in {}", String::from_utf8_lossy(raw)))
}

/// Records the Message-ID of every message it is given; fails the batch
/// holding the `fail_on`-th message (1-based) with a store error, recording
/// none of that batch.
#[derive(Default)]
struct Recorder {
    ids: Vec<String>,
    fail_on: Option<usize>,
    /// Messages handed over so far, failed batches included.
    handed: usize,
}

impl Handler for Recorder {
    type Prepared = Vec<Vec<u8>>;

    fn prepare(raws: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        raws
    }

    async fn handle(&mut self, batch: Vec<Vec<u8>>) -> Result<usize, StoreError> {
        let first = self.handed + 1;
        self.handed += batch.len();
        if self.fail_on.is_some_and(|n| (first..=self.handed).contains(&n)) {
            return Err(StoreError::Data("injected failure".into()));
        }
        self.ids.extend(batch.iter().map(|raw| message_id(raw)));
        Ok(batch.len())
    }
}

async fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&format!("sqlite://{}/t.db", dir.path().display())).await.expect("open store");
    (dir, store)
}

/// The standard project with `nik`'s inbox on `dovecot`, loaded as the
/// daemon would load it (password from [`PASSWORD_VAR`]).
fn project_config(dovecot: &Dovecot) -> (Project, Config) {
    let project = Project::new(Opts { imap: Some((dovecot.port(), PASSWORD.into())), ..Opts::default() });
    let (mut cfg, _warnings) = cadence::config::load_with_env(&project.tmp.config_path(), &|var| match var {
        "CADENCE_SECRET" => Some(SECRET.into()),
        "CADENCE_IMAP_PASSWORD_NIK" => Some(PASSWORD.into()),
        _ => None,
    })
    .unwrap_or_else(|p| panic!("config invalid: {p:?}"));
    cfg.reps[0].imap = Some(imap_for(dovecot));
    (project, cfg)
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_once_hands_over_each_message_once_and_resumes_in_a_new_session() {
    let dovecot = Dovecot::start(&[(USER, PASSWORD)]).await;
    let imap = imap_for(&dovecot);
    let (_dir, store) = temp_store().await;
    let clock = Clock::fixed(now());
    let first: Vec<Vec<u8>> = (1..=3).map(stranger).collect();
    dovecot.append_all(USER, "INBOX", first.iter().map(Vec::as_slice)).await;

    let mut session = connect(&imap, Path::new("/")).await.expect("connect");
    let mut rec = Recorder::default();
    let report = sync_once(&mut session, USER, &imap, &store, &clock, &mut rec).await.expect("sync");
    assert_eq!(rec.ids, ["<note-1@elsewhere.test>", "<note-2@elsewhere.test>", "<note-3@elsewhere.test>"]);
    assert_eq!(report.uids, [1, 2, 3]);
    assert_eq!((report.last_uid, report.acted, report.reset), (3, 3, false));
    let state = store.mailbox_state(USER, "INBOX").await.unwrap();
    assert_eq!(state.uid_validity, Some(i64::from(dovecot.uid_validity(USER, "INBOX").await)));
    assert_eq!(state.last_uid, 3);
    assert_eq!(state.synced_at, Some(clock.now_ms()));

    // Nothing new: nothing handed over, but the sync still counts as fresh.
    let later = now() + chrono::Duration::minutes(1);
    let clock = Clock::fixed(later);
    let again = sync_once(&mut session, USER, &imap, &store, &clock, &mut rec).await.expect("second sync");
    assert!(again.uids.is_empty(), "{again:?}");
    assert_eq!(rec.handed, 3);
    assert_eq!(store.mailbox_state(USER, "INBOX").await.unwrap().synced_at, Some(later.timestamp_millis()));
    session.logout().await.expect("logout");

    // A new session starts after the saved position.
    dovecot.append_all(USER, "INBOX", [stranger(4).as_slice(), stranger(5).as_slice()]).await;
    let mut session = connect(&imap, Path::new("/")).await.expect("reconnect");
    let mut rec = Recorder::default();
    let report = sync_once(&mut session, USER, &imap, &store, &clock, &mut rec).await.expect("sync after reconnect");
    assert_eq!(rec.ids, ["<note-4@elsewhere.test>", "<note-5@elsewhere.test>"]);
    assert_eq!(report.uids, [4, 5]);
    assert_eq!(store.mailbox_state(USER, "INBOX").await.unwrap().last_uid, 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_failure_stops_the_sync_before_the_failing_batch() {
    let dovecot = Dovecot::start(&[(USER, PASSWORD)]).await;
    let imap = imap_for(&dovecot);
    let (_dir, store) = temp_store().await;
    let clock = Clock::fixed(now());
    // Three fetch batches: a whole one, a whole one, and 20.
    let batch = cadence::inbox::watch::BATCH_MESSAGES as u32;
    let total = 2 * batch + 20;
    let msgs: Vec<Vec<u8>> = (1..=total).map(stranger).collect();
    dovecot.append_all(USER, "INBOX", msgs.iter().map(Vec::as_slice)).await;

    let mut session = connect(&imap, Path::new("/")).await.expect("connect");
    let mut failing = Recorder { fail_on: Some(batch as usize + 10), ..Recorder::default() };
    let err = sync_once(&mut session, USER, &imap, &store, &clock, &mut failing).await.expect_err("the handler fails");
    assert!(matches!(err, WatchError::Store(_)), "{err:?}");
    assert_eq!(failing.ids.len(), batch as usize, "the first batch was handled");
    let state = store.mailbox_state(USER, "INBOX").await.unwrap();
    assert_eq!(state.last_uid, i64::from(batch), "only the batch before the failure counts as done");
    // The store's position update writes synced_at too: the old value is
    // kept, and "never" is stored as 0.
    assert!(matches!(state.synced_at, None | Some(0)), "a failed sync is not a sync: {:?}", state.synced_at);

    let mut rec = Recorder::default();
    let report = sync_once(&mut session, USER, &imap, &store, &clock, &mut rec).await.expect("retry");
    let expected: Vec<String> = (batch + 1..=total).map(|n| format!("<note-{n}@elsewhere.test>")).collect();
    assert_eq!(rec.ids, expected, "the failed batch is read again, whole, and then the rest");
    assert_eq!(report.last_uid, total);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_uid_validity_reset_rereads_the_folder_without_recording_anything_twice() {
    let dovecot = Dovecot::start(&[(USER, PASSWORD)]).await;
    let (project, cfg) = project_config(&dovecot);
    project.enroll("ana@acme.test", "America/Regina", MON_10_REGINA);
    project.tick(MON_10_REGINA);
    let sent = project.outbox();
    assert_eq!(sent.len(), 1, "the first step went out");
    let sent_id = message_id(sent[0].as_bytes());
    let reply = format!(
        "From: Ana <ana@acme.test>\r\n\
         To: Nik <nik@vendor.test>\r\n\
         Subject: Re: Quick question about Acme\r\n\
         Message-ID: <reply-1@acme.test>\r\n\
         In-Reply-To: {sent_id}\r\n\
         References: {sent_id}\r\n\
         Date: Mon, 02 Mar 2026 17:00:00 +0000\r\n\
         \r\n\
         Sounds good, let's talk on Thursday.\r\n"
    );
    dovecot.append_all(USER, "INBOX", [reply.as_bytes(), stranger(1).as_slice()]).await;

    let store = Store::open(&project.db_url).await.expect("open store");
    let clock = Clock::fixed(now() + chrono::Duration::hours(2));
    let report = sync_rep(&cfg, &store, &clock, USER).await.expect("first sync");
    assert_eq!((report.uids.len(), report.reset), (2, false));
    assert_eq!(report.acted, 1, "the reply acts; the stranger's note is only recorded as seen");
    let replies = || project.sql("SELECT COUNT(*) FROM touchpoints WHERE kind = 'reply'");
    assert_eq!(replies(), "1");
    assert_eq!(project.sql("SELECT state FROM enrollments"), "replied");
    assert_eq!(project.sql("SELECT COUNT(*) FROM inbound_seen"), "2");

    let new_validity = dovecot.uid_validity_reset(USER, "INBOX").await;
    let report = sync_rep(&cfg, &store, &clock, USER).await.expect("sync after the reset");
    assert!(report.reset, "{report:?}");
    assert_eq!(report.uid_validity, new_validity);
    assert_eq!(report.uids.len(), 2, "every message is read again");
    assert_eq!(report.acted, 0, "and none acts again");
    assert_eq!(replies(), "1");
    assert_eq!(project.sql("SELECT COUNT(*) FROM inbound_seen"), "2");
    let state = store.mailbox_state(USER, "INBOX").await.unwrap();
    assert_eq!(state.uid_validity, Some(i64::from(new_validity)));
    assert_eq!(state.last_uid, i64::from(*report.uids.last().unwrap()));
}

#[tokio::test(flavor = "multi_thread")]
async fn implicit_tls_and_starttls_verify_the_certificate_against_ca_file() {
    let dovecot = Dovecot::start(&[(USER, PASSWORD)]).await;
    let (_dir, store) = temp_store().await;
    let clock = Clock::fixed(now());
    dovecot.append(USER, "INBOX", &stranger(1)).await;

    let tls = Imap { port: dovecot.imaps_port(), tls: TlsMode::Tls, ca_file: Some(dovecot.ca_cert_path()), ..imap_for(&dovecot) };
    let mut session = connect(&tls, Path::new("/")).await.expect("implicit TLS with the private CA");
    let mut rec = Recorder::default();
    sync_once(&mut session, USER, &tls, &store, &clock, &mut rec).await.expect("sync over TLS");
    assert_eq!(rec.ids, ["<note-1@elsewhere.test>"]);

    // `ca_file` relative to the project root.
    let relative = Imap { ca_file: Some("ca.pem".into()), ..tls.clone() };
    connect(&relative, dovecot.dir()).await.expect("ca_file resolved against the root");

    let starttls = Imap { tls: TlsMode::Starttls, ca_file: Some(dovecot.ca_cert_path()), ..imap_for(&dovecot) };
    let mut session = connect(&starttls, Path::new("/")).await.expect("STARTTLS with the private CA");
    session.noop().await.expect("NOOP over STARTTLS");

    for imap in [Imap { ca_file: None, ..tls }, Imap { ca_file: None, ..starttls }] {
        let err = connect(&imap, Path::new("/")).await.expect_err("an unknown CA is refused");
        assert!(matches!(err, WatchError::Certificate { .. }), "{:?} gave {err:?}", imap.tls);
        assert!(err.is_config());
        assert!(err.to_string().contains("imap.ca_file"), "the error says what to do: {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn login_problems_are_clear_and_never_show_the_password() {
    let dovecot = Dovecot::start(&[(USER, PASSWORD)]).await;
    let imap = imap_for(&dovecot);

    let err = connect_with_password(&imap, Path::new("/"), "not-the-password-xyz").await.expect_err("wrong password");
    assert!(matches!(err, WatchError::Login { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("\"nik\"") && text.contains("rejected"), "{text}");
    assert!(!text.contains("not-the-password-xyz"), "{text}");

    let unset = Imap { password_env: Some("CADENCE_IT_WATCH_NEVER_SET".into()), ..imap.clone() };
    let err = connect(&unset, Path::new("/")).await.expect_err("no password");
    assert!(matches!(err, WatchError::MissingPassword { .. }), "{err:?}");
    assert!(err.to_string().contains("CADENCE_IT_WATCH_NEVER_SET"), "{err}");

    let none = Imap { password_env: None, ..imap.clone() };
    assert!(matches!(connect(&none, Path::new("/")).await, Err(WatchError::NoPasswordEnv { .. })));

    let (_held, port) = refused_port();
    let closed = Imap { port, ..imap };
    let err = connect(&closed, Path::new("/")).await.expect_err("nothing listens there");
    assert!(matches!(err, WatchError::Connect { .. }), "{err:?}");
}

/// A running [`watch`] and the reports it emits.
struct Watcher {
    events: mpsc::UnboundedReceiver<SyncReport>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// Every UID handed over so far, in order, across events.
    uids: Vec<u32>,
}

impl Watcher {
    fn start(cfg: Config, store: Store) -> Watcher {
        let (tx, events) = mpsc::unbounded_channel();
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let cfg = Arc::new(cfg);
        let task = tokio::spawn(watch::watch(
            USER.to_string(),
            move || cfg.clone(),
            store,
            Clock::System,
            shutdown,
            move |r: &SyncReport| {
                let _ = tx.send(r.clone());
            },
        ));
        Watcher { events, stop, task, uids: Vec::new() }
    }

    /// Waits for the event that hands over `uid`.
    async fn until_uid(&mut self, uid: u32) {
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        while !self.uids.contains(&uid) {
            let report = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("UID {uid} not handed over within {EVENT_TIMEOUT:?}; saw {:?}", self.uids))
                .expect("the watcher stopped");
            self.uids.extend(&report.uids);
        }
    }

    async fn shutdown(self) -> Vec<u32> {
        self.stop.send(true).expect("watcher alive");
        tokio::time::timeout(Duration::from_secs(5), self.task).await.expect("the watcher stops promptly").expect("no panic");
        let mut uids = self.uids;
        let mut events = self.events;
        while let Ok(r) = events.try_recv() {
            uids.extend(r.uids);
        }
        uids
    }
}

async fn wait_first_sync(store: &Store) {
    wait_until_async("the watcher's first sync", EVENT_TIMEOUT, || async {
        store.mailbox_state(USER, "INBOX").await.map(|s| s.synced_at.is_some()).unwrap_or(false)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_sees_new_mail_through_idle_and_stops_on_shutdown() {
    let dovecot = Dovecot::start(&[(USER, PASSWORD)]).await;
    let (project, cfg) = project_config(&dovecot);
    // IDLE is re-issued every max_inbox_lag / 2 = 60 s: an event within
    // EVENT_TIMEOUT can only come from the server's IDLE notification.
    assert_eq!(cfg.daemon.max_inbox_lag, Duration::from_secs(120));
    let store = Store::open(&project.db_url).await.expect("open store");
    let mut watcher = Watcher::start(cfg, store.clone());
    wait_first_sync(&store).await;

    dovecot.append(USER, "INBOX", &stranger(1)).await;
    watcher.until_uid(1).await;
    dovecot.append(USER, "INBOX", &stranger(2)).await;
    watcher.until_uid(2).await;

    assert_eq!(watcher.shutdown().await, [1, 2], "each message handed over once");
    assert_eq!(project.sql("SELECT COUNT(*) FROM inbound_seen"), "2");
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_reconnects_after_a_server_restart_and_misses_nothing() {
    let mut dovecot = Dovecot::start(&[(USER, PASSWORD)]).await;
    let (project, cfg) = project_config(&dovecot);
    let store = Store::open(&project.db_url).await.expect("open store");
    let mut watcher = Watcher::start(cfg, store.clone());
    dovecot.append(USER, "INBOX", &stranger(1)).await;
    watcher.until_uid(1).await;

    dovecot.stop();
    dovecot.start_again().await;
    // Most likely before the watcher is back (it is backing off).
    dovecot.append(USER, "INBOX", &stranger(2)).await;
    watcher.until_uid(2).await;
    // Certainly after it is back.
    dovecot.append(USER, "INBOX", &stranger(3)).await;
    watcher.until_uid(3).await;

    assert_eq!(watcher.shutdown().await, [1, 2, 3], "each message handed over exactly once");
    assert_eq!(project.sql("SELECT COUNT(*) FROM inbound_seen"), "3");
    assert_eq!(store.mailbox_state(USER, "INBOX").await.unwrap().last_uid, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_all_once_reports_each_rep_and_one_broken_inbox_does_not_stop_the_others() {
    let dovecot = Dovecot::start(&[(USER, PASSWORD)]).await;
    let (project, mut cfg) = project_config(&dovecot);
    let mut broken = cfg.reps[0].clone();
    broken.id = "bob".into();
    let (_held, port) = refused_port();
    broken.imap = Some(Imap { port, ..imap_for(&dovecot) });
    let mut no_imap = cfg.reps[0].clone();
    no_imap.id = "carol".into();
    no_imap.imap = None;
    cfg.reps.insert(0, broken);
    cfg.reps.push(no_imap);
    dovecot.append(USER, "INBOX", &stranger(1)).await;

    let store = Store::open(&project.db_url).await.expect("open store");
    let clock = Clock::fixed(now());
    let results = sync_all_once(&cfg, &store, &clock).await;
    let reps: Vec<&str> = results.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(reps, ["bob", USER], "reps with IMAP, in config order");
    assert!(matches!(results[0].1, Err(WatchError::Connect { .. })), "{:?}", results[0].1);
    let nik = results[1].1.as_ref().expect("nik's inbox syncs");
    assert_eq!(nik.uids, [1]);
    assert_eq!(store.inbox_synced_at(USER).await.unwrap(), Some(clock.now_ms()));
    assert_eq!(store.inbox_synced_at("bob").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_polls_a_server_without_idle() {
    let mut dovecot = Dovecot::start(&[(USER, PASSWORD)]).await;
    // Same server, but it no longer offers IDLE.
    let mut conf = std::fs::read_to_string(dovecot.config_path()).expect("read dovecot.conf");
    conf.push_str("protocol imap {\n  imap_capability = IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID ENABLE UIDPLUS\n}\n");
    std::fs::write(dovecot.config_path(), conf).expect("write dovecot.conf");
    dovecot.start_again().await;
    let mut session = connect(&imap_for(&dovecot), Path::new("/")).await.expect("connect");
    assert!(!session.capabilities().await.expect("CAPABILITY").has_str("IDLE"), "the rig change took effect");

    let (project, mut cfg) = project_config(&dovecot);
    cfg.reps[0].imap.as_mut().unwrap().poll_interval = Duration::from_secs(1);
    let store = Store::open(&project.db_url).await.expect("open store");
    let mut watcher = Watcher::start(cfg, store.clone());
    wait_first_sync(&store).await;
    dovecot.append(USER, "INBOX", &stranger(1)).await;
    watcher.until_uid(1).await;
    assert_eq!(watcher.shutdown().await, [1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_returns_for_a_rep_without_imap() {
    let project = Project::file();
    let (cfg, _) = cadence::config::load_with_env(&project.tmp.config_path(), &|var| (var == "CADENCE_SECRET").then(|| SECRET.into()))
        .unwrap_or_else(|p| panic!("config invalid: {p:?}"));
    assert!(cfg.reps[0].imap.is_none());
    let (_dir, store) = temp_store().await;
    let watcher = Watcher::start(cfg, store);
    tokio::time::timeout(Duration::from_secs(5), watcher.task).await.expect("returns at once").expect("no panic");
}
