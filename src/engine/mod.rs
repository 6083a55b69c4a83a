//! One pass of cadence: resume what is due to resume, claim due sends,
//! render, send, record.
//!
//! The engine owns no timing rules (those are in [`plan`] and
//! [`crate::schedule`]) and no SQL (that is the [`Store`]). It decides, for
//! each due enrollment inside the store's claim transaction, whether it may
//! go now; then sends outside any transaction, one task per email, bounded
//! per rep so that one rep's slow server never holds back another rep.

pub mod agenda;
pub mod daemon;
pub mod explain;
pub mod hygiene;
pub mod inbound;
pub mod plan;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, Semaphore};

use crate::clock::Clock;
use crate::config::{Config, Rep, StepKind};
use crate::domain::{token, TouchKind};
use crate::mailer::{self, Outgoing, RepMailer, SendError};
use crate::store::{Ack, ClaimPolicy, Decision, EnrollmentRow, LeadRow, NewSend, Phase, RepUsage, Store, StoreError};
use crate::templates;
use plan::LeadTime;

/// A daemon that has not heartbeaten for this long is dead (PostgreSQL):
/// its in-flight sends become `send_unknown`, its inbox leases lapse.
pub const INSTANCE_TIMEOUT: chrono::Duration = chrono::Duration::seconds(20);
/// How often a daemon heartbeats and looks for a dead one's sends.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);

/// How many sends one claim transaction takes at most.
const CLAIM_BATCH: usize = 256;
/// How many due rows one claim may look at (held rows included).
const CLAIM_SCAN: usize = 4096;
/// Sends queued per SMTP connection of a rep (claimed, not yet answered by
/// the server), at most. A pass claims again once half of that is left,
/// and what is left must outlast the claim: with 4 per connection the
/// connections were found idle at the end of most claims (about 20 ms for
/// a full batch), waiting for the store. The more are queued, the larger
/// each claim and group commit of acknowledgements, and SQLite's single
/// writer is what limits the rate: 5,400 emails/s with 8, 7,400 with 24,
/// 8,700 with 48 (20 connections, 2 cores). But a daemon killed outright
/// leaves everything queued `send_unknown`, never sent: 24 a connection
/// (96 with the default pool of 4) is the trade.
const QUEUE_PER_CONNECTION: usize = 24;

/// Sends answered by the server but not yet recorded may number this many
/// times the queue before a rep's claims wait for the store. They used to
/// count against the queue itself: half of it was then sends waiting for
/// their group commit, and 9 of 20 connections sat idle (3,700 emails/s;
/// 5,200 once they stopped counting). A kill records them `send_unknown`
/// too, but the server has them: none is lost.
const UNRECORDED_PER_QUEUE: usize = 4;

/// How many sends may be queued for a rep (see [`QUEUE_PER_CONNECTION`]).
fn queue_limit(rep: &Rep) -> usize {
    rep.smtp.pool_size.max(1) * QUEUE_PER_CONNECTION
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Setup(String),
}

/// Counts of what a pass did, for logs and `tick`'s summary.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PassStats {
    pub claimed: u64,
    pub sent: u64,
    pub retried: u64,
    pub failed: u64,
    pub bounced: u64,
    pub unknown: u64,
    pub resumed: u64,
}

/// What the claim hands to the sender for one email.
pub struct SendJob {
    /// Its body is empty until [`SendJob::render_body`].
    outgoing: Outgoing,
    body: Body,
    phase: Phase,
    step: Option<usize>,
}

/// What the send's task renders the body from. The claim holds the store's
/// one write turn, so it renders only the subject, which it records; the
/// body is rendered by the task, beside the next claim (the claim's
/// decisions went from 15% to 7% of a 2,000-send tick's instructions,
/// callgrind). A body that does not render fails that send as a subject
/// would have failed the claim: paused, `send_failed`. The config is the
/// claim's, so the template is the one whose hash the send recorded.
struct Body {
    config: Arc<Config>,
    template: String,
    vars: templates::Vars,
    step_no: i64,
}

impl SendJob {
    fn render_body(&mut self) -> Result<(), SendError> {
        let Body { config, template, vars, step_no } = &self.body;
        let (text, html) = config.templates.render_body(template, vars).map_err(|why| SendError::Local(not_sent(*step_no, &why)))?;
        self.outgoing.text = text;
        self.outgoing.html = html;
        Ok(())
    }
}

