//! Read/write routing, proven from the server side: `inet_server_port()`
//! tells where each statement ran.

mod common;

use common::raw::{self, RawClient};
use common::*;
use pgrouter::config::{Fallback, LoadBalance};
use std::collections::HashSet;

async fn setup(test: &str) -> (String, TestRouter, TestRouter) {
    let db = database(test);
    primary_sql(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE SEQUENCE s; \
         GRANT ALL ON t, s TO app, rawuser;",
    );
    wait_replicas_caught_up();
    let r = router(|c| c.routing.load_balance = LoadBalance::RoundRobin).await;
    let r2 = router(|_| {}).await;
    (db, r, r2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_replicas_and_writes_to_the_primary() {
    let (db, r, _) = setup("routes").await;
    let primary = cluster().primary.port;
    let replicas: HashSet<u16> = replica_ports().into_iter().collect();
    let reader = connect(&r, &db).await;
    let mut seen = HashSet::new();
    for _ in 0..20 {
        let p = port_of(&reader, "SELECT inet_server_port()").await;
        assert!(replicas.contains(&p), "read ran on {p}");
        seen.insert(p);
    }
    assert_eq!(seen, replicas, "round robin uses every replica");
    // Named prepared statements (tokio-postgres prepares every query) are
    // classified too: a read runs on a replica, prepared there as needed.
    let p: i32 = reader
        .query_one("SELECT inet_server_port()", &[])
        .await
        .map(|row| row.get(0))
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    assert!(replicas.contains(&(p as u16)), "prepared read ran on {p}");

    let writer = connect(&r, &db).await;
    for (sql, expect_primary) in [
        (
            "INSERT INTO t VALUES (1, 'a') RETURNING inet_server_port()",
            true,
        ),
        (
            "SELECT inet_server_port() FROM t WHERE id = 1 FOR UPDATE",
            true,
        ),
        (
            "SELECT inet_server_port() FROM t WHERE id = 1 FOR NO KEY UPDATE",
            true,
        ),
        ("SELECT nextval('s') * 0 + inet_server_port()", true),
        (
            "WITH x AS (UPDATE t SET v = 'b' RETURNING id) SELECT inet_server_port() FROM x",
            true,
        ),
        ("/* pgrouter:primary */ SELECT inet_server_port()", true),
    ] {
        let p = port_of(&writer, sql).await;
        assert_eq!(p == primary, expect_primary, "{sql} ran on {p}");
    }
    // Explicit transactions run on the primary unless declared read only.
    let tx = connect(&r, &db).await;
    tx.batch_execute("BEGIN")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(port_of(&tx, "SELECT inet_server_port()").await, primary);
    tx.batch_execute("COMMIT")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // (A new connection: `tx` just ran a transaction on the primary, so
    // read-your-writes keeps its reads there until a replica catches up.)
    let tx = connect(&r, &db).await;
    tx.batch_execute("BEGIN READ ONLY")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let p = port_of(&tx, "SELECT inet_server_port()").await;
    assert!(replicas.contains(&p), "read-only transaction ran on {p}");
    tx.batch_execute("COMMIT")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_pgrouter_route_is_answered_by_the_router() {
    let (db, r, _) = setup("setroute").await;
    let primary = cluster().primary.port;
    let c = connect(&r, &db).await;
    c.batch_execute("SET pgrouter.route = 'primary'")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..5 {
        assert_eq!(port_of(&c, "SELECT inet_server_port()").await, primary);
    }
    // A replica hint on a write is ignored: writes always go to the primary.
    c.batch_execute("SET pgrouter.route TO auto")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let p = port_of(
        &c,
        "/* pgrouter:replica */ INSERT INTO t VALUES (7, 'x') RETURNING inet_server_port()",
    )
    .await;
    assert_eq!(p, primary);
    let bad = c.batch_execute("SET pgrouter.route = 'sideways'").await;
    assert_eq!(bad.err().map(|e| code(&e)).as_deref(), Some("22023"));
    assert!(
        c.simple_query("SELECT 1").await.is_ok(),
        "connection still usable"
    );
}

/// A read and a write pipelined in one batch: the write must not follow the
/// read to a replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_write_behind_a_read_reaches_the_primary() {
    let (db, r, _) = setup("pipeline_route").await;
    let mut c = RawClient::login(r.addr.port(), RAW_USER, &db).await;
    let mut batch = Vec::new();
    for sql in [
        "SELECT inet_server_port()",
        "INSERT INTO t VALUES (42, 'p') RETURNING inet_server_port()",
    ] {
        batch.extend(raw::extended_query(sql));
    }
    c.send(&batch).await;
    let mut ports = Vec::new();
    for _ in 0..2 {
        for (tag, body) in c.until_ready().await {
            match tag {
                b'D' => ports.push(
                    String::from_utf8_lossy(&body[6..])
                        .parse::<u16>()
                        .unwrap_or(0),
                ),
                b'E' => panic!("error: {:?}", raw::error_fields(&body)),
                _ => {}
            }
        }
    }
    assert!(replica_ports().contains(&ports[0]), "{ports:?}");
    assert_eq!(ports[1], cluster().primary.port);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_replica_reads_fall_back_without_errors() {
    let db = database("deadreplica");
    let dead = pgrouter::demo::cluster::free_port().unwrap_or(1);
    let r = router(|c| {
        c.replicas[1].port = dead;
        c.server.server_connect_timeout = pgrouter::config::HumanDuration::from_millis(500);
    })
    .await;
    let c = connect(&r, &db).await;
    for _ in 0..30 {
        let p = port_of(&c, "SELECT inet_server_port()").await;
        assert_ne!(p, dead);
    }
    // All replicas dead and fallback = "error": a clear error, writes still fine.
    let r = router(|c| {
        c.replicas[0].port = dead;
        c.replicas[1].port = dead;
        c.routing.fallback = Fallback::Error;
        c.server.server_connect_timeout = pgrouter::config::HumanDuration::from_millis(500);
    })
    .await;
    let c = connect(&r, &db).await;
    let e = c.simple_query("SELECT 1").await.err().map(|e| code(&e));
    assert_eq!(e.as_deref(), Some("57P03"));
    let p = port_of(&c, "/* pgrouter:primary */ SELECT inet_server_port()").await;
    assert_eq!(p, cluster().primary.port);
}

/// Select-only clients and tpcb-like (writing) clients at once: no
/// "read-only transaction" errors, and the replicas serve the reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_pgbench_workload() {
    let db = database("mixed");
    pgbench_init(&db);
    wait_replicas_caught_up();
    let r = router(|c| c.pool.pool_size = 6).await;
    // Loans per server, counted by the router's pools for this database.
    let loans = |role: pgrouter::backend::Role| -> u64 {
        r.shared
            .pools
            .all()
            .iter()
            .filter(|p| p.login.database == db && p.target.role == role)
            .map(|p| p.stats.checkouts.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    };
    let rport = r.addr.port().to_string();
    let (a, b) = (rport.clone(), db.clone());
    let reads = std::thread::spawn(move || {
        run_tool(
            "pgbench",
            &[
                "-S",
                "-c",
                "4",
                "-j",
                "2",
                "-t",
                "500",
                "-h",
                "127.0.0.1",
                "-p",
                &a,
                "-U",
                USER,
                &b,
            ],
        )
    });
    let writes = run_tool(
        "pgbench",
        &[
            "-c",
            "2",
            "-j",
            "1",
            "-t",
            "200",
            "-h",
            "127.0.0.1",
            "-p",
            &rport,
            "-U",
            USER,
            &db,
        ],
    );
    let reads = reads.join().unwrap_or_else(|_| panic!("pgbench thread"));
    for out in [&reads, &writes] {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}{stderr}");
        assert!(
            stdout.contains("number of failed transactions: 0"),
            "{stdout}"
        );
        assert!(!stderr.contains("read-only transaction"), "{stderr}");
    }
    let served = loans(pgrouter::backend::Role::Replica);
    let on_primary = loans(pgrouter::backend::Role::Primary);
    eprintln!("replica loans {served}, primary loans {on_primary} (2000 select-only + 400 tpcb-like transactions)");
    assert!(
        served >= 1600,
        "replicas served only {served} of 2000 select-only transactions"
    );
}

/// A user-defined VOLATILE function may write: calls go to the primary (and
/// succeed); a STABLE one is a read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volatile_user_functions_are_writes() {
    let db = database("catalog");
    primary_sql(
        &db,
        "CREATE TABLE hits (n int); GRANT ALL ON hits TO app; \
         CREATE FUNCTION bump() RETURNS int LANGUAGE sql VOLATILE AS 'INSERT INTO hits VALUES (1) RETURNING inet_server_port()'; \
         CREATE FUNCTION peek() RETURNS int LANGUAGE sql STABLE AS 'SELECT inet_server_port()';",
    );
    wait_replicas_caught_up();
    let r = router(|_| {}).await;
    let c = connect(&r, &db).await;
    let p = port_of(&c, "SELECT bump()").await;
    assert_eq!(
        p,
        cluster().primary.port,
        "a volatile function call must run on the primary"
    );
    let reader = connect(&r, &db).await;
    let p = port_of(&reader, "SELECT peek()").await;
    assert!(
        replica_ports().contains(&p),
        "a stable function call is a read, ran on {p}"
    );
    assert_eq!(primary_sql(&db, "SELECT count(*) FROM hits"), "1");
}

/// Session mode with replicas: reads are routed per transaction until the
/// first write, then the session keeps one primary connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_pins_to_the_primary_after_the_first_write() {
    let (db, _, _) = setup("session_pin").await;
    let r = router(|c| c.server.pool_mode = pgrouter::config::PoolMode::Session).await;
    let c = connect(&r, &db).await;
    let p = port_of(&c, "SELECT inet_server_port()").await;
    assert!(
        replica_ports().contains(&p),
        "reads before any write may use a replica, ran on {p}"
    );
    let pid = port_of(
        &c,
        "INSERT INTO t VALUES (99, 'w') RETURNING pg_backend_pid()",
    )
    .await;
    for _ in 0..5 {
        assert_eq!(
            port_of(&c, "SELECT inet_server_port()").await,
            cluster().primary.port
        );
        assert_eq!(
            port_of(&c, "SELECT pg_backend_pid()").await,
            pid,
            "one server session after the write"
        );
    }
}

