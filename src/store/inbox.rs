//! Mailbox sync state and inbound de-duplication.

use super::{dispatch, Store, StoreError};

impl Store {
    /// The newest enrollment's id: a cheap stamp that moves when anyone
    /// enrolls a lead.
    pub async fn latest_enrollment_id(&self) -> Result<Option<i64>, StoreError> {
        Ok(dispatch!(self, pool => sqlx::query_scalar("SELECT MAX(id) FROM enrollments").fetch_one(pool).await?))
    }

    /// When the rep's inbox last finished a sync (any mailbox).
    pub async fn inbox_synced_at(&self, rep: &str) -> Result<Option<i64>, StoreError> {
        Ok(
            dispatch!(self, pool => sqlx::query_scalar("SELECT MAX(synced_at) FROM mailboxes WHERE rep = $1").bind(rep).fetch_one(pool).await?),
        )
    }
}

/// IMAP position in one mailbox.
#[derive(Clone, Debug, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct MailboxState {
    pub uid_validity: Option<i64>,
    pub last_uid: i64,
    pub synced_at: Option<i64>,
}

/// What an inbound message does to a lead, decided by the engine.
#[derive(Clone, Debug)]
pub struct InboundAction<'a> {
    pub rep: &'a str,
    /// Message-ID, or a hash of the bytes: the de-duplication key.
    pub message_key: &'a str,
    pub kind: crate::domain::TouchKind,
    pub lead_id: Option<i64>,
    pub at: i64,
    pub subject: Option<&'a str>,
    pub message_id: Option<&'a str>,
    pub detail: Option<&'a str>,
    /// New state for the lead's live enrollment.
    pub enrollment_state: Option<crate::domain::EnrollmentState>,
    /// For a pause: when it ends.
    pub paused_until: Option<i64>,
    /// Address to suppress.
    pub suppress: Option<&'a str>,
    /// Stage to move the lead to, if that is further along.
    pub stage: Option<&'a str>,
    /// Stop live enrollments of other leads at this domain (same company).
    pub stop_domain: Option<&'a str>,
}

/// What recording an inbound message did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InboundOutcome {
    /// False when the message had been processed before (nothing done).
    pub new: bool,
    pub enrollment_changed: bool,
    pub colleagues_stopped: u64,
}

/// Who sent a message we know, by its Message-ID.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct SentRef {
    pub lead_id: Option<i64>,
    pub enrollment_id: Option<i64>,
    pub rep: String,
    pub message_id: String,
}

impl Store {
    pub async fn mailbox_state(&self, rep: &str, mailbox: &str) -> Result<MailboxState, StoreError> {
        let row: Option<MailboxState> = dispatch!(self, pool => sqlx::query_as("SELECT uid_validity, last_uid, synced_at FROM mailboxes WHERE rep = $1 AND mailbox = $2")
            .bind(rep).bind(mailbox).fetch_optional(pool).await?);
        Ok(row.unwrap_or_default())
    }

    /// Records how far a mailbox has been read and that it is in sync now.
    pub async fn save_mailbox_state(
        &self,
        rep: &str,
        mailbox: &str,
        uid_validity: i64,
        last_uid: i64,
        synced_at: i64,
    ) -> Result<(), StoreError> {
        dispatch!(self, pool => {
            sqlx::query(
                "INSERT INTO mailboxes (rep, mailbox, uid_validity, last_uid, synced_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (rep, mailbox) DO UPDATE SET uid_validity = excluded.uid_validity, last_uid = excluded.last_uid, synced_at = excluded.synced_at",
            )
            .bind(rep).bind(mailbox).bind(uid_validity).bind(last_uid).bind(synced_at)
            .execute(pool).await?;
        });
        Ok(())
    }

