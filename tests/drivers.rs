//! Real application drivers through the router in transaction mode, each
//! with its prepared-statement machinery on as it ships: psycopg 3
//! (prepare_threshold=0), asyncpg (its statement cache), node-postgres (named
//! queries), postgres.js (prepare on) and the PostgreSQL JDBC driver
//! (prepareThreshold=1). Each program in tests/drivers/ runs several
//! concurrent clients over fewer server connections (pool_size 2), with
//! several parameter types, transactions and errors, and checks what it reads;
//! routing is on, so reads outside transactions run on the replicas.
//!
//! scripts/ensure-drivers.sh installs them into target/drivers (scripts/test.sh
//! runs it and sets PGROUTER_REQUIRE_DRIVERS=1); without it a test whose
//! driver is missing says so and passes, so `cargo test` works anywhere.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn drivers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/drivers")
}

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers")
}

/// Whether `what` is installed; a missing driver fails the test only when
/// the test script said it installed them.
fn available(what: &str, path: &Path) -> bool {
    if path.exists() {
        return true;
    }
    assert!(
        std::env::var_os("PGROUTER_REQUIRE_DRIVERS").is_none(),
        "{what} is not installed at {} (scripts/ensure-drivers.sh)",
        path.display()
    );
    eprintln!(
        "skipping: {what} not installed at {} (run scripts/ensure-drivers.sh)",
        path.display()
    );
    false
}

const WORKERS: usize = 8;
const ROUNDS: usize = 25;

/// Runs one driver program against a fresh database through a router with
/// fewer server connections than clients, and checks what it reports and
/// what the primary holds afterwards.
async fn run_driver(name: &str, mut cmd: Command, max_prepared: usize) {
    let db = database(name);
    let r = router(|c| {
        c.pool.pool_size = 2;
        c.pool.max_prepared_statements = max_prepared;
        // Each program checks its totals on another connection than the
        // workers wrote on, as applications with several connections do:
        // the user's connections share the write position (docs/routing.md).
        c.routing.consistency_scope = pgrouter::config::ConsistencyScope::User;
    })
    .await;
    let stats = &pgrouter::prepared::cache::STATS;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let (hits0, evictions0) = (load(&stats.hits), load(&stats.evictions));
    cmd.env("DATABASE_URL", url(&r, &db))
        .env("WORKERS", WORKERS.to_string())
        .env("ROUNDS", ROUNDS.to_string())
        .current_dir(scripts_dir());
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("cannot run the {name} program: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let rows = WORKERS * ROUNDS;
    assert!(
        stdout.lines().any(|l| l == format!("ok {rows}")),
        "{name} did not report {rows} rows:\n{stdout}\n{stderr}"
    );
    // The primary holds every row each client wrote, once.
    assert_eq!(
        primary_sql(&db, "SELECT count(*), count(DISTINCT id) FROM items"),
        format!("{rows}|{rows}")
    );
    // Statements were reused on server connections, and with a small cache
    // evicted. (The counters are process-wide, shared with the other
    // driver tests of this binary: a lower bound on what this one did.)
    assert!(load(&stats.hits) > hits0, "{name}: no statement reused");
    if max_prepared < 5 {
        assert!(
            load(&stats.evictions) > evictions0,
            "{name}: nothing evicted"
        );
    }
    // Reads outside transactions ran on replicas, prepared there by the
    // router: named statements compose with routing.
    let on_replicas = r
        .shared
        .route_stats
        .decisions(true, pgrouter::router::RouteReason::Read);
    assert!(on_replicas > 0, "{name}: no read ran on a replica");
    // Each pool opened at most pool_size connections and never had to
    // replace one: the clients' statements moved between two connections per
    // server, and no connection was left broken or dirty.
    for p in r.shared.pools.all() {
        let connects = p.stats.connects.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            connects <= 2,
            "{} opened {connects} connections with pool_size 2",
            p.target
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_with_every_statement_prepared() {
    let python = drivers_dir().join("venv/bin/python");
    if !available("psycopg 3 (Python venv)", &python) {
        return;
    }
    let mut cmd = Command::new(python);
    cmd.arg("psycopg_app.py");
    // A cache of 3 per server connection for 7 statements per client: the
    // router evicts (Close) and re-prepares all the time.
    run_driver("psycopg", cmd, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_with_its_statement_cache() {
    let python = drivers_dir().join("venv/bin/python");
    if !available("asyncpg (Python venv)", &python) {
        return;
    }
    let mut cmd = Command::new(python);
    cmd.arg("asyncpg_app.py");
    run_driver("asyncpg", cmd, 200).await;
}

/// `node` with NODE_PATH at the installed packages (the programs use require).
fn node(script: &str, package: &str) -> Option<Command> {
    let modules = drivers_dir().join("node/node_modules");
    if !available(package, &modules.join(package)) {
        return None;
    }
    let mut cmd = Command::new("node");
    cmd.arg(script).env("NODE_PATH", modules);
    Some(cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_with_named_queries() {
    if let Some(cmd) = node("node_pg_app.js", "pg") {
        // Evictions here too (6 named queries, room for 2).
        run_driver("node_pg", cmd, 2).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_js_with_prepare_on() {
    if let Some(cmd) = node("postgres_js_app.js", "postgres") {
        // (postgres.js runs each query on any connection of its own pool:
        // a task's read may use another connection than its write.)
        run_driver("postgres_js", cmd, 200).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_with_prepare_threshold_1() {
    let jar = Path::new("/usr/share/java/postgresql.jar");
    if !available(
        "the PostgreSQL JDBC driver (Debian libpostgresql-jdbc-java)",
        jar,
    ) {
        return;
    }
    let mut cmd = Command::new("java");
    cmd.arg("-cp").arg(jar).arg("JdbcApp.java");
    run_driver("jdbc", cmd, 200).await;
}
