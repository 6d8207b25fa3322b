use super::*;

const MINIMAL: &str = r#"
[[users]]
name = "app"
password = "secret"

[primary]
host = "127.0.0.1"
port = 5432
"#;

#[test]
fn minimal_config_gets_defaults() {
    let c = Config::parse(MINIMAL, "t").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.server.listen, "127.0.0.1:6432");
    assert_eq!(c.server.pool_mode, PoolMode::Transaction);
    assert_eq!(c.server.query_wait_timeout.get().as_secs(), 5);
    assert_eq!(c.pool.pool_size, 20);
    assert_eq!(c.users[0].auth, AuthMethod::ScramSha256);
    assert!(c.replicas.is_empty());
}

#[test]
fn unknown_key_is_named_with_its_path() {
    let text = format!("{MINIMAL}\n[pool]\npool_sise = 3\n");
    let err = Config::parse(&text, "t")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("pool.pool_sise"), "{err}");
    let text = MINIMAL.replace("name = \"app\"", "name = \"app\"\npasword = \"x\"");
    let err = Config::parse(&text, "t")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("users[0].pasword"), "{err}");
}

#[test]
fn bad_duration_and_address_are_named() {
    let text = format!("[server]\nquery_wait_timeout = \"5\"\n{MINIMAL}");
    let err = Config::parse(&text, "t")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("server.query_wait_timeout") && err.contains("no unit"),
        "{err}"
    );
    let text = format!("[server]\nlisten = \"nowhere\"\n{MINIMAL}");
    let err = Config::parse(&text, "t")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("server.listen"), "{err}");
}

#[test]
fn cross_field_rules() {
    let no_users = "[primary]\nport = 5432\n";
    assert!(Config::parse(no_users, "t").is_err());
    let dup = format!("{MINIMAL}\n[[users]]\nname = \"app\"\npassword = \"x\"\n");
    let err = Config::parse(&dup, "t")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("users[1].name"), "{err}");
    let nopw = "[[users]]\nname = \"a\"\n[primary]\n";
    let err = Config::parse(nopw, "t")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("users[0].password"), "{err}");
    let trust = "[[users]]\nname = \"a\"\nauth = \"trust\"\n[primary]\n";
    assert!(Config::parse(trust, "t").is_ok());
    let badpool = format!("{MINIMAL}\n[pool]\npool_size = 0\n");
    assert!(Config::parse(&badpool, "t").is_err());
}

#[test]
fn example_router_toml_is_valid() {
    let text = include_str!("../../router.toml");
    let c = Config::parse(text, "router.toml").unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.users.is_empty());
}

#[test]
fn redacted_output_hides_passwords_and_reparses() {
    let c = Config::parse(MINIMAL, "t").unwrap_or_else(|e| panic!("{e}"));
    let out = c.to_redacted_toml();
    assert!(!out.contains("secret"), "{out}");
    assert!(out.contains("query_wait_timeout = \"5s\""), "{out}");
    let back = Config::parse(&out, "out");
    assert!(back.is_ok(), "{out}");
}