/// `BEGIN` then `SET TRANSACTION READ ONLY` as separate statements: the
/// transaction may run on a replica; a plain BEGIN followed by anything else
/// runs on the primary (and commits there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begin_then_set_transaction_read_only_runs_on_a_replica() {
    let (db, r, _) = setup("deferred_begin").await;
    let primary = cluster().primary.port;
    let c = connect(&r, &db).await;
    c.batch_execute("BEGIN")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    c.batch_execute("SET TRANSACTION READ ONLY")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let p = port_of(&c, "SELECT inet_server_port()").await;
    assert!(
        replica_ports().contains(&p),
        "read-only transaction ran on {p}"
    );
    let e = c
        .batch_execute("INSERT INTO t VALUES (5, 'no')")
        .await
        .err()
        .map(|e| code(&e));
    assert_eq!(
        e.as_deref(),
        Some("25006"),
        "writes fail inside a READ ONLY transaction"
    );
    c.batch_execute("ROLLBACK")
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let w = connect(&r, &db).await;
    w.batch_execute("BEGIN")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(port_of(&w, "SELECT inet_server_port()").await, primary);
    w.batch_execute("INSERT INTO t VALUES (6, 'yes')")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    w.batch_execute("COMMIT")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(primary_sql(&db, "SELECT v FROM t WHERE id = 6"), "yes");
}

