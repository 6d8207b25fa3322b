//! Read-your-writes against replicas that really lag
//! (`recovery_min_apply_delay = '1s'` on both): the stale-read checker.

mod common;

use common::*;
use pgrouter::config::{ConsistencyScope, ReadYourWrites};
use std::sync::OnceLock;
use std::time::Duration;

static DELAYED: OnceLock<()> = OnceLock::new();

/// A database with table `t`, on a cluster whose replicas apply WAL 1 s late.
async fn setup(test: &str) -> String {
    DELAYED.get_or_init(|| {
        cluster()
            .configure_replicas("recovery_min_apply_delay = '1s'")
            .unwrap_or_else(|e| panic!("{e}"));
    });
    let db = database(test);
    primary_sql(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY); GRANT ALL ON t TO app",
    );
    wait_replicas_caught_up();
    db
}

/// The replicas here are 1 s behind on purpose: keep the lag monitor from
/// evicting them (the checker needs reads on lagging replicas).
fn tolerate_delay(c: &mut pgrouter::config::Config) {
    c.lag.max_lag = pgrouter::config::HumanDuration::from_secs(60);
}

async fn count(c: &tokio_postgres::Client, id: i32) -> i64 {
    first_value(c, &format!("SELECT count(*) FROM t WHERE id = {id}"))
        .await
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1)
}

