//! The operations a user asks for, shared by the command line and the HTTP
//! API so both behave the same: validation, refusals and touchpoints happen
//! here, printing and status codes at the edges.

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Config;
use crate::domain::{EmailAddress, EnrollmentState, FieldError, LeadInput, TouchKind};
use crate::engine::plan::{self, LeadTime};
use crate::store::{
    EnrollPlan, Enrolled, LeadRow, NewTouch, Refusal, Store, StoreError, TaskClose, TaskEnd, TaskFilter, TaskRow, Transition,
};

/// Why an operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// Understood but not accepted; nothing changed (exit 3, HTTP 409).
    #[error("{0}")]
    Refused(String),
    /// A field is invalid (exit 3, HTTP 422).
    #[error("{0}")]
    Invalid(#[from] FieldError),
    /// Something named does not exist (exit 2 / HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The request names something the config does not have (exit 2, HTTP 422).
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Refusal> for OpError {
    fn from(r: Refusal) -> Self {
        OpError::Refused(r.to_string())
    }
}

/// What an operation needs: the config, the database and the clock.
#[derive(Clone)]
pub struct Ctx {
    pub cfg: Arc<Config>,
    pub store: Store,
    pub clock: Clock,
}

impl Ctx {
    /// The rep to enroll for: the one asked for, else the only one.
    pub fn pick_rep(&self, rep: Option<&str>) -> Result<Option<String>, OpError> {
        match rep {
            Some(r) => match self.cfg.rep(r) {
                Some(_) => Ok(Some(r.to_string())),
                None => Err(OpError::Usage(format!("no rep `{r}` in {} (known: {})", self.cfg.source.display(), self.rep_ids()))),
            },
            None if self.cfg.reps.len() == 1 => Ok(Some(self.cfg.reps[0].id.clone())),
            None => Ok(None),
        }
    }

    fn rep_ids(&self) -> String {
        self.cfg.reps.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", ")
    }

    fn check_sequence(&self, sequence: &str) -> Result<(), OpError> {
        if self.cfg.sequence(sequence).is_none() {
            let known = self.cfg.sequences.keys().cloned().collect::<Vec<_>>().join(", ");
            return Err(OpError::Usage(format!("no sequence `{sequence}` (known: {known})")));
        }
        Ok(())
    }

    /// Enrolls many leads at once (one transaction); each gets its outcome.
    pub async fn enroll_many(
        &self,
        inputs: &[LeadInput],
        sequence: &str,
        rep: Option<&str>,
    ) -> Result<Vec<Result<Enrolled, Refusal>>, OpError> {
        self.check_sequence(sequence)?;
        let explicit_rep = rep.is_some();
        let rep = self.pick_rep(rep)?;
        // Without --rep and with several reps, an existing lead keeps its
        // owner; a new lead needs one.
        let fallback = rep.clone().unwrap_or_default();
        let cfg = self.cfg.clone();
        let seq = cfg.sequence(sequence).expect("checked");
        let now = self.clock.now();
        let schedule = |lead: &LeadRow| plan::first_schedule(seq, &LeadTime::of(&cfg, lead), now);
        let rank = |s: &str| cfg.stage_rank(s);
        let first_stage = cfg.stages.first().cloned().unwrap_or_else(|| "prospecting".into());
        let plan = EnrollPlan {
            sequence,
            rep: &fallback,
            rep_overrides_owner: explicit_rep,
            first_stage: &first_stage,
            enroll_stage: seq.stage.as_deref(),
            stage_rank: &rank,
            schedule: &schedule,
        };
        if rep.is_none() {
            return Err(OpError::Usage(format!("several reps are configured ({}): say which with --rep", self.rep_ids())));
        }
        Ok(self.store.enroll_batch(now.timestamp_millis(), inputs, &plan).await?)
    }

    pub async fn enroll(&self, input: &LeadInput, sequence: &str, rep: Option<&str>) -> Result<Enrolled, OpError> {
        if input.email.is_none() {
            return Err(OpError::Invalid(FieldError::Invalid { field: "email".into(), message: "an email address is required".into() }));
        }
        let mut out = self.enroll_many(std::slice::from_ref(input), sequence, rep).await?;
        Ok(out.pop().expect("one result")?)
    }

    pub async fn lead(&self, email: &str) -> Result<LeadRow, OpError> {
        self.store.lead_by_email(email).await?.ok_or_else(|| OpError::NotFound(format!("no lead {}", email.trim())))
    }

    pub async fn pause(&self, email: &str) -> Result<(), OpError> {
        let lead = self.lead(email).await?;
        let now = self.clock.now_ms();
        let t = Transition {
            from: &[EnrollmentState::Active],
            to: EnrollmentState::Paused,
            next_at: None,
            paused_until: None,
            touch: TouchKind::Paused,
            detail: Some("paused by hand"),
        };
        match self.store.transition(now, lead.id, &t).await? {
            Some(_) => Ok(()),
            None => Err(OpError::Refused(format!("{} has no active enrollment to pause", lead.email))),
        }
    }

    pub async fn resume(&self, email: &str) -> Result<Option<i64>, OpError> {
        let lead = self.lead(email).await?;
        let Some(e) = self.store.current_enrollment(lead.id).await?.filter(|e| e.state() == EnrollmentState::Paused) else {
            return Err(OpError::Refused(format!("{} has no paused enrollment to resume", lead.email)));
        };
        let now = self.clock.now();
        // The daemon's own rescheduling rule, so a resumed lead is timed like
        // any other.
        let lt = LeadTime::of(&self.cfg, &lead);
        let (due, next) = match self.cfg.sequence(&e.sequence) {
            // By hand: now, not at the end of an automatic pause.
            Some(seq) => plan::resume_schedule(seq, &lt, &crate::store::EnrollmentRow { paused_until: None, ..e.clone() }, now),
            None => return Err(OpError::Refused(format!("sequence `{}` is no longer configured", e.sequence))),
        };
        self.store.resume(now.timestamp_millis(), e.id, due, next, "resumed by hand").await?;
        Ok(next)
    }

    pub async fn unenroll(&self, email: &str) -> Result<(), OpError> {
        let lead = self.lead(email).await?;
        let now = self.clock.now_ms();
        let t = Transition {
            from: &[EnrollmentState::Active, EnrollmentState::Paused],
            to: EnrollmentState::Completed,
            next_at: None,
            paused_until: None,
            touch: TouchKind::Unenrolled,
            detail: Some("unenrolled by hand"),
        };
        match self.store.transition(now, lead.id, &t).await? {
            Some(_) => Ok(()),
            None => Err(OpError::Refused(format!("{} is not enrolled in any sequence", lead.email))),
        }
    }

    pub async fn stage(&self, email: &str, stage: &str) -> Result<Option<String>, OpError> {
        if !self.cfg.is_stage(stage) {
            return Err(OpError::Usage(format!("unknown stage `{stage}` (stages: {}, won, lost)", self.cfg.stages.join(", "))));
        }
        let lead = self.lead(email).await?;
        let now = self.clock.now_ms();
        let old = self.store.set_stage(now, lead.id, stage, lead.owner.as_deref(), None).await?;
        // A won or lost deal gets no more sequence emails.
        if stage == "won" || stage == "lost" {
            let detail = format!("the lead moved to {stage}");
            let t = Transition {
                from: &[EnrollmentState::Active, EnrollmentState::Paused],
                to: EnrollmentState::Completed,
                next_at: None,
                paused_until: None,
                touch: TouchKind::Unenrolled,
                detail: Some(&detail),
            };
            self.store.transition(now, lead.id, &t).await?;
        }
        Ok(old)
    }

    pub async fn note(&self, email: &str, kind: TouchKind, text: &str) -> Result<(), OpError> {
        crate::domain::check_field("text", text).or_else(|e| match e {
            // Notes may span lines; other control characters are refused.
            FieldError::Control { .. } if !text.chars().any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t') => Ok(()),
            e => Err(e),
        })?;
        let lead = self.lead(email).await?;
        let e = self.store.current_enrollment(lead.id).await?;
        let now = self.clock.now_ms();
        self.store
            .add_touch(
                now,
                NewTouch {
                    lead_id: lead.id,
                    enrollment_id: e.map(|e| e.id),
                    kind: Some(kind),
                    at: now,
                    rep: lead.owner.as_deref(),
                    detail: Some(text),
                    ..Default::default()
                },
            )
            .await?;
        Ok(())
    }

    /// Suppresses an address or `@domain`; returns how many enrollments stopped.
    pub async fn suppress(&self, target: &str, reason: &str) -> Result<u64, OpError> {
        let pattern = match target.trim().strip_prefix('@') {
            Some(domain) => {
                // Validate the domain through a throwaway address.
                EmailAddress::parse(&format!("x@{domain}"))
                    .map_err(|e| FieldError::Invalid { field: "domain".into(), message: e.to_string() })?;
                format!("@{}", domain.to_lowercase())
            }
            None => {
                EmailAddress::parse(target).map_err(|e| FieldError::Invalid { field: "email".into(), message: e.to_string() })?.to_string()
            }
        };
        Ok(self.store.suppress(self.clock.now_ms(), &pattern, reason, EnrollmentState::Unsubscribed).await?)
    }
}

