//! Mailbox sync state and inbound de-duplication.

use super::{dispatch, Store, StoreError};

impl Store {
    /// When the rep's inbox last finished a sync (any mailbox).
    pub async fn inbox_synced_at(&self, rep: &str) -> Result<Option<i64>, StoreError> {
        Ok(dispatch!(self, pool => sqlx::query_scalar("SELECT MAX(synced_at) FROM mailboxes WHERE rep = $1").bind(rep).fetch_one(pool).await?))
    }
}
