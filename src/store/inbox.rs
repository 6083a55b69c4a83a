//! Mailbox sync state and inbound de-duplication.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::batch::{bind_rows, Rows};
use super::{dispatch, from_json_rows, json_agg, Col, Store, StoreError};

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

impl<'a> InboundAction<'a> {
    /// Records `message_key` as seen in `rep`'s inbox and nothing else; the
    /// engine fills in what the message does.
    pub fn seen(rep: &'a str, message_key: &'a str) -> Self {
        InboundAction {
            rep,
            message_key,
            kind: crate::domain::TouchKind::Note,
            lead_id: None,
            at: 0,
            subject: None,
            message_id: None,
            detail: None,
            enrollment_state: None,
            paused_until: None,
            suppress: None,
            stage: None,
            stop_domain: None,
        }
    }
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
#[derive(Clone, Debug, serde::Deserialize)]
pub struct SentRef {
    /// Larger for a later send.
    pub id: i64,
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

    /// Our sends among these Message-IDs (for matching replies and
    /// bounces), in no particular order.
    pub async fn sends_by_message_ids(&self, ids: &[&str]) -> Result<Vec<SentRef>, StoreError> {
        Ok(dispatch!(self, pool => {
            const COLS: &str = "id, lead_id, enrollment_id, rep, message_id";
            let ids = Rows::keys(pool, Col::Text, ids);
            let sql = format!("SELECT {COLS} FROM sends WHERE message_id IN (SELECT key FROM {})", ids.table());
            let sql = json_agg(pool, &sql, COLS);
            let json: String = bind_rows!(sqlx::query_scalar(&sql), ids).fetch_one(pool).await?;
            from_json_rows(&json)?
        }))
    }

