//! The Store: every read and write of cadence's state, over SQLite or
//! PostgreSQL.
//!
//! One API above both backends so the engine never knows which it runs on.
//! The SQL is written once, in the subset both speak (`$n` placeholders,
//! `RETURNING`, `ON CONFLICT`, times as integer milliseconds), and the
//! [`dispatch!`] macro instantiates each body for both pools; the few places
//! that differ (`BEGIN IMMEDIATE`, `FOR UPDATE SKIP LOCKED`, binding a
//! batch of rows ([`batch::Rows`]: a `VALUES` list on SQLite, one JSON
//! parameter on PostgreSQL), reserving ids for it) go through [`Backend`].
//! Transactions are short and never span a network call.

use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

pub(crate) mod batch;
mod board;
mod bulk;
mod inbox;
mod instances;
mod leads;
mod outbox;
mod report;
mod rows;
pub(crate) mod tasks;

pub use board::*;
pub use inbox::*;
pub use leads::*;
pub use outbox::*;
pub use report::*;
pub use rows::*;
pub use tasks::{AwaitingReply, NewTask, OverdueTasks, QuietLead, TaskClose, TaskEnd, TaskFilter, TaskRow, TaskStepCount, VariantCount};

/// Runs `$body` with `$pool` bound to whichever pool the store holds.
macro_rules! dispatch {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.db {
            $crate::store::Db::Sqlite { readers: $pool, .. } => $body,
            $crate::store::Db::Pg($pool) => $body,
        }
    };
}
pub(crate) use dispatch;

/// What differs between the backends, by pool type.
pub(crate) trait Backend: sqlx::Database {
    /// SQLite must take the write lock at BEGIN, or a read-then-write
    /// transaction can fail with SQLITE_BUSY instead of waiting.
    const BEGIN: &'static str;
    /// Row locking for claims: several PostgreSQL daemons skip each other's
    /// rows; SQLite has one writer and needs nothing.
    const SKIP_LOCKED: &'static str;
    /// Taken in a claim transaction before it counts what the reps have
    /// sent. On PostgreSQL a transaction-scoped advisory lock makes the
    /// counting and committing of several daemons' claims take turns, so
    /// each one counts the others' committed claims and the per-rep caps
    /// hold globally (finding due rows and sending stay parallel). SQLite
    /// already serializes writers with `BEGIN IMMEDIATE`.
    const CLAIM_LOCK: Option<&'static str>;
    /// One daemon per database: a send left `sending` by anyone else is an
    /// orphan at once. Otherwise only when its claimer stopped heartbeating.
    const SINGLE_INSTANCE: bool;
    /// Whether a [`batch::Rows`] is bound as a `VALUES` list (SQLite) or as
    /// one JSON parameter (PostgreSQL).
    const BIND_VALUES: bool;
    /// A table expression (aliased `v`) over the JSON array of objects
    /// bound as `param`, one column per `(name, type)`: the JSON form of a
    /// [`batch::Rows`] (always on PostgreSQL; on SQLite past its limit of
    /// bound values).
    fn json_rows(param: &str, cols: &[(&str, Col)]) -> String;
    /// A table expression (aliased `v`) of one column `key`, over the JSON
    /// array of scalars bound as `param`: a set of ids or addresses, the
    /// JSON form of [`batch::Rows::keys`]. Cheaper than
    /// [`Backend::json_rows`] with one column, as there is no object to
    /// take apart.
    fn json_key_rows(param: &str, col: Col) -> String;
    /// A query whose one row is the rows of `inner` (naming `cols`, as
    /// listed in its SELECT) as one JSON array of objects, read with
    /// [`from_json_rows`]. sqlx's SQLite driver hands each row from its
    /// worker thread to the caller separately, a thread wake-up a row;
    /// reading a claim's rows this way made dispatch 22% faster.
    fn json_agg(inner: &str, cols: &str) -> String;
    /// `n` ids of `table`, for rows that a bulk statement inserts with their
    /// ids given, so that nothing has to be read back. Call it inside the
    /// transaction that inserts them.
    fn reserve_ids(
        conn: &mut Self::Connection,
        table: &'static str,
        n: usize,
    ) -> impl std::future::Future<Output = Result<Vec<i64>, sqlx::Error>> + Send;
    /// Where [`Store::begin_write`] takes its connection, if not from the
    /// pool it is given.
    fn writer(store: &Store) -> Option<&sqlx::Pool<Self>>;
}