/// The (tag, status) summary of a response: message tags, and the
/// ReadyForQuery status; the SQLSTATE of the first ErrorResponse.
fn summary(msgs: &[(u8, Vec<u8>)]) -> (String, u8, Option<String>) {
    let tags = msgs.iter().map(|m| m.0 as char).collect();
    let status = msgs.last().and_then(|m| m.1.first().copied()).unwrap_or(0);
    let code = msgs
        .iter()
        .find(|m| m.0 == b'E')
        .map(|m| raw::error_fields(&m.1).0);
    (tags, status, code)
}

/// A deferred BEGIN (answered by the router) whose first statement is
/// refused leaves the client in a failed transaction block, as PostgreSQL
/// would: ReadyForQuery 'E', 25P02 for anything but COMMIT/ROLLBACK, which
/// end it (simple or extended protocol).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_statement_after_begin_leaves_a_failed_transaction_block() {
    let db = database("virtual_tx");
    let r = router(|c| {
        c.tenants.insert(
            "solo".into(),
            pgrouter::config::TenantConfig {
                users: vec![RAW_USER.into()],
                pool_size: Some(1),
                queue_limit: Some(0),
                ..Default::default()
            },
        );
    })
    .await;
    let port = r.addr.port();
    let mut b = RawClient::login(port, RAW_USER, &db).await;
    let mut a = RawClient::login(port, RAW_USER, &db).await;
    // A holds the tenant's only connection inside a transaction.
    a.send(&raw::query("BEGIN")).await;
    assert_eq!(summary(&a.until_ready().await).1, b'T');
    a.send(&raw::query("SELECT 1")).await;
    assert_eq!(summary(&a.until_ready().await).1, b'T');

    for end in [raw::extended_query("ROLLBACK"), raw::query("COMMIT")] {
        b.send(&raw::query("BEGIN")).await;
        assert_eq!(summary(&b.until_ready().await), ("CZ".into(), b'T', None));
        b.send(&raw::query("SELECT 1")).await;
        let (_, status, code) = summary(&b.until_ready().await);
        assert_eq!((status, code.as_deref()), (b'E', Some("53300")));
        b.send(&raw::query("SELECT 2")).await;
        let (_, status, code) = summary(&b.until_ready().await);
        assert_eq!((status, code.as_deref()), (b'E', Some("25P02")));
        b.send(&raw::extended_query("SELECT 3")).await;
        let (_, status, code) = summary(&b.until_ready().await);
        assert_eq!((status, code.as_deref()), (b'E', Some("25P02")));
        b.send(&end).await;
        let got = b.until_ready().await;
        let (tags, status, code) = summary(&got);
        assert_eq!((status, code), (b'I', None), "{tags}");
        let complete = got.iter().find(|m| m.0 == b'C').map(|m| m.1.clone());
        assert_eq!(complete.as_deref(), Some(&b"ROLLBACK\0"[..]));
    }
    a.send(&raw::query("COMMIT")).await;
    assert_eq!(summary(&a.until_ready().await).1, b'I');
    b.send(&raw::query("SELECT 1")).await;
    assert_eq!(summary(&b.until_ready().await), ("TDCZ".into(), b'I', None));
}

