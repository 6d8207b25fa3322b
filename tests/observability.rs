//! Observability against real PostgreSQL: /metrics values after known
//! traffic, the metric names pass `promtool check metrics`, /health/ready
//! flips when the primary goes away and back, and the admin console
//! answers SHOW, PAUSE/RESUME and SHUTDOWN.

mod common;

use common::*;
use pgrouter::config::TenantConfig;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_postgres::SimpleQueryMessage;

/// The value of one series in a /metrics page, matched on the given labels
/// (the series may have more).
fn metric(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    for line in page.lines() {
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ')?;
        let (n, rest) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        let have: BTreeMap<&str, &str> = rest
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        if labels.iter().all(|(k, v)| have.get(k) == Some(v)) {
            return value.parse().ok();
        }
    }
    None
}

fn must(page: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(page, name, labels)
        .unwrap_or_else(|| panic!("no series {name}{labels:?} in /metrics:\n{page}"))
}

async fn metrics_page(addr: SocketAddr) -> String {
    let resp = http_get(addr, "/metrics").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("text/plain; version=0.0.4"), "{resp}");
    resp.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

fn tenant(users: &[&str], f: impl FnOnce(&mut TenantConfig)) -> TenantConfig {
    let mut t = TenantConfig {
        users: users.iter().map(|u| u.to_string()).collect(),
        ..Default::default()
    };
    f(&mut t);
    t
}

