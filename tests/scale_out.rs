//! Several pgrouter instances: two processes' worth of routers sharing one
//! port with SO_REUSEPORT (the zero-downtime upgrade of
//! docs/scale-out.md), and routers behind HAProxy in TCP mode with
//! `/health/ready` as its check, one stopped under load: clients reconnect
//! through the other and no acknowledged write is lost.

mod common;

use common::*;
use pgrouter::config::HumanDuration;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    pgrouter::demo::cluster::free_port().unwrap_or_else(|e| panic!("{e}"))
}

/// (acknowledged ids, errors, reconnects, ids in doubt: their INSERT
/// failed without an answer, so it may or may not have committed) of one
/// writer.
type WriterReport = (Vec<i64>, Vec<String>, u32, Vec<i64>);

/// Clients that insert in a loop through `port`, reconnecting after any
/// error, until `stop`; each must have inserted within its last second.
/// Returns (acknowledged ids, errors, reconnects).
fn writers(
    port: u16,
    db: &str,
    n: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<WriterReport>> {
    (0..n)
        .map(|w| {
            let url = format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{port}/{db}");
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut acked, mut errors, mut reconnects) = (Vec::new(), Vec::new(), 0);
                let mut in_doubt = Vec::new();
                let mut i = 0i64;
                let mut last_ack = Instant::now();
                'outer: while !stop.load(Ordering::Relaxed) {
                    let c = match tokio::time::timeout(Duration::from_secs(5), connect_url(&url))
                        .await
                        .unwrap_or_else(|_| panic!("writer {w}: connect hung for 5 s"))
                    {
                        Ok(c) => c,
                        Err(e) => {
                            errors.push(format!("connect: {}", describe(&e)));
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    while !stop.load(Ordering::Relaxed) {
                        let id = w as i64 * 1_000_000 + i;
                        i += 1;
                        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
                        let insert = c.execute("INSERT INTO spread VALUES ($1)", &params);
                        let done = tokio::time::timeout(Duration::from_secs(5), insert)
                            .await
                            .unwrap_or_else(|_| panic!("writer {w}: insert hung for 5 s"));
                        match done {
                            Ok(_) => {
                                acked.push(id);
                                last_ack = Instant::now();
                            }
                            Err(e) => {
                                errors.push(describe(&e));
                                in_doubt.push(id);
                                reconnects += 1;
                                continue 'outer;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                assert!(
                    last_ack.elapsed() < Duration::from_secs(1),
                    "writer {w} stalled: last insert {:?} ago, errors {errors:?}",
                    last_ack.elapsed()
                );
                (acked, errors, reconnects, in_doubt)
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_share_a_port_with_reuse_port() {
    let db = database("reuse_port");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let start = |reuse: bool| {
        let listen = listen.clone();
        async move {
            let mut c = config();
            c.server.listen = listen;
            c.server.reuse_port = reuse;
            c.server.shutdown_timeout = HumanDuration::from_secs(1);
            pgrouter::app::Router::start(c).await
        }
    };
    let old = router(|c| {
        c.server.listen = listen.clone();
        c.server.reuse_port = true;
    })
    .await;
    // Without SO_REUSEPORT the port is taken.
    match start(false).await {
        Err(e) => assert!(e.to_string().contains("server.listen"), "{e}"),
        Ok(_) => panic!("two routers bound one port without reuse_port"),
    }
    // The new version starts beside the old one...
    let new = router(|c| {
        c.server.listen = listen.clone();
        c.server.reuse_port = true;
    })
    .await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        let c = try_connect(&new, &db)
            .await
            .unwrap_or_else(|e| panic!("{}", describe(&e)));
        assert_eq!(first_value(&c, "SELECT 1").await.as_deref(), Some("1"));
        clients.push(c);
    }
    let on = |r: &TestRouter| r.shared.cancels.clients().len();
    assert!(
        on(&old) > 0 && on(&new) > 0,
        "the kernel spread 20 connections {} / {}",
        on(&old),
        on(&new)
    );
    // ...and the old one drains: new connections all reach the new one.
    drop(clients);
    drop(old);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..20 {
        let c = try_connect(&new, &db)
            .await
            .unwrap_or_else(|e| panic!("after the old router left: {}", describe(&e)));
        assert_eq!(first_value(&c, "SELECT 2").await.as_deref(), Some("2"));
    }
}

/// HAProxy's binary, or None (skip) unless scripts/test.sh installed it.
fn haproxy() -> Option<std::path::PathBuf> {
    for p in ["/usr/sbin/haproxy", "/usr/bin/haproxy"] {
        if std::path::Path::new(p).exists() {
            return Some(p.into());
        }
    }
    assert!(
        std::env::var_os("PGROUTER_REQUIRE_HAPROXY").is_none(),
        "haproxy is not installed (scripts/ensure-test-tools.sh)"
    );
    eprintln!("skipping: haproxy not installed");
    None
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_moves_clients_off_a_stopped_router() {
    let Some(bin) = haproxy() else { return };
    let db = database("haproxy");
    primary_sql(
        &db,
        &format!("CREATE TABLE spread (id bigint PRIMARY KEY); GRANT ALL ON spread TO {USER}"),
    );
    let start = || {
        router(|c| {
            c.server.shutdown_timeout = HumanDuration::from_secs(1);
            c.routing.enabled = false;
        })
    };
    let a = start().await;
    let b = start().await;
    let front = free_port();
    let cfg = format!(
        "global\n  maxconn 2000\n\
         defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\n\
         frontend pg\n  bind 127.0.0.1:{front}\n  default_backend routers\n\
         backend routers\n  balance roundrobin\n  option httpchk GET /health/ready\n  http-check expect status 200\n\
         \x20 retries 2\n  option redispatch 1\n\
         \x20 default-server inter 100ms fall 1 rise 2\n\
         \x20 server a 127.0.0.1:{} check port {}\n\
         \x20 server b 127.0.0.1:{} check port {}\n",
        a.addr.port(),
        a.http_addr.port(),
        b.addr.port(),
        b.http_addr.port()
    );
    let path = std::env::temp_dir().join(format!("pgrouter-haproxy-{}.cfg", std::process::id()));
    std::fs::write(&path, cfg).unwrap_or_else(|e| panic!("{e}"));
    let _haproxy = Child(
        std::process::Command::new(bin)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start haproxy: {e}")),
    );
    // Both routers up behind it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let url = format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{front}/{db}");
        if connect_url(&url).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "haproxy did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = writers(front, &db, 8, stop.clone());
    tokio::time::sleep(Duration::from_millis(800)).await;
    let on_a = a.shared.cancels.clients().len();
    eprintln!("before: a {on_a}, b {}", b.shared.cancels.clients().len());
    assert!(
        on_a > 0 && !b.shared.cancels.clients().is_empty(),
        "haproxy did not spread clients"
    );
    // Stop router a under load (as SIGTERM does).
    let stopped = Instant::now();
    let a_shared = a.shared.clone();
    let a_addr = a.addr;
    drop(a);
    // It stops listening (within moments): refused, not left hanging.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let refused = tokio::net::TcpStream::connect(a_addr).await;
    assert!(refused.is_err(), "the stopped router still accepts");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let b_rows = |r: &TestRouter| r.shared.cancels.clients().len();
    let on_b = b_rows(&b);
    eprintln!("still on a: {}", a_shared.cancels.clients().len());
    stop.store(true, Ordering::Relaxed);
    let (mut acked, mut errors, mut reconnects) = (Vec::new(), Vec::new(), 0);
    let mut in_doubt = Vec::new();
    for t in load {
        let (a, e, r, d) = t.await.unwrap_or_else(|e| panic!("{e}"));
        acked.extend(a);
        errors.extend(e);
        reconnects += r;
        in_doubt.extend(d);
    }
    eprintln!(
        "{} inserts acknowledged; {reconnects} reconnects and {} errors after stopping one router ({:?} ago); {on_b} clients on the other",
        acked.len(),
        errors.len(),
        stopped.elapsed()
    );
    // Every client moved to b.
    assert!(
        on_b >= 8,
        "only {on_b} of 8 clients on the remaining router; errors {errors:?}"
    );
    assert!(reconnects >= 1, "no client was cut off by the stop");
    // The errors were the stop's (connection-level), not wrong answers.
    for e in &errors {
        assert!(
            e.contains("57P01")
                || e.contains("connect")
                || e.contains("closed")
                || e.contains("Closed")
                || e.contains("08"),
            "unexpected error: {e}"
        );
    }
    // No acknowledged insert was lost; any other row is one whose INSERT
    // was cut off without an answer (in doubt, as with PostgreSQL itself).
    let stored: std::collections::HashSet<i64> = primary_sql(
        &db,
        "SELECT coalesce(string_agg(id::text, ','), '') FROM spread",
    )
    .split(',')
    .filter_map(|v| v.parse().ok())
    .collect();
    let lost: Vec<&i64> = acked.iter().filter(|id| !stored.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged inserts missing: {lost:?}");
    let acked: std::collections::HashSet<i64> = acked.into_iter().collect();
    let unexplained: Vec<&i64> = stored
        .iter()
        .filter(|id| !acked.contains(id) && !in_doubt.contains(id))
        .collect();
    assert!(
        unexplained.is_empty(),
        "rows nobody inserted: {unexplained:?}"
    );
}