/// A named statement is classified once, at Parse, and each execution is
/// routed by it: reads on replicas (prepared on each as needed), writes on
/// the primary, with read-your-writes between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_statements_are_routed_by_what_they_do() {
    let (db, r, _) = setup("named_route").await;
    let primary = cluster().primary.port;
    let replicas: HashSet<u16> = replica_ports().into_iter().collect();
    let c = connect(&r, &db).await;
    let ok = |e: tokio_postgres::Error| -> ! { panic!("{}", describe(&e)) };
    // Prepared on the primary (pinned there by the hint), so every replica
    // that runs it must have it prepared by the router first.
    c.batch_execute("SET pgrouter.route = 'primary'")
        .await
        .unwrap_or_else(|e| ok(e));
    let read = c
        .prepare("SELECT inet_server_port(), (SELECT count(*) FROM t WHERE id >= $1)")
        .await
        .unwrap_or_else(|e| ok(e));
    c.batch_execute("SET pgrouter.route = 'auto'")
        .await
        .unwrap_or_else(|e| ok(e));
    let write = c
        .prepare("INSERT INTO t VALUES ($1, 'n') RETURNING inet_server_port()")
        .await
        .unwrap_or_else(|e| ok(e));
    for _ in 0..10 {
        let row = c
            .query_one(&read, &[&1000i32])
            .await
            .unwrap_or_else(|e| ok(e));
        let p: i32 = row.get(0);
        assert!(replicas.contains(&(p as u16)), "prepared read ran on {p}");
    }
    for i in 0..5 {
        let row = c
            .query_one(&write, &[&(1000 + i)])
            .await
            .unwrap_or_else(|e| ok(e));
        assert_eq!(row.get::<_, i32>(0) as u16, primary, "prepared write");
        // The very next read sees the write, wherever it runs.
        let row = c
            .query_one(&read, &[&1000i32])
            .await
            .unwrap_or_else(|e| ok(e));
        assert_eq!(row.get::<_, i64>(1), i as i64 + 1, "read-your-writes");
    }
    let reads = r
        .shared
        .route_stats
        .decisions(true, pgrouter::router::RouteReason::Read);
    assert!(reads >= 10, "{reads} reads counted on replicas");

    // One batch (no Sync between) executing a named read and a named write:
    // the write decides, so both run on the primary.
    let mut raw = RawClient::login(r.addr.port(), RAW_USER, &db).await;
    let named = |name: &str, sql: &str| {
        let mut body = format!("{name}\0{sql}\0").into_bytes();
        body.extend_from_slice(&[0, 0]);
        raw::msg(b'P', &body)
    };
    let exec = |name: &str| {
        let mut bind = format!("\0{name}\0").into_bytes();
        bind.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        [raw::msg(b'B', &bind), raw::msg(b'E', b"\0\0\0\0\0")].concat()
    };
    let prepare = [
        named("r", "SELECT inet_server_port()"),
        named(
            "w",
            "INSERT INTO t VALUES (2000, 'w') RETURNING inet_server_port()",
        ),
        raw::msg(b'S', b""),
    ]
    .concat();
    raw.send(&prepare).await;
    raw.until_ready().await;
    let ports_of = |msgs: Vec<(u8, Vec<u8>)>| -> Vec<u16> {
        msgs.iter()
            .map(|(tag, body)| match tag {
                b'D' => String::from_utf8_lossy(&body[6..])
                    .parse::<u16>()
                    .unwrap_or(0),
                b'E' => panic!("error: {:?}", raw::error_fields(body)),
                _ => u16::MAX,
            })
            .filter(|&p| p != u16::MAX)
            .collect()
    };
    // Alone, the named read runs on a replica (prepared there by the router).
    raw.send(&[exec("r"), raw::msg(b'S', b"")].concat()).await;
    let alone = ports_of(raw.until_ready().await);
    assert!(
        alone.len() == 1 && replicas.contains(&alone[0]),
        "{alone:?}"
    );
    raw.send(&[exec("r"), exec("w"), raw::msg(b'S', b"")].concat())
        .await;
    assert_eq!(ports_of(raw.until_ready().await), vec![primary, primary]);
}