/// Column types of [`Backend::json_rows`].
#[derive(Clone, Copy)]
pub(crate) enum Col {
    Int,
    Float,
    Text,
}

impl Col {
    fn pg_type(self) -> &'static str {
        match self {
            Col::Int => "int8",
            Col::Float => "float8",
            Col::Text => "text",
        }
    }
}

impl Backend for sqlx::Sqlite {
    const BEGIN: &'static str = "BEGIN IMMEDIATE";
    const SKIP_LOCKED: &'static str = "";
    const CLAIM_LOCK: Option<&'static str> = None;
    const SINGLE_INSTANCE: bool = true;
    const BIND_VALUES: bool = true;
    // Each row's object is taken out once (materialized): json_each's
    // `value` read once per column would print the object back to text and
    // parse it again each time, and looking columns up by path in the whole
    // parameter costs time quadratic in the rows (both seen in profiles).
    // It is kept as JSONB, so each column is a lookup in the binary form;
    // kept as text, every `->>` found the row's parse in SQLite's cache by
    // comparing the whole text first (an inbox batch: 9% faster).
    fn json_rows(param: &str, cols: &[(&str, Col)]) -> String {
        let cols: Vec<String> = cols.iter().map(|(name, _)| format!("j ->> '{name}' AS {name}")).collect();
        format!("(WITH r AS MATERIALIZED (SELECT jsonb(value) AS j FROM json_each({param})) SELECT {} FROM r) AS v", cols.join(", "))
    }
    fn json_key_rows(param: &str, _: Col) -> String {
        format!("(SELECT value AS key FROM json_each({param})) AS v")
    }
    fn json_agg(inner: &str, cols: &str) -> String {
        let pairs: Vec<String> = cols.split(',').map(str::trim).map(|c| format!("'{c}', {c}")).collect();
        format!("SELECT json_group_array(json_object({})) FROM ({inner})", pairs.join(", "))
    }
    /// The ids after the largest: the transaction (`BEGIN IMMEDIATE`) holds
    /// the write lock, so no one else can take them.
    async fn reserve_ids(conn: &mut sqlx::SqliteConnection, table: &'static str, n: usize) -> Result<Vec<i64>, sqlx::Error> {
        let last: i64 = sqlx::query_scalar(&format!("SELECT COALESCE(MAX(id), 0) FROM {table}")).fetch_one(conn).await?;
        Ok((last + 1..).take(n).collect())
    }
    fn writer(store: &Store) -> Option<&sqlx::Pool<Self>> {
        match &store.db {
            Db::Sqlite { writer, .. } => Some(writer),
            Db::Pg(_) => None,
        }
    }
}
impl Backend for sqlx::Postgres {
    const BEGIN: &'static str = "BEGIN";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    const CLAIM_LOCK: Option<&'static str> = Some("SELECT pg_advisory_xact_lock(7262026)");
    const SINGLE_INSTANCE: bool = false;
    const BIND_VALUES: bool = false;
    fn json_rows(param: &str, cols: &[(&str, Col)]) -> String {
        let cols: Vec<String> = cols.iter().map(|(name, col)| format!("{name} {}", col.pg_type())).collect();
        format!("jsonb_to_recordset({param}::jsonb) AS v({})", cols.join(", "))
    }
    fn json_key_rows(param: &str, col: Col) -> String {
        format!("(SELECT value::{} AS key FROM jsonb_array_elements_text({param}::jsonb)) AS v", col.pg_type())
    }
    fn json_agg(inner: &str, _cols: &str) -> String {
        format!("SELECT coalesce(json_agg(t), '[]')::text FROM ({inner}) t")
    }
    /// Drawn from the identity column's sequence, like a default id.
    async fn reserve_ids(conn: &mut sqlx::PgConnection, table: &'static str, n: usize) -> Result<Vec<i64>, sqlx::Error> {
        sqlx::query_scalar(&format!("SELECT nextval(pg_get_serial_sequence('{table}', 'id')) FROM generate_series(1, $1)"))
            .bind(n as i64)
            .fetch_all(conn)
            .await
    }
    fn writer(_: &Store) -> Option<&sqlx::Pool<Self>> {
        None
    }
}