/// Why email `step_no` was not sent: its template did not render.
fn not_sent(step_no: i64, why: &templates::RenderError) -> String {
    format!("email {step_no} not sent: {why}")
}

/// Sends in flight, per rep. `queued`: claimed and not yet answered by the
/// SMTP server, the queue a pass tops up (and what a kill would strand).
/// `unrecorded`: not yet recorded, so that shutdown and `tick` can wait for
/// every outcome, and so a store that falls behind holds the claims.
#[derive(Default)]
struct InFlight {
    per_rep: Mutex<HashMap<String, Counts>>,
    idle: Notify,
}

#[derive(Clone, Copy, Default)]
struct Counts {
    queued: usize,
    unrecorded: usize,
}

impl InFlight {
    fn counts(&self, rep: &str) -> Counts {
        self.per_rep.lock().expect("inflight").get(rep).copied().unwrap_or_default()
    }
    fn total(&self) -> usize {
        self.per_rep.lock().expect("inflight").values().map(|c| c.unrecorded).sum()
    }
    fn add(&self, rep: &str) {
        let mut m = self.per_rep.lock().expect("inflight");
        let c = m.entry(rep.to_string()).or_default();
        c.queued += 1;
        c.unrecorded += 1;
    }
    /// The server has answered (or the send failed): the queue has room.
    fn answered(&self, rep: &str) {
        if let Some(c) = self.per_rep.lock().expect("inflight").get_mut(rep) {
            c.queued -= 1;
        }
    }
    /// The outcome is recorded.
    fn recorded(&self, rep: &str) {
        let mut m = self.per_rep.lock().expect("inflight");
        if let Some(c) = m.get_mut(rep) {
            c.unrecorded -= 1;
        }
        if m.values().all(|c| c.unrecorded == 0) {
            self.idle.notify_waiters();
        }
    }
}

impl Counts {
    /// How many more sends a rep may have claimed, with `limit` its queue:
    /// no more waiting for SMTP than its connections can carry, and none
    /// while the store is that far behind in recording outcomes.
    fn room(self, limit: usize) -> usize {
        limit.saturating_sub(self.queued).min((UNRECORDED_PER_QUEUE * limit).saturating_sub(self.unrecorded))
    }
}

/// Group commit of acknowledgements. Sends that finish while another
/// batch is being written queue up, and the next writer records them all in
/// one transaction: one commit (and, on SQLite, one turn of the write lock)
/// for many emails instead of one each. Each email is still recorded only
/// after the server's final answer, and its task waits for the commit.
#[derive(Default)]
struct AckQueue {
    pending: Mutex<Vec<PendingAck>>,
    writer: tokio::sync::Mutex<()>,
}

struct PendingAck {
    now: i64,
    send_id: i64,
    ack: Ack,
    done: tokio::sync::oneshot::Sender<Result<bool, String>>,
}

impl AckQueue {
    async fn ack(&self, store: &Store, now: i64, send_id: i64, ack: Ack) -> Result<bool, StoreError> {
        let (done, mut result) = tokio::sync::oneshot::channel();
        self.pending.lock().expect("ack queue").push(PendingAck { now, send_id, ack, done });
        let writer = self.writer.lock().await;
        // A writer before us may have taken ours along.
        if let Ok(r) = result.try_recv() {
            return r.map_err(StoreError::Data);
        }
        let batch = std::mem::take(&mut *self.pending.lock().expect("ack queue"));
        let items: Vec<(i64, i64, &Ack)> = batch.iter().map(|p| (p.now, p.send_id, &p.ack)).collect();
        match store.ack_many(&items).await {
            Ok(oks) => {
                for (p, ok) in batch.into_iter().zip(oks) {
                    let _ = p.done.send(Ok(ok));
                }
            }
            // One failing acknowledgement must not sink the others.
            Err(_) => {
                for p in batch {
                    let r = store.ack(p.now, p.send_id, &p.ack).await.map_err(|e| e.to_string());
                    let _ = p.done.send(r);
                }
            }
        }
        drop(writer);
        match result.await {
            Ok(r) => r.map_err(StoreError::Data),
            Err(_) => Err(StoreError::Data("the acknowledgement was dropped".into())),
        }
    }
}