/// A session setting made on a replica (SET is a read) follows the client
/// to the primary for its next write, and back to replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_made_on_a_replica_follow_the_client_to_the_primary() {
    let (db, r, _) = setup("set_follow").await;
    primary_sql(
        &db,
        "CREATE SCHEMA other; CREATE TABLE other.t (id int, v text); \
         GRANT USAGE ON SCHEMA other TO app; GRANT ALL ON other.t TO app;",
    );
    wait_replicas_caught_up();
    let c = connect(&r, &db).await;
    let replicas: HashSet<u16> = replica_ports().into_iter().collect();
    let p = port_of(
        &c,
        "SET search_path = other, public; SELECT inet_server_port()",
    )
    .await;
    // (Batched with other statements, SET goes through sqlparser, which
    // keeps it on the primary: conservative, and carried all the same.)
    assert_eq!(p, cluster().primary.port);
    let c = connect(&r, &db).await;
    c.batch_execute("SET search_path = other, public")
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    let decisions = r
        .shared
        .route_stats
        .decisions(true, pgrouter::router::RouteReason::Read);
    assert!(decisions >= 1, "the SET ran on a replica");
    let p = port_of(
        &c,
        "INSERT INTO t VALUES (1, 'x') RETURNING inet_server_port()",
    )
    .await;
    assert_eq!(p, cluster().primary.port);
    assert_eq!(primary_sql(&db, "SELECT count(*) FROM other.t"), "1");
    wait_replicas_caught_up();
    assert_eq!(
        first_value(&c, "SHOW search_path").await.as_deref(),
        Some("other, public")
    );
    let p = port_of(&c, "SELECT inet_server_port() FROM t").await;
    assert!(replicas.contains(&p), "read ran on {p}");
}