pub(crate) fn claim_lock<DB: Backend>(_: &sqlx::Pool<DB>) -> Option<&'static str> {
    DB::CLAIM_LOCK
}
pub(crate) fn single_instance<DB: Backend>(_: &sqlx::Pool<DB>) -> bool {
    DB::SINGLE_INSTANCE
}

pub(crate) fn json_agg<DB: Backend>(_: &sqlx::Pool<DB>, inner: &str, cols: &str) -> String {
    DB::json_agg(inner, cols)
}
/// The rows of a [`Backend::json_agg`] query.
pub(crate) fn from_json_rows<T: serde::de::DeserializeOwned>(json: &str) -> Result<Vec<T>, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Data(format!("reading rows back from JSON: {e}")))
}
pub(crate) fn skip_locked<DB: Backend>(_: &sqlx::Pool<DB>) -> &'static str {
    DB::SKIP_LOCKED
}
pub(crate) async fn reserve_ids<DB: Backend>(
    _: &sqlx::Pool<DB>,
    conn: &mut DB::Connection,
    table: &'static str,
    n: usize,
) -> Result<Vec<i64>, sqlx::Error> {
    DB::reserve_ids(conn, table, n).await
}

#[derive(Clone, Debug)]
pub enum Db {
    Sqlite {
        readers: SqlitePool,
        /// The one connection that write transactions use. SQLite keeps a
        /// page cache per connection and empties it whenever another
        /// connection has committed, so writes spread over the readers'
        /// connections each began cold, re-reading their pages from the
        /// file (dispatch: 38% fewer reads of the file, strace).
        writer: SqlitePool,
    },
    Pg(PgPool),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database URL {0:?} is neither sqlite:// nor postgres://")]
    BadUrl(String),
    #[error("cannot open the database {url}: {}", explain(source))]
    Open { url: String, source: sqlx::Error },
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {}", explain(.0))]
    Sql(#[from] sqlx::Error),
    #[error("{0}")]
    Data(String),
}

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) db: Db,
    /// This process's identity for claims and leases.
    pub instance: String,
    /// Write transactions of this process take turns here (SQLite only; see
    /// [`Store::begin_write`]). The writer's pool of one would queue them
    /// too, but its acquire gives up after 30 s.
    writers: Arc<tokio::sync::Mutex<()>>,
    /// The latest fire of each cron job this process claimed or saw
    /// claimed (see [`Store::claim_cron_fire`]).
    cron_asked: Arc<std::sync::Mutex<std::collections::HashMap<String, i64>>>,
    /// Each rep's sends of the day so far, as the last claim counted them
    /// (see `outbox::DayCount`).
    day_counts: Arc<std::sync::Mutex<std::collections::HashMap<String, outbox::DayCount>>>,
}

/// A write transaction, holding this process's writer turn on SQLite until
/// it commits or is dropped (rolled back). Dereferences to the connection,
/// like [`sqlx::Transaction`].
pub(crate) struct WriteTx<'c, DB: sqlx::Database> {
    // Declared before the turn: dropped (rolled back) first.
    tx: sqlx::Transaction<'c, DB>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl<DB: sqlx::Database> WriteTx<'_, DB> {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl<DB: sqlx::Database> Deref for WriteTx<'_, DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        &self.tx
    }
}

impl<DB: sqlx::Database> DerefMut for WriteTx<'_, DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.tx
    }
}

