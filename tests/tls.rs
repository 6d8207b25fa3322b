//! Client TLS (rustls): SSLRequest and direct negotiation, `require`
//! refusing plaintext, certificate verification by psql (verify-full) and
//! psycopg, against a CA made here with rcgen.

mod common;

use common::raw;
use common::*;
use pgrouter::config::TlsMode;
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Pki {
    _dir: TempDir,
    ca: PathBuf,
    ca_der: Vec<u8>,
    cert: PathBuf,
    key: PathBuf,
    other_ca: PathBuf,
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("pgrouter-tls-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("{e}"));
        Self(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let mut p =
        rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let cert = p.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
    (cert, key)
}

/// A CA, a server certificate for localhost/127.0.0.1 signed by it, and an
/// unrelated CA.
fn pki() -> Pki {
    let dir = TempDir::new();
    let (ca_cert, ca_key) = ca("pgrouter test CA");
    let (other, _) = ca("someone else's CA");
    let params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap_or_else(|e| panic!("{e}"));
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let cert = params
        .signed_by(&key, &ca_cert, &ca_key)
        .unwrap_or_else(|e| panic!("{e}"));
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
        p
    };
    Pki {
        ca: write("ca.pem", ca_cert.pem()),
        ca_der: ca_cert.der().to_vec(),
        cert: write("server.pem", cert.pem()),
        key: write("server.key", key.serialize_pem()),
        other_ca: write("other-ca.pem", other.pem()),
        _dir: dir,
    }
}

async fn tls_router(pki: &Pki, mode: TlsMode) -> TestRouter {
    let (cert, key) = (pki.cert.clone(), pki.key.clone());
    router(move |c| {
        c.routing.enabled = false;
        c.tls.mode = mode;
        c.tls.cert = Some(cert);
        c.tls.key = Some(key);
    })
    .await
}

/// psql with a conninfo string; (success, stdout, stderr).
async fn psql(conninfo: String, sql: &'static str) -> (bool, String, String) {
    let out = tokio::task::spawn_blocking(move || {
        run_tool("psql", &["-X", "-A", "-t", "-d", &conninfo, "-c", sql])
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

fn conninfo(r: &TestRouter, db: &str, extra: &str) -> String {
    format!(
        "host=localhost port={} dbname={db} user={USER} {extra}",
        r.addr.port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_mode_encrypts_and_refuses_plaintext() {
    let pki = pki();
    let db = database("tls_require");
    let r = tls_router(&pki, TlsMode::Require).await;
    let ca = pki.ca.display().to_string();
    let (ok, out, err) = psql(conninfo(&r, &db, "sslmode=require"), "SELECT 1").await;
    assert!(ok && out == "1", "{out} {err}");
    let verify = format!("sslmode=verify-full sslrootcert={ca}");
    let (ok, out, err) = psql(conninfo(&r, &db, &verify), "SELECT 41 + 1").await;
    assert!(ok && out == "42", "verify-full: {out} {err}");
    // SCRAM with channel binding (SCRAM-SHA-256-PLUS, tls-server-end-point):
    // libpq checks that the router's proof covers the certificate it saw.
    let bound = format!("{verify} channel_binding=require");
    let (ok, out, err) = psql(conninfo(&r, &db, &bound), "SELECT 43").await;
    assert!(ok && out == "43", "channel_binding=require: {out} {err}");
    // The certificate names localhost and 127.0.0.1, and nothing else.
    let by_ip = format!(
        "host=127.0.0.1 port={} dbname={db} user={USER} {verify}",
        r.addr.port()
    );
    let (ok, _, err) = psql(by_ip, "SELECT 1").await;
    assert!(ok, "verify-full by IP: {err}");
    let wrong_ca = format!("sslmode=verify-full sslrootcert={}", pki.other_ca.display());
    let (ok, _, err) = psql(conninfo(&r, &db, &wrong_ca), "SELECT 1").await;
    assert!(!ok && err.contains("certificate verify failed"), "{err}");
    // Plaintext: refused with 28000 and a reason.
    let (ok, _, err) = psql(conninfo(&r, &db, "sslmode=disable"), "SELECT 1").await;
    assert!(!ok && err.contains("TLS is required"), "{err}");
    let mut c = raw::RawClient::connect(r.addr.port()).await;
    c.send(&raw::startup_packet(
        0,
        &[("user", RAW_USER), ("database", &db)],
    ))
    .await;
    let (tag, body) = c.next().await.unwrap_or((0, Vec::new()));
    assert_eq!(tag, b'E');
    assert_eq!(raw::error_fields(&body).0, "28000");
    // A driver: psycopg (libpq) with verify-full, when installed.
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/drivers/venv/bin/python");
    if python.exists() {
        let dsn = conninfo(&r, &db, &format!("{bound} password={PASSWORD}"));
        let out = std::process::Command::new(python)
            .args([
                "-c",
                "import sys, psycopg\n\
                 with psycopg.connect(sys.argv[1]) as c:\n\
                 \x20   print(c.pgconn.ssl_in_use, c.execute('SELECT 7').fetchone()[0])",
                &dsn,
            ])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "True 7",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_mode_serves_both_and_disable_answers_n() {
    let pki = pki();
    let db = database("tls_allow");
    let r = tls_router(&pki, TlsMode::Allow).await;
    for mode in ["sslmode=require", "sslmode=disable"] {
        let (ok, out, err) = psql(conninfo(&r, &db, mode), "SELECT 1").await;
        assert!(ok && out == "1", "{mode}: {out} {err}");
    }
    // Without TLS there is no channel to bind: a client that insists fails,
    // one that prefers binding goes without.
    let (ok, _, err) = psql(
        conninfo(&r, &db, "sslmode=disable channel_binding=require"),
        "SELECT 1",
    )
    .await;
    assert!(!ok && err.contains("channel binding"), "{err}");
    let (ok, _, err) = psql(
        conninfo(&r, &db, "sslmode=disable channel_binding=prefer"),
        "SELECT 1",
    )
    .await;
    assert!(ok, "channel_binding=prefer in plaintext: {err}");
    let plain = tls_router(&pki, TlsMode::Disable).await;
    let (ok, _, err) = psql(conninfo(&plain, &db, "sslmode=require"), "SELECT 1").await;
    assert!(!ok && err.contains("does not support SSL"), "{err}");
}

/// PostgreSQL 17's direct negotiation: TLS first, ALPN "postgresql".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_needs_alpn_postgresql() {
    let pki = pki();
    let db = database("tls_direct");
    let r = tls_router(&pki, TlsMode::Require).await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(pki.ca_der.clone()))
        .unwrap_or_else(|e| panic!("{e}"));
    let connect = |alpn: Vec<Vec<u8>>| {
        let roots = roots.clone();
        let port = r.addr.port();
        async move {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap_or_else(|e| panic!("{e}"))
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = alpn;
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let name = ServerName::try_from("localhost").unwrap_or_else(|e| panic!("{e}"));
            tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
        }
    };
    let mut tls = connect(vec![b"postgresql".to_vec()])
        .await
        .unwrap_or_else(|e| panic!("direct TLS with ALPN: {e}"));
    tls.write_all(&raw::startup_packet(
        0,
        &[("user", RAW_USER), ("database", &db)],
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let mut first = [0u8; 9];
    tls.read_exact(&mut first)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // AuthenticationOk (trust user) over the direct TLS connection.
    assert_eq!(first, [b'R', 0, 0, 0, 8, 0, 0, 0, 0]);
    // Without ALPN the router hangs up after the handshake.
    match connect(Vec::new()).await {
        Err(_) => {}
        Ok(mut tls) => {
            let _ = tls
                .write_all(&raw::startup_packet(
                    0,
                    &[("user", RAW_USER), ("database", &db)],
                ))
                .await;
            let mut buf = [0u8; 1];
            let n = tls.read(&mut buf).await.unwrap_or(0);
            assert_eq!(n, 0, "served a direct TLS client without ALPN");
        }
    }
}

/// TLS on the primary (the replicas stay plaintext), with a certificate for
/// localhost/127.0.0.1 from its own CA; returns that CA's PEM file (in the
/// cluster's directory, removed with it).
fn primary_with_tls() -> &'static Path {
    static CA: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CA.get_or_init(|| {
        let (ca_cert, ca_key) = ca("pgrouter test server CA");
        let params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap_or_else(|e| panic!("{e}"));
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let cert = params
            .signed_by(&key, &ca_cert, &ca_key)
            .unwrap_or_else(|e| panic!("{e}"));
        let c = cluster();
        c.enable_ssl(&c.primary, &cert.pem(), &key.serialize_pem())
            .unwrap_or_else(|e| panic!("{e}"));
        let path = c.dir.join("server-ca.pem");
        std::fs::write(&path, ca_cert.pem()).unwrap_or_else(|e| panic!("{e}"));
        path
    })
}

/// Whether the session answering on `c` is encrypted, from the server's view.
async fn server_side_ssl(c: &tokio_postgres::Client, hint: &str) -> String {
    first_value(
        c,
        &format!("/* pgrouter:{hint} */ SELECT ssl::text || ' ' || coalesce(version, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()"),
    )
    .await
    .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_tls_modes() {
    use pgrouter::config::ServerTlsMode;
    let ca = primary_with_tls().to_path_buf();
    let db = database("server_tls");
    let port = cluster().primary.port;

    // verify-full against the server's CA: pooled sessions, the lag
    // monitor and cancel requests all go over TLS; the replicas (no ssl)
    // under the default `prefer` stay plaintext.
    let r = {
        let ca = ca.clone();
        router(move |c| {
            c.primary.host = "localhost".into();
            c.primary.tls = ServerTlsMode::VerifyFull;
            c.primary.ca = Some(ca);
        })
        .await
    };
    let c = connect(&r, &db).await;
    let on_primary = server_side_ssl(&c, "primary").await;
    assert!(
        on_primary.starts_with("true TLSv1."),
        "primary session: {on_primary}"
    );
    let on_replica = server_side_ssl(&c, "replica").await;
    assert!(
        on_replica.starts_with("false"),
        "replica session: {on_replica}"
    );
    let monitor = primary_sql(
        "postgres",
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'pgrouter-monitor'",
    );
    let (encrypted, total) = monitor.split_once('|').unwrap_or(("", ""));
    assert!(
        total != "0" && encrypted == total,
        "monitor connections encrypted|all: {monitor}"
    );
    // A cancel reaches the TLS session.
    let token = c.cancel_token();
    let started = std::time::Instant::now();
    let sleeper = tokio::spawn(async move {
        c.simple_query("/* pgrouter:primary */ SELECT pg_sleep(20)")
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let e = sleeper
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .expect_err("pg_sleep(20) was not cancelled");
    assert_eq!(code(&e), "57014", "{}", describe(&e));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    drop(r);

    // verify-full against another CA: refused, saying why.
    let other_pki = pki();
    let other = other_pki.other_ca.clone();
    let r = router(move |c| {
        c.primary.host = "localhost".into();
        c.primary.tls = ServerTlsMode::VerifyFull;
        c.primary.ca = Some(other);
        c.routing.enabled = false;
    })
    .await;
    let e = try_connect(&r, &db)
        .await
        .expect_err("logged in through an unverified server");
    let text = describe(&e);
    assert!(
        text.contains("TLS handshake failed") && text.contains("certificate"),
        "{text}"
    );
    drop(r);

    // require against a server without TLS (a replica as the primary):
    // no plaintext fallback.
    let replica = cluster().replicas[0].port;
    let r = router(move |c| {
        c.primary.port = replica;
        c.primary.tls = ServerTlsMode::Require;
        c.routing.enabled = false;
    })
    .await;
    let e = try_connect(&r, &db)
        .await
        .expect_err("plaintext fallback under require");
    let text = describe(&e);
    assert!(text.contains("does not accept TLS"), "{text}");
    drop(r);

    // disable: plaintext even though the server offers TLS.
    let r = router(move |c| {
        c.primary.port = port;
        c.primary.tls = ServerTlsMode::Disable;
        c.routing.enabled = false;
    })
    .await;
    let c = connect(&r, &db).await;
    assert!(server_side_ssl(&c, "primary").await.starts_with("false"));
}