impl Ctx {
    /// Open tasks, oldest due first: one rep's (or everyone's), optionally
    /// only those still open `[report] overdue_after` past their due time.
    pub async fn tasks(&self, rep: Option<&str>, overdue: bool) -> Result<Vec<TaskRow>, OpError> {
        if let Some(r) = rep {
            self.pick_rep(Some(r))?;
        }
        let due_before = overdue.then(|| self.overdue_cutoff());
        Ok(self.store.open_tasks(&TaskFilter { rep: rep.map(str::to_string), due_before }).await?)
    }

    /// Open tasks due before this are overdue.
    pub fn overdue_cutoff(&self) -> i64 {
        (self.clock.now() - self.cfg.report.overdue_after.approx()).timestamp_millis()
    }

    /// Marks a task done (with an optional outcome note) or skipped, and
    /// moves its enrollment on: the next step's wait counts from now. A done
    /// call is logged as a `call` touchpoint, other done tasks as
    /// `task_done`, a skip as `task_skipped`. `only_rep` hides other reps'
    /// tasks (the API's rep tokens).
    pub async fn finish_task(&self, id: i64, end: TaskEnd, note: Option<&str>, only_rep: Option<&str>) -> Result<TaskRow, OpError> {
        let not_found = || OpError::NotFound(format!("no task {id}"));
        let task = self.store.task(id).await?.filter(|t| only_rep.is_none_or(|r| r == t.rep)).ok_or_else(not_found)?;
        if task.state != "open" {
            return Err(OpError::Refused(format!("task {id} is already {}", task.state.replace('_', " "))));
        }
        let note = note.map(str::trim).filter(|n| !n.is_empty());
        if let Some(n) = note {
            crate::domain::check_field("note", n).or_else(|e| match e {
                FieldError::Control { .. } if !n.chars().any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t') => Ok(()),
                e => Err(e),
            })?;
        }
        let e = self.store.enrollment(task.enrollment_id).await?.ok_or_else(not_found)?;
        let lead = self.store.lead_by_id(task.lead_id).await?.ok_or_else(not_found)?;
        let Some(seq) = self.cfg.sequence(&e.sequence) else {
            return Err(OpError::Refused(format!("sequence `{}` is no longer configured", e.sequence)));
        };
        let now = self.clock.now();
        let advance = plan::advance_after_task(seq, &LeadTime::of(&self.cfg, &lead), &e, now);
        let (touch, verb) = match end {
            TaskEnd::Done if task.kind == "call" => (TouchKind::Call, "done"),
            TaskEnd::Done => (TouchKind::TaskDone, "done"),
            _ => (TouchKind::TaskSkipped, "skipped"),
        };
        let detail = match note {
            Some(n) => format!("{} task {id} {verb}: {n}", task.kind),
            None => format!("{} task {id} {verb}", task.kind),
        };
        let close = TaskClose { end, note, touch, detail: &detail, advance: &advance };
        if !self.store.finish_task(now.timestamp_millis(), id, &close).await? {
            return Err(OpError::Refused(format!("task {id} is no longer open")));
        }
        self.store.task(id).await?.ok_or_else(not_found)
    }
}
