//! Test harness: one real PostgreSQL cluster (primary + 2 streaming replicas)
//! per test binary, a database per test, and the router started in-process on
//! free ports. Nothing here mocks the database.
#![allow(dead_code)]

pub mod raw;
pub mod relay;

use pgrouter::app::Router;
use pgrouter::config::Config;
use pgrouter::demo::cluster::PgCluster;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

pub const USER: &str = "app";
pub const PASSWORD: &str = "app-secret";
/// A role the router logs clients in with `auth = "trust"` (for raw-socket tests).
pub const RAW_USER: &str = "rawuser";
pub const RAW_PASSWORD: &str = "raw-secret";

static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
static DB_SEQ: AtomicUsize = AtomicUsize::new(0);

/// The shared cluster, started on first use.
pub fn cluster() -> &'static PgCluster {
    CLUSTER.get_or_init(|| {
        let c = PgCluster::start(2).unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}"));
        c.create_user(USER, PASSWORD)
            .unwrap_or_else(|e| panic!("{e}"));
        c.create_user(RAW_USER, RAW_PASSWORD)
            .unwrap_or_else(|e| panic!("{e}"));
        // Users whose *server* login uses md5, cleartext or trust.
        let sql =
            "SET password_encryption = 'md5'; CREATE ROLE md5user LOGIN PASSWORD 'md5-secret'; \
                   RESET password_encryption; CREATE ROLE pwuser LOGIN PASSWORD 'pw-secret'; \
                   CREATE ROLE trustuser LOGIN";
        c.psql(c.primary.port, "postgres", sql)
            .unwrap_or_else(|e| panic!("{e}"));
        for rule in [
            "host all md5user 127.0.0.1/32 md5",
            "host all pwuser 127.0.0.1/32 password",
            "host all trustuser 127.0.0.1/32 trust",
        ] {
            c.prepend_hba_rule(rule).unwrap_or_else(|e| panic!("{e}"));
        }
        c
    })
}

/// A fresh database owned by [`USER`], named after the test.
pub fn database(test: &str) -> String {
    let name = format!("{test}_{}", DB_SEQ.fetch_add(1, Ordering::Relaxed));
    cluster()
        .create_database(&name, USER)
        .unwrap_or_else(|e| panic!("{e}"));
    cluster()
        .psql(
            cluster().primary.port,
            &name,
            &format!("GRANT ALL ON SCHEMA public TO {RAW_USER}"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    name
}

/// Runs SQL on the primary as the superuser.
pub fn primary_sql(db: &str, sql: &str) -> String {
    cluster()
        .psql(cluster().primary.port, db, sql)
        .unwrap_or_else(|e| panic!("{e}"))
        .trim()
        .to_string()
}

/// The base config for tests: free ports, the test users, the cluster.
pub fn config() -> Config {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\nlog_level = \"debug\"\n\
         [[users]]\nname = \"{USER}\"\npassword = \"{PASSWORD}\"\n\
         [[users]]\nname = \"{RAW_USER}\"\nauth = \"trust\"\nserver_password = \"{RAW_PASSWORD}\"\n{}",
        cluster().backends_toml()
    );
    Config::parse(&text, "test").unwrap_or_else(|e| panic!("{e}"))
}

/// A router running in this process on its own runtime (as a separate
/// process would: client-side work in the test cannot starve it). Dropping
/// it triggers shutdown.
pub struct TestRouter(Router);

impl std::ops::Deref for TestRouter {
    type Target = Router;
    fn deref(&self) -> &Router {
        &self.0
    }
}

impl Drop for TestRouter {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

/// Starts the router with the base config changed by `f`.
pub async fn router(f: impl FnOnce(&mut Config)) -> TestRouter {
    let mut c = config();
    f(&mut c);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(async move {
            let started = Router::start(c).await;
            let shared = started.as_ref().ok().map(|r| r.shared.clone());
            let _ = tx.send(started);
            if let Some(shared) = shared {
                shared.shutdown.wait().await;
                let all = shared.config().server.max_client_conn as u32;
                let _ = tokio::time::timeout(
                    Duration::from_secs(10),
                    shared.client_slots.semaphore().acquire_many(all),
                )
                .await;
            }
        });
    });
    let r = rx
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    TestRouter(r)
}

/// A libpq-style URL through the router.
pub fn url(router: &Router, db: &str) -> String {
    format!(
        "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{db}",
        router.addr.port()
    )
}

/// Connects with tokio-postgres through the router and drives the connection.
pub async fn connect(router: &Router, db: &str) -> tokio_postgres::Client {
    try_connect(router, db)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"))
}

pub async fn try_connect(
    router: &Router,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    connect_url(&url(router, db)).await
}

pub async fn connect_url(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// "SQLSTATE: message" of a tokio-postgres error, for assertions and panics.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.code().code(), d.message()),
        None => format!("{e:?}"),
    }
}

/// The SQLSTATE of a tokio-postgres error, if the server (or router) sent one.
pub fn code(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

/// Runs a command-line tool with PGPASSWORD set for [`USER`].
pub fn run_tool(program: &str, args: &[&str]) -> std::process::Output {
    let bin = cluster().bindir.join(program);
    std::process::Command::new(bin)
        .args(args)
        .env("PGPASSWORD", PASSWORD)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// The first column of the first row of a simple-protocol query, as text.
pub async fn first_value(c: &tokio_postgres::Client, sql: &str) -> Option<String> {
    let rows = c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
    rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    })
}

/// The port a statement ran on, through a tokio-postgres client (simple protocol).
pub async fn port_of(c: &tokio_postgres::Client, sql: &str) -> u16 {
    first_value(c, sql)
        .await
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{sql}: no port in the result"))
}

/// `pgbench -i -s 1` on the primary (as the test user).
pub fn pgbench_init(db: &str) {
    let port = cluster().primary.port.to_string();
    let out = run_tool(
        "pgbench",
        &[
            "-i",
            "-s",
            "1",
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            USER,
            db,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn replica_ports() -> Vec<u16> {
    cluster().replicas.iter().map(|r| r.port).collect()
}

/// Waits until every replica has replayed everything the primary has now.
pub fn wait_replicas_caught_up() {
    let c = cluster();
    let target = c
        .psql(
            c.primary.port,
            "postgres",
            "SELECT pg_current_wal_insert_lsn()",
        )
        .unwrap_or_else(|e| panic!("{e}"));
    for r in &c.replicas {
        let q = format!(
            "SELECT pg_last_wal_replay_lsn() >= '{}'::pg_lsn",
            target.trim()
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while c.psql(r.port, "postgres", &q).unwrap_or_default().trim() != "t" {
            assert!(
                std::time::Instant::now() < deadline,
                "replica {} never caught up",
                r.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A plain HTTP/1.1 GET; returns the whole response (status line, headers, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out
}

/// The lag monitor's state of server `node` (0: the primary).
pub fn node_state(r: &Router, node: usize) -> pgrouter::lag::health::State {
    r.shared.monitor.nodes()[node].status.state()
}

/// Polls until server `node` is in `want`; returns how long it took.
pub async fn wait_state(
    r: &Router,
    node: usize,
    want: pgrouter::lag::health::State,
    limit: Duration,
) -> Duration {
    let start = std::time::Instant::now();
    while node_state(r, node) != want {
        assert!(
            start.elapsed() < limit,
            "node {node} still {:?} after {limit:?} (wanted {want:?})",
            node_state(r, node)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}