impl Store {
    /// Opens (creating a SQLite file if missing) and migrates.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Store::open_with(url, false).await
    }

    /// Opens for a one-shot bulk writer (`cadence import`): a SQLite page
    /// cache of 256 MiB a connection instead of 2 MiB, and a checkpoint
    /// every 400 MB of WAL instead of 40 (see `open_with`). A large import
    /// inserts all over the email and domain indexes; with the small cache
    /// their pages are written out and read back within a batch (8% of a
    /// million-row import's time, measured). The daemon keeps the defaults,
    /// which its memory budget counts on.
    pub async fn open_bulk(url: &str) -> Result<Store, StoreError> {
        Store::open_with(url, true).await
    }

    async fn open_with(url: &str, bulk: bool) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open { url: redact_url(url), source };
        let db = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url).map_err(open_err)?;
            // SQLite says only "unable to open" or "disk I/O error" when
            // the file system is read-only or full: look, and say which.
            let file = opts.get_filename().to_path_buf();
            let open_err = |source: sqlx::Error| match diagnose_sqlite_file(&file) {
                Some(why) => StoreError::Data(format!("cannot open the database {}: {why} ({source})", redact_url(url))),
                None => StoreError::Open { url: redact_url(url), source },
            };
            let opts = opts
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(30))
                // A checkpoint runs inside the commit that crosses this many
                // WAL pages, and syncs the database file, while the
                // process's writer turn is held (busy 92% of the time while
                // dispatching). Every 40 MB instead of SQLite's 4 MB: 6-11%
                // more emails a second, four runs each. A bulk writer's
                // every 400 MB: a million-row import 3% faster (three
                // alternating pairs), its WAL checkpointed at the end.
                .pragma("wal_autocheckpoint", if bulk { "100000" } else { "10000" })
                // sqlx hands rows over from its worker thread through a
                // channel of 50; a group commit's `RETURNING` of 250 rows
                // stalled the writer on it, inside the writer turn. Room
                // for a batch took that statement from 3.8 to 2.1 ms.
                .row_buffer_size(4096);
            // A negative cache_size is in KiB. A statement that writes many
            // rows inside a transaction keeps a journal of the pages it
            // changes, to undo itself alone on a constraint error; past 64
            // KiB SQLite spills it to a temp file. For the daemon that was
            // 3.6 writes an email (strace) and 6% of its time (perf), so
            // its journals stay in memory: a few hundred pages at most. An
            // import's batches of 20,000 leads journal far more, and kept in
            // memory they were no faster (a million-row import, four
            // alternating runs: 0-5% slower), so an import keeps the file.
            let opts = if bulk { opts.pragma("cache_size", format!("-{}", 256 * 1024)) } else { opts.pragma("temp_store", "memory") };
            let file = opts.get_filename().to_path_buf();
            // No ping before each use: a local file does not drop the
            // connection, and the ping cost a round trip to the
            // connection's thread every time one was taken from the pool.
            let pool = |n| SqlitePoolOptions::new().max_connections(n).test_before_acquire(false).connect_with(opts.clone());
            let lock = open_lock(&file).await;
            let readers = pool(8).await.map_err(&open_err)?;
            sqlx::migrate!("./migrations/sqlite").run(&readers).await.map_err(|e| match e {
                sqlx::migrate::MigrateError::Execute(source) => open_err(source),
                other => StoreError::Migrate(other),
            })?;
            let writer = pool(1).await.map_err(&open_err)?;
            drop(lock);
            Db::Sqlite { readers, writer }
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let opts = PgConnectOptions::from_str(url).map_err(open_err)?;
            let pool = PgPoolOptions::new()
                .max_connections(10)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(opts)
                .await
                .map_err(open_err)?;
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            Db::Pg(pool)
        } else {
            return Err(StoreError::BadUrl(redact_url(url)));
        };
        let instance = format!("{}-{}-{:08x}", hostname(), std::process::id(), rand::random::<u32>());
        let store = Store { db, instance, writers: Arc::default(), cron_asked: Arc::default(), day_counts: Arc::default() };
        // Only slower queries without them: a database that cannot be
        // written to (a read-only mount, a full disk) still opens.
        if let Err(e) = store.build_deferred_indexes().await {
            tracing::warn!(error = %e, "cannot build the indexes a stopped import set aside; queries are slower until they are built");
        }
        Ok(store)
    }

    /// Begins a write transaction. SQLite has one writer at a time: when two
    /// of our connections both want to write (a claim and a group commit of
    /// acknowledgements), the second would wait in SQLite's busy handler,
    /// which sleeps 1, 2, 5, 10... ms between tries (a thousand such sleeps
    /// per 20,000 sends in the dispatch profile). Here they queue in the
    /// process instead and start the moment the writer before them commits,
    /// all on the one writer connection, whose page cache stays warm.
    /// Other processes (a one-shot `cadence enroll`) still meet the busy
    /// handler. PostgreSQL writers run in parallel and take no turn.
    pub(crate) async fn begin_write<DB: Backend>(&self, pool: &sqlx::Pool<DB>) -> Result<WriteTx<'static, DB>, sqlx::Error> {
        let turn = match self.db {
            Db::Sqlite { .. } => Some(self.writers.clone().lock_owned().await),
            Db::Pg(_) => None,
        };
        let tx = DB::writer(self).unwrap_or(pool).begin_with(DB::BEGIN).await?;
        Ok(WriteTx { tx, _turn: turn })
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.db, Db::Pg(_))
    }

    /// Answers when the database does (health checks).
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, pool => { sqlx::query("SELECT 1").execute(pool).await?; });
        Ok(())
    }

    pub async fn close(&self) {
        match &self.db {
            Db::Sqlite { readers, writer } => {
                writer.close().await;
                readers.close().await;
            }
            Db::Pg(pool) => pool.close().await,
        }
    }
}