struct RepSender {
    mailer: Arc<RepMailer>,
    permits: Arc<Semaphore>,
}

/// The engine: config, store, clock, and one mailer per rep.
pub struct Engine {
    config: RwLock<Arc<Config>>,
    pub store: Store,
    pub clock: Clock,
    secret: Vec<u8>,
    senders: RwLock<HashMap<String, Arc<RepSender>>>,
    inflight: Arc<InFlight>,
    acks: AckQueue,
    stats: Mutex<PassStats>,
    /// Woken by enrollments, replies and finished sends.
    pub wake: Arc<Notify>,
}

impl Engine {
    pub fn new(config: Arc<Config>, store: Store, clock: Clock, secret: Vec<u8>) -> Result<Arc<Engine>, EngineError> {
        let senders = build_senders(&config)?;
        Ok(Arc::new(Engine {
            config: RwLock::new(config),
            store,
            clock,
            secret,
            senders: RwLock::new(senders),
            inflight: Arc::new(InFlight::default()),
            acks: AckQueue::default(),
            stats: Mutex::new(PassStats::default()),
            wake: Arc::new(Notify::new()),
        }))
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.read().expect("config lock").clone()
    }

    /// Swaps in a new, already validated config (SIGHUP).
    pub fn replace_config(&self, config: Arc<Config>) -> Result<(), EngineError> {
        let senders = build_senders(&config)?;
        *self.senders.write().expect("senders lock") = senders;
        *self.config.write().expect("config lock") = config;
        self.wake.notify_one();
        Ok(())
    }

    /// Marks sends left `sending` by a dead process as `send_unknown`; they
    /// are never sent again, and their enrollments move on.
    pub async fn recover(&self) -> Result<usize, EngineError> {
        let cfg = self.config();
        // Liveness is a matter of real time, whatever clock the engine reads.
        let alive_since = (Clock::System.now() - INSTANCE_TIMEOUT).timestamp_millis();
        let orphans = self.store.orphaned_sends(alive_since).await?;
        let now = self.clock.now();
        let mut n = 0;
        for s in orphans {
            let advance = match (s.enrollment_id, s.lead_id) {
                (Some(eid), Some(lid)) => {
                    let e = self.store.enrollment(eid).await?;
                    let lead = self.store.lead_by_id(lid).await?;
                    match (e, lead) {
                        (Some(e), Some(lead)) => cfg.sequence(&e.sequence).map(|seq| {
                            let lt = LeadTime::of(&cfg, &lead);
                            let phase = if s.kind == "last_chance" { Phase::LastChance } else { Phase::Step };
                            let step = s.step.map(|x| x as usize).filter(|_| phase == Phase::Step);
                            let sent = plan::SentEmail {
                                phase,
                                step,
                                at: now,
                                message_id: &s.message_id,
                                subject: s.subject.as_deref().unwrap_or(""),
                            };
                            plan::advance_after_send(seq, &lt, &e, sent)
                        }),
                        _ => None,
                    }
                }
                _ => None,
            };
            let ack = match advance {
                Some(advance) => {
                    Ack::Unknown { error: "the daemon stopped while this email was being sent; it is not sent again".into(), advance }
                }
                None => Ack::Failed { error: "the daemon stopped while this email was being sent".into() },
            };
            if self.store.adopt(s.id).await? && self.store.ack(now.timestamp_millis(), s.id, &ack).await? {
                n += 1;
            }
        }
        if n > 0 {
            tracing::warn!(count = n, "sends interrupted by a stop are marked send_unknown and will not be resent");
        }
        Ok(n)
    }

