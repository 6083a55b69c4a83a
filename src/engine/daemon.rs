//! The `cadence run` loop: pass, then sleep until the next thing is due or
//! something wakes us (an enrollment over the API, a finished send, a reply).
//! SIGHUP reloads config and templates (kept only if valid) and starts or
//! stops inbox watchers to match the reps it names; SIGTERM and SIGINT stop
//! claiming, let in-flight sends finish, and return.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};

use super::Engine;
use crate::clock::{from_ms, Clock};
use tokio::sync::watch::Receiver;

/// How long shutdown waits for in-flight sends.
const GRACE: Duration = Duration::from_secs(60);

pub async fn run(engine: Arc<Engine>, config_path: PathBuf) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let listen = engine.config().daemon.http_listen.clone();
    let listener =
        tokio::net::TcpListener::bind(&listen).await.with_context(|| {
        format!("binding the HTTP API to {listen} (daemon.http_listen): is another cadence running? Change daemon.http_listen or set CADENCE_HTTP_LISTEN")
    })?;
    let local = listener.local_addr().context("reading the HTTP API's bound address")?;
    tracing::info!(addr = %local, "http listening");
    let shutdown = {
        let mut stop = stop_rx.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };
    let http = tokio::spawn(crate::api::serve(listener, crate::api::ApiState::new(engine.clone()), shutdown));
    engine.store.heartbeat(Clock::System.now_ms()).await.context("registering this daemon in the database")?;
    let mut inboxes = Watchers::default();
    inboxes.follow(&engine);
    let helpers =
        [tokio::spawn(heartbeat(engine.clone(), stop_rx.clone())), tokio::spawn(notice_enrollments(engine.clone(), stop_rx.clone()))];
    loop {
        let started = match engine.pass().await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "engine pass failed; retrying after the tick interval");
                0
            }
        };
        if let Err(e) = super::hygiene::run_due(&engine, engine.clock.now()).await {
            tracing::error!(error = %e, "hygiene run failed; it is tried again at the next fire");
        }
        if let Err(e) = super::agenda::run_due(&engine, engine.clock.now()).await {
            tracing::error!(error = %e, "agenda emails failed; they are tried again at the next fire");
        }
        let sleep = next_sleep(&engine, started).await;
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: finishing in-flight sends"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: finishing in-flight sends"); break; }
            _ = hup.recv() => {
                reload(&engine, &config_path);
                inboxes.follow(&engine);
            }
            _ = engine.wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
    // Stops the watchers and the HTTP API (no new requests; those in
    // flight finish alongside the sends).
    let _ = stop_tx.send(true);
    inboxes.stop().await;
    for h in helpers {
        let _ = h.await;
    }
    if tokio::time::timeout(GRACE, engine.wait_idle()).await.is_err() {
        tracing::error!("in-flight sends did not finish within {GRACE:?}; they become send_unknown at the next start");
    }
    match tokio::time::timeout(GRACE, http).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "the HTTP API failed"),
        Ok(Err(e)) => tracing::error!(error = %e, "the HTTP API task failed"),
        Err(_) => tracing::error!("HTTP requests did not finish within {GRACE:?}"),
    }
    if let Err(e) = engine.store.unregister().await {
        tracing::warn!(error = %e, "could not unregister this daemon; its leases lapse by themselves");
    }
    engine.store.close().await;
    Ok(())
}

/// One IMAP watcher per rep with an inbox, each behind a lease so that of
/// several daemons on one database exactly one watches an inbox; when its
/// holder dies the lease lapses and another daemon takes over within
/// [`LEASE`] + [`LEASE_RETRY`]. Each watcher wakes the engine when it has
/// acted on a message (a reply may have stopped a due send).
///
/// The set follows the config: a rep given an inbox by a reload is watched
/// at once (until then its sending waits for a first sync), and a watcher
/// whose rep or folder is gone stops. A changed server or password needs no
/// new watcher: each connection reads the current config.
#[derive(Default)]
struct Watchers {
    running: HashMap<(String, String), (tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
    stopping: Vec<tokio::task::JoinHandle<()>>,
}

impl Watchers {
    fn follow(&mut self, engine: &Arc<Engine>) {
        let cfg = engine.config();
        let wanted: Vec<(String, String)> =
            cfg.reps.iter().filter_map(|r| r.imap.as_ref().map(|imap| (r.id.clone(), imap.folder.clone()))).collect();
        let gone: Vec<_> = self.running.keys().filter(|k| !wanted.contains(k)).cloned().collect();
        for key in gone {
            let (stop, handle) = self.running.remove(&key).expect("listed");
            tracing::info!(rep = %key.0, mailbox = %key.1, "inbox no longer configured: watcher stopping");
            let _ = stop.send(true);
            self.stopping.push(handle);
        }
        for (rep, folder) in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = self.running.entry((rep.clone(), folder.clone())) {
                let (stop, stop_rx) = tokio::sync::watch::channel(false);
                slot.insert((stop, tokio::spawn(leased_watch(engine.clone(), rep, folder, stop_rx))));
            }
        }
    }