/// Runs `n` rounds of "INSERT a unique row, then SELECT it" (writer and
/// reader may be the same connection); returns how many reads missed.
async fn stale_reads(
    writer: &tokio_postgres::Client,
    reader: &tokio_postgres::Client,
    base: i32,
    n: i32,
) -> usize {
    let mut stale = 0;
    for i in base..base + n {
        writer
            .simple_query(&format!("INSERT INTO t VALUES ({i})"))
            .await
            .unwrap_or_else(|e| panic!("{}", describe(&e)));
        if count(reader, i).await != 1 {
            stale += 1;
        }
    }
    stale
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lsn_mode_never_reads_stale_data_and_returns_to_replicas() {
    let db = setup("ryw_lsn").await;
    let r = router(|c| {
        tolerate_delay(c);
        c.routing.read_your_writes = ReadYourWrites::Lsn
    })
    .await;
    let c = connect(&r, &db).await;
    let stale = stale_reads(&c, &c, 0, 200).await;
    assert_eq!(stale, 0, "stale reads with read_your_writes = lsn");
    // Once the replicas have replayed the client's writes, its reads go back to them.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let replicas = replica_ports();
    let mut on_replicas = 0;
    for _ in 0..20 {
        if replicas.contains(&port_of(&c, "SELECT inet_server_port()").await) {
            on_replicas += 1;
        }
    }
    assert_eq!(
        on_replicas, 20,
        "reads after catch-up should run on replicas"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_scope_covers_the_users_other_connections() {
    let db = setup("ryw_user").await;
    let r = router(|c| {
        tolerate_delay(c);
        c.routing.read_your_writes = ReadYourWrites::Lsn;
        c.routing.consistency_scope = ConsistencyScope::User;
    })
    .await;
    let writer = connect(&r, &db).await;
    let reader = connect(&r, &db).await;
    let stale = stale_reads(&writer, &reader, 1000, 200).await;
    assert_eq!(
        stale, 0,
        "stale reads across connections of one user in user scope"
    );
}

/// A write pipelined behind a read that runs on the primary (here by hint)
/// is routed and recorded on its own, not carried along unseen by the
/// read's loan: the user's other connection then sees it at once although
/// the replicas are 1 s behind. (postgres.js pipelines like this.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_pipelined_behind_a_primary_read_is_recorded() {
    let db = setup("ryw_pipelined").await;
    let r = router(|c| {
        tolerate_delay(c);
        c.routing.read_your_writes = ReadYourWrites::Lsn;
        c.routing.consistency_scope = ConsistencyScope::User;
    })
    .await;
    let writer = connect(&r, &db).await;
    let reader = connect(&r, &db).await;
    let writes = || {
        r.shared
            .route_stats
            .decisions(false, pgrouter::router::RouteReason::Write)
    };
    for i in 0..5 {
        let before = writes();
        // Both Queries leave in one write, before either is answered.
        let insert = format!("INSERT INTO t VALUES ({i})");
        let (read, write) = tokio::join!(
            writer.simple_query("/* pgrouter:primary */ SELECT 1"),
            writer.simple_query(&insert),
        );
        read.unwrap_or_else(|e| panic!("{}", describe(&e)));
        write.unwrap_or_else(|e| panic!("{}", describe(&e)));
        assert_eq!(writes() - before, 1, "the INSERT was routed as a write");
        let seen = first_value(&reader, &format!("SELECT count(*) FROM t WHERE id = {i}")).await;
        assert_eq!(
            seen.as_deref(),
            Some("1"),
            "round {i}: the write was not visible"
        );
    }
}

/// User scope with a client that pipelines: the write's ReadyForQuery must
/// not reach the client (mid-loan, with more of its work queued behind)
/// before the write position is published, or the user's other connection
/// reads stale data (seen with postgres.js).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_scope_publishes_a_write_before_its_pipelined_successors_run() {
    let db = setup("ryw_user_pipelined").await;
    let r = router(|c| {
        tolerate_delay(c);
        c.routing.read_your_writes = ReadYourWrites::Lsn;
        c.routing.consistency_scope = ConsistencyScope::User;
    })
    .await;
    let writer = std::sync::Arc::new(connect(&r, &db).await);
    let reader = connect(&r, &db).await;
    for i in 0..5 {
        let w = writer.clone();
        let insert =
            tokio::spawn(
                async move { w.simple_query(&format!("INSERT INTO t VALUES ({i})")).await },
            );
        // Queued behind the INSERT on the same connection, still running
        // when the INSERT is acknowledged.
        let w = writer.clone();
        let busy = tokio::spawn(async move {
            tokio::task::yield_now().await;
            w.simple_query("/* pgrouter:primary */ SELECT pg_sleep(0.3)")
                .await
        });
        insert
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{}", describe(&e)));
        let seen = first_value(&reader, &format!("SELECT count(*) FROM t WHERE id = {i}")).await;
        assert_eq!(
            seen.as_deref(),
            Some("1"),
            "round {i}: stale read on the user's other connection"
        );
        busy.await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{}", describe(&e)));
    }
}

/// A write prepared with Parse + Describe + Flush (no Sync: the client
/// waits for the types, as postgres.js does) and executed afterwards in the
/// same loan is recorded: the next read sees it, though the replicas are
/// 1 s behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_described_before_its_execute_is_recorded() {
    use common::raw;
    let db = setup("ryw_describe_first").await;
    primary_sql(&db, &format!("GRANT ALL ON t TO {RAW_USER}"));
    wait_replicas_caught_up();
    let r = router(tolerate_delay).await;
    let mut c = raw::RawClient::login(r.addr.port(), RAW_USER, &db).await;
    for i in 0..3 {
        let parse = format!("\0INSERT INTO t VALUES ({i})\0\0\0");
        c.send(
            &[
                raw::msg(b'P', parse.as_bytes()),
                raw::msg(b'D', b"S\0"),
                raw::msg(b'H', b""),
            ]
            .concat(),
        )
        .await;
        // ParseComplete, ParameterDescription, NoData: no ReadyForQuery.
        for want in [b'1', b't', b'n'] {
            let (tag, body) = c.next().await.unwrap_or_else(|| panic!("closed"));
            assert_eq!(tag, want, "{}", String::from_utf8_lossy(&body));
        }
        c.send(
            &[
                raw::msg(b'B', b"\0\0\0\0\0\0\0\0"),
                raw::msg(b'E', b"\0\0\0\0\0"),
                raw::msg(b'S', b""),
            ]
            .concat(),
        )
        .await;
        let answers = c.until_ready().await;
        assert!(answers.iter().any(|(t, _)| *t == b'C'), "{answers:?}");
        c.send(&raw::query(&format!(
            "SELECT count(*) FROM t WHERE id = {i}"
        )))
        .await;
        let answers = c.until_ready().await;
        let row = answers
            .iter()
            .find(|(t, _)| *t == b'D')
            .map(|(_, b)| b.clone())
            .unwrap_or_default();
        let text: Vec<String> = answers
            .iter()
            .map(|(t, b)| format!("{}:{}", *t as char, String::from_utf8_lossy(b)))
            .collect();
        assert!(row.ends_with(b"1"), "round {i}: stale read {text:?}");
    }
}