    /// Resumes enrollments whose automatic pause ended, then claims and
    /// starts every send that is due now. Returns how many sends started.
    pub async fn pass(self: &Arc<Self>) -> Result<u64, EngineError> {
        let cfg = self.config();
        let now = self.clock.now();
        // No rep has half its queue free: claim later, in one batch, rather
        // than a few sends per finished one (each answered send wakes the
        // daemon; this answers without a query).
        if !cfg.reps.is_empty() && cfg.reps.iter().all(|r| self.inflight.counts(&r.id).room(queue_limit(r)) < queue_limit(r) / 2) {
            return Ok(0);
        }
        self.resume_due(&cfg, now).await?;
        let may_send = self.may_send(&cfg, now).await?;
        let mut started = 0;
        loop {
            let mut policy = Policy { engine: self, cfg: &cfg, now, may_send: may_send.clone(), claimed: HashMap::new() };
            let claimed = self.store.claim(now.timestamp_millis(), CLAIM_BATCH, CLAIM_SCAN, &mut policy).await?;
            if claimed.is_empty() {
                break;
            }
            let count = claimed.len();
            for c in claimed {
                self.stats.lock().expect("stats").claimed += 1;
                started += 1;
                self.spawn_send(c.send_id, c.enrollment, c.lead, c.payload);
            }
            if count < CLAIM_BATCH {
                break;
            }
        }
        if started > 0 {
            tracing::debug!(started, "sends claimed");
        }
        Ok(started)
    }

    /// Which reps may send: not those whose inbox has not synced within
    /// `max_inbox_lag` (so nothing goes out after a reply that is sitting
    /// unread in the inbox), nor those paused for their bounce rate.
    async fn may_send(&self, cfg: &Config, now: DateTime<Utc>) -> Result<HashMap<String, bool>, EngineError> {
        let lag = chrono::Duration::from_std(cfg.daemon.max_inbox_lag).unwrap_or_default();
        let mut ok = HashMap::new();
        for rep in cfg.reps.iter().filter(|r| r.imap.is_some()) {
            let synced = self.store.inbox_synced_at(&rep.id).await?;
            ok.insert(rep.id.clone(), synced.is_some_and(|t| now - crate::clock::from_ms(t) <= lag));
        }
        // A rep whose recent bounce rate is too high stops sending, to
        // protect the sender's reputation (DESIGN 5.2).
        let since = (now - chrono::Duration::hours(24)).timestamp_millis();
        for b in self.store.rep_bounces_if_any(since).await? {
            if crate::report::bounce_paused(cfg, &b) {
                tracing::warn!(rep = %b.rep, sends = b.sends, bounces = b.bounces, "rep paused: bounce rate over daemon.bounce_pause_rate");
                ok.insert(b.rep.clone(), false);
            }
        }
        Ok(ok)
    }

    /// One-shot: passes until nothing more is due now, waiting for every
    /// send to finish (`cadence tick`).
    pub async fn run_until_idle(self: &Arc<Self>) -> Result<PassStats, EngineError> {
        loop {
            let started = self.pass().await?;
            self.wait_idle().await;
            if started == 0 {
                break;
            }
        }
        Ok(std::mem::take(&mut *self.stats.lock().expect("stats")))
    }

    /// Whether any send is in flight.
    pub fn sending(&self) -> bool {
        self.inflight.total() > 0
    }

