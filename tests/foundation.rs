//! The pooler against real PostgreSQL: psql, pgbench, the extended protocol,
//! COPY, errors, cancel, vanished clients, load, auth and hostile input.

mod common;

/// These are pooling tests: the router runs with read routing off, so every
/// statement goes to the primary (routing has its own tests).
async fn pooler(f: impl FnOnce(&mut pgrouter::config::Config)) -> TestRouter {
    router(|c| {
        c.routing.enabled = false;
        f(c)
    })
    .await
}

use common::raw::{self, RawClient};
use common::*;
use pgrouter::config::PoolMode;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_runs_statements_errors_and_transactions() {
    let db = database("psql");
    let r = pooler(|_| {}).await;
    let u = url(&r, &db);
    let out = tokio::task::spawn_blocking(move || {
        run_tool(
            "psql",
            &[
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=0",
                &u,
                "-c",
                "CREATE TABLE t (a int)",
                "-c",
                "INSERT INTO t SELECT generate_series(1, 10)",
                "-c",
                "SELECT sum(a) FROM t",
                "-c",
                "SELECT 1/0",
                "-c",
                "",
                "-c",
                "SELECT current_user, inet_server_port()",
                "-c",
                "DO $$ BEGIN RAISE NOTICE 'hello from a notice'; END $$",
            ],
        )
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("55"), "{stdout}");
    assert!(stderr.contains("division by zero"), "{stderr}");
    let port = cluster().primary.port.to_string();
    assert!(stdout.contains(&format!("app|{port}")), "{stdout}");
    assert!(stderr.contains("NOTICE:  hello from a notice"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_query_and_lone_sync_are_answered() {
    let db = database("empty");
    let r = pooler(|_| {}).await;
    let mut c = RawClient::login(r.addr.port(), RAW_USER, &db).await;
    c.send(&raw::query("")).await;
    let tags: String = c.until_ready().await.iter().map(|m| m.0 as char).collect();
    assert_eq!(tags, "IZ", "EmptyQueryResponse then ReadyForQuery");
    c.send(&raw::msg(b'S', b"")).await;
    let msgs = c.until_ready().await;
    assert_eq!(msgs, vec![(b'Z', b"I".to_vec())]);
    c.send(&raw::query("SELECT 'still fine'")).await;
    assert!(c.until_ready().await.iter().any(|m| m.0 == b'D'));
}

fn pgbench_through_router(r: &TestRouter, db: &str, mode: &str) {
    pgbench_clients(r, db, mode, 10);
}

fn pgbench_clients(r: &TestRouter, db: &str, mode: &str, clients: usize) {
    let port = r.addr.port().to_string();
    let n = clients.to_string();
    let total = format!("{}/{}", clients * 200, clients * 200);
    let out = run_tool(
        "pgbench",
        &[
            "-S",
            "-M",
            mode,
            "-c",
            &n,
            "-j",
            "2",
            "-t",
            "200",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            USER,
            db,
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "number of transactions actually processed: {total}"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("number of failed transactions: 0"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_select_only_simple_and_extended() {
    let db = database("pgbench");
    pgbench_init(&db);
    let r = pooler(|c| c.pool.pool_size = 4).await;
    let r2 = std::sync::Arc::new(r);
    let rr = r2.clone();
    tokio::task::spawn_blocking(move || {
        pgbench_through_router(&rr, &db, "simple");
        pgbench_through_router(&rr, &db, "extended");
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Named prepared statements across pooled connections: 50 pgbench clients
/// preparing their statements (-M prepared) share 5 server connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_with_more_clients_than_connections() {
    let db = database("pgbench_prepared");
    pgbench_init(&db);
    let r = std::sync::Arc::new(pooler(|c| c.pool.pool_size = 5).await);
    let rr = r.clone();
    let d = db.clone();
    tokio::task::spawn_blocking(move || pgbench_clients(&rr, &d, "prepared", 50))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let open = primary_sql(
        "postgres",
        &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}'"),
    );
    assert!(
        open.parse::<usize>().unwrap_or(99) <= 5,
        "{open} connections"
    );
}

/// A driver's statements (tokio-postgres prepares named statements) keep
/// working when each use lands on another server connection (without
/// statement tracking this fails with 26000 "prepared statement does not
/// exist").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_follow_the_client_across_connections() {
    let db = database("prepared_driver");
    let r = pooler(|c| c.pool.pool_size = 3).await;
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(connect(&r, &db).await);
    }
    let mut statements = Vec::new();
    for c in &clients {
        let s = c
            .prepare("SELECT $1::int + 1, $2::text || 'x'")
            .await
            .unwrap_or_else(|e| panic!("{}", describe(&e)));
        statements.push(s);
    }
    // Interleave uses so each lands on whatever connection is free.
    let mut tasks = Vec::new();
    for (i, (c, s)) in clients.into_iter().zip(statements).enumerate() {
        tasks.push(tokio::spawn(async move {
            for k in 0..50i32 {
                let row = c
                    .query_one(&s, &[&k, &format!("c{i}")])
                    .await
                    .unwrap_or_else(|e| panic!("{}", describe(&e)));
                assert_eq!(row.get::<_, i32>(0), k + 1);
                assert_eq!(row.get::<_, String>(1), format!("c{i}x"));
            }
            // An error in a Parse, then the statement still works.
            let bad = c.prepare("SELECT * FROM no_such_table").await.err();
            assert_eq!(bad.as_ref().map(code).as_deref(), Some("42P01"));
            let row = c
                .query_one(&s, &[&7i32, &"z"])
                .await
                .unwrap_or_else(|e| panic!("{}", describe(&e)));
            assert_eq!(row.get::<_, i32>(0), 8);
        }));
    }
    for t in tasks {
        t.await.unwrap_or_else(|e| panic!("{e}"));
    }
}

/// The usual driver pattern: a statement prepared outside a transaction,
/// then BEGIN by simple Query, a COPY through the extended protocol, the
/// statement used inside, a new statement prepared inside; 4 clients on a
/// pool of 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_inside_transactions_and_copy() {
    use futures_util::SinkExt;
    let db = database("prepared_tx");
    let r = pooler(|c| c.pool.pool_size = 2).await;
    let setup = connect(&r, &db).await;
    setup
        .batch_execute("CREATE TABLE ce (id int, t text)")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut tasks = Vec::new();
    for w in 0..4i32 {
        let mut c = connect(&r, &db).await;
        tasks.push(tokio::spawn(async move {
            let count = c
                .prepare("SELECT count(*) FROM ce WHERE id >= $1")
                .await
                .unwrap_or_else(|e| panic!("{}", describe(&e)));
            for round in 0..5i32 {
                let tx = c.transaction().await.unwrap_or_else(|e| panic!("{e}"));
                let sink = tx
                    .copy_in("COPY ce FROM STDIN")
                    .await
                    .unwrap_or_else(|e| panic!("{}", describe(&e)));
                futures_util::pin_mut!(sink);
                let id = 1000 * w + round;
                sink.send(bytes::Bytes::from(format!("{id}\tx\n")))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let copied = sink.finish().await.unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(copied, 1);
                let n: i64 = tx
                    .query_one(&count, &[&id])
                    .await
                    .unwrap_or_else(|e| panic!("{}", describe(&e)))
                    .get(0);
                assert!(n >= 1);
                let inner = tx
                    .prepare("SELECT t FROM ce WHERE id = $1")
                    .await
                    .unwrap_or_else(|e| panic!("{}", describe(&e)));
                let t: String = tx
                    .query_one(&inner, &[&id])
                    .await
                    .unwrap_or_else(|e| panic!("{}", describe(&e)))
                    .get(0);
                assert_eq!(t, "x");
                tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(primary_sql(&db, "SELECT count(*) FROM ce"), "20");
}

/// DISCARD ALL drops a client's prepared statements as PostgreSQL does
/// (26000 afterwards), and preparing again works on any connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_all_drops_prepared_statements_like_postgres() {
    let db = database("prepared_discard");
    let r = pooler(|c| c.pool.pool_size = 2).await;
    let c = connect(&r, &db).await;
    let s = c
        .prepare("SELECT 41 + 1")
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    let row = c.query_one(&s, &[]).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(row.get::<_, i32>(0), 42);
    c.batch_execute("DISCARD ALL")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let gone = c.query_one(&s, &[]).await.err();
    assert_eq!(gone.as_ref().map(code).as_deref(), Some("26000"));
    let again = c
        .prepare("SELECT 41 + 1")
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    let row = c
        .query_one(&again, &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(row.get::<_, i32>(0), 42);
}

/// A client whose SQL is not UTF-8 (client_encoding LATIN1) changes a
/// setting the server does not report: the router cannot read the
/// statement, so it must reset the connection before the next client, not
/// hand the setting on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_in_unreadable_text_does_not_reach_the_next_client() {
    let db = database("latin1");
    let r = pooler(|c| c.pool.pool_size = 1).await;
    let mut a = RawClient::login(r.addr.port(), RAW_USER, &db).await;
    a.send(&raw::query("SET client_encoding = 'LATIN1'")).await;
    assert!(a.until_ready().await.iter().all(|(t, _)| *t != b'E'));
    // SET app.x = 'café', the é in LATIN1 (0xE9): not valid UTF-8.
    a.send(&raw::msg(b'Q', b"SET app.x = 'caf\xe9'\0")).await;
    let answer = a.until_ready().await;
    assert!(answer.iter().all(|(t, _)| *t != b'E'), "{answer:?}");
    // The same user's pool has one server connection: the next client of
    // that pool gets it. (Reset, a placeholder setting reads as ''.)
    let mut b = RawClient::login(r.addr.port(), RAW_USER, &db).await;
    b.send(&raw::query(
        "SELECT coalesce(nullif(current_setting('app.x', true), ''), '<unset>')",
    ))
    .await;
    let rows: Vec<String> = b
        .until_ready()
        .await
        .into_iter()
        .filter(|(t, _)| *t == b'D')
        .map(|(_, body)| String::from_utf8_lossy(&body[6..]).to_string())
        .collect();
    assert_eq!(rows, ["<unset>"], "app.x leaked to another client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_extended_batch_with_several_syncs() {
    let db = database("pipeline");
    let r = pooler(|c| c.pool.pool_size = 1).await;
    let mut c = RawClient::login(r.addr.port(), RAW_USER, &db).await;
    let mut batch = Vec::new();
    for i in 1..=3 {
        batch.extend(raw::extended_query(&format!("SELECT {i} * 10")));
    }
    // An error in the middle batch must not disturb the others.
    let mut bad = vec![0u8];
    bad.extend_from_slice(b"SELEC oops\0");
    bad.extend_from_slice(&0u16.to_be_bytes());
    batch.extend(raw::msg(b'P', &bad));
    batch.extend(raw::msg(b'S', b""));
    batch.extend(raw::query("SELECT 'after'"));
    c.send(&batch).await;
    let mut rows = Vec::new();
    let mut errors = 0;
    for _ in 0..5 {
        for (tag, body) in c.until_ready().await {
            match tag {
                b'D' => rows.push(String::from_utf8_lossy(&body[6..]).to_string()),
                b'E' => errors += 1,
                _ => {}
            }
        }
    }
    assert_eq!(rows, vec!["10", "20", "30", "after"]);
    assert_eq!(errors, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_100k_rows_byte_exact() {
    let db = database("copy");
    let r = pooler(|_| {}).await;
    let dir = std::env::temp_dir().join(format!("pgrouter-copy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let input = dir.join("in.tsv");
    let output = dir.join("out.tsv");
    let mut data = String::new();
    for i in 0..100_000 {
        data.push_str(&format!(
            "{i}\trow number {i} with tab\\tand backslash\\\\\t{}\n",
            i * 7 % 1000
        ));
    }
    std::fs::write(&input, &data).unwrap_or_else(|e| panic!("{e}"));
    let u = url(&r, &db);
    let (i2, o2) = (input.clone(), output.clone());
    let out = tokio::task::spawn_blocking(move || {
        run_tool(
            "psql",
            &[
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                &u,
                "-c",
                "CREATE TABLE c (id int, txt text, n int)",
                "-c",
                &format!("\\copy c FROM '{}'", i2.display()),
                "-c",
                &format!("\\copy (SELECT * FROM c ORDER BY id) TO '{}'", o2.display()),
            ],
        )
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = std::fs::read(&output).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back.len(), data.len());
    assert!(back == data.as_bytes(), "COPY round trip differs");
    assert_eq!(primary_sql(&db, "SELECT count(*) FROM c"), "100000");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_inside_transaction_then_rollback() {
    let db = database("txerr");
    let r = pooler(|c| c.pool.pool_size = 1).await;
    let c = connect(&r, &db).await;
    c.batch_execute("CREATE TABLE t (a int)")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    c.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let e = c.simple_query("SELECT 1/0").await.err().map(|e| code(&e));
    assert_eq!(e.as_deref(), Some("22012"));
    let e = c.simple_query("SELECT 1").await.err().map(|e| code(&e));
    assert_eq!(
        e.as_deref(),
        Some("25P02"),
        "failed transaction must stay failed"
    );
    c.batch_execute("ROLLBACK")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The same (only) server connection now serves another client cleanly.
    let other = connect(&r, &db).await;
    let n: i64 = other
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .map(|row| row.get(0))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n, 0);
    let status = other
        .query_one("SELECT now() = statement_timestamp()", &[])
        .await;
    assert!(
        status.is_ok(),
        "the pooled connection is not in a transaction"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_running_query() {
    let db = database("cancel");
    let r = pooler(|_| {}).await;
    let c = connect(&r, &db).await;
    let token = c.cancel_token();
    let started = Instant::now();
    let q = tokio::spawn(async move {
        c.simple_query("SELECT pg_sleep(30)")
            .await
            .err()
            .map(|e| code(&e))
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let got = tokio::time::timeout(Duration::from_secs(10), q).await;
    let got = got
        .unwrap_or_else(|_| panic!("query not cancelled"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.as_deref(), Some("57014"));
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A client that vanishes while holding a row lock: the lock must be released
/// promptly, both when it sat idle in the transaction and when a statement
/// was still running (which needs a cancel; PgBouncer waits for the statement).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_client_releases_its_locks() {
    let db = database("vanish");
    let r = pooler(|c| c.pool.pool_size = 2).await;
    primary_sql(&db, "CREATE TABLE l (id int primary key, v int); INSERT INTO l VALUES (1, 0); GRANT ALL ON l TO app");
    for running in [false, true] {
        let mut holder = RawClient::login(r.addr.port(), RAW_USER, &db).await;
        holder
            .send(&raw::query(
                "BEGIN; SELECT * FROM l WHERE id = 1 FOR UPDATE",
            ))
            .await;
        holder.until_ready().await;
        if running {
            holder.send(&raw::query("SELECT pg_sleep(60)")).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let killed = Instant::now();
        drop(holder); // the client vanishes: socket closed mid-transaction
        let other = connect(&r, &db).await;
        other
            .batch_execute("SET lock_timeout = '5s'")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let got = other
            .query("SELECT * FROM l WHERE id = 1 FOR UPDATE", &[])
            .await;
        let waited = killed.elapsed();
        assert!(
            got.is_ok(),
            "lock still held (running={running}): {:?}",
            got.err()
        );
        eprintln!(
            "lock released {waited:?} after the client vanished (statement running: {running})"
        );
        assert!(waited < Duration::from_secs(2), "took {waited:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_clients_share_ten_server_connections() {
    let db = database("many");
    primary_sql(
        &db,
        "CREATE TABLE m (client int, at timestamptz default now()); GRANT ALL ON m TO app",
    );
    let r = std::sync::Arc::new(
        pooler(|c| {
            c.pool.pool_size = 10;
            c.server.query_wait_timeout = pgrouter::config::HumanDuration::from_secs(60);
        })
        .await,
    );
    let mut tasks = Vec::new();
    for i in 0..500 {
        let r = r.clone();
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let c = try_connect(&r, &db).await?;
            c.batch_execute(&format!(
                "BEGIN; INSERT INTO m (client) VALUES ({i}); SELECT pg_sleep(0.01); COMMIT"
            ))
            .await?;
            Ok::<_, tokio_postgres::Error>(c)
        }));
    }
    let mut ok = 0;
    let mut clients = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(c)) => {
                ok += 1;
                clients.push(c);
            }
            Ok(Err(e)) => panic!("a transaction failed: {}", describe(&e)),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok, 500);
    assert_eq!(
        primary_sql(&db, "SELECT count(DISTINCT client) FROM m"),
        "500"
    );
    let servers: usize = primary_sql(
        &db,
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND usename = 'app'"
        ),
    )
    .parse()
    .unwrap_or(999);
    assert!(
        servers <= 10,
        "{servers} server connections for pool_size 10"
    );
    assert_eq!(r.shared.client_count(), 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failures_have_the_right_sqlstate() {
    let db = database("auth");
    let r = pooler(|_| {}).await;
    let port = r.addr.port();
    let wrong = connect_url(&format!("postgres://{USER}:nope@127.0.0.1:{port}/{db}")).await;
    assert_eq!(wrong.err().map(|e| code(&e)).as_deref(), Some("28P01"));
    let ghost = connect_url(&format!("postgres://ghost:nope@127.0.0.1:{port}/{db}")).await;
    let ghost = ghost.err().map(|e| (code(&e), describe(&e)));
    assert_eq!(ghost.as_ref().map(|g| g.0.as_str()), Some("28P01"));
    assert!(ghost
        .map(|g| g.1.contains("password authentication failed"))
        .unwrap_or(false));
    let nodb = try_connect(&r, "no_such_database").await;
    assert_eq!(nodb.err().map(|e| code(&e)).as_deref(), Some("3D000"));
    // And the router still serves good clients.
    let ok = connect(&r, &db).await;
    assert!(ok.simple_query("SELECT 1").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_users_log_in() {
    let db = database("md5");
    let r = pooler(|c| {
        c.users[0].auth = pgrouter::config::AuthMethod::Md5;
    })
    .await;
    let c = connect(&r, &db).await;
    assert!(c.simple_query("SELECT 1").await.is_ok());
    let wrong = connect_url(&format!(
        "postgres://{USER}:nope@127.0.0.1:{}/{db}",
        r.addr.port()
    ))
    .await;
    assert_eq!(wrong.err().map(|e| code(&e)).as_deref(), Some("28P01"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_messages_are_rejected() {
    let db = database("hostile");
    let r = pooler(|_| {}).await;
    let port = r.addr.port();
    // A declared length of 2 GiB: rejected from the header alone.
    let mut c = RawClient::login(port, RAW_USER, &db).await;
    c.send(b"Q\x7f\xff\xff\xff").await;
    let (tag, body) = c.next().await.unwrap_or_else(|| panic!("no answer"));
    assert_eq!(tag, b'E');
    let (code, message) = raw::error_fields(&body);
    assert_eq!(code, "08P01", "{message}");
    assert!(message.contains("over the limit"), "{message}");
    assert!(c.closed().await);
    // A length below 4.
    let mut c = RawClient::login(port, RAW_USER, &db).await;
    c.send(b"Q\0\0\0\x02").await;
    let (tag, body) = c.next().await.unwrap_or_else(|| panic!("no answer"));
    assert_eq!((tag, raw::error_fields(&body).0.as_str()), (b'E', "08P01"));
    // A startup packet declaring 1 GiB.
    let mut c = RawClient::connect(port).await;
    c.send(&0x4000_0000u32.to_be_bytes()).await;
    let (tag, body) = c.next().await.unwrap_or_else(|| panic!("no answer"));
    assert_eq!((tag, raw::error_fields(&body).0.as_str()), (b'E', "08P01"));
    // A startup packet with a bad protocol version.
    let mut c = RawClient::connect(port).await;
    c.send(&[0, 0, 0, 8, 0, 2, 0, 0]).await;
    let (tag, body) = c.next().await.unwrap_or_else(|| panic!("no answer"));
    assert_eq!((tag, raw::error_fields(&body).0.as_str()), (b'E', "08P01"));
    // Others are unaffected.
    let ok = connect(&r, &db).await;
    assert!(ok.simple_query("SELECT 1").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_refused_and_newer_protocol_negotiated() {
    let db = database("negotiate");
    let r = pooler(|_| {}).await;
    let mut c = RawClient::connect(r.addr.port()).await;
    c.send(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await; // SSLRequest
    let mut b = [0u8; 1];
    use tokio::io::AsyncReadExt;
    c.stream
        .read_exact(&mut b)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&b, b"N");
    c.send(&raw::startup_packet(
        2,
        &[("user", RAW_USER), ("database", &db), ("_pq_.future", "1")],
    ))
    .await;
    let msgs = c.until_ready().await;
    assert_eq!(msgs[0].0, b'v', "NegotiateProtocolVersion first");
    assert_eq!(&msgs[0].1[..4], &0u32.to_be_bytes());
    assert!(msgs.iter().any(|m| m.0 == b'K'), "BackendKeyData");
    assert!(msgs
        .iter()
        .any(|m| m.0 == b'S' && m.1.starts_with(b"server_version\0")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_keeps_its_own_session_parameters() {
    let db = database("params");
    let r = pooler(|c| c.pool.pool_size = 1).await; // one server connection for both
    let port = r.addr.port();
    let tokyo = connect_url(&format!(
        "postgres://{USER}:{PASSWORD}@127.0.0.1:{port}/{db}?options=-c%20TimeZone%3DAsia%2FTokyo"
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let plain = connect(&r, &db).await;
    async fn show(c: &tokio_postgres::Client) -> String {
        first_value(c, "SHOW TimeZone").await.unwrap_or_default()
    }
    plain
        .batch_execute("SET TimeZone = 'America/New_York'")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let noon = "SELECT '2026-06-01 12:00:00+00'::timestamptz::text";
    for _ in 0..3 {
        assert_eq!(show(&tokyo).await, "Asia/Tokyo");
        assert_eq!(show(&plain).await, "America/New_York");
        // Each sees times in its own zone, on the one shared connection.
        assert_eq!(
            first_value(&tokyo, noon).await.as_deref(),
            Some("2026-06-01 21:00:00+09")
        );
        assert_eq!(
            first_value(&plain, noon).await.as_deref(),
            Some("2026-06-01 08:00:00-04")
        );
    }
}

/// Silent settings (search_path, statement_timeout, role, custom `app.x`)
/// follow each client across transactions on one shared server connection,
/// with RESET, RESET ALL, DISCARD ALL, transactions, errors and set_config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_settings_follow_each_client() {
    let db = database("silent");
    primary_sql(
        &db,
        "CREATE SCHEMA a; CREATE SCHEMA b; CREATE TABLE a.t AS SELECT 'a'::text AS v; \
         CREATE TABLE b.t AS SELECT 'b'::text AS v; GRANT USAGE ON SCHEMA a, b TO app; \
         GRANT SELECT ON a.t, b.t TO app; \
         DO $$ BEGIN CREATE ROLE silent_reader NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
         GRANT silent_reader TO app; GRANT USAGE ON SCHEMA a, b TO silent_reader; \
         GRANT SELECT ON a.t, b.t TO silent_reader;",
    );
    let r = pooler(|c| c.pool.pool_size = 1).await; // one server connection for all
    let a = connect(&r, &db).await;
    let b = connect(&r, &db).await;
    let plain = connect(&r, &db).await;
    async fn v(c: &tokio_postgres::Client, sql: &str) -> String {
        first_value(c, sql).await.unwrap_or_default()
    }
    async fn run(c: &tokio_postgres::Client, sql: &str) {
        c.batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
    }
    let default_path = v(&plain, "SHOW search_path").await;
    run(&a, "SET search_path = a, public").await;
    // Through the extended protocol too.
    b.execute("SET search_path TO b", &[])
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    run(&a, "SET statement_timeout = '100ms'").await;
    run(&a, "SET app.tenant = 'acme'").await;
    run(&b, "SET ROLE silent_reader").await;
    for _ in 0..3 {
        assert_eq!(v(&a, "SELECT v FROM t").await, "a");
        assert_eq!(v(&b, "SELECT v FROM t").await, "b");
        assert_eq!(v(&plain, "SHOW search_path").await, default_path);
        assert_eq!(
            v(&a, "SELECT current_setting('app.tenant', true)").await,
            "acme"
        );
        assert_eq!(
            v(&b, "SELECT current_setting('app.tenant', true)").await,
            ""
        );
        assert_eq!(v(&b, "SELECT current_user").await, "silent_reader");
        assert_eq!(v(&a, "SELECT current_user").await, USER);
        assert_eq!(v(&plain, "SHOW statement_timeout").await, "0");
    }
    let slow = a.batch_execute("SELECT pg_sleep(0.5)").await;
    assert_eq!(slow.err().map(|e| code(&e)).as_deref(), Some("57014"));
    run(&b, "SELECT pg_sleep(0.2)").await; // b has no timeout

    // A SET inside a transaction counts once it commits, not on rollback;
    // SET LOCAL never outlives its transaction.
    run(&a, "BEGIN; SET search_path = b; ROLLBACK").await;
    assert_eq!(v(&a, "SELECT v FROM t").await, "a");
    assert_eq!(v(&plain, "SHOW search_path").await, default_path);
    run(&a, "BEGIN; SET search_path = b; COMMIT").await;
    assert_eq!(v(&a, "SELECT v FROM t").await, "b");
    run(&a, "BEGIN; SET LOCAL search_path = a; COMMIT").await;
    assert_eq!(v(&a, "SELECT v FROM t").await, "b");
    // An error undoes the implicit transaction's SET.
    assert!(a
        .batch_execute("SET search_path = a; SELECT 1/0")
        .await
        .is_err());
    assert_eq!(v(&a, "SELECT v FROM t").await, "b");
    assert_eq!(v(&plain, "SHOW search_path").await, default_path);

    // RESET, RESET ALL (keeps the role), DISCARD ALL (does not).
    run(&a, "RESET search_path").await;
    assert_eq!(v(&a, "SHOW search_path").await, default_path);
    assert_eq!(v(&a, "SHOW statement_timeout").await, "100ms");
    run(&b, "SET statement_timeout = '5s'").await;
    run(&b, "RESET ALL").await;
    assert_eq!(v(&b, "SHOW statement_timeout").await, "0");
    assert_eq!(v(&b, "SHOW search_path").await, default_path);
    assert_eq!(v(&b, "SELECT current_user").await, "silent_reader");
    run(&b, "DISCARD ALL").await;
    assert_eq!(v(&b, "SELECT current_user").await, USER);
    assert_eq!(v(&a, "SHOW statement_timeout").await, "100ms");

    // set_config(..., false) cannot be followed: the connection is reset
    // before anyone else uses it.
    run(&plain, "SELECT set_config('app.tenant', 'leaked', false)").await;
    assert_eq!(
        v(&b, "SELECT current_setting('app.tenant', true)").await,
        ""
    );
    assert_eq!(
        v(&a, "SELECT current_setting('app.tenant', true)").await,
        "acme"
    );

    // A prepared SET changes nothing until executed, then counts each time.
    let to_a = plain
        .prepare("SET search_path TO a")
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    assert_eq!(v(&plain, "SHOW search_path").await, default_path);
    plain
        .execute(&to_a, &[])
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    assert_eq!(v(&plain, "SELECT v FROM t").await, "a");
    run(&plain, "RESET search_path").await;
    assert_eq!(v(&b, "SHOW search_path").await, default_path);
    plain
        .execute(&to_a, &[])
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    assert_eq!(v(&b, "SHOW search_path").await, default_path);
    assert_eq!(v(&plain, "SELECT v FROM t").await, "a");

    // Endless SETs in one transaction: noted as "reset the connection".
    let many: String = (0..300).map(|i| format!("SET app.n = '{i}';")).collect();
    run(&a, &format!("BEGIN;{many}COMMIT")).await;
    assert_eq!(v(&b, "SELECT current_setting('app.n', true)").await, "");

    // A startup search_path is a list, as PostgreSQL reads it.
    let port = r.addr.port();
    let listed = connect_url(&format!(
        "postgres://{USER}:{PASSWORD}@127.0.0.1:{port}/{db}?options=-c%20search_path%3Db%2Ca"
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v(&listed, "SELECT v FROM t").await, "b");
    assert_eq!(
        v(&listed, "SELECT current_schemas(false)::text").await,
        "{b,a}"
    );
    run(&listed, "SET search_path = a").await;
    run(&listed, "RESET search_path").await;
    assert_eq!(
        v(&listed, "SELECT current_schemas(false)::text").await,
        "{b,a}"
    );
}

/// SQL-level PREPARE in transaction mode: usable within the transaction
/// (and by the same client while its connection stays), never visible to
/// another client of the server connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepared_statements_stay_with_their_client() {
    let db = database("sqlprepare");
    let r = pooler(|c| c.pool.pool_size = 1).await; // one server connection for all
    let a = connect(&r, &db).await;
    let b = connect(&r, &db).await;
    let count_q = "SELECT count(*) FROM pg_prepared_statements WHERE name = 'q'";
    assert_eq!(
        first_value(&a, "PREPARE q AS SELECT 'a'; EXECUTE q")
            .await
            .as_deref(),
        Some("a")
    );
    assert_eq!(first_value(&a, "EXECUTE q").await.as_deref(), Some("a"));
    // b neither sees a's statement nor collides with its name.
    assert_eq!(first_value(&b, count_q).await.as_deref(), Some("0"));
    b.batch_execute("PREPARE q AS SELECT 'b'")
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    assert_eq!(first_value(&b, "EXECUTE q").await.as_deref(), Some("b"));
    let gone = a.simple_query("EXECUTE q").await;
    assert_eq!(gone.err().map(|e| code(&e)).as_deref(), Some("26000"));
    // Not even a failed transaction undoes a PREPARE; still cleaned.
    assert!(b
        .batch_execute("BEGIN; PREPARE q2 AS SELECT 2; SELECT 1/0")
        .await
        .is_err());
    b.batch_execute("ROLLBACK")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        first_value(&a, "SELECT count(*) FROM pg_prepared_statements")
            .await
            .as_deref(),
        Some("0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_idle_server_connection_is_replaced() {
    let db = database("killed");
    let r = pooler(|c| c.pool.pool_size = 1).await;
    let c = connect(&r, &db).await;
    let pid: i32 = c
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or_else(|e| panic!("{e}"));
    primary_sql(&db, &format!("SELECT pg_terminate_backend({pid})"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid2: i32 = c
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or_else(|e| panic!("the client must not see the dead connection: {e}"));
    assert_ne!(pid, pid2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_keeps_state_and_resets_between_clients() {
    let db = database("session");
    let r = pooler(|c| {
        c.server.pool_mode = PoolMode::Session;
        c.pool.pool_size = 1;
    })
    .await;
    let a = connect(&r, &db).await;
    a.batch_execute("CREATE TEMP TABLE tmp (x int); SET search_path = pg_temp, public")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(a.simple_query("SELECT * FROM tmp").await.is_ok());
    drop(a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = connect(&r, &db).await;
    let e = b
        .simple_query("SELECT * FROM tmp")
        .await
        .err()
        .map(|e| code(&e));
    assert_eq!(
        e.as_deref(),
        Some("42P01"),
        "DISCARD ALL must drop the temp table"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_conn_refuses_with_53300() {
    let db = database("maxconn");
    let r = pooler(|c| c.server.max_client_conn = 2).await;
    let _a = connect(&r, &db).await;
    let _b = connect(&r, &db).await;
    let c = try_connect(&r, &db).await;
    assert_eq!(c.err().map(|e| code(&e)).as_deref(), Some("53300"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_transactions_finish() {
    let db = database("shutdown");
    let r = pooler(|_| {}).await;
    let c = connect(&r, &db).await;
    c.batch_execute("CREATE TABLE s (a int)")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    c.batch_execute("BEGIN; INSERT INTO s VALUES (1)")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    r.shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // New clients are refused...
    assert!(try_connect(&r, &db).await.is_err());
    // ...the open transaction completes...
    c.batch_execute("INSERT INTO s VALUES (2); COMMIT")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(primary_sql(&db, "SELECT count(*) FROM s"), "2");
    // ...and then the client is let go.
    assert!(r.drain(Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints() {
    let r = pooler(|_| {}).await;
    let live = http_get(r.http_addr, "/health/live").await;
    assert!(live.starts_with("HTTP/1.1 200"), "{live}");
    let ready = http_get(r.http_addr, "/health/ready").await;
    assert!(
        ready.starts_with("HTTP/1.1 200") && ready.contains("\"ready\""),
        "{ready}"
    );
    // A router whose primary is unreachable is not ready.
    let dead = pooler(|c| c.primary.port = pgrouter::demo::cluster::free_port().unwrap_or(1)).await;
    let ready = http_get(dead.http_addr, "/health/ready").await;
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_primary_gives_a_clear_error_not_a_hang() {
    let r = pooler(|c| {
        c.primary.port = pgrouter::demo::cluster::free_port().unwrap_or(1);
        c.server.server_connect_timeout = pgrouter::config::HumanDuration::from_millis(500);
    })
    .await;
    let started = Instant::now();
    let e = try_connect(&r, "whatever").await;
    let err = e.err().map(|e| (code(&e), describe(&e)));
    assert_eq!(err.as_ref().map(|e| e.0.as_str()), Some("08006"));
    assert!(err.map(|e| e.1.contains("primary")).unwrap_or(false));
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// The router logs into servers with md5, cleartext password and trust too
/// (SCRAM is covered by every other test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_logins_with_md5_cleartext_and_trust() {
    let db = database("serverauth");
    let r = pooler(|c| {
        for (name, pw) in [
            ("md5user", Some("md5-secret")),
            ("pwuser", Some("pw-secret")),
            ("trustuser", None),
        ] {
            c.users.push(pgrouter::config::UserConfig {
                name: name.into(),
                password: None,
                auth: pgrouter::config::AuthMethod::Trust,
                server_user: None,
                server_password: pw.map(str::to_string),
                allow: Vec::new(),
            });
        }
    })
    .await;
    for user in ["md5user", "pwuser", "trustuser"] {
        let mut c = RawClient::login(r.addr.port(), user, &db).await;
        c.send(&raw::query("SELECT current_user")).await;
        let msgs = c.until_ready().await;
        let row = msgs
            .iter()
            .find(|m| m.0 == b'D')
            .map(|m| String::from_utf8_lossy(&m.1[6..]).to_string());
        assert_eq!(row.as_deref(), Some(user));
    }
}
