//! The lag monitor against real replicas: eviction and readmission (paused
//! replay, recovery_min_apply_delay), an idle primary, a crashed replica
//! under load, a stopped primary, a hung (SIGSTOPped) replica.
//!
//! These tests stop and pause servers of the shared cluster, so they run one
//! at a time (SERIAL) and put every server back as they found it.

mod common;

use common::*;
use pgrouter::config::HumanDuration;
use pgrouter::demo::cluster::PgNode;
use pgrouter::lag::health::State;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PROBE: Duration = Duration::from_millis(250);

async fn lag_router() -> TestRouter {
    router(|c| {
        c.lag.probe_interval = HumanDuration(PROBE);
        c.lag.probe_timeout = HumanDuration::from_secs(1);
        c.lag.max_lag = HumanDuration::from_secs(1);
    })
    .await
}

/// A database with a table the background writer fills.
fn setup(test: &str) -> String {
    let db = database(test);
    primary_sql(
        &db,
        "CREATE TABLE w (id bigserial PRIMARY KEY, at timestamptz DEFAULT now()); \
         GRANT ALL ON w TO app; GRANT ALL ON SEQUENCE w_id_seq TO app",
    );
    wait_replicas_caught_up();
    db
}

/// Inserts a row on the primary (directly) every 20 ms until dropped.
struct Writes(Arc<AtomicBool>);