    /// Waits until no send is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.inflight.idle.notified();
            if self.inflight.total() == 0 {
                return;
            }
            notified.await;
        }
    }

    async fn resume_due(&self, cfg: &Config, now: DateTime<Utc>) -> Result<(), EngineError> {
        for e in self.store.due_resumes(now.timestamp_millis(), 1000).await? {
            let (due, next) = self.reschedule_on_resume(cfg, &e, now).await?;
            if self.store.resume(now.timestamp_millis(), e.id, due, next, "pause ended").await? {
                self.stats.lock().expect("stats").resumed += 1;
            }
        }
        Ok(())
    }

    /// When a resumed enrollment acts next: its pending due time, or now if
    /// that has passed, moved into the window.
    async fn reschedule_on_resume(
        &self,
        cfg: &Config,
        e: &EnrollmentRow,
        now: DateTime<Utc>,
    ) -> Result<(Option<i64>, Option<i64>), EngineError> {
        let Some(lead) = self.store.lead_by_id(e.lead_id).await? else { return Ok((None, None)) };
        let Some(seq) = cfg.sequence(&e.sequence) else { return Ok((None, None)) };
        Ok(plan::resume_schedule(seq, &LeadTime::of(cfg, &lead), e, now))
    }

    fn spawn_send(self: &Arc<Self>, send_id: i64, e: EnrollmentRow, lead: LeadRow, mut job: SendJob) {
        let sender = self.senders.read().expect("senders lock").get(&e.rep).cloned();
        self.inflight.add(&e.rep);
        let engine = self.clone();
        // Boxed: the send's future is kilobytes (the SMTP exchange's state),
        // and tokio copies a task's future by value several times between
        // spawn and completion (12% of dispatch's instructions, callgrind).
        tokio::spawn(Box::pin(async move {
            let rep = e.rep.clone();
            let result = async {
                job.render_body()?;
                let s = sender.as_ref().ok_or_else(|| SendError::Local(format!("rep `{rep}` is not configured")))?;
                // Built before the connection is taken, so that the
                // connection never waits for a build.
                let prepared = s.mailer.prepare(&job.outgoing)?;
                let _permit = s.permits.acquire().await.expect("semaphore open");
                s.mailer.send_prepared(&prepared).await
            }
            .await;
            tracing::debug!(send_id, rep = %rep, ok = result.is_ok(), "send answered");
            // The queue has room now; the pass may top it up while this
            // outcome waits for its group commit.
            engine.inflight.answered(&rep);
            engine.wake.notify_one();
            if let Err(err) = engine.finish_send(send_id, &e, &lead, &job, result).await {
                tracing::error!(send_id, error = %err, "could not record the outcome of a send; it stays `sending` and becomes send_unknown at restart");
            }
            engine.inflight.recorded(&rep);
            engine.wake.notify_one();
        }));
    }

    async fn finish_send(
        &self,
        send_id: i64,
        e: &EnrollmentRow,
        lead: &LeadRow,
        job: &SendJob,
        result: Result<(), SendError>,
    ) -> Result<(), EngineError> {
        let cfg = self.config();
        let now = self.clock.now();
        let lt = LeadTime::of(&cfg, lead);
        let seq = cfg.sequence(&e.sequence);
        let advance = |cfg_seq: &crate::config::Sequence| {
            let sent = plan::SentEmail {
                phase: job.phase,
                step: job.step,
                at: now,
                message_id: &job.outgoing.message_id,
                subject: &job.outgoing.subject,
            };
            plan::advance_after_send(cfg_seq, &lt, e, sent)
        };
        let max_attempts = cfg.rep(&e.rep).map_or(5, |r| r.smtp.max_attempts);
        let mut stats = PassStats::default();
        let ack = match (&result, seq) {
            (Ok(()), Some(seq)) => {
                stats.sent += 1;
                let touch = if job.phase == Phase::LastChance { TouchKind::LastChance } else { TouchKind::EmailSent };
                Ack::Sent { touch, advance: advance(seq) }
            }
            (Err(SendError::Unknown(msg)), Some(seq)) => {
                stats.unknown += 1;
                Ack::Unknown { error: msg.clone(), advance: advance(seq) }
            }
            (Err(SendError::Transient(msg)), Some(seq)) if e.attempts + 1 < i64::from(max_attempts) => {
                stats.retried += 1;
                let attempts = e.attempts + 1;
                let retry_at = now + plan::retry_delay(attempts, rand::random::<f64>());
                let next = lt.opening(seq, retry_at).map(|t| t.timestamp_millis());
                tracing::warn!(lead = %lead.email, attempt = attempts, error = %msg, "temporary SMTP failure; will retry");
                Ack::Retry { error: msg.clone(), next_at: next, attempts }
            }
            (Err(SendError::Permanent { code, message, recipient: true }), _) => {
                stats.bounced += 1;
                Ack::Bounced { error: format!("{code} {message}") }
            }
            (Ok(()), None) => {
                stats.sent += 1;
                Ack::Failed { error: format!("sent, but sequence `{}` no longer exists: the enrollment is paused", e.sequence) }
            }
            (Err(err), _) => {
                stats.failed += 1;
                tracing::warn!(lead = %lead.email, error = %err, "send failed");
                Ack::Failed { error: err.to_string() }
            }
        };
        use crate::api::metrics::{record_send, SendOutcome};
        let outcome = match &ack {
            Ack::Sent { .. } => SendOutcome::Sent,
            Ack::Unknown { .. } => SendOutcome::Unknown,
            Ack::Retry { .. } => SendOutcome::Retried,
            Ack::Failed { .. } => SendOutcome::Failed,
            Ack::Bounced { .. } => SendOutcome::Bounced,
        };
        self.acks.ack(&self.store, now.timestamp_millis(), send_id, ack).await?;
        record_send(&e.rep, outcome);
        let mut s = self.stats.lock().expect("stats");
        s.sent += stats.sent;
        s.retried += stats.retried;
        s.failed += stats.failed;
        s.bounced += stats.bounced;
        s.unknown += stats.unknown;
        Ok(())
    }

    /// The signed unsubscribe link for a lead.
    pub fn unsubscribe_url(&self, cfg: &Config, lead_id: i64) -> String {
        format!("{}/unsubscribe/{}", cfg.daemon.public_url, token::sign(&self.secret, lead_id))
    }

    pub fn secret(&self) -> &[u8] {
        &self.secret
    }
}

