//! The `pgrouter` command line: check, version, hash-password; SIGHUP
//! reload, JSON logs and SIGTERM on a running router.

use std::io::Write;
use std::process::{Command, Stdio};

fn pgrouter() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgrouter"))
}

#[test]
fn check_prints_effective_settings_of_the_example_config() {
    let out = pgrouter()
        .args(["check", "--config", "router.toml"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("query_wait_timeout = \"5s\""), "{stdout}");
    assert!(stdout.contains("pool_size = 20"), "{stdout}");
    assert!(
        !stdout.contains("password = \"app\""),
        "secrets must be redacted: {stdout}"
    );
}

#[test]
fn check_names_the_offending_key() {
    let dir = std::env::temp_dir().join(format!("pgrouter-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nlisen = \"x\"\n[[users]]\nname = \"a\"\npassword = \"b\"\n[primary]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = pgrouter()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("server.lisen"), "{stderr}");
    // A TLS certificate that does not load fails the check, as the start.
    let tls = dir.join("tls.toml");
    std::fs::write(
        &tls,
        "[[users]]\nname = \"a\"\npassword = \"b\"\n[primary]\n\
         [tls]\nmode = \"require\"\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = pgrouter()
        .args(["check", "--config"])
        .arg(&tls)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("tls.cert /nonexistent/cert.pem"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn version_and_hash_password() {
    let out = pgrouter()
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let mut child = pgrouter()
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(b"s3cret\n")
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let verifier = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        pgrouter::auth::scram::Verifier::parse(&verifier).is_ok(),
        "{verifier}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A blocking HTTP GET; the body, or an empty string while nothing listens.
fn get(port: u16, path: &str) -> String {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// SIGHUP reloads the file; JSON logs carry the client id; SIGTERM exits.
/// (No database needed: routing is off and nothing logs in.)
#[test]
fn sighup_reloads_and_logs_are_json_with_client_ids() {
    let dir = std::env::temp_dir().join(format!("pgrouter-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join("router.toml");
    let (port, http) = (free_port(), free_port());
    let config = |pool_size: usize| {
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nhttp_listen = \"127.0.0.1:{http}\"\n\
             log_format = \"json\"\n[[users]]\nname = \"a\"\npassword = \"b\"\n\
             [primary]\nport = {}\n[routing]\nenabled = false\n[pool]\npool_size = {pool_size}\n",
            free_port()
        )
    };
    std::fs::write(&path, config(20)).unwrap_or_else(|e| panic!("{e}"));
    let child = pgrouter()
        .arg("--config")
        .arg(&path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let pool_size = || {
        get(http, "/metrics")
            .lines()
            .find_map(|l| l.strip_prefix("pgrouter_tenant_pool_size{tenant=\"default\"} "))
            .map(str::to_string)
    };
    wait_for("the router", || pool_size().is_some());
    assert_eq!(pool_size().as_deref(), Some("20"));
    // A client that sends garbage: its log line names its id.
    {
        let mut s =
            std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
        let _ = s.write_all(&[0, 0, 0, 8, 0, 0, 0, 0]);
        let _ = s.flush();
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::fs::write(&path, config(7)).unwrap_or_else(|e| panic!("{e}"));
    let pid = child.id().to_string();
    let hup = Command::new("kill").args(["-HUP", &pid]).status();
    assert!(hup.is_ok_and(|s| s.success()));
    wait_for("pool_size 7 after SIGHUP", || {
        pool_size().as_deref() == Some("7")
    });
    let term = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(term.is_ok_and(|s| s.success()));
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "exit {:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let reload = lines
        .iter()
        .find(|l| l["fields"]["via"] == "SIGHUP")
        .unwrap_or_else(|| panic!("no reload line in {stderr}"));
    let message = reload["fields"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("pool.pool_size"), "{message}");
    let login = lines
        .iter()
        .find(|l| l["fields"]["message"] == "login failed")
        .unwrap_or_else(|| panic!("no login failure line in {stderr}"));
    assert_eq!(login["span"]["name"], "client");
    assert!(login["span"]["id"].as_u64().is_some(), "{login}");
    assert_eq!(login["fields"]["side"], "client");
    let _ = std::fs::remove_dir_all(&dir);
}
