//! Role discovery and failover (`discover_roles = true`) on a cluster of its
//! own (the test promotes a replica, so nothing else may share it): writes
//! follow a promoted replica, and two servers claiming the primary role stop
//! writes instead of splitting them.

mod common;

use common::*;
use pgrouter::app::Router;
use pgrouter::config::HumanDuration;
use pgrouter::lag::health::State;
use std::time::{Duration, Instant};

const PROBE: Duration = Duration::from_millis(250);

/// One write on a fresh connection: the port it ran on, or the error.
async fn write(r: &Router, db: &str) -> Result<u16, String> {
    let c = try_connect(r, db).await.map_err(|e| describe(&e))?;
    let rows = c
        .simple_query("INSERT INTO w DEFAULT VALUES RETURNING inet_server_port()")
        .await
        .map_err(|e| describe(&e))?;
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        })
        .ok_or_else(|| "no row".to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_a_promoted_replica_and_stop_on_split_brain() {
    let db = database("failover");
    primary_sql(
        &db,
        "CREATE TABLE w (id bigserial PRIMARY KEY); GRANT ALL ON w TO app; \
         GRANT ALL ON SEQUENCE w_id_seq TO app",
    );
    wait_replicas_caught_up();
    let r = router(|c| {
        c.routing.discover_roles = true;
        c.lag.probe_interval = HumanDuration(PROBE);
    })
    .await;
    let (old, new) = (&cluster().primary, &cluster().replicas[0]);
    assert_eq!(write(&r, &db).await, Ok(old.port));
    wait_replicas_caught_up();

    cluster().kill(old).unwrap_or_else(|e| panic!("{e}"));
    let e = write(&r, &db)
        .await
        .expect_err("a write with no primary succeeded");
    println!("primary down: {e}");
    assert!(e.starts_with("08006") && e.contains("primary"), "{e}");

    cluster().promote(new).unwrap_or_else(|e| panic!("{e}"));
    let promoted = Instant::now();
    let port = loop {
        match write(&r, &db).await {
            Ok(p) => break p,
            Err(e) => assert!(
                promoted.elapsed() < Duration::from_secs(5),
                "writes never followed the promotion: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let followed = promoted.elapsed();
    println!("writes reached the promoted replica {followed:?} after the promotion");
    assert_eq!(port, new.port);
    assert!(
        followed <= PROBE * 2,
        "writes followed only after {followed:?}"
    );

    // Without discovery the promoted replica is "misconfigured": no reads
    // go to it, and writes are not sent to it either.
    let fixed = router(|c| c.lag.probe_interval = HumanDuration(PROBE)).await;
    assert_eq!(
        fixed.shared.monitor.nodes()[1].status.state(),
        State::Misconfigured
    );
    let c = connect(&fixed, &db).await;
    for _ in 0..10 {
        assert_ne!(port_of(&c, "SELECT inet_server_port()").await, new.port);
    }
    let e = write(&fixed, &db)
        .await
        .expect_err("a write went to a server not configured as primary");
    assert!(e.contains("primary"), "{e}");
    drop(fixed);

    // The old primary comes back as a primary: two claim the role.
    cluster().restart(old).unwrap_or_else(|e| panic!("{e}"));
    let back = Instant::now();
    let e = loop {
        match write(&r, &db).await {
            Err(e) if e.contains("split brain") => break e,
            Ok(p) => assert_eq!(p, new.port, "a write reached the old primary"),
            Err(e) => panic!("unexpected error: {e}"),
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "split brain never detected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!(
        "split brain refused {:?} after the old primary came back: {e}",
        back.elapsed()
    );
    assert!(e.starts_with("57P03"), "{e}");
    // While both claim the role, no write goes anywhere.
    for _ in 0..10 {
        let e = write(&r, &db)
            .await
            .expect_err("a write went through during split brain");
        assert!(e.contains("split brain"), "{e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let on_old: i64 = cluster()
        .psql(old.port, &db, "SELECT count(*) FROM w")
        .unwrap_or_else(|e| panic!("{e}"))
        .trim()
        .parse()
        .unwrap_or(-1);
    assert_eq!(
        on_old, 1,
        "the old primary received writes after the failover"
    );

    // The old primary goes away for good: writes resume on the new one.
    cluster().kill(old).unwrap_or_else(|e| panic!("{e}"));
    let gone = Instant::now();
    loop {
        match write(&r, &db).await {
            Ok(p) => {
                assert_eq!(p, new.port);
                break;
            }
            Err(e) => assert!(gone.elapsed() < Duration::from_secs(5), "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Reads still run: on the remaining standby (r2 still follows the old
    // timeline's primary, which is gone) or the new primary.
    let c = connect(&r, &db).await;
    assert!(first_value(&c, "SELECT 1").await.is_some());
}