fn build_senders(cfg: &Config) -> Result<HashMap<String, Arc<RepSender>>, EngineError> {
    cfg.reps
        .iter()
        .map(|rep| {
            let mailer = RepMailer::new(rep, &cfg.root).map_err(|e| EngineError::Setup(format!("rep `{}`: {e}", rep.id)))?;
            let permits = Arc::new(Semaphore::new(rep.smtp.pool_size.max(1)));
            Ok((rep.id.clone(), Arc::new(RepSender { mailer: Arc::new(mailer), permits })))
        })
        .collect()
}

/// The claim-time decisions, made inside the store's transaction.
struct Policy<'a> {
    engine: &'a Engine,
    cfg: &'a Arc<Config>,
    now: DateTime<Utc>,
    may_send: HashMap<String, bool>,
    /// Sends this claim has taken so far, per rep: they are not in flight
    /// yet, but count against the rep's allowance all the same, or one claim
    /// would commit a whole batch as `sending` (and a crash would turn all
    /// of it into `send_unknown`).
    claimed: HashMap<String, usize>,
}

impl Policy<'_> {
    fn rep_blocked(&self, rep: &Rep, usage: &RepUsage) -> Option<bool> {
        if usage.today >= i64::from(rep.daily_limit) {
            return Some(true);
        }
        if let Some(last) = usage.last_claim_at {
            let gap = chrono::Duration::from_std(rep.min_gap).unwrap_or_default();
            if !gap.is_zero() && plan::at(last) + gap > self.now {
                return Some(true);
            }
        }
        // Never more queued for a rep than its pool can carry: a slow server
        // holds only its own rep.
        let mut counts = self.engine.inflight.counts(&rep.id);
        let claimed = self.claimed.get(&rep.id).copied().unwrap_or(0);
        counts.queued += claimed;
        counts.unrecorded += claimed;
        if counts.room(queue_limit(rep)) == 0 {
            return Some(true);
        }
        if !self.may_send.get(&rep.id).copied().unwrap_or(true) {
            return Some(true);
        }
        None
    }

    /// The task of step `i`, due when its step fell due (the claim may run
    /// later than that), timing out `task_timeout` after.
    fn create_task(
        &self,
        seq: &crate::config::Sequence,
        rep: &Rep,
        e: &EnrollmentRow,
        lead: &LeadRow,
        lt: &LeadTime,
        i: usize,
    ) -> Decision<SendJob> {
        let StepKind::Task { task, instructions, timeout } = &seq.steps[i].kind else {
            return Decision::Fail(format!("step {} is not a task", i + 1));
        };
        let url = self.engine.unsubscribe_url(self.cfg, lead.id);
        let ctx = render_context(lead, rep, &url, i + 1);
        let text = match self.cfg.templates.render_text(instructions, &ctx) {
            Ok(t) => t,
            Err(why) => return Decision::Fail(format!("task {} not created: {why}", i + 1)),
        };
        let due = e.next_at.map(plan::at).unwrap_or(self.now).min(self.now);
        Decision::CreateTask(crate::store::NewTask {
            step: i as i64,
            kind: task.clone(),
            instructions: text.trim_end().to_string(),
            due_at: due.timestamp_millis(),
            timeout_at: plan::task_timeout(lt, *timeout, due).map(|t| t.timestamp_millis()),
        })
    }
}