    /// Records inbound messages and their effects in one transaction, with
    /// the same result as one by one in order: a later message sees what an
    /// earlier one did (two replies from one lead, a reply then a bounce,
    /// the same message twice, a colleague's reply). A message already
    /// recorded (same key) changes nothing. One outcome per action.
    ///
    /// The writes are set-wise, one round of messages that do not depend on
    /// each other at a time (see `rounds`): a few statements for a whole
    /// batch instead of ten per message.
    pub async fn record_inbound(
        &self,
        now: i64,
        actions: &[InboundAction<'_>],
        stage_rank: &(dyn Fn(&str) -> usize + Sync),
    ) -> Result<Vec<InboundOutcome>, StoreError> {
        use super::leads::{touches, NewTouch};
        use crate::domain::{EnrollmentState, TouchKind};
        let mut outcomes = vec![InboundOutcome::default(); actions.len()];
        let mut lead_ids: Vec<i64> = actions.iter().filter_map(|a| a.lead_id).collect();
        lead_ids.sort_unstable();
        lead_ids.dedup();
        dispatch!(self, pool => {
            let mut tx = self.begin_write(pool).await?;
            // What the writes depend on, read for the whole batch; a later
            // round reads its leads again, after the rounds before it.
            let mut leads: HashMap<i64, LeadState> = HashMap::with_capacity(lead_ids.len());
            read_lead_states!(tx, pool, lead_ids, leads);
            let rounds = rounds(actions, |id| leads.get(&id).map(|l| l.domain.as_str()));
            for (n, round) in rounds.iter().enumerate() {
                if n > 0 {
                    let ids: Vec<i64> = round.iter().filter_map(|&i| actions[i].lead_id).collect();
                    read_lead_states!(tx, pool, ids, leads);
                }
                // Seen: the keys are distinct within a round. (`WHERE true`:
                // SQLite would read the upsert's ON as a join constraint.)
                let seen: Vec<Seen> = round
                    .iter()
                    .map(|&i| {
                        let a = &actions[i];
                        Seen { rep: a.rep, message_key: a.message_key, kind: a.kind.as_str(), lead_id: a.lead_id }
                    })
                    .collect();
                let seen = Rows::new(pool, &[("rep", Col::Text), ("message_key", Col::Text), ("kind", Col::Text), ("lead_id", Col::Int)], &seen);
                let sql = format!(
                    "INSERT INTO inbound_seen (rep, message_key, kind, lead_id, processed_at) SELECT rep, message_key, kind, lead_id, {} FROM {} \
                     WHERE true ON CONFLICT (rep, message_key) DO NOTHING RETURNING message_key",
                    seen.param(1),
                    seen.table()
                );
                let inserted: HashSet<String> = bind_rows!(sqlx::query_scalar(&sql), seen).bind(now).fetch_all(&mut *tx).await?.into_iter().collect();
                let new: Vec<usize> = round.iter().copied().filter(|&i| inserted.contains(actions[i].message_key)).collect();
                for &i in &new {
                    outcomes[i].new = true;
                }
                // (action, its lead) for the new ones that concern a lead.
                let acting: Vec<(usize, i64)> = new.iter().filter_map(|&i| Some((i, actions[i].lead_id?))).collect();
                if !acting.is_empty() {
                    let live: HashMap<i64, (i64, &str)> = acting
                        .iter()
                        .filter_map(|(_, lead_id)| {
                            let l = leads.get(lead_id)?;
                            Some((*lead_id, (l.live_id?, l.live_state.as_deref()?)))
                        })
                        .collect();
                    let eid = |lead_id: i64| live.get(&lead_id).map(|(id, _)| *id);
                    // The round's touchpoints, written together at its end:
                    // the messages', then the stage changes', then the
                    // stopped colleagues'.
                    let mut touched: Vec<(NewTouch, i64)> = acting
                        .iter()
                        .map(|&(i, lead_id)| {
                            let a = &actions[i];
                            (NewTouch { lead_id, enrollment_id: eid(lead_id), kind: Some(a.kind), at: a.at, rep: Some(a.rep), subject: a.subject, message_id: a.message_id, detail: a.detail, step: None }, now)
                        })
                        .collect();

                    // The live enrollment's new state; an auto-reply pauses
                    // only an active enrollment (a manual pause stays manual).
                    // A round has one action per lead, so one row per enrollment.
                    let mut moves = Vec::new();
                    for &(i, lead_id) in &acting {
                        let a = &actions[i];
                        if let (Some((eid, state)), Some(to)) = (live.get(&lead_id), a.enrollment_state) {
                            if !(to == EnrollmentState::Paused && *state == "paused") {
                                moves.push(Move { id: *eid, state: to.as_str(), paused_until: a.paused_until, ended: i64::from(!to.is_live()), reason: a.kind.as_str() });
                                outcomes[i].enrollment_changed = true;
                            }
                        }
                    }
                    if !moves.is_empty() {
                        let moves = Rows::new(pool, &[("id", Col::Int), ("state", Col::Text), ("paused_until", Col::Int), ("ended", Col::Int), ("reason", Col::Text)], &moves);
                        let sql = format!(
                            "UPDATE enrollments SET state = v.state, next_at = NULL, paused_until = v.paused_until, updated_at = {now}, \
                             ended_at = CASE WHEN v.ended = 1 THEN {now} ELSE ended_at END, end_reason = CASE WHEN v.ended = 1 THEN v.reason ELSE end_reason END \
                             FROM {} WHERE enrollments.id = v.id",
                            moves.table(),
                            now = moves.param(1)
                        );
                        bind_rows!(sqlx::query(&sql), moves).bind(now).execute(&mut *tx).await?;
                    }

                    // Stages: only forward.
                    let mut advanced = Vec::new();
                    let mut details: Vec<(usize, i64, String)> = Vec::new();
                    for &(i, lead_id) in &acting {
                        let Some(stage) = actions[i].stage else { continue };
                        if let Some(old) = leads.get(&lead_id).map(|l| &l.stage).filter(|old| stage_rank(stage) > stage_rank(old)) {
                            advanced.push(Advance { id: lead_id, stage });
                            details.push((i, lead_id, format!("{old} -> {stage} ({})", actions[i].kind)));
                        }
                    }
                    if !advanced.is_empty() {
                        let rows = Rows::new(pool, &[("id", Col::Int), ("stage", Col::Text)], &advanced);
                        let sql = format!(
                            "UPDATE leads SET stage = v.stage, stage_changed_at = {now}, updated_at = {now} FROM {} WHERE leads.id = v.id",
                            rows.table(),
                            now = rows.param(1)
                        );
                        bind_rows!(sqlx::query(&sql), rows).bind(now).execute(&mut *tx).await?;
                        touched.extend(details.iter().map(|(i, lead_id, detail)| {
                            (NewTouch { lead_id: *lead_id, enrollment_id: eid(*lead_id), kind: Some(TouchKind::StageChange), at: now, rep: Some(actions[*i].rep), detail: Some(detail), ..Default::default() }, now)
                        }));
                    }

                    // Same company: the colleagues' live enrollments stop.
                    // A round has one action per domain.
                    let stopping: Vec<(usize, i64, &str)> = acting.iter().filter_map(|&(i, lead_id)| Some((i, lead_id, actions[i].stop_domain?))).collect();
                    if !stopping.is_empty() {
                        let replied: Vec<Replied> = stopping.iter().map(|&(_, lead_id, domain)| Replied { domain, lead_id }).collect();
                        let replied = Rows::new(pool, &[("domain", Col::Text), ("lead_id", Col::Int)], &replied);
                        let sql = format!(
                            "WITH s AS (SELECT domain, lead_id FROM {}) \
                             SELECT e.id, e.lead_id, l.domain FROM enrollments e JOIN leads l ON l.id = e.lead_id \
                             WHERE l.domain IN (SELECT domain FROM s) AND e.lead_id NOT IN (SELECT lead_id FROM s) AND e.state IN ('active', 'paused')",
                            replied.table()
                        );
                        let others: Vec<(i64, i64, String)> = bind_rows!(sqlx::query_as(&sql), replied).fetch_all(&mut *tx).await?;
                        if !others.is_empty() {
                            let ids = Rows::keys(pool, Col::Int, others.iter().map(|(oid, _, _)| oid));
                            let sql = format!(
                                "UPDATE enrollments SET state = 'completed', next_at = NULL, updated_at = {now}, ended_at = {now}, end_reason = 'colleague replied' \
                                 WHERE id IN (SELECT key FROM {})",
                                ids.table(),
                                now = ids.param(1)
                            );
                            bind_rows!(sqlx::query(&sql), ids).bind(now).execute(&mut *tx).await?;
                        }
                        let by_domain: HashMap<&str, (usize, &str)> = stopping.iter().map(|&(i, _, domain)| (domain, (i, actions[i].rep))).collect();
                        for (oid, olead, domain) in &others {
                            let Some(&(i, rep)) = by_domain.get(domain.as_str()) else { continue };
                            outcomes[i].colleagues_stopped += 1;
                            let detail = "stopped: a colleague at the same company replied";
                            touched.push((NewTouch { lead_id: *olead, enrollment_id: Some(*oid), kind: Some(TouchKind::Unenrolled), at: now, rep: Some(rep), detail: Some(detail), ..Default::default() }, now));
                        }
                    }
                    touches!(tx, pool, &touched);
                }

                // Suppressions; any other live enrollment of the address
                // stops too. An address suppressed twice in a round keeps
                // the first reason, as one by one.
                let mut addresses: HashSet<&str> = HashSet::new();
                let suppressing: Vec<_> = new
                    .iter()
                    .filter_map(|&i| Some((actions[i].suppress?, actions[i].kind)))
                    .filter(|&(addr, _)| addresses.insert(addr))
                    .map(|(addr, kind)| {
                        let state = if kind == TouchKind::Bounce { EnrollmentState::Bounced } else { EnrollmentState::Unsubscribed };
                        Suppress { pattern: addr, state: state.as_str(), reason: kind.as_str() }
                    })
                    .collect();
                if !suppressing.is_empty() {
                    let rows = Rows::new(pool, &[("pattern", Col::Text), ("state", Col::Text), ("reason", Col::Text)], &suppressing);
                    let sql = format!(
                        "INSERT INTO suppressions (pattern, reason, created_at) SELECT pattern, reason, {} FROM {} WHERE true ON CONFLICT (pattern) DO NOTHING",
                        rows.param(1),
                        rows.table()
                    );
                    bind_rows!(sqlx::query(&sql), rows.clone()).bind(now).execute(&mut *tx).await?;
                    let sql = format!(
                        "UPDATE enrollments SET state = v.state, next_at = NULL, updated_at = {now}, ended_at = {now}, end_reason = v.reason \
                         FROM {} JOIN leads l ON l.email = v.pattern WHERE enrollments.lead_id = l.id AND enrollments.state IN ('active', 'paused')",
                        rows.table(),
                        now = rows.param(1)
                    );
                    bind_rows!(sqlx::query(&sql), rows).bind(now).execute(&mut *tx).await?;
                }
            }
            // A reply (or a stop) leaves the rep nothing to do there.
            if outcomes.iter().any(|o| o.new) {
                sqlx::query(super::tasks::CANCEL_DEAD_TASKS).bind(now).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(outcomes)
    }
}

/// What recording a batch needs to know of a lead: its company (to order
/// the writes), its stage and its live enrollment.
#[derive(Debug, serde::Deserialize)]
struct LeadState {
    id: i64,
    domain: String,
    stage: String,
    live_id: Option<i64>,
    live_state: Option<String>,
}

// The rows of `record_inbound`'s statements (bound by field name).
#[derive(Serialize)]
struct Seen<'a> {
    rep: &'a str,
    message_key: &'a str,
    kind: &'static str,
    lead_id: Option<i64>,
}
#[derive(Serialize)]
struct Move {
    id: i64,
    state: &'static str,
    paused_until: Option<i64>,
    ended: i64,
    reason: &'static str,
}
#[derive(Serialize)]
struct Advance<'a> {
    id: i64,
    stage: &'a str,
}
#[derive(Serialize)]
struct Replied<'a> {
    domain: &'a str,
    lead_id: i64,
}
#[derive(Serialize)]
struct Suppress<'a> {
    pattern: &'a str,
    state: &'static str,
    reason: &'static str,
}

/// Reads the [`LeadState`] of the leads `$ids` into the map `$into`.
macro_rules! read_lead_states {
    ($tx:expr, $pool:expr, $ids:expr, $into:expr) => {
        let ids = Rows::keys($pool, Col::Int, &$ids);
        let sql = format!(
            "SELECT l.id, l.domain, l.stage, e.id AS live_id, e.state AS live_state FROM leads l \
             LEFT JOIN enrollments e ON e.lead_id = l.id AND e.state IN ('active', 'paused') WHERE l.id IN (SELECT key FROM {})",
            ids.table()
        );
        let sql = json_agg($pool, &sql, "id, domain, stage, live_id, live_state");
        let json: String = bind_rows!(sqlx::query_scalar(&sql), ids).fetch_one(&mut *$tx).await?;
        let states: Vec<LeadState> = from_json_rows(&json)?;
        $into.extend(states.into_iter().map(|l| (l.id, l)));
    };
}
use read_lead_states;

/// What an action reads or writes besides its own key: its lead's company
/// (the lead, its enrollments, its suppression, and the colleagues a reply
/// stops all sit under the lead's domain).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Scope<'a> {
    Key(&'a str),
    Domain(&'a str),
    /// A lead whose row is gone: only itself.
    Lead(i64),
}

/// Splits `actions` (indexes, in order) into rounds that can each be
/// written set-wise: no two actions of a round share a key or a lead's
/// domain, so none reads what another writes, and an action comes in a
/// later round than every earlier action it shares one with. Writing the
/// rounds in order is then the same as writing the actions one by one; a
/// batch of replies from different companies is one round.
fn rounds<'s>(actions: &'s [InboundAction<'_>], domain_of: impl Fn(i64) -> Option<&'s str>) -> Vec<Vec<usize>> {
    let mut last: HashMap<Scope, usize> = HashMap::new();
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (i, a) in actions.iter().enumerate() {
        let scopes = [
            Some(Scope::Key(a.message_key)),
            a.lead_id.map(|lead_id| domain_of(lead_id).map_or(Scope::Lead(lead_id), Scope::Domain)),
            a.stop_domain.map(Scope::Domain),
        ];
        let scopes = scopes.into_iter().flatten();
        let round = scopes.clone().filter_map(|s| last.get(&s)).map(|r| r + 1).max().unwrap_or(0);
        for s in scopes {
            last.insert(s, round);
        }
        if round == rounds.len() {
            rounds.push(Vec::new());
        }
        rounds[round].push(i);
    }
    rounds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TouchKind;

    fn action<'a>(key: &'a str, lead_id: Option<i64>, stop_domain: Option<&'a str>) -> InboundAction<'a> {
        InboundAction { kind: TouchKind::Reply, lead_id, stop_domain, ..InboundAction::seen("nik", key) }
    }

    #[test]
    fn rounds_keep_the_order_of_what_shares_a_key_or_a_company() {
        let domains: HashMap<i64, String> = [(1, "acme.example"), (2, "acme.example"), (3, "other.example"), (4, "third.example")]
            .into_iter()
            .map(|(id, d)| (id, d.to_string()))
            .collect();
        let actions = [
            action("a", Some(1), Some("acme.example")),
            action("a", Some(1), Some("acme.example")), // the same message again
            action("b", Some(2), None),                 // a colleague of lead 1
            action("c", Some(3), None),
            action("d", None, None),
            action("c", None, None), // the same key, unmatched
            action("e", Some(4), None),
            action("f", Some(99), None), // a lead whose row is gone
        ];
        let domain_of = |id| domains.get(&id).map(String::as_str);
        assert_eq!(rounds(&actions, domain_of), vec![vec![0, 3, 4, 6, 7], vec![1, 5], vec![2]]);
        assert!(rounds(&[], domain_of).is_empty());
    }
}
