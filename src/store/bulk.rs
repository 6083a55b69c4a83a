//! What an import does beyond its batches: deferred indexes for a first
//! import (SQLite), and leaving the database ready for the daemon.
//!
//! Filling empty tables through their secondary indexes costs more than
//! building those indexes once, sorted, at the end: a million leads took
//! 15.5 s to import with the indexes in place, 7.2 s without them, and the
//! indexes about 3 s to build afterwards (SQLite, 2 cores). So an import
//! into a database that has no leads yet sets aside the non-unique indexes
//! of `leads`, `enrollments` and `touchpoints`, and builds them when it is
//! done.
//!
//! Unique indexes stay: they hold rules (one lead an address, one live
//! enrollment a lead) and they are what the importer itself reads through.
//! So nothing is ever allowed that would not be with every index in place;
//! meanwhile another process's queries over those tables are only slower.
//! The definitions set aside are written to `deferred_indexes` in the
//! transaction that drops them, and every open of the database builds
//! what is listed there: an import that was killed half way keeps the
//! batches it committed, and gets its indexes back at the next start of
//! any cadence command. PostgreSQL imports keep their indexes.
//!
//! At its end an import leaves the database as the daemon wants to find
//! it ([`Store::finish_bulk_write`]): SQLite's WAL checkpointed,
//! PostgreSQL's planner statistics gathered.

use super::{Db, Store, StoreError};

/// The tables an import fills.
const TABLES: [&str; 3] = ["leads", "enrollments", "touchpoints"];

impl Store {
    /// Sets aside the non-unique indexes of the tables an import fills, if
    /// they are empty (SQLite). Returns how many; build them again with
    /// [`Store::build_deferred_indexes`].
    pub async fn defer_indexes(&self) -> Result<usize, StoreError> {
        let Db::Sqlite { readers: pool, .. } = &self.db else { return Ok(0) };
        let tables: Vec<String> = TABLES.iter().map(|t| format!("'{t}'")).collect();
        let mut tx = self.begin_write(pool).await?;
        if sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM leads)").fetch_one(&mut *tx).await? {
            return Ok(0);
        }
        // `origin = 'c'`: made by CREATE INDEX, not a UNIQUE or PRIMARY KEY
        // constraint of the table.
        let indexes: Vec<(String, String)> = sqlx::query_as(&format!(
            "SELECT m.name, m.sql FROM sqlite_master m JOIN pragma_index_list(m.tbl_name) i ON i.name = m.name \
             WHERE m.type = 'index' AND m.tbl_name IN ({}) AND i.origin = 'c' AND NOT i.\"unique\" ORDER BY m.name",
            tables.join(", ")
        ))
        .fetch_all(&mut *tx)
        .await?;
        for (name, sql) in &indexes {
            sqlx::query("INSERT INTO deferred_indexes (name, sql) VALUES ($1, $2)").bind(name).bind(sql).execute(&mut *tx).await?;
            sqlx::query(&format!("DROP INDEX \"{name}\"")).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(indexes.len())
    }

    /// Builds the indexes an import set aside, if any (in one transaction);
    /// returns how many. Runs at every open, so that a stopped import does
    /// not leave the tables without them for longer than until the next
    /// cadence command.
    pub async fn build_deferred_indexes(&self) -> Result<usize, StoreError> {
        let Db::Sqlite { readers: pool, .. } = &self.db else { return Ok(0) };
        // A plain read first: a read-only database opens without a write.
        let listed: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM deferred_indexes)").fetch_one(pool).await?;
        if !listed {
            return Ok(0);
        }
        let mut tx = self.begin_write(pool).await?;
        let indexes: Vec<(String, String)> =
            sqlx::query_as("SELECT name, sql FROM deferred_indexes ORDER BY name").fetch_all(&mut *tx).await?;
        for (name, sql) in &indexes {
            // Listed means dropped, unless someone has made it by hand since.
            let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = $1)")
                .bind(name)
                .fetch_one(&mut *tx)
                .await?;
            if !exists {
                sqlx::query(sql).execute(&mut *tx).await?;
            }
        }
        sqlx::query("DELETE FROM deferred_indexes").execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(indexes.len())
    }

    /// Leaves the database ready for the daemon after a bulk write (an
    /// import), just before this process exits.
    ///
    /// SQLite: copies the WAL into the database file and empties it;
    /// otherwise the last WAL (hundreds of MB after an import) is left for
    /// the next process to read through and checkpoint. Closing the pool
    /// does not do it reliably (the WAL was left after half of the imports
    /// tried): sqlx hands a connection back to its pool in a task of its
    /// own, so the last one may be closed after the process has exited.
    ///
    /// PostgreSQL: gathers the planner's statistics of the tables an import
    /// fills. Autovacuum does it only a minute or more later, and a daemon
    /// started meanwhile planned its claims for an empty table: every due
    /// row read and sorted for each claim of 256 (12 ms a claim at 20,000
    /// due; with the statistics it reads the due index in order, 0.2 ms).
    pub async fn finish_bulk_write(&self) -> Result<(), StoreError> {
        match &self.db {
            Db::Sqlite { readers, .. } => {
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(readers).await?;
            }
            Db::Pg(pool) => {
                sqlx::query(&format!("ANALYZE {}", TABLES.join(", "))).execute(pool).await?;
            }
        }
        Ok(())
    }
}