impl ClaimPolicy for Policy<'_> {
    type Payload = SendJob;

    fn day_start(&self, rep: &str) -> i64 {
        let tz = self.cfg.rep(rep).map_or(self.cfg.daemon.timezone, |r| r.timezone);
        plan::day_start(self.now, tz).timestamp_millis()
    }

    fn has_domain_cap(&self, rep: &str) -> bool {
        self.cfg.rep(rep).is_some_and(|r| r.domain_daily_limit.is_some())
    }

    fn decide(&mut self, e: &EnrollmentRow, lead: &LeadRow, usage: &RepUsage, domain_today: i64) -> Decision<SendJob> {
        let Some(seq) = self.cfg.sequence(&e.sequence) else {
            return Decision::Fail(format!("sequence `{}` is no longer configured", e.sequence));
        };
        let Some(rep) = self.cfg.rep(&e.rep) else {
            return Decision::Fail(format!("rep `{}` is no longer configured", e.rep));
        };
        let (phase, step) = plan::effective_phase(seq, e);
        if phase == Phase::Archive {
            return match seq.archive_after {
                Some(_) => Decision::Archive(format!("no reply after {} emails; cadence limit reached", e.touches)),
                None => Decision::Complete("sequence finished".into()),
            };
        }
        let lt = LeadTime::of(self.cfg, lead);
        match (phase, step) {
            // Manual work: no send window (the due time is already inside
            // one), no caps.
            (Phase::Task, _) => return Decision::TaskTimeout(plan::advance_after_task(seq, &lt, e, self.now)),
            (Phase::TaskDue, Some(i)) => return self.create_task(seq, rep, e, lead, &lt, i),
            _ => {}
        }
        if !crate::schedule::is_open(self.now, &seq.send_window, lt.tz, lt.calendar) {
            return match lt.opening(seq, self.now) {
                Some(t) => Decision::Defer(t.timestamp_millis()),
                None => Decision::Fail("the send window never opens".into()),
            };
        }
        if let Some(rep_full) = self.rep_blocked(rep, usage) {
            return Decision::Hold { rep_full };
        }
        if rep.domain_daily_limit.is_some_and(|cap| domain_today >= i64::from(cap)) {
            return Decision::Hold { rep_full: false };
        }
        let (template, variant, new_thread, step_no) = match (phase, step) {
            (Phase::Step, Some(i)) => match &seq.steps[i].kind {
                StepKind::Email { templates, new_thread } => {
                    let v = pick_variant(templates, lead.id);
                    (v.template.clone(), (templates.len() > 1).then(|| v.template.clone()), *new_thread, i as i64 + 1)
                }
                StepKind::Task { .. } => unreachable!("effective_phase gives task steps the task_due phase"),
            },
            _ => match &seq.last_chance {
                Some(lc) => (lc.template.clone(), None, false, e.step + 1),
                None => unreachable!("effective_phase goes to archive without a last chance"),
            },
        };
        // Signed once: the body's link and the List-Unsubscribe header.
        let unsubscribe_url = self.engine.unsubscribe_url(self.cfg, lead.id);
        let vars = templates::Vars::from(render_context(lead, rep, &unsubscribe_url, step_no as usize));
        let threaded = !new_thread && !e.thread_refs.is_empty();
        let subject = match (&e.thread_subject, threaded) {
            (Some(s), true) => reply_subject(s),
            _ => match self.cfg.templates.render_subject(&template, &vars) {
                Ok(s) => s,
                Err(why) => return Decision::Fail(not_sent(step_no, &why)),
            },
        };
        let refs = if threaded { e.refs() } else { Vec::new() };
        let message_id = mailer::new_message_id(rep.email.domain(), self.now);
        let to = crate::domain::EmailAddress::parse(&lead.email).expect("stored addresses are valid");
        let outgoing = Outgoing {
            from_name: rep.name.clone(),
            from: rep.email.clone(),
            to_name: lead.full_name(),
            to,
            subject: subject.clone(),
            text: String::new(),
            html: None,
            message_id: message_id.clone(),
            in_reply_to: refs.last().cloned(),
            references: refs,
            unsubscribe_mailto: format!("mailto:{}?subject=unsubscribe", rep.email),
            unsubscribe_url,
            date: self.now,
        };
        let body = Body { config: self.cfg.clone(), template: template.clone(), vars, step_no };
        let send = NewSend {
            kind: if phase == Phase::LastChance { "last_chance" } else { "step" },
            step: step.map_or(e.step, |i| i as i64),
            template_hash: self.cfg.templates.hash(&template).map(str::to_string),
            template,
            sequence_hash: Some(seq.hash.clone()),
            variant,
            recipient: lead.email.clone(),
            recipient_domain: lead.domain.clone(),
            message_id,
            subject,
        };
        *self.claimed.entry(rep.id.clone()).or_default() += 1;
        Decision::Send(send, SendJob { outgoing, body, phase, step })
    }
}

