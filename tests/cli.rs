//! The `pgrouter` command line: check, version, hash-password.

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
