//! Daemons sharing one database: heartbeats and inbox leases.
//!
//! A daemon that stops heartbeating is dead: its in-flight sends become
//! `send_unknown` and its inbox leases expire, so another daemon takes over
//! the work within a bounded time.

use super::{dispatch, Store, StoreError};

impl Store {
    /// Records that this process is alive (and registers it on first call).
    pub async fn heartbeat(&self, now: i64) -> Result<(), StoreError> {
        dispatch!(self, pool => {
            sqlx::query(
                "INSERT INTO instances (id, started_at, heartbeat_at) VALUES ($1, $2, $2) \
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
            )
            .bind(&self.instance)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Removes this process's registration (clean shutdown) and its leases.
    pub async fn unregister(&self) -> Result<(), StoreError> {
        dispatch!(self, pool => {
            sqlx::query("UPDATE mailboxes SET lease_holder = NULL, lease_until = NULL WHERE lease_holder = $1").bind(&self.instance).execute(pool).await?;
            sqlx::query("DELETE FROM instances WHERE id = $1").bind(&self.instance).execute(pool).await?;
        });
        Ok(())
    }

    /// Takes or renews the lease on a mailbox until `until`. True when this
    /// process holds it: it was free, expired, or already ours.
    pub async fn acquire_inbox_lease(&self, rep: &str, mailbox: &str, now: i64, until: i64) -> Result<bool, StoreError> {
        let n = dispatch!(self, pool => {
            sqlx::query("INSERT INTO mailboxes (rep, mailbox, last_uid) VALUES ($1, $2, 0) ON CONFLICT (rep, mailbox) DO NOTHING")
                .bind(rep).bind(mailbox).execute(pool).await?;
            sqlx::query(
                "UPDATE mailboxes SET lease_holder = $1, lease_until = $2 WHERE rep = $3 AND mailbox = $4 \
                 AND (lease_holder IS NULL OR lease_holder = $1 OR lease_until IS NULL OR lease_until < $5)",
            )
            .bind(&self.instance).bind(until).bind(rep).bind(mailbox).bind(now)
            .execute(pool).await?.rows_affected()
        });
        Ok(n == 1)
    }
}