async fn rows(c: &tokio_postgres::Client, sql: &str) -> Vec<tokio_postgres::SimpleQueryRow> {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_known_traffic() {
    let db = database("metrics");
    primary_sql(&db, "CREATE TABLE t (id int); ALTER TABLE t OWNER TO app");
    wait_replicas_caught_up();
    let r = router(|c| {
        c.tenants.insert(
            "acme".into(),
            tenant(&[USER], |t| {
                t.max_clients = Some(2);
            }),
        );
    })
    .await;
    let c = connect(&r, &db).await;
    let (reads, failures, writes) = (12u64, 3u64, 5u64);
    for _ in 0..reads {
        c.simple_query("SELECT 1")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    for _ in 0..failures {
        let e = c.simple_query("SELECT 1/0").await.err();
        assert_eq!(e.as_ref().map(code).as_deref(), Some("22012"));
    }
    for i in 0..writes {
        c.simple_query(&format!("INSERT INTO t VALUES ({i})"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // A transaction of three queries counts once, with three queries.
    c.simple_query("BEGIN; INSERT INTO t VALUES (100); INSERT INTO t VALUES (101); COMMIT")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // max_clients 2: the third client is refused.
    let second = connect(&r, &db).await;
    let third = try_connect(&r, &db).await;
    assert_eq!(third.err().map(|e| code(&e)).as_deref(), Some("53300"));

    // The client sees its last ReadyForQuery before the router has put the
    // server connection back (it records the write position after a
    // write): wait until both clients show idle.
    let deadline = Instant::now() + Duration::from_secs(5);
    let page = loop {
        let page = metrics_page(r.http_addr).await;
        let idle = must(
            &page,
            "pgrouter_clients",
            &[("tenant", "acme"), ("state", "idle")],
        );
        if idle == 2.0 || Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let acme = |route, outcome| {
        must(
            &page,
            "pgrouter_transactions_total",
            &[("tenant", "acme"), ("route", route), ("outcome", outcome)],
        )
    };
    assert_eq!(acme("replica", "ok"), reads as f64);
    assert_eq!(acme("replica", "error"), failures as f64);
    assert_eq!(acme("primary", "ok"), (writes + 1) as f64);
    assert_eq!(acme("primary", "error"), 0.0);
    let queries = |route| {
        must(
            &page,
            "pgrouter_queries_total",
            &[("tenant", "acme"), ("route", route)],
        )
    };
    assert_eq!(queries("replica"), (reads + failures) as f64);
    // The multi-statement Query is one Query message.
    assert_eq!(queries("primary"), (writes + 1) as f64);
    let decisions = |target, reason| {
        must(
            &page,
            "pgrouter_routing_decisions_total",
            &[("target", target), ("reason", reason)],
        )
    };
    assert_eq!(decisions("replica", "read"), (reads + failures) as f64);
    assert_eq!(decisions("primary", "write"), writes as f64);
    assert_eq!(decisions("primary", "explicit_transaction"), 1.0);
    let count = must(
        &page,
        "pgrouter_transaction_duration_seconds_count",
        &[("tenant", "acme"), ("route", "replica")],
    );
    assert_eq!(count, (reads + failures) as f64);
    let inf = must(
        &page,
        "pgrouter_transaction_duration_seconds_bucket",
        &[("tenant", "acme"), ("route", "replica"), ("le", "+Inf")],
    );
    assert_eq!(inf, count);
    let sum = must(
        &page,
        "pgrouter_transaction_duration_seconds_sum",
        &[("tenant", "acme"), ("route", "replica")],
    );
    assert!(sum > 0.0 && sum < 15.0, "duration sum {sum}");
    let waits = must(
        &page,
        "pgrouter_pool_wait_seconds_count",
        &[("tenant", "acme")],
    );
    assert_eq!(waits, (reads + failures + writes + 1) as f64);
    // Two clients connected, both idle between transactions.
    assert_eq!(
        must(
            &page,
            "pgrouter_clients",
            &[("tenant", "acme"), ("state", "idle")]
        ),
        2.0
    );
    assert_eq!(
        must(
            &page,
            "pgrouter_clients",
            &[("tenant", "acme"), ("state", "active")]
        ),
        0.0
    );
    assert_eq!(
        must(
            &page,
            "pgrouter_tenant_rejections_total",
            &[("tenant", "acme"), ("reason", "max_clients")]
        ),
        1.0
    );
    assert!(
        must(
            &page,
            "pgrouter_server_connections",
            &[("server", "primary"), ("tenant", "acme"), ("state", "idle")]
        ) >= 1.0
    );
    for replica in ["r1", "r2"] {
        assert_eq!(
            must(
                &page,
                "pgrouter_server_state",
                &[("server", replica), ("state", "healthy")]
            ),
            1.0
        );
        assert_eq!(
            must(
                &page,
                "pgrouter_server_state",
                &[("server", replica), ("state", "evicted")]
            ),
            0.0
        );
        let lag = must(
            &page,
            "pgrouter_replica_lag_seconds",
            &[("server", replica)],
        );
        assert!((0.0..5.0).contains(&lag), "lag {lag}");
    }
    assert_eq!(
        must(&page, "pgrouter_server_is_writer", &[("server", "primary")]),
        1.0
    );
    assert!(must(&page, "pgrouter_classifier_cache_misses_total", &[]) >= 1.0);
    let hits = must(
        &page,
        "pgrouter_classifier_cache_hits_total",
        &[("kind", "exact")],
    ) + must(
        &page,
        "pgrouter_classifier_cache_hits_total",
        &[("kind", "shape")],
    );
    assert!(hits >= 1.0, "cache hits {hits}");
    assert_eq!(must(&page, "pgrouter_client_connections", &[]), 2.0);

    // A client inside a transaction is active and holds a server connection.
    second
        .simple_query("BEGIN; SELECT 1")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let page = metrics_page(r.http_addr).await;
    assert_eq!(
        must(
            &page,
            "pgrouter_clients",
            &[("tenant", "acme"), ("state", "active")]
        ),
        1.0
    );
    let active: f64 = ["primary", "r1", "r2"]
        .iter()
        .filter_map(|s| {
            metric(
                &page,
                "pgrouter_server_connections",
                &[("server", s), ("tenant", "acme"), ("state", "active")],
            )
        })
        .sum();
    assert_eq!(active, 1.0);
    second
        .simple_query("COMMIT")
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // Labels stay bounded: no series names a client, user or statement.
    assert!(!page.contains("INSERT") && !page.contains("user=\""));
    promtool_check(&["check", "metrics"], Some(&page));
    dashboards_reference_real_metrics(&page);
}

/// Every `pgrouter_*` name in the shipped Grafana dashboard and alert rules
/// is a series of the live /metrics page; the dashboard is valid JSON with
/// a query in every panel; the rules pass `promtool check rules`.
fn dashboards_reference_real_metrics(page: &str) {
    let series: std::collections::BTreeSet<&str> = page
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let root = env!("CARGO_MANIFEST_DIR");
    for file in ["docs/grafana/pgrouter.json", "docs/prometheus/alerts.yml"] {
        let text = std::fs::read_to_string(format!("{root}/{file}"))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let mut names = 0;
        for (i, _) in text.match_indices("pgrouter_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            assert!(
                series.contains(name.as_str()),
                "{file} uses {name}, which /metrics does not export"
            );
            names += 1;
        }
        assert!(names >= 5, "{file} names only {names} metrics");
    }
    let text =
        std::fs::read_to_string(format!("{root}/docs/grafana/pgrouter.json")).unwrap_or_default();
    let dash: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("docs/grafana/pgrouter.json: {e}"));
    let panels = dash["panels"].as_array().cloned().unwrap_or_default();
    assert!(panels.len() >= 10, "{} panels", panels.len());
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        let has_query = |t: &serde_json::Value| t["expr"].as_str().is_some_and(|e| !e.is_empty());
        assert!(
            !targets.is_empty() && targets.iter().all(has_query),
            "panel {} has no query",
            p["title"]
        );
    }
    let rules = format!("{root}/docs/prometheus/alerts.yml");
    promtool_check(&["check", "rules", &rules], None);
}

/// `promtool check ...` (Debian package prometheus): `metrics` lints the
/// names, units and help texts given on stdin. Installed by .ci/run; a
/// machine without it skips with a message unless PGROUTER_REQUIRE_PROMTOOL
/// is set (as .ci/run does).
fn promtool_check(args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var_os("PGROUTER_REQUIRE_PROMTOOL").is_some() => {
            panic!("promtool is required (PGROUTER_REQUIRE_PROMTOOL) but cannot run: {e}")
        }
        Err(e) => {
            eprintln!("promtool not found ({e}): skipping `promtool {args:?}`");
            return;
        }
    };
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(stdin.unwrap_or_default().as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // `check metrics` prints nothing when clean; `check rules` prints SUCCESS.
    let clean = stdin.is_none() || text.trim().is_empty();
    assert!(out.status.success() && clean, "promtool {args:?}:\n{text}");
}

/// A TCP relay to the primary that can be cut and restored, so the router
/// sees its primary disappear without stopping the shared cluster.
struct Relay {
    port: u16,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    acceptor: Option<tokio::task::JoinHandle<()>>,
}

impl Relay {
    async fn start(port: u16) -> Relay {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let mut r = Relay {
            port,
            conns: Arc::default(),
            acceptor: None,
        };
        r.serve(listener);
        r
    }

    fn serve(&mut self, listener: TcpListener) {
        let upstream = cluster().primary.port;
        let conns = self.conns.clone();
        self.acceptor = Some(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut out) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                conns.lock().await.push(task);
            }
        }));
    }

    /// Stops listening and drops every relayed connection.
    async fn cut(&mut self) {
        if let Some(a) = self.acceptor.take() {
            a.abort();
            let _ = a.await;
        }
        for c in self.conns.lock().await.drain(..) {
            c.abort();
        }
    }

    async fn restore(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        self.serve(listener);
    }
}

