//! A fresh PostgreSQL database per test, on the server named by `KEYD_TEST_DATABASE_URL`
//! (e.g. `postgres://postgres@127.0.0.1:5432/postgres`), dropped when the handle drops.
//!
//! Without that variable, or when the server does not answer, a test fails under CI (the
//! several-keyd acceptance tests must run there) and is skipped with a message otherwise.

use sqlx::Connection as _;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The environment variable naming the test server (any database on it; tests create their
/// own next to it).
pub const ENV: &str = "KEYD_TEST_DATABASE_URL";

#[derive(Debug)]
pub struct TestDatabase {
    /// The fresh database's URL, for `keyd serve --database`.
    pub url: String,
    base: String,
    name: String,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime for PostgreSQL setup")
}

/// Fails under CI, prints a skip otherwise; `None` either way (when not panicking).
fn unavailable(why: &str) -> Option<TestDatabase> {
    if std::env::var_os("CI").is_some() {
        panic!("{why}: the several-keyd tests must run in CI (set {ENV}, e.g. postgres://postgres@127.0.0.1:5432/postgres)");
    }
    eprintln!("SKIPPED: {why}; set {ENV} (e.g. postgres://postgres@127.0.0.1:5432/postgres) to run this test");
    None
}

async fn exec(base: &str, sql: &str) -> Result<(), sqlx::Error> {
    let mut c = sqlx::PgConnection::connect(base).await?;
    sqlx::query(sql).execute(&mut c).await?;
    c.close().await
}

impl TestDatabase {
    /// Creates `keygate_e2e_<random>` on the test server.
    pub fn create() -> Option<TestDatabase> {
        let base = match std::env::var(ENV) {
            Ok(u) if !u.trim().is_empty() => u.trim().to_owned(),
            _ => return unavailable(&format!("{ENV} is not set")),
        };
        let Some((prefix, _)) = base.rsplit_once('/').filter(|(p, _)| p.contains("://")) else {
            panic!("{ENV}={base:?} is not a postgres://USER@HOST:PORT/DATABASE URL");
        };
        // Unique per process, test and moment: pid, a counter, and the clock's nanoseconds.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "keygate_e2e_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let made = runtime().block_on(exec(&base, &format!("CREATE DATABASE {name}")));
        if let Err(e) = made {
            return unavailable(&format!("PostgreSQL at {ENV} is unreachable ({e})"));
        }
        Some(TestDatabase {
            url: format!("{prefix}/{name}"),
            base,
            name,
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = runtime().block_on(exec(&self.base, &sql)) {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}
