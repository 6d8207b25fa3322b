//! Server faults under a client load, each checked for what the clients
//! saw, that the router recovers without a restart, and that every INSERT
//! acknowledged to a client is on the primary at the end:
//! - a server connection killed with pg_terminate_backend mid-transaction;
//! - a replica killed, hung (SIGSTOP) and cut off the network (a relay that
//!   stops forwarding), one after another under reads and writes;
//! - the primary crashed and restarted under a write load.
//!
//! They stop servers of the shared cluster, so they run one at a time.

mod common;

use common::relay::Relay;
use common::*;
use pgrouter::app::Router;
use pgrouter::config::HumanDuration;
use pgrouter::lag::health::State;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_connection_killed_mid_transaction() {
    let _serial = SERIAL.lock().await;
    let db = database("fault_terminate");
    primary_sql(
        &db,
        &format!("CREATE TABLE f (id bigint PRIMARY KEY, who text); GRANT ALL ON f TO {USER}"),
    );
    let r = router(|c| c.routing.enabled = false).await;
    // Steady writers on other connections.
    let stop = Arc::new(AtomicBool::new(false));
    let mut steady = Vec::new();
    for w in 0..3i64 {
        let c = connect(&r, &db).await;
        let stop = stop.clone();
        steady.push(tokio::spawn(async move {
            let (mut acked, mut errors) = (0i64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let id = 1_000_000 * (w + 1) + acked;
                match c
                    .execute("INSERT INTO f VALUES ($1, 'steady')", &[&id])
                    .await
                {
                    Ok(_) => acked += 1,
                    Err(e) => errors.push(describe(&e)),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (acked, errors)
        }));
    }
    let mut victim_rows = 0;
    for round in 0..3i64 {
        let c = connect(&r, &db).await;
        c.simple_query("BEGIN")
            .await
            .unwrap_or_else(|e| panic!("{}", describe(&e)));
        c.simple_query(&format!("INSERT INTO f VALUES ({round}, 'victim')"))
            .await
            .unwrap_or_else(|e| panic!("{}", describe(&e)));
        let pid = first_value(&c, "SELECT pg_backend_pid()")
            .await
            .unwrap_or_default();
        assert_eq!(
            primary_sql("postgres", &format!("SELECT pg_terminate_backend({pid})")),
            "t"
        );
        // The client learns it at its next statement: an error, no hang.
        let e = tokio::time::timeout(Duration::from_secs(5), c.simple_query("COMMIT"))
            .await
            .unwrap_or_else(|_| panic!("COMMIT hung after the server connection was killed"))
            .err()
            .unwrap_or_else(|| panic!("COMMIT succeeded on a terminated session"));
        let code = code(&e);
        eprintln!("after pg_terminate_backend: {}", describe(&e));
        assert!(
            code == "57P01" || code == "08006" || code.starts_with("no SQLSTATE"),
            "{}",
            describe(&e)
        );
        // A new connection works at once.
        let again = connect(&r, &db).await;
        again
            .simple_query(&format!("INSERT INTO f VALUES ({}, 'victim')", 100 + round))
            .await
            .unwrap_or_else(|e| panic!("after the kill: {}", describe(&e)));
        victim_rows += 1;
    }
    // On a raw connection: what exactly arrives when the server session is
    // killed while the client sits idle in its transaction.
    let mut raw = common::raw::RawClient::login(r.addr.port(), RAW_USER, &db).await;
    raw.send(&common::raw::query("BEGIN; SELECT pg_backend_pid()"))
        .await;
    let answers = raw.until_ready().await;
    let pid = answers
        .iter()
        .find(|(t, _)| *t == b'D')
        .map(|(_, b)| String::from_utf8_lossy(&b[6..]).to_string())
        .unwrap_or_default();
    assert_eq!(
        primary_sql("postgres", &format!("SELECT pg_terminate_backend({pid})")),
        "t"
    );
    let (tag, body) = raw
        .next()
        .await
        .unwrap_or_else(|| panic!("closed without a word"));
    assert_eq!(tag, b'E');
    let (code, message) = common::raw::error_fields(&body);
    eprintln!("raw client told: {code} {message}");
    assert_eq!(code, "57P01", "{message}");
    assert!(raw.closed().await);
    stop.store(true, Ordering::Relaxed);
    let mut acked = 0;
    for t in steady {
        let (a, errors) = t.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(errors.is_empty(), "steady writers saw {errors:?}");
        acked += a;
    }
    // The killed transactions left nothing; everything acknowledged is there.
    assert_eq!(
        primary_sql(
            &db,
            "SELECT count(*) FROM f WHERE who = 'victim' AND id < 100"
        ),
        "0"
    );
    assert_eq!(
        primary_sql(&db, "SELECT count(*) FROM f WHERE who = 'victim'"),
        victim_rows.to_string()
    );
    assert_eq!(
        primary_sql(&db, "SELECT count(*) FROM f WHERE who = 'steady'"),
        acked.to_string()
    );
}

/// One client-visible error: when, from which kind of client, what.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    writer: bool,
    code: String,
    text: String,
}

/// Writers insert rows with keys of their own (so the set acknowledged is
/// exact), readers count them; both reconnect when their connection breaks,
/// as an application would.
struct Load {
    stop: Arc<AtomicBool>,
    errors: Arc<Mutex<Vec<Seen>>>,
    acked: Arc<Mutex<HashSet<i64>>>,
    in_doubt: Arc<Mutex<HashSet<i64>>>,
    reads: Arc<AtomicU64>,
    /// The longest any one statement took, in microseconds.
    slowest_read: Arc<AtomicU64>,
    slowest_write: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Load {
    async fn start(r: &Router, db: &str, writers: i64, readers: usize) -> Load {
        let mut load = Load {
            stop: Arc::default(),
            errors: Arc::default(),
            acked: Arc::default(),
            in_doubt: Arc::default(),
            reads: Arc::default(),
            slowest_read: Arc::default(),
            slowest_write: Arc::default(),
            tasks: Vec::new(),
        };
        let url = url(r, db);
        for w in 0..writers {
            let (url, stop, errors) = (url.clone(), load.stop.clone(), load.errors.clone());
            let (acked, in_doubt, slowest) = (
                load.acked.clone(),
                load.in_doubt.clone(),
                load.slowest_write.clone(),
            );
            load.tasks.push(tokio::spawn(async move {
                let mut c = reconnect(&url, &stop).await;
                // Prepared once per connection, not per INSERT: tokio-postgres
                // closes a one-shot statement with a Close + Sync of its own
                // after the INSERT returns, and a FATAL that answers that
                // request (the primary died under it) never reaches the
                // application, which then sees only "connection closed".
                // With one statement per connection, every request in flight
                // is the application's, and every error it gets is visible.
                let mut insert: Option<tokio_postgres::Statement> = None;
                let mut seq = 0i64;
                while let Some(client) = c.as_ref().filter(|_| !stop.load(Ordering::Relaxed)) {
                    seq += 1;
                    let id = (w + 1) * 10_000_000 + seq;
                    let began = Instant::now();
                    let res = tokio::time::timeout(Duration::from_secs(20), async {
                        let stmt = match insert.take() {
                            Some(s) => s,
                            None => client.prepare("INSERT INTO w (id) VALUES ($1)").await?,
                        };
                        let r = client.execute(&stmt, &[&id]).await;
                        insert = Some(stmt);
                        r
                    })
                    .await
                    .unwrap_or_else(|_| panic!("an INSERT hung for 20 s"));
                    slowest.fetch_max(began.elapsed().as_micros() as u64, Ordering::Relaxed);
                    match res {
                        Ok(_) => {
                            lock(&acked).insert(id);
                        }
                        Err(e) => {
                            // Not acknowledged: it may or may not have committed.
                            lock(&in_doubt).insert(id);
                            let s = seen(true, &e);
                            // A FATAL ends the session: the connection closes
                            // right after, whether or not it has yet.
                            let fatal = clean_failure(&s);
                            lock(&errors).push(s);
                            if fatal || client.is_closed() {
                                c = reconnect(&url, &stop).await;
                                insert = None;
                            } else {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
        }
        for _ in 0..readers {
            let (url, stop, errors) = (url.clone(), load.stop.clone(), load.errors.clone());
            let (reads, slowest) = (load.reads.clone(), load.slowest_read.clone());
            load.tasks.push(tokio::spawn(async move {
                let mut c = reconnect(&url, &stop).await;
                while let Some(client) = c.as_ref().filter(|_| !stop.load(Ordering::Relaxed)) {
                    let began = Instant::now();
                    let res = tokio::time::timeout(
                        Duration::from_secs(20),
                        client.simple_query("SELECT count(*) FROM w"),
                    )
                    .await
                    .unwrap_or_else(|_| panic!("a read hung for 20 s"));
                    slowest.fetch_max(began.elapsed().as_micros() as u64, Ordering::Relaxed);
                    match res {
                        Ok(_) => {
                            reads.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            let s = seen(false, &e);
                            let fatal = clean_failure(&s);
                            lock(&errors).push(s);
                            if fatal || client.is_closed() {
                                c = reconnect(&url, &stop).await;
                            }
                        }
                    }
                }
            }));
        }
        load
    }

    fn errors_since(&self, t: Instant) -> Vec<Seen> {
        lock(&self.errors)
            .iter()
            .filter(|s| s.at >= t)
            .cloned()
            .collect()
    }

    /// Takes the slowest read and write so far (ms) and starts over.
    fn take_slowest(&self) -> (u64, u64) {
        (
            self.slowest_read.swap(0, Ordering::Relaxed) / 1000,
            self.slowest_write.swap(0, Ordering::Relaxed) / 1000,
        )
    }

    /// Stops the clients and checks the primary holds every acknowledged
    /// row and nothing that was never sent. Returns (acked, in doubt, stored).
    async fn finish(self, db: &str) -> (usize, usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await
                .unwrap_or_else(|e| panic!("a client task failed: {e}"));
        }
        let stored: HashSet<i64> = primary_sql(db, "SELECT string_agg(id::text, ',') FROM w")
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
            .collect();
        let acked = lock(&self.acked).clone();
        let in_doubt = lock(&self.in_doubt).clone();
        let lost: Vec<_> = acked.difference(&stored).collect();
        assert!(lost.is_empty(), "acknowledged inserts lost: {lost:?}");
        let phantom: Vec<_> = stored
            .iter()
            .filter(|id| !acked.contains(id) && !in_doubt.contains(id))
            .collect();
        assert!(phantom.is_empty(), "rows nobody inserted: {phantom:?}");
        (acked.len(), in_doubt.len(), stored.len())
    }
}

fn seen(writer: bool, e: &tokio_postgres::Error) -> Seen {
    Seen {
        at: Instant::now(),
        writer,
        code: code(e),
        text: describe(e),
    }
}

/// Connects through the router, retrying for up to 20 s (None once stopped).
async fn reconnect(url: &str, stop: &AtomicBool) -> Option<tokio_postgres::Client> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        match connect_url(url).await {
            Ok(c) => return Some(c),
            Err(e) => assert!(
                Instant::now() < deadline,
                "cannot reconnect through the router: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A connection failure a client may see when a server fails under it.
fn clean_failure(s: &Seen) -> bool {
    s.code.starts_with("08") || s.code.starts_with("57P")
}

const PROBE: Duration = Duration::from_millis(250);

async fn fault_router(f: impl FnOnce(&mut pgrouter::config::Config)) -> TestRouter {
    router(|c| {
        c.lag.probe_interval = HumanDuration(PROBE);
        c.lag.probe_timeout = HumanDuration::from_secs(1);
        c.lag.max_lag = HumanDuration::from_secs(2);
        f(c);
    })
    .await
}

/// Waits until a read is running on replica `i` (so a fault meets one in flight).
async fn read_in_flight(r: &Router, i: usize) {
    let start = Instant::now();
    while r.shared.replicas().list[i]
        .outstanding
        .load(Ordering::Relaxed)
        == 0
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no read ever ran on replica {i}"
        );
        tokio::task::yield_now().await;
    }
}

fn fault_table(test: &str) -> String {
    let db = database(test);
    primary_sql(
        &db,
        &format!("CREATE TABLE w (id bigint PRIMARY KEY); GRANT ALL ON w TO {USER}"),
    );
    wait_replicas_caught_up();
    db
}

/// Sends SIGCONT / heals / restarts when a phase ends, even on failure.
struct Undo<F: FnMut()>(F);

impl<F: FnMut()> Drop for Undo<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// One replica fault: inject it with a read in flight on replica `i`, keep
/// it `hold` after the monitor marks the replica down, undo it, wait for the
/// readmission. Returns the client errors seen and the slowest read (ms).
async fn replica_fault(
    r: &Router,
    load: &Load,
    i: usize,
    what: &str,
    inject: impl FnOnce(),
    undo: impl FnMut(),
    hold: Duration,
) -> (Vec<Seen>, u64, u64) {
    let node = i + 1;
    wait_state(r, node, State::Healthy, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    load.take_slowest();
    let retries = r.shared.route_stats.read_retries.load(Ordering::Relaxed);
    read_in_flight(r, i).await;
    let t0 = Instant::now();
    inject();
    let undo = Undo(undo);
    let down = wait_state(r, node, State::Down, Duration::from_secs(5)).await;
    tokio::time::sleep(hold).await;
    drop(undo);
    let back = wait_state(r, node, State::Healthy, Duration::from_secs(20)).await;
    // After the repair: a read stuck on the replica until then counts too.
    let (slowest_read, slowest_write) = load.take_slowest();
    let errors = load.errors_since(t0);
    let retried = r.shared.route_stats.read_retries.load(Ordering::Relaxed) - retries;
    println!(
        "{what}: marked down after {down:?}, readmitted {back:?} after the repair; \
         reads moved elsewhere {retried}; client errors {}; slowest read {slowest_read} ms, \
         slowest write {slowest_write} ms (fault to readmission)",
        errors.len()
    );
    for e in &errors {
        println!(
            "  {} error: {}",
            if e.writer { "writer" } else { "reader" },
            e.text
        );
    }
    (errors, slowest_read, retried)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_faults_under_a_mixed_load() {
    let _serial = SERIAL.lock().await;
    let db = fault_table("fault_replicas");
    // Replica r1 is reached through a relay that can cut the network.
    let relay = Arc::new(Relay::start(cluster().replicas[0].port).await);
    let port = relay.port;
    let r = fault_router(|c| c.replicas[0].port = port).await;
    let load = Load::start(&r, &db, 3, 8).await;
    let r2 = &cluster().replicas[1];
    let silence = Duration::from_secs(1); // probe_timeout
    let hold = Duration::from_secs(4);

    // 1. Crash: connections fail at once, reads in flight move.
    // (Reads in flight at the kill may finish first or fail over: no count.)
    let (errors, slowest, _) = replica_fault(
        &r,
        &load,
        1,
        "replica killed",
        || cluster().kill(r2).unwrap_or_else(|e| panic!("{e}")),
        || {
            let _ = cluster().restart(r2);
        },
        Duration::from_secs(1),
    )
    .await;
    // A read whose answer had started when the server died cannot move
    // (docs/lag.md): at most a clean 08006 for reads in flight at the crash
    // itself; writers (on the primary) see nothing.
    let crash_errors = errors.len();
    assert!(
        errors.iter().all(|e| !e.writer && clean_failure(e)) && crash_errors <= 8,
        "the crash cost clients errors: {errors:?}"
    );
    assert!(slowest < 4000, "a read took {slowest} ms");

    // 2. Hung (SIGSTOP): nothing fails, nothing answers. Reads in flight
    // wait until the monitor gives up on it plus probe_timeout of silence,
    // then move: well before the replica comes back.
    let (errors, slowest, moved) = replica_fault(
        &r,
        &load,
        1,
        "replica hung",
        || {
            cluster()
                .signal(r2, "STOP")
                .unwrap_or_else(|e| panic!("{e}"))
        },
        || {
            let _ = cluster().signal(r2, "CONT");
        },
        hold,
    )
    .await;
    assert!(errors.is_empty(), "the hang cost clients errors");
    // Reads placed on it in the second before it was marked down were stuck
    // there: they moved to another server.
    assert!(moved > 0, "replica hung: no read in flight was moved");
    let bound = PROBE + Duration::from_secs(1) + silence + Duration::from_millis(1500);
    assert!(
        (slowest as u128) < bound.as_millis(),
        "a read waited {slowest} ms on the hung replica (bound {bound:?})"
    );

    // 3. Network cut (a black hole: no reset, no answer).
    let (c, h) = (relay.clone(), relay.clone());
    let (errors, slowest, moved) = replica_fault(
        &r,
        &load,
        0,
        "network to the replica cut",
        move || c.cut(),
        move || h.heal(),
        hold,
    )
    .await;
    assert!(errors.is_empty(), "the cut cost clients errors");
    assert!(moved > 0, "network cut: no read in flight was moved");
    assert!(
        (slowest as u128) < bound.as_millis(),
        "a read waited {slowest} ms behind the cut (bound {bound:?})"
    );

    // Recovered without a restart: both replicas take reads again.
    let c = connect(&r, &db).await;
    let mut ports = HashSet::new();
    for _ in 0..40 {
        ports.insert(port_of(&c, "SELECT inet_server_port()").await);
    }
    for p in replica_ports() {
        assert!(
            ports.contains(&p),
            "replica on port {p} gets no reads: {ports:?}"
        );
    }
    let reads = load.reads.load(Ordering::Relaxed);
    let all = load.errors_since(Instant::now() - Duration::from_secs(3600));
    let (acked, in_doubt, stored) = load.finish(&db).await;
    println!("reads {reads}, inserts acknowledged {acked}, in doubt {in_doubt}, stored {stored}");
    assert_eq!(all.len(), crash_errors, "clients saw errors: {all:?}");
    assert!(
        acked > 100 && reads > 1000,
        "too little load: {acked} / {reads}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_restarted_under_a_write_load() {
    let _serial = SERIAL.lock().await;
    let db = fault_table("fault_primary");
    let r = fault_router(|_| {}).await;
    let load = Load::start(&r, &db, 4, 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let primary = &cluster().primary;
    let before = lock(&load.acked).len();
    let t0 = Instant::now();
    cluster().kill(primary).unwrap_or_else(|e| panic!("{e}"));
    let restart = Undo(|| {
        let _ = cluster().restart(primary);
    });
    wait_state(&r, 0, State::Down, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let down_for = t0.elapsed();
    drop(restart);
    let restarted = Instant::now();
    // Writes flow again through the same router.
    let acked_at_restart = lock(&load.acked).len();
    let start = Instant::now();
    while lock(&load.acked).len() < acked_at_restart + 20 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "writes did not resume after the primary came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resumed = restarted.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (slowest_read, slowest_write) = load.take_slowest();
    let errors = load.errors_since(t0);
    let (writer_errors, reader_errors): (Vec<Seen>, Vec<Seen>) =
        errors.into_iter().partition(|s| s.writer);
    let (acked, in_doubt, stored) = load.finish(&db).await;
    println!(
        "primary down {down_for:?}; writes resumed {resumed:?} after its restart; \
         acknowledged {acked} ({before} before the crash), in doubt {in_doubt}, stored {stored}; \
         writer errors {}, reader errors {}; slowest write {slowest_write} ms, read {slowest_read} ms",
        writer_errors.len(),
        reader_errors.len()
    );
    let mut kinds: Vec<String> = writer_errors
        .iter()
        .map(|s| {
            s.text
                .split(" next attempt")
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    kinds.sort();
    kinds.dedup();
    for k in kinds.iter().take(10) {
        println!("  writer error: {k}");
    }
    // Writers were told, clearly and at once, while the primary was down.
    assert!(
        !writer_errors.is_empty(),
        "no write failed with the primary down"
    );
    let unclean: Vec<_> = writer_errors.iter().filter(|s| !clean_failure(s)).collect();
    assert!(unclean.is_empty(), "unexpected errors: {unclean:?}");
    assert!(slowest_write < 5000, "a write took {slowest_write} ms");
    // Reads ran on the replicas throughout.
    assert!(reader_errors.is_empty(), "readers saw {reader_errors:?}");
    wait_replicas_caught_up();
}