async fn ready(addr: SocketAddr) -> (bool, String) {
    let resp = http_get(addr, "/health/ready").await;
    (resp.starts_with("HTTP/1.1 200"), resp)
}

async fn wait_ready(addr: SocketAddr, want: bool, within: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let (ok, resp) = ready(addr).await;
        if ok == want {
            if !want {
                assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
                assert!(resp.contains("\"status\":\"unready\""), "{resp}");
            }
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < within,
            "/health/ready never became {want}: {resp}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_flips_when_the_primary_goes_and_returns() {
    let mut relay = Relay::start(0).await;
    let port = relay.port;
    let r = router(|c| {
        c.primary.port = port;
        c.lag.probe_interval = pgrouter::config::HumanDuration::from_millis(100);
        c.lag.probe_timeout = pgrouter::config::HumanDuration::from_millis(300);
    })
    .await;
    let live = http_get(r.http_addr, "/health/live").await;
    assert!(
        live.starts_with("HTTP/1.1 200") && live.contains("\"live\""),
        "{live}"
    );
    wait_ready(r.http_addr, true, Duration::from_secs(5)).await;

    relay.cut().await;
    let down = wait_ready(r.http_addr, false, Duration::from_secs(5)).await;
    let page = metrics_page(r.http_addr).await;
    assert_eq!(
        must(
            &page,
            "pgrouter_server_state",
            &[("server", "primary"), ("state", "down")]
        ),
        1.0
    );
    // Liveness is about the process, not the database.
    assert!(http_get(r.http_addr, "/health/live")
        .await
        .starts_with("HTTP/1.1 200"));

    relay.restore().await;
    let up = wait_ready(r.http_addr, true, Duration::from_secs(10)).await;
    eprintln!(
        "ready -> 503 {down:?} after the primary went away; -> 200 {up:?} after it came back"
    );
    let page = metrics_page(r.http_addr).await;
    assert_eq!(
        must(
            &page,
            "pgrouter_server_state",
            &[("server", "primary"), ("state", "healthy")]
        ),
        1.0
    );
    relay.cut().await;
}

fn admin_url(r: &TestRouter, user: &str, password: &str) -> String {
    format!(
        "postgres://{user}:{password}@127.0.0.1:{}/pgrouter",
        r.addr.port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_console_shows_state_and_pauses_a_tenant() {
    let db = database("admin");
    primary_sql(&db, "CREATE TABLE t (id int); ALTER TABLE t OWNER TO app");
    let r = router(|c| {
        c.admin.users = vec![USER.into()];
        c.routing.enabled = false;
        c.tenants
            .insert("acme".into(), tenant(&[USER], |t| t.pool_size = Some(4)));
    })
    .await;
    // Not an admin: 42501, after authentication.
    let refused = connect_url(&admin_url(&r, RAW_USER, "x")).await;
    assert_eq!(refused.err().map(|e| code(&e)).as_deref(), Some("42501"));
    // An admin with the wrong password: 28P01 like anyone else.
    let wrong = connect_url(&admin_url(&r, USER, "wrong")).await;
    assert_eq!(wrong.err().map(|e| code(&e)).as_deref(), Some("28P01"));

    let admin = connect_url(&admin_url(&r, USER, PASSWORD))
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    let app = connect(&r, &db).await;
    app.simple_query("INSERT INTO t VALUES (1)")
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let version = rows(&admin, "SHOW VERSION").await;
    assert_eq!(
        version[0].get("version"),
        Some(format!("pgrouter {}", env!("CARGO_PKG_VERSION")).as_str())
    );
    // The router returns the connection just after the client has its answer.
    let mut pools = rows(&admin, "show pools").await;
    for _ in 0..50 {
        if pools
            .iter()
            .any(|p| p.get("database") == Some(db.as_str()) && p.get("active") == Some("0"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        pools = rows(&admin, "show pools").await;
    }
    let pool = pools
        .iter()
        .find(|p| p.get("database") == Some(db.as_str()))
        .unwrap_or_else(|| panic!("no pool for {db}"));
    assert_eq!(pool.get("tenant"), Some("acme"));
    assert_eq!(pool.get("server"), Some("primary"));
    assert_eq!(pool.get("pool_size"), Some("4"));
    let cols = ["active", "idle", "checkouts", "connects"].map(|c| pool.get(c).unwrap_or(""));
    assert_eq!(
        cols,
        ["0", "1", "2", "1"],
        "active, idle, checkouts, connects"
    );
    let clients = rows(&admin, "SHOW CLIENTS").await;
    let me = clients
        .iter()
        .find(|c| c.get("database") == Some(db.as_str()))
        .unwrap_or_else(|| panic!("app client not listed"));
    assert_eq!(me.get("state"), Some("idle"));
    assert_eq!(me.get("transactions"), Some("1"));
    assert!(clients
        .iter()
        .any(|c| c.get("database") == Some("pgrouter")));
    let replicas = rows(&admin, "SHOW REPLICAS").await;
    assert_eq!(replicas.len(), 3);
    assert!(replicas.iter().any(|x| x.get("name") == Some("r1")));
    let config = rows(&admin, "SHOW CONFIG").await;
    let get = |k: &str| {
        config
            .iter()
            .find(|x| x.get("key") == Some(k))
            .and_then(|x| x.get("value"))
            .map(str::to_string)
    };
    assert_eq!(get("tenants.acme.pool_size").as_deref(), Some("4"));
    assert_eq!(get("users[0].password").as_deref(), Some("<redacted>"));
    let tenants = rows(&admin, "SHOW TENANTS").await;
    assert!(tenants
        .iter()
        .any(|t| t.get("name") == Some("acme") && t.get("clients") == Some("1")));
    let stats = rows(&admin, "SHOW STATS").await;
    let primary = stats
        .iter()
        .find(|s| s.get("tenant") == Some("acme") && s.get("route") == Some("primary"))
        .unwrap_or_else(|| panic!("no stats row"));
    assert_eq!(primary.get("transactions"), Some("1"));
    // Errors keep the console usable.
    let e = admin.simple_query("SHOW nonsense").await.err();
    assert_eq!(e.as_ref().map(code).as_deref(), Some("42601"));
    let e = admin.simple_query("PAUSE nosuchtenant").await.err();
    assert_eq!(e.as_ref().map(code).as_deref(), Some("42704"));

    // PAUSE waits for the running transaction, then holds new ones.
    app.simple_query("BEGIN; INSERT INTO t VALUES (2)")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let servers = rows(&admin, "SHOW SERVERS").await;
    assert!(servers
        .iter()
        .any(|s| s.get("state") == Some("active") && s.get("database") == Some(db.as_str())));
    let admin = Arc::new(admin);
    let a2 = admin.clone();
    let pause = tokio::spawn(async move {
        let t0 = Instant::now();
        a2.simple_query("PAUSE acme").await.map(|_| t0.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pause.is_finished(),
        "PAUSE returned while a transaction was running"
    );
    app.simple_query("COMMIT")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let paused_after = pause
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(paused_after >= Duration::from_millis(300));
    // Its server connections are closed.
    let open = primary_sql(
        "postgres",
        &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}'"),
    );
    assert_eq!(open, "0");
    let app = Arc::new(app);
    let a = app.clone();
    let held = tokio::spawn(async move {
        let t0 = Instant::now();
        a.simple_query("SELECT 1").await.map(|_| t0.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !held.is_finished(),
        "a transaction ran while its tenant was paused"
    );
    let t = rows(&admin, "SHOW TENANTS").await;
    assert!(t
        .iter()
        .any(|x| x.get("name") == Some("acme") && x.get("paused") == Some("true")));
    rows(&admin, "RESUME acme").await;
    let waited = held
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    eprintln!("PAUSE returned {paused_after:?} after it was issued (the open transaction committed at 300 ms); held query ran {waited:?} after it was sent, at RESUME");

    // SHUTDOWN drains: readiness reports it, new logins are refused, and a
    // transaction in flight may still finish.
    app.simple_query("BEGIN; INSERT INTO t VALUES (3)")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    rows(&admin, "SHUTDOWN").await;
    let (ok, resp) = ready(r.http_addr).await;
    assert!(!ok && resp.contains("draining"), "{resp}");
    let late = tokio::time::timeout(Duration::from_secs(3), try_connect(&r, &db)).await;
    assert!(
        !matches!(late, Ok(Ok(_))),
        "a client logged in after SHUTDOWN"
    );
    app.simple_query("COMMIT")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(primary_sql(&db, "SELECT count(*) FROM t"), "3");
}

/// A WebDriver command to chromedriver: (HTTP status, JSON `value`).
async fn webdriver(
    port: u16,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("chromedriver: {e}"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // chromedriver keeps the connection open: read the headers, then
    // Content-Length bytes (or chunks up to the last one).
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut buf).await.unwrap_or(0);
        assert!(
            n > 0,
            "chromedriver closed the connection: {:?}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let complete = |raw: &[u8]| match length {
        Some(n) => raw.len() >= head_end + n,
        None => raw.ends_with(b"0\r\n\r\n"),
    };
    while !complete(&raw) {
        let n = s.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let mut payload = String::from_utf8_lossy(&raw[head_end..]).to_string();
    if length.is_none() {
        let mut out = String::new();
        let mut rest = payload.as_str();
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || after.len() < n {
                break;
            }
            out.push_str(&after[..n]);
            rest = after[n..].trim_start_matches("\r\n");
        }
        payload = out;
    }
    let v: serde_json::Value = serde_json::from_str(&payload)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}: {head}\n{payload}"));
    v["value"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_draws_lag_state_pool_and_rate_in_chromium() {
    use base64::Engine;
    let driver_bin = "chromedriver";
    if std::process::Command::new(driver_bin)
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("PGROUTER_REQUIRE_CHROMIUM").is_none(),
            "chromedriver is required (PGROUTER_REQUIRE_CHROMIUM) but cannot run"
        );
        eprintln!("chromedriver not found: skipping the dashboard test");
        return;
    }
    let db = database("dashboard");
    let r = router(|_| {}).await;
    // Steady traffic for the rate chart.
    let c = connect(&r, &db).await;
    let traffic = tokio::spawn(async move {
        let t0 = Instant::now();
        let mut n = 0u64;
        while t0.elapsed() < Duration::from_secs(30) {
            if c.simple_query("SELECT 1").await.is_err() {
                break;
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        n
    });
    let port = pgrouter::demo::cluster::free_port().unwrap_or_else(|e| panic!("{e}"));
    let mut driver = std::process::Command::new(driver_bin)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("chromedriver: {e}"));
    let t0 = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "chromedriver did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1000"]
        }
    }}});
    let session = webdriver(port, "POST", "/session", Some(caps)).await;
    let sid = session["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no WebDriver session: {session}"))
        .to_string();
    let url = format!("http://{}/dashboard", r.http_addr);
    webdriver(
        port,
        "POST",
        &format!("/session/{sid}/url"),
        Some(serde_json::json!({"url": url})),
    )
    .await;
    let script = |s: &str| serde_json::json!({"script": s, "args": []});
    let state = "return {samples: window.pgrouterDashboard.samples(), \
                 failures: window.pgrouterDashboard.failures(), \
                 drawn: window.pgrouterDashboard.drawn()}";
    let t0 = Instant::now();
    let seen = loop {
        let v = webdriver(
            port,
            "POST",
            &format!("/session/{sid}/execute/sync"),
            Some(script(state)),
        )
        .await;
        if v["samples"].as_u64().unwrap_or(0) >= 8 {
            break v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the page sampled too little: {v}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(seen["failures"], 0, "{seen}");
    let drawn = &seen["drawn"];
    let points = |chart: &str, series: &str| drawn[chart][series].as_u64().unwrap_or(0);
    for replica in ["r1", "r2"] {
        assert!(points("lag", replica) >= 5, "lag {replica}: {drawn}");
    }
    assert!(points("lag", "eviction threshold") >= 5, "{drawn}");
    for server in ["primary", "r1", "r2"] {
        assert!(points("state", server) >= 5, "state {server}: {drawn}");
    }
    assert!(points("pool", "default") >= 5, "{drawn}");
    assert!(points("rate", "default") >= 4, "{drawn}");
    // The lines are on the canvases: count pixels of the first series' colour
    // (#1f77b4), of the threshold's red, and of "healthy" green.
    let pixels = "const count = (id, rgb) => { const c = document.getElementById(id); \
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0; \
        for (let i = 0; i < d.length; i += 4) { if (Math.abs(d[i]-rgb[0]) < 8 && Math.abs(d[i+1]-rgb[1]) < 8 \
        && Math.abs(d[i+2]-rgb[2]) < 8 && d[i+3] > 200) n++; } return n; }; \
        return {lag: count('lag', [31,119,180]) + count('lag', [255,127,14]), threshold: count('lag', [214,39,40]), \
        healthy: count('state', [44,160,44]), pool: count('pool', [31,119,180]), rate: count('rate', [31,119,180])};";
    let px = webdriver(
        port,
        "POST",
        &format!("/session/{sid}/execute/sync"),
        Some(script(pixels)),
    )
    .await;
    for key in ["lag", "threshold", "healthy", "pool", "rate"] {
        assert!(px[key].as_u64().unwrap_or(0) > 20, "{key} not drawn: {px}");
    }
    let png = webdriver(port, "GET", &format!("/session/{sid}/screenshot"), None).await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(png.as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("screenshot: {e}"));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot of {} bytes",
        png.len()
    );
    let path = format!("{}/dashboard.png", std::env::temp_dir().display());
    let _ = std::fs::write(&path, &png);
    eprintln!(
        "dashboard: {seen} pixels {px}; screenshot {} bytes at {path}",
        png.len()
    );
    webdriver(port, "DELETE", &format!("/session/{sid}"), None).await;
    let _ = driver.kill();
    let _ = driver.wait();
    traffic.abort();
}

/// psql against the admin console; returns (stdout, stderr, success).
fn admin_psql(r: &TestRouter, sql: &str) -> (String, String, bool) {
    let port = r.addr.port().to_string();
    let out = run_tool(
        "psql",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            USER,
            "-d",
            "pgrouter",
            "-XAtc",
            sql,
        ],
    );
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
        out.status.success(),
    )
}