    async fn stop(self) {
        for (stop, _) in self.running.values() {
            let _ = stop.send(true);
        }
        for handle in self.running.into_values().map(|(_, h)| h).chain(self.stopping) {
            let _ = handle.await;
        }
    }
}

/// How long an inbox lease lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(20);
/// How often a holder renews, and a waiting daemon tries to take over.
pub const LEASE_RETRY: Duration = Duration::from_secs(5);

async fn leased_watch(engine: Arc<Engine>, rep: String, folder: String, mut stop: Receiver<bool>) {
    let store = engine.store.clone();
    let lease = chrono::Duration::from_std(LEASE).expect("small");
    let acquire = || async {
        let now = Clock::System.now();
        store.acquire_inbox_lease(&rep, &folder, now.timestamp_millis(), (now + lease).timestamp_millis()).await
    };
    loop {
        if *stop.borrow() {
            return;
        }
        match acquire().await {
            Ok(true) => {
                tracing::info!(rep = %rep, mailbox = %folder, "inbox lease taken: watching");
                let (lost_tx, lost_rx) = tokio::sync::watch::channel(false);
                let config = {
                    let e = engine.clone();
                    move || e.config()
                };
                let wake = engine.wake.clone();
                let on_event = move |_: &crate::inbox::watch::SyncReport| wake.notify_one();
                let watcher =
                    tokio::spawn(crate::inbox::watch::watch(rep.clone(), config, store.clone(), engine.clock.clone(), lost_rx, on_event));
                let stopping = loop {
                    tokio::select! {
                        _ = stop.changed() => break true,
                        _ = tokio::time::sleep(LEASE_RETRY) => {
                            if !matches!(acquire().await, Ok(true)) {
                                tracing::warn!(rep = %rep, "inbox lease lost: another daemon watches this inbox now");
                                break false;
                            }
                        }
                    }
                };
                let _ = lost_tx.send(true);
                let _ = watcher.await;
                if stopping {
                    return;
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(rep = %rep, error = %e, "cannot take the inbox lease"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(LEASE_RETRY) => {}
        }
    }
}

/// Wakes the engine within a second of an enrollment made by another
/// process (`cadence enroll`, `cadence import`, another daemon's API): one
/// primary-key lookup a second, instead of a full pass. Enrollments through
/// this daemon's own API wake it at once.
async fn notice_enrollments(engine: Arc<Engine>, mut stop: Receiver<bool>) {
    let mut seen = engine.store.latest_enrollment_id().await.unwrap_or(None);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if let Ok(latest) = engine.store.latest_enrollment_id().await {
            if latest > seen {
                seen = latest;
                engine.wake.notify_one();
            }
        }
    }
}

/// Heartbeats so other daemons know this one is alive, and (with several
/// daemons on PostgreSQL) marks the in-flight sends of a dead one
/// `send_unknown`.
async fn heartbeat(engine: Arc<Engine>, mut stop: Receiver<bool>) {
    loop {
        if let Err(e) = engine.store.heartbeat(Clock::System.now_ms()).await {
            tracing::warn!(error = %e, "heartbeat failed");
        }
        if engine.store.is_postgres() {
            if let Err(e) = engine.recover().await {
                tracing::warn!(error = %e, "recovering a stopped daemon's sends failed");
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(super::HEARTBEAT) => {}
        }
    }
}

/// Until the next scheduled action, but at least as often as
/// `tick_interval` (to look again at work held by caps, and at changes other
/// processes made besides new enrollments, which wake us within a second).
async fn next_sleep(engine: &Engine, started: u64) -> Duration {
    let cfg = engine.config();
    let tick = cfg.daemon.tick_interval.max(Duration::from_millis(100));
    if started > 0 || engine.sending() {
        // Sends are in flight; their completion wakes us.
        return tick;
    }
    let tick = match super::hygiene::next_fire(&cfg, engine.clock.now()).and_then(|f| (f - engine.clock.now()).to_std().ok()) {
        Some(until_fire) => tick.min(until_fire.max(Duration::from_millis(10))),
        None => tick,
    };
    match engine.store.next_wakeup().await {
        Ok(Some(next)) => {
            let until = from_ms(next) - engine.clock.now();
            match until.to_std() {
                Ok(d) if d > Duration::ZERO => d.min(tick),
                // Due but held (cap, gap, inbox lag): look again after a tick.
                _ => tick,
            }
        }
        Ok(None) => tick,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the next due time");
            tick
        }
    }
}

fn reload(engine: &Engine, path: &std::path::Path) {
    match crate::config::load(path) {
        Ok((mut cfg, warnings)) => {
            for w in &warnings.0 {
                tracing::warn!(problem = %w, "config warning");
            }
            // The database cannot change under a running daemon.
            cfg.daemon.database_url = engine.config().daemon.database_url.clone();
            match engine.replace_config(Arc::new(cfg)) {
                Ok(()) => tracing::info!(config = %path.display(), "SIGHUP: config and templates reloaded"),
                Err(e) => tracing::error!(error = %e, "SIGHUP: new config rejected; keeping the old one"),
            }
        }
        Err(problems) => {
            for p in &problems.0 {
                tracing::error!(problem = %p, "SIGHUP: config invalid; keeping the old one");
            }
        }
    }
}