/// An exclusive lock on `FILE.migrate-lock`, held while a process connects
/// to a SQLite database and migrates it. Two processes opening a new
/// database at once (`cadence run` and a `cadence enroll` from the shell)
/// would otherwise both switch the new file to WAL, and SQLite refuses the
/// second at once ("database is locked") instead of waiting; and sqlx's
/// SQLite migrator takes no lock of its own, so both could apply the first
/// migration. Where the lock file cannot be created (a read-only folder)
/// the process goes on unlocked: it can then only be reading an already
/// migrated database.
async fn open_lock(file: &std::path::Path) -> Option<std::fs::File> {
    let mut lock_path = file.as_os_str().to_owned();
    lock_path.push(".migrate-lock");
    tokio::task::spawn_blocking(move || {
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).ok()?;
        f.lock().ok()?;
        Some(f)
    })
    .await
    .ok()
    .flatten()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "cadence".into())
}

/// Removes a password from a database URL before it goes into a message.
/// A database error in words a user can act on. SQLite reports "locked",
/// "read-only" or "full" as numeric result codes that sqlx passes through
/// unexplained.
pub fn explain(e: &sqlx::Error) -> String {
    let base = e.to_string();
    let code = e
        .as_database_error()
        .and_then(|d| d.try_downcast_ref::<sqlx::sqlite::SqliteError>())
        .and_then(sqlx::error::DatabaseError::code)
        .and_then(|c| c.parse::<i64>().ok());
    let hint = match code.map(|c| c & 0xff) {
        Some(5 | 6) => "the database is locked by another process (cadence waited 30 s): another `cadence run`, or a `sqlite3` shell in the middle of a transaction?",
        Some(8) => "the database is read-only: check the file's permissions and that its file system is mounted read-write",
        Some(13) => "the disk is full: free some space where the database lives",
        Some(10) => "disk I/O error: the disk may be full or failing",
        Some(14) => "cannot open the database file: its folder must exist and be writable (not on a read-only file system)",
        _ => return base,
    };
    format!("{hint} ({base})")
}

/// Why a SQLite file cannot be opened, when the file system can tell:
/// a missing folder, a read-only mount, no write permission, a full disk.
fn diagnose_sqlite_file(file: &std::path::Path) -> Option<String> {
    use std::io::{ErrorKind, Write};
    let folder = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    if !folder.is_dir() {
        return Some(format!("the folder {} does not exist", folder.display()));
    }
    let describe = |e: std::io::Error| match e.kind() {
        ErrorKind::ReadOnlyFilesystem => Some(format!("{} is on a read-only file system", folder.display())),
        ErrorKind::PermissionDenied => Some(format!("no permission to write in {}", folder.display())),
        ErrorKind::StorageFull => Some(format!("the disk is full: no space left in {}", folder.display())),
        _ => None,
    };
    if file.exists() {
        if let Err(e) = std::fs::OpenOptions::new().append(true).open(file) {
            return describe(e);
        }
    }
    // Room for SQLite's journal and shared-memory files.
    let probe = folder.join(format!(".cadence-space-probe-{}", std::process::id()));
    let result = std::fs::File::create(&probe).and_then(|mut f| f.write_all(&[0u8; 64 * 1024]).and_then(|()| f.sync_all()));
    let _ = std::fs::remove_file(&probe);
    result.err().and_then(describe)
}

pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}://{user}:***{}", &url[..s], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(super::redact_url("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(super::redact_url("sqlite://cadence.db"), "sqlite://cadence.db");
    }
}
