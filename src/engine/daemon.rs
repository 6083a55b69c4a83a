//! The `cadence run` loop: pass, then sleep until the next thing is due or
//! something wakes us (an enrollment over the API, a finished send, a reply).
//! SIGHUP reloads config and templates (kept only if valid); SIGTERM and
//! SIGINT stop claiming, let in-flight sends finish, and return.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};

use super::Engine;
use crate::clock::from_ms;

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
    let watchers = spawn_watchers(&engine, stop_rx);
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
        let sleep = next_sleep(&engine, started).await;
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: finishing in-flight sends"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: finishing in-flight sends"); break; }
            _ = hup.recv() => reload(&engine, &config_path),
            _ = engine.wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
    // Stops the watchers and the HTTP API (no new requests; those in
    // flight finish alongside the sends).
    let _ = stop_tx.send(true);
    for w in watchers {
        let _ = w.await;
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
    engine.store.close().await;
    Ok(())
}

/// One IMAP watcher per rep with an inbox. Each wakes the engine when it
/// has acted on a message (a reply may have stopped a due send).
fn spawn_watchers(engine: &Arc<Engine>, stop: tokio::sync::watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
    let cfg = engine.config();
    cfg.reps
        .iter()
        .filter(|r| r.imap.is_some())
        .map(|rep| {
            let config = {
                let e = engine.clone();
                move || e.config()
            };
            let wake = engine.wake.clone();
            let on_event = move |_: &crate::inbox::watch::SyncReport| wake.notify_one();
            tokio::spawn(crate::inbox::watch::watch(
                rep.id.clone(),
                config,
                engine.store.clone(),
                engine.clock.clone(),
                stop.clone(),
                on_event,
            ))
        })
        .collect()
}

/// Until the next scheduled action, but at least as often as
/// `tick_interval` (to notice changes made by other processes, such as a
/// `cadence enroll` from the shell, and work held by caps).
async fn next_sleep(engine: &Engine, started: u64) -> Duration {
    let cfg = engine.config();
    let tick = cfg.daemon.tick_interval.max(Duration::from_millis(100));
    if started > 0 {
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
