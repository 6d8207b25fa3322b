//! Login hardening on real PostgreSQL: unknown users answered like wrong
//! passwords (same error, similar time), failed logins locked out per
//! source address without touching other addresses, a storm of 1000 failed
//! logins beside working clients, slow handshakes dropped at
//! client_login_timeout (TLS ones too), and a user of one tenant kept out of
//! another tenant's database.
//!
//! Attackers connect from 127.0.0.2 (any 127/8 address is local on Linux),
//! well-behaved clients from 127.0.0.1, so per-address rules tell them apart.

mod common;

use common::raw;
use common::*;
use pgrouter::config::{HumanDuration, TenantConfig};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

const ATTACKER: &str = "127.0.0.2";

/// Logs in from source address `from` (tokio-postgres over our own socket).
async fn login_from(
    from: &str,
    router: SocketAddr,
    user: &str,
    password: &str,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap_or_else(|e| panic!("{e}"));
    let ip: IpAddr = from.parse().unwrap_or_else(|e| panic!("{e}"));
    socket
        .bind(SocketAddr::new(ip, 0))
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    let stream = socket
        .connect(router)
        .await
        .unwrap_or_else(|e| panic!("connect from {from}: {e}"));
    let mut cfg = tokio_postgres::Config::new();
    cfg.user(user).password(password).dbname(db);
    let (client, conn) = cfg.connect_raw(stream, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_and_wrong_password_look_alike() {
    let db = database("login_alike");
    let r = router(|c| c.auth.max_failed_logins = 0).await;
    let (mut wrong, mut unknown) = (Vec::new(), Vec::new());
    let (mut wrong_msg, mut unknown_msg) = (String::new(), String::new());
    // Alternating, so drift on this shared machine hits both alike.
    for _ in 0..40 {
        let t = Instant::now();
        let e = login_from("127.0.0.1", r.addr, USER, "not-the-password", &db)
            .await
            .err()
            .unwrap_or_else(|| panic!("wrong password accepted"));
        wrong.push(t.elapsed());
        wrong_msg = describe(&e).replace(USER, "<user>");
        let t = Instant::now();
        let e = login_from("127.0.0.1", r.addr, "no_such_user", "whatever", &db)
            .await
            .err()
            .unwrap_or_else(|| panic!("unknown user accepted"));
        unknown.push(t.elapsed());
        unknown_msg = describe(&e).replace("no_such_user", "<user>");
    }
    assert!(wrong_msg.starts_with("28P01"), "{wrong_msg}");
    assert_eq!(wrong_msg, unknown_msg, "the answers differ");
    let (w, u) = (median(wrong), median(unknown));
    eprintln!("median login failure: wrong password {w:?}, unknown user {u:?}");
    let ratio = w.max(u).as_secs_f64() / w.min(u).as_secs_f64();
    assert!(
        ratio < 1.5,
        "timing tells them apart: wrong password {w:?}, unknown user {u:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_lock_out_one_address_only() {
    let db = database("login_lockout");
    let r = router(|c| {
        c.auth.max_failed_logins = 5;
        c.auth.failed_login_lockout = HumanDuration::from_millis(1500);
    })
    .await;
    for i in 0..5 {
        let e = login_from(ATTACKER, r.addr, USER, "guess", &db)
            .await
            .err()
            .unwrap_or_else(|| panic!("guess {i} accepted"));
        assert_eq!(code(&e), "28P01", "{}", describe(&e));
    }
    // Locked out now, even with the right password, and for unknown users
    // alike (no hint whether the user exists).
    for user in [USER, "no_such_user"] {
        let e = login_from(ATTACKER, r.addr, user, PASSWORD, &db)
            .await
            .err()
            .unwrap_or_else(|| panic!("{user} logged in from a locked-out address"));
        let text = describe(&e);
        assert!(
            text.starts_with("28000: pgrouter: too many failed logins from host \"127.0.0.2\""),
            "{text}"
        );
    }
    // Another address is not affected.
    let c = login_from("127.0.0.1", r.addr, USER, PASSWORD, &db)
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    assert_eq!(first_value(&c, "SELECT 1").await.as_deref(), Some("1"));
    let metrics = http_get(r.http_addr, "/metrics").await;
    assert!(
        metrics.contains("pgrouter_login_locked_addresses 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pgrouter_logins_total{result=\"locked_out\"} 2"),
        "{metrics}"
    );
    // The lockout ends.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    login_from(ATTACKER, r.addr, USER, PASSWORD, &db)
        .await
        .unwrap_or_else(|e| panic!("still locked out: {}", describe(&e)));
}

/// 1000 failed logins (the limit off, so each is a full SCRAM exchange)
/// while 4 clients keep querying and others log in: none of them fails, and
/// no failed login reaches a server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_failed_logins_do_not_disturb_others() {
    let db = database("login_storm");
    let r = router(|c| {
        c.auth.max_failed_logins = 0;
        c.routing.enabled = false;
        c.pool.pool_size = 2;
    })
    .await;
    let warm = connect(&r, &db).await;
    first_value(&warm, "SELECT 1").await;
    let connects = || -> u64 {
        r.shared
            .pools
            .all()
            .iter()
            .map(|p| p.stats.connects.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let c = connect(&r, &db).await;
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                c.simple_query("SELECT 1")
                    .await
                    .unwrap_or_else(|e| panic!("worker: {}", describe(&e)));
                latencies.push(t.elapsed());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            latencies
        }));
    }
    let addr = r.addr;
    let started = Instant::now();
    let mut attackers = Vec::new();
    for a in 0..20 {
        let db = db.clone();
        attackers.push(tokio::spawn(async move {
            let mut failed = 0;
            for i in 0..50 {
                let user = if i % 2 == 0 { USER } else { "no_such_user" };
                match login_from(ATTACKER, addr, user, &format!("guess-{a}-{i}"), &db).await {
                    Err(e) if code(&e) == "28P01" => failed += 1,
                    Err(e) => panic!("unexpected answer: {}", describe(&e)),
                    Ok(_) => panic!("a guess was accepted"),
                }
            }
            failed
        }));
    }
    // Logins of a well-behaved client keep working during the storm.
    let mut good_logins = 0;
    while attackers.iter().any(|a| !a.is_finished()) {
        let c = connect(&r, &db).await;
        assert_eq!(first_value(&c, "SELECT 2").await.as_deref(), Some("2"));
        good_logins += 1;
    }
    let mut failed = 0;
    for a in attackers {
        failed += a.await.unwrap_or_else(|e| panic!("{e}"));
    }
    let storm = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await.unwrap_or_else(|e| panic!("{e}")));
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "{failed} failed logins in {storm:?}; meanwhile {} queries (p99 {p99:?}) and {good_logins} logins by others, all fine",
        latencies.len()
    );
    assert_eq!(failed, 1000);
    assert!(good_logins > 0 && !latencies.is_empty());
    // Failed logins never cost a server connection: the pool's two served
    // everyone.
    assert!(connects() <= 2, "{} server connections opened", connects());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handshakes_are_dropped_at_the_login_timeout() {
    let db = database("login_slow");
    let dir = std::env::temp_dir().join(format!("pgrouter-login-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .and_then(|p| p.self_signed(&key))
        .unwrap_or_else(|e| panic!("{e}"));
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&key_path, key.serialize_pem()).unwrap_or_else(|e| panic!("{e}"));
    let r = router(move |c| {
        c.server.client_login_timeout = HumanDuration::from_millis(500);
        c.tls.mode = pgrouter::config::TlsMode::Allow;
        c.tls.cert = Some(cert_path);
        c.tls.key = Some(key_path);
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    let port = r.addr.port();
    // Silent; half a startup packet; SSLRequest answered then no
    // ClientHello; a startup then no password.
    let startup = raw::startup_packet(0, &[("user", USER), ("database", &db)]);
    let ssl_request = [0u8, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let cases: [(&str, Vec<u8>); 4] = [
        ("silent", Vec::new()),
        ("half a startup packet", startup[..10].to_vec()),
        ("TLS requested, no handshake", ssl_request.to_vec()),
        ("no password", startup.clone()),
    ];
    let mut tasks = Vec::new();
    for (what, bytes) in cases {
        tasks.push(tokio::spawn(async move {
            let mut c = raw::RawClient::connect(port).await;
            let t = Instant::now();
            c.send(&bytes).await;
            assert!(c.closed().await, "{what}: still open after 5 s");
            (what, t.elapsed())
        }));
    }
    // Meanwhile a normal client logs in and works.
    let c = connect(&r, &db).await;
    assert_eq!(first_value(&c, "SELECT 3").await.as_deref(), Some("3"));
    for t in tasks {
        let (what, took) = t.await.unwrap_or_else(|e| panic!("{e}"));
        eprintln!("{what}: closed after {took:?}");
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_secs(3),
            "{what}: closed after {took:?} (client_login_timeout 500ms)"
        );
    }
}

/// A user claimed by tenant A logging into a database claimed by tenant B
/// is refused after authentication (before it the answer would tell a
/// stranger which tenant a user belongs to).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_user_cannot_reach_another_tenants_database() {
    let mine = database("login_tenant_a");
    let theirs = database("login_tenant_b");
    let (m, t) = (mine.clone(), theirs.clone());
    let r = router(move |c| {
        let tenant = |users: Vec<String>, databases: Vec<String>| TenantConfig {
            users,
            databases,
            ..toml_default_tenant()
        };
        c.tenants
            .insert("acme".into(), tenant(vec![USER.into()], vec![m]));
        c.tenants
            .insert("globex".into(), tenant(Vec::new(), vec![t]));
    })
    .await;
    let c = connect(&r, &mine).await;
    assert_eq!(first_value(&c, "SELECT 1").await.as_deref(), Some("1"));
    let e = try_connect(&r, &theirs)
        .await
        .err()
        .unwrap_or_else(|| panic!("crossed tenants"));
    assert_eq!(
        describe(&e),
        format!("28000: pgrouter: user \"{USER}\" of tenant \"acme\" may not connect to database \"{theirs}\" of tenant \"globex\"")
    );
    // With a wrong password the answer is the usual one: nothing learned.
    let url = format!(
        "postgres://{USER}:wrong@127.0.0.1:{}/{theirs}",
        r.addr.port()
    );
    let e = connect_url(&url)
        .await
        .err()
        .unwrap_or_else(|| panic!("wrong password accepted"));
    assert_eq!(code(&e), "28P01");
}

/// A tenant with every setting at its default.
fn toml_default_tenant() -> TenantConfig {
    toml::from_str("").unwrap_or_else(|e| panic!("{e}"))
}

/// SCRAM pass-through with a verifier copied from pg_authid: router.toml
/// holds no plaintext, and the router still logs into the server as the
/// user, with the keys the client's proof yielded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_pass_through_needs_no_plaintext() {
    let db = database("login_passthrough");
    let verifier = primary_sql(
        "postgres",
        &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{USER}'"),
    );
    assert!(verifier.starts_with("SCRAM-SHA-256$"), "{verifier}");
    let v = verifier.clone();
    let r = router(move |c| {
        c.users[0].password = Some(v);
        c.users[0].server_password = None;
    })
    .await;
    let c = connect(&r, &db).await;
    assert_eq!(
        first_value(&c, "SELECT current_user").await.as_deref(),
        Some(USER)
    );
    let url = format!("postgres://{USER}:wrong@127.0.0.1:{}/{db}", r.addr.port());
    let e = connect_url(&url)
        .await
        .err()
        .unwrap_or_else(|| panic!("wrong password accepted"));
    assert_eq!(code(&e), "28P01");
    drop(r);

    // A verifier of the same password with another salt checks the client
    // but cannot log into the server: said plainly.
    let other = postgres_protocol::password::scram_sha_256(PASSWORD.as_bytes());
    let r = router(move |c| {
        c.users[0].password = Some(other);
        c.users[0].server_password = None;
        c.routing.enabled = false;
    })
    .await;
    let e = try_connect(&r, &db)
        .await
        .err()
        .unwrap_or_else(|| panic!("logged in"));
    assert!(
        describe(&e).contains("another SCRAM verifier"),
        "{}",
        describe(&e)
    );
}

/// Sets up the lookup function PgBouncer's docs recommend (SECURITY
/// DEFINER over pg_shadow, callable only by the auth role) and a role to
/// look up, once per cluster.
fn auth_query_setup() {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        primary_sql(
            "postgres",
            "CREATE ROLE pgrouter_auth LOGIN PASSWORD 'auth-secret'; \
             CREATE ROLE looked_up LOGIN PASSWORD 'lp'; \
             CREATE SCHEMA pgrouter; \
             CREATE FUNCTION pgrouter.lookup(i_user text, OUT usename name, OUT passwd text) \
               RETURNS record LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog \
               AS $$ SELECT usename, passwd FROM pg_shadow WHERE usename = i_user $$; \
             REVOKE ALL ON FUNCTION pgrouter.lookup(text) FROM public; \
             GRANT USAGE ON SCHEMA pgrouter TO pgrouter_auth; \
             GRANT EXECUTE ON FUNCTION pgrouter.lookup(text) TO pgrouter_auth",
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_looks_users_up_and_caches_them() {
    auth_query_setup();
    let db = database("login_auth_query");
    primary_sql(&db, "GRANT ALL ON SCHEMA public TO looked_up");
    let r = router(|c| {
        c.auth.query = Some("SELECT usename, passwd FROM pgrouter.lookup($1)".into());
        c.auth.query_user = Some("pgrouter_auth".into());
        c.auth.query_password = Some("auth-secret".into());
        c.auth.cache_ttl = HumanDuration::from_millis(300);
        c.auth.max_failed_logins = 0;
    })
    .await;
    let port = r.addr.port();
    let as_user =
        |user: &str, password: &str| format!("postgres://{user}:{password}@127.0.0.1:{port}/{db}");
    let stats = &r.shared.lookup.stats;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    // Not in router.toml: found by the query, checked against its
    // verifier, logged into the server by pass-through.
    let c = connect_url(&as_user("looked_up", "lp"))
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    assert_eq!(
        first_value(&c, "SELECT current_user").await.as_deref(),
        Some("looked_up")
    );
    c.simple_query("CREATE TABLE mine (x int); INSERT INTO mine VALUES (1)")
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    // psql too (libpq's SCRAM client).
    let psql = std::process::Command::new(cluster().bindir.join("psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-d",
            &as_user("looked_up", "lp"),
            "-c",
            "SELECT current_user",
        ])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        String::from_utf8_lossy(&psql.stdout).trim(),
        "looked_up",
        "{}",
        String::from_utf8_lossy(&psql.stderr)
    );
    // A second login within cache_ttl asks nobody.
    let queries = load(&stats.queries);
    connect_url(&as_user("looked_up", "lp"))
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    assert_eq!(
        load(&stats.queries),
        queries,
        "asked again within cache_ttl"
    );
    assert!(load(&stats.cache_hits) >= 1);
    // Wrong password and unknown user: the same answer.
    let wrong = connect_url(&as_user("looked_up", "nope")).await.err();
    let unknown = connect_url(&as_user("nobody_here", "nope")).await.err();
    let text = |e: Option<tokio_postgres::Error>, name: &str| {
        describe(&e.unwrap_or_else(|| panic!("{name} logged in"))).replace(name, "<user>")
    };
    assert_eq!(text(wrong, "looked_up"), text(unknown, "nobody_here"));
    // A new password on the server is in effect once the cache expires.
    primary_sql("postgres", "ALTER ROLE looked_up PASSWORD 'lp2'");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let e = connect_url(&as_user("looked_up", "lp")).await.err();
    assert_eq!(
        code(&e.unwrap_or_else(|| panic!("old password accepted"))),
        "28P01"
    );
    let c = connect_url(&as_user("looked_up", "lp2"))
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    assert_eq!(
        first_value(&c, "SELECT count(*) FROM mine")
            .await
            .as_deref(),
        Some("1")
    );
    // The router's config holds no password of looked_up, and the server
    // saw it log in as looked_up (not as the auth role).
    assert!(r
        .shared
        .config()
        .users
        .iter()
        .all(|u| u.name != "looked_up"));
    primary_sql("postgres", "ALTER ROLE looked_up PASSWORD 'lp'");
}
