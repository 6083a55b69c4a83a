//! The pipeline board's reads: every open lead with what its card shows, in
//! one query, and a change stamp cheap enough to poll every two seconds.

use serde::Serialize;

use super::{dispatch, Store, StoreError};

/// What the board shows of one open lead and its latest enrollment.
#[derive(Clone, Debug, sqlx::FromRow, Serialize)]
pub struct BoardCard {
    pub id: i64,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    pub value: Option<f64>,
    pub owner: Option<String>,
    pub stage: String,
    pub stale: i64,
    pub last_touch_at: Option<i64>,
    pub sequence: Option<String>,
    pub state: Option<String>,
    pub phase: Option<String>,
    pub step: Option<i64>,
    pub due_at: Option<i64>,
    pub next_at: Option<i64>,
    pub paused_until: Option<i64>,
    pub attempts: Option<i64>,
}

/// Narrows the board; `None` shows everything.
#[derive(Clone, Debug, Default)]
pub struct BoardFilter {
    /// The owning rep (always set for a rep's session).
    pub rep: Option<String>,
    pub sequence: Option<String>,
    pub state: Option<String>,
}

impl Store {
    /// Open (not archived) leads with their latest enrollment, oldest lead
    /// first. One statement whatever the number of leads.
    pub async fn board_cards(&self, f: &BoardFilter) -> Result<Vec<BoardCard>, StoreError> {
        let mut sql = String::from(
            "SELECT l.id, l.email, l.first_name, l.last_name, l.company, l.value, l.owner, l.stage, l.stale, l.last_touch_at, \
             e.sequence, e.state, e.phase, e.step, e.due_at, e.next_at, e.paused_until, e.attempts \
             FROM leads l LEFT JOIN enrollments e ON e.id = (SELECT max(x.id) FROM enrollments x WHERE x.lead_id = l.id) \
             WHERE l.status = 'active'",
        );
        let mut binds: Vec<&str> = Vec::new();
        for (col, val) in [("l.owner", &f.rep), ("e.sequence", &f.sequence), ("e.state", &f.state)] {
            if let Some(v) = val {
                binds.push(v);
                sql.push_str(&format!(" AND {col} = ${}", binds.len()));
            }
        }
        sql.push_str(" ORDER BY l.id");
        Ok(dispatch!(self, pool => {
            let mut q = sqlx::query_as(&sql);
            for b in &binds {
                q = q.bind(*b);
            }
            q.fetch_all(pool).await?
        }))
    }

    /// Changes whenever a card could have changed: every send, reply,
    /// bounce, archive, stage change, pause or resume writes a touchpoint,
    /// and a new lead or enrollment gets a new id. Three primary-key
    /// maxima: constant cost however large the tables grow.
    pub async fn board_stamp(&self) -> Result<String, StoreError> {
        let sql = "SELECT (SELECT COALESCE(MAX(id), 0) FROM touchpoints), (SELECT COALESCE(MAX(id), 0) FROM enrollments), \
                   (SELECT COALESCE(MAX(id), 0) FROM leads)";
        let (t, e, l): (i64, i64, i64) = dispatch!(self, pool => sqlx::query_as(sql).fetch_one(pool).await?);
        Ok(format!("{t}.{e}.{l}"))
    }
}