/// Across router instances: the writer's instance hands out a causal token
/// (`SHOW pgrouter.causal_token`), the app carries it to another instance
/// (`SET pgrouter.causal_token`), whose reads then wait for that position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_causal_token_carries_read_your_writes_to_another_instance() {
    let db = setup("ryw_token").await;
    let start = || {
        router(|c| {
            tolerate_delay(c);
            c.routing.read_your_writes = ReadYourWrites::Lsn;
        })
    };
    let (one, two) = (start().await, start().await);
    let writer = connect(&one, &db).await;
    assert_eq!(
        first_value(&writer, "SHOW pgrouter.causal_token")
            .await
            .as_deref(),
        Some(""),
        "a token before any write"
    );
    let (mut stale_without, mut stale_with) = (0, 0);
    for i in 0..10 {
        writer
            .simple_query(&format!("INSERT INTO t VALUES ({i})"))
            .await
            .unwrap_or_else(|e| panic!("{}", describe(&e)));
        let token = first_value(&writer, "SHOW pgrouter.causal_token")
            .await
            .unwrap_or_default();
        assert!(token.contains('/'), "token {token:?}");
        let sql = format!("SELECT count(*) FROM t WHERE id = {i}");
        // Another instance, no token: the replicas (1 s behind) answer.
        let plain = connect(&two, &db).await;
        if first_value(&plain, &sql).await.as_deref() == Some("0") {
            stale_without += 1;
        }
        // With the token.
        let carried = connect(&two, &db).await;
        carried
            .simple_query(&format!("SET pgrouter.causal_token = '{token}'"))
            .await
            .unwrap_or_else(|e| panic!("{}", describe(&e)));
        if first_value(&carried, &sql).await.as_deref() != Some("1") {
            stale_with += 1;
        }
    }
    eprintln!("stale reads on the other instance: {stale_without}/10 without the token, {stale_with}/10 with it");
    assert_eq!(stale_with, 0);
    assert!(
        stale_without > 5,
        "the check could not fail: {stale_without}/10 stale without the token"
    );
    let bad = connect(&two, &db).await;
    let e = bad
        .simple_query("SET pgrouter.causal_token = 'tomorrow'")
        .await
        .err()
        .unwrap_or_else(|| panic!("a bad token was accepted"));
    assert_eq!(code(&e), "22023");
}

/// The checker can fail: with read-your-writes off, the lagging replicas
/// serve reads that miss the row just written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_mode_shows_stale_reads() {
    let db = setup("ryw_off").await;
    let r = router(|c| {
        tolerate_delay(c);
        c.routing.read_your_writes = ReadYourWrites::Off
    })
    .await;
    let c = connect(&r, &db).await;
    let stale = stale_reads(&c, &c, 2000, 50).await;
    eprintln!("read_your_writes = off: {stale} of 50 reads were stale");
    assert!(
        stale > 25,
        "expected most reads to be stale, got {stale} of 50"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_mode_pins_reads_to_the_primary_for_a_while() {
    let db = setup("ryw_time").await;
    let r = router(|c| {
        tolerate_delay(c);
        c.routing.read_your_writes = ReadYourWrites::Time;
        c.routing.pin_duration = pgrouter::config::HumanDuration::from_millis(1500);
    })
    .await;
    let c = connect(&r, &db).await;
    assert_eq!(stale_reads(&c, &c, 3000, 20).await, 0);
    assert_eq!(
        port_of(&c, "SELECT inet_server_port()").await,
        cluster().primary.port
    );
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert!(replica_ports().contains(&port_of(&c, "SELECT inet_server_port()").await));
}