impl Drop for Writes {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

async fn background_writes(db: &str) -> Writes {
    let url = format!(
        "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{db}",
        cluster().primary.port
    );
    let c = connect_url(&url)
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        while !flag.load(Ordering::Relaxed) {
            let _ = c.simple_query("INSERT INTO w DEFAULT VALUES").await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    Writes(stop)
}

/// Where `n` reads through the router ran.
async fn read_ports(c: &tokio_postgres::Client, n: usize) -> Vec<u16> {
    let mut ports = Vec::with_capacity(n);
    for _ in 0..n {
        ports.push(port_of(c, "SELECT inet_server_port()").await);
    }
    ports
}

fn replica(i: usize) -> &'static PgNode {
    &cluster().replicas[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_replay_evicts_the_replica_and_resume_readmits_it() {
    let _serial = SERIAL.lock().await;
    let db = setup("lag_pause");
    let r = lag_router().await;
    assert_eq!(node_state(&r, 1), State::Healthy);
    let c = connect(&r, &db).await;
    let writes = background_writes(&db).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r1 = replica(0);

    cluster()
        .psql(r1.port, "postgres", "SELECT pg_wal_replay_pause()")
        .unwrap_or_else(|e| panic!("{e}"));
    let paused = Instant::now();
    // Lag passes max_lag 1 s after the pause; the next probe sees it. The
    // time estimate has one probe interval of resolution (docs/lag.md).
    let evicted_after = wait_state(&r, 1, State::Evicted, Duration::from_secs(5)).await;
    println!("evicted {evicted_after:?} after pausing replay");
    assert!(
        evicted_after <= PROBE * 2 + Duration::from_secs(1),
        "evicted only after {evicted_after:?}"
    );
    let status = http_get(r.http_addr, "/status").await;
    assert!(
        status.contains("\"name\":\"r1\"") && status.contains("\"state\":\"evicted\""),
        "{status}"
    );
    assert!(status.contains("\"replay_paused\":true"), "{status}");
    tokio::time::sleep_until((paused + PROBE * 2 + Duration::from_secs(1)).into()).await;
    let ports = read_ports(&c, 40).await;
    assert!(
        !ports.contains(&r1.port),
        "a read went to the paused replica"
    );
    assert!(ports.contains(&replica(1).port));

    cluster()
        .psql(r1.port, "postgres", "SELECT pg_wal_replay_resume()")
        .unwrap_or_else(|e| panic!("{e}"));
    // readmit_probes (3) probes under readmit_lag.
    let back = wait_state(&r, 1, State::Healthy, Duration::from_secs(5)).await;
    println!("readmitted {back:?} after resuming replay");
    assert!(
        back >= PROBE * 2,
        "readmitted without hysteresis ({back:?})"
    );
    let ports = read_ports(&c, 40).await;
    assert!(ports.contains(&r1.port), "no read went back to the replica");
    assert_eq!(
        r.shared.monitor.nodes()[1]
            .status
            .evictions
            .load(Ordering::Relaxed),
        1
    );

    // The same with a real apply delay.
    cluster()
        .configure(r1, "recovery_min_apply_delay = '3s'")
        .unwrap_or_else(|e| panic!("{e}"));
    let delayed = wait_state(&r, 1, State::Evicted, Duration::from_secs(5)).await;
    println!("evicted {delayed:?} after recovery_min_apply_delay = 3s");
    let ports = read_ports(&c, 20).await;
    assert!(
        !ports.contains(&r1.port),
        "a read went to the delayed replica"
    );
    cluster()
        .configure(r1, "recovery_min_apply_delay = 0")
        .unwrap_or_else(|e| panic!("{e}"));
    wait_state(&r, 1, State::Healthy, Duration::from_secs(8)).await;
    drop(writes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_primary_never_evicts_a_healthy_replica() {
    let _serial = SERIAL.lock().await;
    let db = setup("lag_idle");
    let r = lag_router().await;
    let start = Instant::now();
    // No writes for 10 s: a now() - pg_last_xact_replay_timestamp() lag
    // would climb to 10 s here.
    while start.elapsed() < Duration::from_secs(10) {
        for node in [1, 2] {
            assert_eq!(
                node_state(&r, node),
                State::Healthy,
                "at {:?}",
                start.elapsed()
            );
            let lag = r.shared.monitor.nodes()[node].status.lag();
            assert!(
                lag < Duration::from_millis(500),
                "reported lag {lag:?} while idle"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = connect(&r, &db).await;
    let ports = read_ports(&c, 20).await;
    for p in replica_ports() {
        assert!(ports.contains(&p), "replica {p} got no reads");
    }
    for node in [1, 2] {
        assert_eq!(
            r.shared.monitor.nodes()[node]
                .status
                .evictions
                .load(Ordering::Relaxed),
            0
        );
    }
}

/// Restarts a crashed server when the test ends, even on failure.
struct Restart(&'static PgNode);

impl Drop for Restart {
    fn drop(&mut self) {
        let _ = cluster().restart(self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_replica_under_read_load_costs_no_new_transaction_an_error() {
    let _serial = SERIAL.lock().await;
    let db = setup("lag_crash");
    let r = Arc::new(lag_router().await);
    let r2 = replica(1);
    let stop = Arc::new(AtomicBool::new(false));
    let killed_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let (late_errors, early_errors, reads) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut clients = Vec::new();
    for _ in 0..20 {
        let (r, db, stop, killed_at) = (r.clone(), db.clone(), stop.clone(), killed_at.clone());
        let (late, early, reads) = (late_errors.clone(), early_errors.clone(), reads.clone());
        clients.push(tokio::spawn(async move {
            let mut c = connect(&r, &db).await;
            while !stop.load(Ordering::Relaxed) {
                let began = Instant::now();
                let res = tokio::time::timeout(
                    Duration::from_secs(5),
                    c.simple_query("SELECT count(*) FROM w"),
                )
                .await;
                let res = res.unwrap_or_else(|_| panic!("a read hung for 5 s"));
                match res {
                    Ok(_) => {
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        let k = *killed_at.lock().unwrap_or_else(|p| p.into_inner());
                        // "After the first probe interval" of the crash.
                        match k {
                            Some(k) if began > k + PROBE + Duration::from_millis(100) => {
                                eprintln!("late error: {}", describe(&e));
                                late.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {
                                // In flight at the crash: a clean error at most.
                                let d = describe(&e);
                                assert!(d.starts_with("08") || d.starts_with("57P"), "{d}");
                                early.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        // A failed connection is replaced, as an app would.
                        c = connect(&r, &db).await;
                    }
                }
            }
        }));
    }
    // r2 must be taking reads when it dies (after an earlier test restarted
    // servers, it may still be catching up): wait until it is healthy here
    // and reads are in flight on it.
    wait_state(&r, 2, State::Healthy, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let on_r2 = || {
        r.shared.replicas().list[1]
            .outstanding
            .load(Ordering::Relaxed)
    };
    let t0 = Instant::now();
    while on_r2() == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no read ever ran on r2"
        );
        tokio::task::yield_now().await;
    }
    cluster().kill(r2).unwrap_or_else(|e| panic!("{e}"));
    let restart = Restart(r2);
    *killed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    let down = wait_state(&r, 2, State::Down, Duration::from_secs(3)).await;
    println!("replica marked down {down:?} after the crash");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = reads.load(Ordering::Relaxed);
    drop(restart); // starts it again
    let back = wait_state(&r, 2, State::Healthy, Duration::from_secs(10)).await;
    println!("readmitted {back:?} after the restart");
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap_or_else(|e| panic!("{e}"));
    }
    println!(
        "reads {}, early errors {}, late errors {}",
        reads.load(Ordering::Relaxed),
        early_errors.load(Ordering::Relaxed),
        late_errors.load(Ordering::Relaxed)
    );
    let retries = r.shared.route_stats.read_retries.load(Ordering::Relaxed);
    println!("reads retried elsewhere after the crash: {retries}");
    // Reads were in flight on r2 when it died: they moved, they did not fail.
    assert!(retries > 0);
    assert!(during > 100, "only {during} reads completed");
    assert_eq!(late_errors.load(Ordering::Relaxed), 0);
    let c = connect(&r, &db).await;
    let ports = read_ports(&c, 20).await;
    assert!(
        ports.contains(&r2.port),
        "the restarted replica got no reads"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_primary_fails_writes_fast_and_reads_go_on() {
    let _serial = SERIAL.lock().await;
    let db = setup("lag_primary");
    let r = lag_router().await;
    let c = connect(&r, &db).await;
    c.simple_query("INSERT INTO w DEFAULT VALUES")
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    wait_replicas_caught_up();

    let primary = &cluster().primary;
    cluster().kill(primary).unwrap_or_else(|e| panic!("{e}"));
    let restart = Restart(primary);
    // Five writes on fresh connections: each fails at once with a clear error.
    for i in 0..5 {
        let w = connect(&r, &db).await;
        let began = Instant::now();
        let e = match w.simple_query("INSERT INTO w DEFAULT VALUES").await {
            Ok(_) => panic!("write {i} succeeded with the primary down"),
            Err(e) => e,
        };
        let took = began.elapsed();
        let d = describe(&e);
        println!("write {i}: {took:?}: {d}");
        assert!(d.starts_with("08006") || d.starts_with("57P03"), "{d}");
        assert!(
            d.contains("primary"),
            "the error does not name the primary: {d}"
        );
        assert!(took < Duration::from_secs(3), "write {i} took {took:?}");
    }
    wait_state(&r, 0, State::Down, Duration::from_secs(3)).await;
    let ready = http_get(r.http_addr, "/health/ready").await;
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    // Reads keep working on the replicas, on the old connection and new ones.
    let ports = read_ports(&c, 20).await;
    assert!(ports.iter().all(|p| replica_ports().contains(p)));
    let fresh = connect(&r, &db).await;
    assert_eq!(
        first_value(&fresh, "SELECT count(*) FROM w")
            .await
            .as_deref(),
        Some("1")
    );

    drop(restart);
    let start = Instant::now();
    loop {
        let w = connect(&r, &db).await;
        match w.simple_query("INSERT INTO w DEFAULT VALUES").await {
            Ok(_) => break,
            Err(e) => assert!(
                start.elapsed() < Duration::from_secs(15),
                "writes still fail after the primary came back: {}",
                describe(&e)
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("writes work again {:?} after the restart", start.elapsed());
    // The monitor, backing off while it was down, sees it too.
    wait_state(&r, 0, State::Healthy, Duration::from_secs(5)).await;
    let ready = http_get(r.http_addr, "/health/ready").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
}

/// Sends SIGCONT when the test ends, even on failure.
struct Resume(&'static PgNode);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = cluster().signal(self.0, "CONT");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_replica_is_evicted_by_the_probe_timeout() {
    let _serial = SERIAL.lock().await;
    let db = setup("lag_hung");
    let r = lag_router().await;
    let c = connect(&r, &db).await;
    let r1 = replica(0);
    // Warm both replicas' pools.
    let ports = read_ports(&c, 10).await;
    assert!(ports.contains(&r1.port));

    cluster()
        .signal(r1, "STOP")
        .unwrap_or_else(|e| panic!("{e}"));
    let resume = Resume(r1);
    let down = wait_state(&r, 1, State::Down, Duration::from_secs(4)).await;
    println!("hung replica marked down {down:?} after SIGSTOP");
    assert!(
        down <= PROBE + Duration::from_secs(1) + PROBE,
        "took {down:?}"
    );
    // Reads placed now run elsewhere, none hangs.
    let ports = tokio::time::timeout(Duration::from_secs(5), read_ports(&c, 20))
        .await
        .unwrap_or_else(|_| panic!("reads hung behind the stopped replica"));
    assert!(ports.iter().all(|&p| p != r1.port));

    drop(resume);
    let back = wait_state(&r, 1, State::Healthy, Duration::from_secs(8)).await;
    println!("readmitted {back:?} after SIGCONT");
    let ports = read_ports(&c, 20).await;
    assert!(ports.contains(&r1.port), "no read went back after SIGCONT");
}