fn show_value(r: &TestRouter, key: &str) -> Option<String> {
    let (out, err, ok) = admin_psql(r, "SHOW CONFIG");
    assert!(ok, "{err}");
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}|")).map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_applies_limits_and_loses_no_transaction() {
    let db = database("reload");
    primary_sql(
        &db,
        "CREATE TABLE t (id bigint); ALTER TABLE t OWNER TO app",
    );
    let dir = std::env::temp_dir().join(format!("pgrouter-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join("router.toml");
    let write = |c: &pgrouter::config::Config| {
        let text = toml::to_string(c).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    };
    let base = |c: &mut pgrouter::config::Config| {
        c.admin.users = vec![USER.into()];
        c.tenants
            .insert("acme".into(), tenant(&[USER], |t| t.pool_size = Some(2)));
    };
    let mut file = config();
    base(&mut file);
    write(&file);
    let p2 = path.clone();
    let r = router(move |c| {
        base(c);
        c.source = Some(p2);
    })
    .await;

    // Load: 8 clients inserting (each acknowledged id remembered) and reading.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..8u64 {
        let c = connect(&r, &db).await;
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let (mut acked, mut errors, mut i) = (Vec::new(), Vec::new(), 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = w * 1_000_000 + i;
                i += 1;
                match c
                    .simple_query(&format!("INSERT INTO t VALUES ({id})"))
                    .await
                {
                    Ok(_) => acked.push(id),
                    Err(e) => errors.push(describe(&e)),
                }
                if let Err(e) = c.simple_query("SELECT count(*) FROM t").await {
                    errors.push(describe(&e));
                }
            }
            (acked, errors)
        }));
    }
    let max_conns = || {
        primary_sql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND usename = 'app'"
            ),
        )
        .parse::<usize>()
        .unwrap_or(0)
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(max_conns() <= 2, "pool_size 2 exceeded before the reload");

    // Grow the pool, add a tenant and a user, change thresholds.
    file.tenants
        .insert("acme".into(), tenant(&[USER], |t| t.pool_size = Some(5)));
    file.tenants.insert(
        "globex".into(),
        tenant(&["newbie"], |t| t.max_clients = Some(3)),
    );
    file.users.push(pgrouter::config::UserConfig {
        name: "newbie".into(),
        password: Some("newbie-secret".into()),
        auth: pgrouter::config::AuthMethod::ScramSha256,
        // Another role, so pg_stat_activity tells acme's connections apart.
        server_user: Some(RAW_USER.into()),
        server_password: Some(RAW_PASSWORD.into()),
        allow: Vec::new(),
    });
    file.lag.max_lag = pgrouter::config::HumanDuration::from_millis(2500);
    file.server.log_slow_transactions = pgrouter::config::HumanDuration::from_millis(750);
    write(&file);
    let t0 = Instant::now();
    let (_, notice, ok) = admin_psql(&r, "RELOAD");
    eprintln!("RELOAD took {:?}: {}", t0.elapsed(), notice.trim());
    assert!(ok && notice.contains("configuration reloaded"), "{notice}");
    assert!(notice.contains("tenants.acme.pool_size"), "{notice}");
    assert_eq!(
        show_value(&r, "tenants.acme.pool_size").as_deref(),
        Some("5")
    );
    assert_eq!(show_value(&r, "lag.max_lag").as_deref(), Some("2500ms"));
    let page = metrics_page(r.http_addr).await;
    assert_eq!(
        must(&page, "pgrouter_tenant_pool_size", &[("tenant", "acme")]),
        5.0
    );
    assert_eq!(must(&page, "pgrouter_replica_max_lag_seconds", &[]), 2.5);
    assert_eq!(
        must(
            &page,
            "pgrouter_tenant_max_clients",
            &[("tenant", "globex")]
        ),
        3.0
    );
    // The new user logs in, into the new tenant.
    let newbie = connect_url(&format!(
        "postgres://newbie:newbie-secret@127.0.0.1:{}/{db}",
        r.addr.port()
    ))
    .await
    .unwrap_or_else(|e| panic!("new user: {}", describe(&e)));
    assert_eq!(first_value(&newbie, "SELECT 1").await.as_deref(), Some("1"));
    // The bigger pool is used under the same load.
    let t0 = Instant::now();
    let mut peak = 0;
    while t0.elapsed() < Duration::from_secs(3) && peak <= 2 {
        peak = peak.max(max_conns());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        peak > 2 && peak <= 5,
        "acme used {peak} connections after pool_size 2 -> 5"
    );

    // Remove a replica under the read load, then add it back.
    let all_replicas = file.replicas.clone();
    file.replicas.retain(|x| x.name != "r2");
    write(&file);
    let (_, notice, ok) = admin_psql(&r, "RELOAD");
    assert!(ok && notice.contains("replicas[1]"), "{notice}");
    let page = metrics_page(r.http_addr).await;
    assert!(
        metric(&page, "pgrouter_server_state", &[("server", "r2")]).is_none(),
        "r2 still exported"
    );
    let (replicas, _, _) = admin_psql(&r, "SHOW REPLICAS");
    assert!(!replicas.contains("r2|"), "{replicas}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    file.replicas = all_replicas;
    write(&file);
    let (_, notice, ok) = admin_psql(&r, "RELOAD");
    assert!(ok && notice.contains("replicas[1]"), "{notice}");
    let t0 = Instant::now();
    loop {
        let page = metrics_page(r.http_addr).await;
        if metric(
            &page,
            "pgrouter_server_state",
            &[("server", "r2"), ("state", "healthy")],
        ) == Some(1.0)
        {
            eprintln!("re-added replica healthy {:?} after RELOAD", t0.elapsed());
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "re-added r2 never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A broken file changes nothing and says why.
    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:0\"\npool_sise = 3\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, err, ok) = admin_psql(&r, "RELOAD");
    assert!(
        !ok && err.contains("reload refused, the running configuration stays"),
        "{err}"
    );
    assert!(err.contains("pool_sise"), "{err}");
    assert_eq!(
        show_value(&r, "tenants.acme.pool_size").as_deref(),
        Some("5")
    );

    // Shrink the pool under load: connections return to the new size as
    // transactions finish; a restart-only change is reported, not applied.
    file.tenants
        .insert("acme".into(), tenant(&[USER], |t| t.pool_size = Some(1)));
    file.server.listen = "127.0.0.1:1".into();
    write(&file);
    let (_, notice, ok) = admin_psql(&r, "RELOAD");
    assert!(
        ok && notice.contains("needs a restart, not applied: server.listen"),
        "{notice}"
    );
    assert_eq!(
        show_value(&r, "server.listen").as_deref(),
        Some("127.0.0.1:0")
    );
    let t0 = Instant::now();
    loop {
        let page = metrics_page(r.http_addr).await;
        let open = must(
            &page,
            "pgrouter_server_connections",
            &[
                ("server", "primary"),
                ("tenant", "acme"),
                ("state", "active"),
            ],
        ) + must(
            &page,
            "pgrouter_server_connections",
            &[("server", "primary"), ("tenant", "acme"), ("state", "idle")],
        );
        if open <= 1.0 {
            eprintln!(
                "acme down to {open} open connection(s) {:?} after pool_size 5 -> 1",
                t0.elapsed()
            );
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "acme still has {open} connections after shrinking to 1"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in workers {
        let (a, errors) = w.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(
            errors.is_empty(),
            "clients saw errors across reloads: {errors:?}"
        );
        acked.extend(a);
    }
    let stored = primary_sql(&db, "SELECT count(*) FROM t");
    assert_eq!(
        stored,
        acked.len().to_string(),
        "acknowledged inserts missing"
    );
    assert!(acked.len() > 100, "only {} inserts ran", acked.len());
    eprintln!(
        "{} inserts acknowledged and stored across 5 reloads, 0 client errors",
        acked.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The real binary against the cluster: JSON logs, a slow transaction
/// logged with its client's id, and the id matches SHOW CLIENTS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_transactions_are_logged_as_json_with_the_client_id() {
    use std::process::{Command, Stdio};
    let db = database("slowlog");
    let dir = std::env::temp_dir().join(format!("pgrouter-slowlog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join("router.toml");
    let port = pgrouter::demo::cluster::free_port().unwrap_or_else(|e| panic!("{e}"));
    let http = pgrouter::demo::cluster::free_port().unwrap_or_else(|e| panic!("{e}"));
    let mut c = config();
    c.server.listen = format!("127.0.0.1:{port}");
    c.server.http_listen = format!("127.0.0.1:{http}");
    c.server.log_level = "info".into();
    c.server.log_format = pgrouter::config::LogFormat::Json;
    c.server.log_slow_transactions = pgrouter::config::HumanDuration::from_millis(150);
    c.admin.users = vec![USER.into()];
    std::fs::write(&path, toml::to_string(&c).unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or_else(|e| panic!("{e}"));
    let child = Command::new(env!("CARGO_BIN_EXE_pgrouter"))
        .arg("--config")
        .arg(&path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let url = format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{port}/{db}");
    let t0 = Instant::now();
    let client = loop {
        match connect_url(&url).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "router did not start: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    client
        .simple_query("SELECT 1")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    client
        .simple_query("SELECT pg_sleep(0.3)")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let admin_url = format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{port}/pgrouter");
    let admin = connect_url(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let clients = rows(&admin, "SHOW CLIENTS").await;
    let id: u64 = clients
        .iter()
        .find(|c| c.get("database") == Some(db.as_str()))
        .and_then(|c| c.get("id"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("client not in SHOW CLIENTS"));
    drop(admin);
    drop(client);
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let slow: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "slow transaction")
        .collect();
    assert_eq!(slow.len(), 1, "exactly the pg_sleep(0.3) is slow: {stderr}");
    let s = slow[0];
    assert_eq!(s["level"], "WARN");
    assert_eq!(s["span"]["id"].as_u64(), Some(id), "{s}");
    assert_eq!(s["fields"]["tenant"], "default");
    assert_eq!(s["fields"]["user"], USER);
    let ms = s["fields"]["duration_ms"].as_u64().unwrap_or(0);
    assert!((300..2000).contains(&ms), "{s}");
    let _ = std::fs::remove_dir_all(&dir);
}