    /// Our sends among these Message-IDs (for matching replies and bounces).
    pub async fn sends_by_message_ids(&self, ids: &[String]) -> Result<Vec<SentRef>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT lead_id, enrollment_id, rep, message_id FROM sends WHERE message_id IN ({}) ORDER BY id DESC",
            placeholders.join(", ")
        );
        Ok(dispatch!(self, pool => {
            let mut q = sqlx::query_as(&sql);
            for id in ids {
                q = q.bind(id);
            }
            q.fetch_all(pool).await?
        }))
    }

    /// Records an inbound message and its effects in one transaction; a
    /// message already recorded (same rep and key) changes nothing.
    pub async fn record_inbound(
        &self,
        now: i64,
        a: &InboundAction<'_>,
        stage_rank: &(dyn Fn(&str) -> usize + Sync),
    ) -> Result<InboundOutcome, StoreError> {
        use super::leads::{touch, NewTouch};
        use crate::domain::{EnrollmentState, TouchKind};
        let mut out = InboundOutcome::default();
        dispatch!(self, pool => {
            let mut tx = self.begin_write(pool).await?;
            let inserted = sqlx::query("INSERT INTO inbound_seen (rep, message_key, kind, lead_id, processed_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (rep, message_key) DO NOTHING")
                .bind(a.rep).bind(a.message_key).bind(a.kind.as_str()).bind(a.lead_id).bind(now)
                .execute(&mut *tx).await?.rows_affected();
            if inserted == 0 {
                return Ok(out);
            }
            out.new = true;
            if let Some(lead_id) = a.lead_id {
                let live: Option<(i64, String)> = sqlx::query_as("SELECT id, state FROM enrollments WHERE lead_id = $1 AND state IN ('active', 'paused') ORDER BY id DESC LIMIT 1")
                    .bind(lead_id).fetch_optional(&mut *tx).await?;
                let eid = live.as_ref().map(|(id, _)| *id);
                touch!(tx, NewTouch { lead_id, enrollment_id: eid, kind: Some(a.kind), at: a.at, rep: Some(a.rep), subject: a.subject, message_id: a.message_id, detail: a.detail, step: None }, now);
                if let (Some((eid, state)), Some(to)) = (&live, a.enrollment_state) {
                    // An auto-reply pauses only an active enrollment; a
                    // manual pause stays manual.
                    let applies = !(to == EnrollmentState::Paused && state == "paused");
                    if applies {
                        let ended = !to.is_live();
                        sqlx::query(
                            "UPDATE enrollments SET state = $1, next_at = NULL, paused_until = $2, updated_at = $3, \
                             ended_at = CASE WHEN $4 = 1 THEN $3 ELSE ended_at END, end_reason = CASE WHEN $4 = 1 THEN $5 ELSE end_reason END WHERE id = $6",
                        )
                        .bind(to.as_str()).bind(a.paused_until).bind(now).bind(i64::from(ended)).bind(a.kind.as_str()).bind(eid)
                        .execute(&mut *tx).await?;
                        out.enrollment_changed = true;
                    }
                }
                if let Some(stage) = a.stage {
                    let old: Option<String> = sqlx::query_scalar("SELECT stage FROM leads WHERE id = $1").bind(lead_id).fetch_optional(&mut *tx).await?;
                    if let Some(old) = old {
                        if stage_rank(stage) > stage_rank(&old) {
                            sqlx::query("UPDATE leads SET stage = $1, stage_changed_at = $2, updated_at = $2 WHERE id = $3").bind(stage).bind(now).bind(lead_id).execute(&mut *tx).await?;
                            let detail = format!("{old} -> {stage} ({})", a.kind);
                            touch!(tx, NewTouch { lead_id, enrollment_id: eid, kind: Some(TouchKind::StageChange), at: now, rep: Some(a.rep), detail: Some(&detail), ..Default::default() }, now);
                        }
                    }
                }
                if let Some(domain) = a.stop_domain {
                    let others: Vec<(i64, i64)> = sqlx::query_as(
                        "SELECT e.id, e.lead_id FROM enrollments e JOIN leads l ON l.id = e.lead_id WHERE l.domain = $1 AND e.lead_id <> $2 AND e.state IN ('active', 'paused')",
                    ).bind(domain).bind(lead_id).fetch_all(&mut *tx).await?;
                    for (oid, olead) in &others {
                        sqlx::query("UPDATE enrollments SET state = 'completed', next_at = NULL, updated_at = $1, ended_at = $1, end_reason = 'colleague replied' WHERE id = $2")
                            .bind(now).bind(oid).execute(&mut *tx).await?;
                        let detail = "stopped: a colleague at the same company replied";
                        touch!(tx, NewTouch { lead_id: *olead, enrollment_id: Some(*oid), kind: Some(TouchKind::Unenrolled), at: now, rep: Some(a.rep), detail: Some(detail), ..Default::default() }, now);
                    }
                    out.colleagues_stopped = others.len() as u64;
                }
            }
            if let Some(addr) = a.suppress {
                sqlx::query("INSERT INTO suppressions (pattern, reason, created_at) VALUES ($1, $2, $3) ON CONFLICT (pattern) DO NOTHING")
                    .bind(addr).bind(a.kind.as_str()).bind(now).execute(&mut *tx).await?;
                // Any other live enrollment of that address stops too.
                sqlx::query("UPDATE enrollments SET state = $1, next_at = NULL, updated_at = $2, ended_at = $2, end_reason = $3 \
                             WHERE state IN ('active', 'paused') AND lead_id IN (SELECT id FROM leads WHERE email = $4)")
                    .bind(if a.kind == TouchKind::Bounce { "bounced" } else { "unsubscribed" }).bind(now).bind(a.kind.as_str()).bind(addr)
                    .execute(&mut *tx).await?;
            }
            // A reply (or a stop) leaves the rep nothing to do there.
            sqlx::query(super::tasks::CANCEL_DEAD_TASKS).bind(now).execute(&mut *tx).await?;
            tx.commit().await?;
        });
        Ok(out)
    }
}
