//! Hostile input over raw TCP while well-behaved clients keep working:
//! truncated messages, lengths below 4 and over the maximum, unknown message
//! types, a startup packet with 10,000 parameters, invalid UTF-8 in the user
//! name, a Bind whose parameter count does not match, CopyData outside
//! COPY, a half message that stalls (holding no server connection), and
//! 10,000 connections opened and abandoned before login. Each gets a clear
//! ErrorResponse (08P01 where the protocol is violated) or a close; the
//! steady clients see no error, and every row they were told was inserted
//! is on the primary.

mod common;

use common::raw::{self, RawClient};
use common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Clients inserting and reading in a loop until `stop`; returns
/// (acknowledged inserts, errors as text).
fn steady_load(
    r: &TestRouter,
    db: &str,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(u64, Vec<String>)>> {
    (0..clients)
        .map(|w| {
            let url = url(r, db);
            let stop = stop.clone();
            tokio::spawn(async move {
                let c = match connect_url(&url).await {
                    Ok(c) => c,
                    Err(e) => return (0, vec![format!("connect: {}", describe(&e))]),
                };
                let (mut acked, mut errors) = (0u64, Vec::new());
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let id = w as u64 * 1_000_000 + i;
                    match c
                        .execute("INSERT INTO steady VALUES ($1)", &[&(id as i64)])
                        .await
                    {
                        Ok(_) => acked += 1,
                        Err(e) => errors.push(describe(&e)),
                    }
                    if let Err(e) = c.query_one("SELECT count(*) FROM steady", &[]).await {
                        errors.push(describe(&e));
                    }
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (acked, errors)
            })
        })
        .collect()
}

/// The next message, which must be an ErrorResponse with `code`; then the
/// connection must close (the router hangs up after a FATAL protocol error).
async fn expect_fatal(c: &mut RawClient, code: &str, what: &str) -> String {
    let (tag, body) = c
        .next()
        .await
        .unwrap_or_else(|| panic!("{what}: closed without an ErrorResponse"));
    assert_eq!(tag, b'E', "{what}: got {:?}", tag as char);
    let (got, message) = raw::error_fields(&body);
    assert_eq!(got, code, "{what}: {message}");
    assert!(c.closed().await, "{what}: still open after the error");
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_do_not_disturb_the_others() {
    let db = database("hostile_suite");
    primary_sql(
        &db,
        &format!("CREATE TABLE steady (id bigint PRIMARY KEY); GRANT ALL ON steady TO {USER}, {RAW_USER}"),
    );
    // One server connection per server: a hostile client holding it would
    // stall everyone, so the steady load also proves none does.
    let r = router(|c| {
        c.pool.pool_size = 2;
        c.routing.enabled = false;
    })
    .await;
    let port = r.addr.port();
    let stop = Arc::new(AtomicBool::new(false));
    let load = steady_load(&r, &db, 4, stop.clone());
    let startup = raw::startup_packet(0, &[("user", RAW_USER), ("database", &db)]);

    // Truncated: half a message, then the client goes away.
    let mut c = RawClient::login(port, RAW_USER, &db).await;
    c.send(b"Q\0\0\0\x20SELEC").await;
    drop(c);

    // Lengths below 4 and over the maximum.
    let mut c = RawClient::login(port, RAW_USER, &db).await;
    c.send(b"Q\0\0\0\x03").await;
    expect_fatal(&mut c, "08P01", "length 3").await;
    let mut c = RawClient::login(port, RAW_USER, &db).await;
    c.send(b"P\x7f\xff\xff\xf0").await;
    expect_fatal(&mut c, "08P01", "length 2 GiB").await;

    // An unknown message type.
    let mut c = RawClient::login(port, RAW_USER, &db).await;
    c.send(&raw::msg(b'z', b"whatever")).await;
    let message = expect_fatal(&mut c, "08P01", "message type z").await;
    assert!(message.contains("type 122 ('z')"), "{message}");
    // Inside a transaction too, where it would otherwise reach the server.
    let mut c = RawClient::login(port, RAW_USER, &db).await;
    c.send(&raw::query("BEGIN; SELECT 1")).await;
    c.until_ready().await;
    c.send(&raw::msg(0x01, b"")).await;
    expect_fatal(&mut c, "08P01", "message type 1").await;

    // A startup packet with 10,000 parameters (~90 kB).
    let many: Vec<(String, String)> = (0..10_000)
        .map(|i| (format!("p{i}"), "v".to_string()))
        .collect();
    let mut params: Vec<(&str, &str)> = vec![("user", RAW_USER), ("database", &db)];
    params.extend(many.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut c = RawClient::connect(port).await;
    c.send(&raw::startup_packet(0, &params)).await;
    expect_fatal(&mut c, "08P01", "10,000 startup parameters").await;

    // Invalid UTF-8 in the user name.
    let mut bad = startup.clone();
    let at = bad
        .windows(RAW_USER.len())
        .position(|w| w == RAW_USER.as_bytes())
        .unwrap_or_else(|| panic!("no user in the packet"));
    bad[at] = 0xff;
    let mut c = RawClient::connect(port).await;
    c.send(&bad).await;
    let (tag, body) = c
        .next()
        .await
        .unwrap_or_else(|| panic!("invalid UTF-8: no answer"));
    assert_eq!(tag, b'E');
    let (code, message) = raw::error_fields(&body);
    assert!(
        code == "08P01" || code == "28000",
        "invalid UTF-8: {code} {message}"
    );
    assert!(c.closed().await);

    // A Bind with a parameter the statement does not have: the server's
    // 08P01, and the session stays usable (as with PostgreSQL).
    let mut c = RawClient::login(port, RAW_USER, &db).await;
    let mut bind = b"\0\0\0\0\0\x01".to_vec();
    bind.extend_from_slice(&1i32.to_be_bytes());
    bind.push(b'1');
    bind.extend_from_slice(&[0, 0]);
    c.send(
        &[
            raw::msg(b'P', b"\0SELECT 1\0\0\0"),
            raw::msg(b'B', &bind),
            raw::msg(b'E', b"\0\0\0\0\0"),
            raw::msg(b'S', b""),
        ]
        .concat(),
    )
    .await;
    let answers = c.until_ready().await;
    let error = answers
        .iter()
        .find(|(t, _)| *t == b'E')
        .map(|(_, b)| raw::error_fields(b))
        .unwrap_or_else(|| panic!("no error for a wrong parameter count"));
    assert_eq!(error.0, "08P01", "{}", error.1);
    c.send(&raw::query("SELECT 41")).await;
    let answers = c.until_ready().await;
    assert!(
        answers.iter().any(|(t, _)| *t == b'D'),
        "session unusable after the Bind error"
    );

    // CopyData, CopyDone and CopyFail outside COPY: ignored, as PostgreSQL
    // does; the session goes on.
    c.send(
        &[
            raw::msg(b'd', b"stray row\n"),
            raw::msg(b'c', b""),
            raw::msg(b'f', b"stray\0"),
            raw::query("SELECT 42"),
        ]
        .concat(),
    )
    .await;
    let answers = c.until_ready().await;
    assert!(answers.iter().any(|(t, _)| *t == b'D'), "{answers:?}");
    assert!(!answers.iter().any(|(t, _)| *t == b'E'), "{answers:?}");

    // Half a message, then silence: the client waits, holding no server
    // connection (the steady load, on two server connections, goes on).
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut c = RawClient::login(port, RAW_USER, &db).await;
        c.send(b"Q\0\0\0\x40SELECT pg_sle").await;
        stalled.push(c);
    }

    // 10,000 connections opened and abandoned before login, 200 at a time.
    let clients_before = r.shared.cancels.clients().len();
    let started = Instant::now();
    let opened = Arc::new(AtomicU64::new(0));
    for _ in 0..50 {
        let mut batch = Vec::new();
        for _ in 0..200 {
            let opened = opened.clone();
            batch.push(tokio::spawn(async move {
                if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                    opened.fetch_add(1, Ordering::Relaxed);
                    drop(s);
                }
            }));
        }
        for t in batch {
            let _ = t.await;
        }
    }
    eprintln!(
        "{} connections opened and abandoned in {:?}",
        opened.load(Ordering::Relaxed),
        started.elapsed()
    );
    assert_eq!(opened.load(Ordering::Relaxed), 10_000);

    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut acked, mut errors) = (0, Vec::new());
    for t in load {
        let (a, e) = t.await.unwrap_or_else(|e| panic!("{e}"));
        acked += a;
        errors.extend(e);
    }
    assert!(
        errors.is_empty(),
        "the steady clients saw {} errors, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(acked > 0);
    // Nothing acknowledged was lost.
    assert_eq!(
        primary_sql(&db, "SELECT count(*) FROM steady"),
        acked.to_string()
    );
    // The stalled clients are still there, waiting; the abandoned ones
    // left nothing behind.
    drop(stalled);
    let deadline = Instant::now() + Duration::from_secs(5);
    while r.shared.cancels.clients().len() > clients_before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        r.shared.cancels.clients().len() <= clients_before,
        "{} clients registered, {clients_before} before",
        r.shared.cancels.clients().len()
    );
    eprintln!("steady clients: {acked} inserts acknowledged and stored, no errors");
}
