//! Faults on the server side that the lag and failover tests do not cover:
//! a server connection killed with pg_terminate_backend in the middle of a
//! client's transaction, while other clients write.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_connection_killed_mid_transaction() {
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