/// The variables a template sees for this lead and rep.
pub fn render_context(lead: &LeadRow, rep: &Rep, unsubscribe_url: &str, step: usize) -> serde_json::Value {
    let fields = lead.custom_fields();
    let vars = templates::LeadVars {
        email: &lead.email,
        first_name: lead.first_name.as_deref(),
        last_name: lead.last_name.as_deref(),
        company: lead.company.as_deref(),
        title: lead.title.as_deref(),
        value: lead.value,
        fields: &fields,
    };
    templates::lead_context(&vars, &rep.into(), unsubscribe_url, step)
}

/// `Re: ` once, however many times the thread has been answered.
pub fn reply_subject(s: &str) -> String {
    let t = s.trim();
    if t.len() >= 3 && t[..3].eq_ignore_ascii_case("re:") {
        t.to_string()
    } else {
        format!("Re: {t}")
    }
}

/// A lead's A/B variant: deterministic in the lead id (stable across
/// restarts and instances), proportional to the weights.
pub fn pick_variant(variants: &[crate::config::Variant], lead_id: i64) -> &crate::config::Variant {
    let total: u64 = variants.iter().map(|v| u64::from(v.weight.max(1))).sum();
    // SplitMix64 of the id spreads consecutive ids evenly.
    let mut z = (lead_id as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let mut pick = z % total.max(1);
    for v in variants {
        let w = u64::from(v.weight.max(1));
        if pick < w {
            return v;
        }
        pick -= w;
    }
    &variants[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_counts_sends_awaiting_the_server_and_bounds_those_awaiting_the_store() {
        let limit = 96;
        assert_eq!(Counts { queued: 0, unrecorded: 0 }.room(limit), 96);
        // Answered sends waiting for their group commit leave the queue free.
        assert_eq!(Counts { queued: 10, unrecorded: 200 }.room(limit), 86);
        assert_eq!(Counts { queued: 96, unrecorded: 96 }.room(limit), 0);
        // A store that far behind holds the claims whatever the queue.
        assert_eq!(Counts { queued: 0, unrecorded: 4 * 96 - 5 }.room(limit), 5);
        assert_eq!(Counts { queued: 0, unrecorded: 4 * 96 + 1 }.room(limit), 0);
    }

    #[test]
    fn variants_are_stable_and_follow_the_weights_over_10000_leads() {
        use crate::config::Variant;
        let variants = [Variant { template: "intro-a".into(), weight: 1 }, Variant { template: "intro-b".into(), weight: 3 }];
        let mut b = 0i64;
        for id in 1..=10_000 {
            let v = pick_variant(&variants, id);
            assert_eq!(v.template, pick_variant(&variants, id).template, "lead {id}");
            if v.template == "intro-b" {
                b += 1;
            }
        }
        // Expected 7,500; one standard deviation is about 43.
        assert!((b - 7_500).abs() < 175, "intro-b got {b} of 10,000 at weight 3:1");
        // A pure function of the lead id: the same on every instance and
        // after every restart. These values pin it, so a change of the
        // hash (which would re-assign running tests) fails here.
        let picks: Vec<&str> = (1..=8).map(|id| pick_variant(&variants, id).template.as_str()).collect();
        assert_eq!(picks, PINNED);
        let even = [Variant { template: "a".into(), weight: 1 }, Variant { template: "b".into(), weight: 1 }];
        let a = (1..=10_000).filter(|id| pick_variant(&even, *id).template == "a").count() as i64;
        assert!((a - 5_000).abs() < 200, "a got {a} of 10,000 at 1:1");
    }

    const PINNED: [&str; 8] = ["intro-b", "intro-b", "intro-b", "intro-b", "intro-b", "intro-a", "intro-b", "intro-b"];

    #[test]
    fn reply_subject_adds_re_once() {
        assert_eq!(reply_subject("Quick question"), "Re: Quick question");
        assert_eq!(reply_subject("RE: Quick question"), "RE: Quick question");
    }
}
