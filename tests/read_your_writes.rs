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
