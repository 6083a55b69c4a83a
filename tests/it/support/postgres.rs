//! A fresh PostgreSQL database per test on a real server.
//!
//! The store must behave the same on SQLite and PostgreSQL, so PostgreSQL
//! tests run on a real server: `$CADENCE_TEST_PG` (an admin URL), else
//! `postgres://postgres@127.0.0.1:5432/postgres`. `scripts/test` starts a
//! throwaway server and sets the variable where none answers. Each test gets
//! its own database, so tests run in parallel and never see each other's
//! rows; it is dropped when the guard drops.

use sqlx::{Connection, Executor, PgConnection};

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The server's admin URL: `$CADENCE_TEST_PG` or the default.
pub fn admin_url() -> String {
    std::env::var("CADENCE_TEST_PG").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_string())
}

/// A database created for one test; dropped (best effort) on drop.
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
}

impl TestDatabase {
    /// `postgres://...` URL of this database, for `CADENCE_DATABASE_URL`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.unwrap_or_else(|e| panic!("connect to {}: {e}", self.url))
    }
}

/// Creates a uniquely named, empty database and returns its guard.
pub async fn fresh_database() -> TestDatabase {
    let admin_url = admin_url();
    let mut admin = connect_admin(&admin_url).await;
    let name = format!("cadence_test_{}_{:08x}", std::process::id(), rand::random::<u32>());
    admin
        .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {admin_url}: {e}"));
    let _ = admin.close().await;
    TestDatabase { url: with_database(&admin_url, &name), name, admin_url }
}

/// True when a database of this name exists on the server.
pub async fn database_exists(name: &str) -> bool {
    let mut admin = connect_admin(&admin_url()).await;
    let found: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut admin)
        .await
        .expect("query pg_database");
    let _ = admin.close().await;
    found.is_some()
}

async fn connect_admin(admin_url: &str) -> PgConnection {
    PgConnection::connect(admin_url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {admin_url}: {e}\n\
             Set CADENCE_TEST_PG to an admin URL, or run scripts/test, \
             which starts a throwaway server when none answers."
        )
    })
}

/// `url` with its database (path) replaced by `name`, query kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..].find('/').map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop cannot await, and a runtime may be running on this thread:
        // do the async cleanup on a thread of its own.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await.ok()?;
                let sql = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
                admin.execute(sql.as_str()).await.ok()?;
                admin.close().await.ok()
            })
        });
        let _ = cleanup.join();
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn with_database_replaces_only_the_path() {
        assert_eq!(with_database("postgres://u@h:1/postgres", "x"), "postgres://u@h:1/x");
        assert_eq!(with_database("postgres://u@h:1/postgres?sslmode=disable", "x"), "postgres://u@h:1/x?sslmode=disable");
        assert_eq!(with_database("postgres://u@h:1", "x"), "postgres://u@h:1/x");
    }
}
