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

fn error_of(text: &str) -> String {
    Config::parse(text, "t")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

const TWO_USERS: &str = r#"
[[users]]
name = "a"
password = "x"

[[users]]
name = "b"
password = "x"

[primary]
port = 5432
"#;

#[test]
fn tenants_parse_with_defaults() {
    let text = format!(
        "{TWO_USERS}\n[tenants.acme]\nusers = [\"a\"]\npool_size = 5\nqueue_limit = 10\n\
         queue_timeout = \"2s\"\nrate_limit = {{ transactions_per_second = 500, burst = 100 }}\n\
         statement_timeout = \"30s\"\n"
    );
    let c = Config::parse(&text, "t").unwrap_or_else(|e| panic!("{e}"));
    let s = c.tenant_settings("acme");
    assert_eq!(s.pool_size, 5);
    assert_eq!(s.queue_limit, 10);
    assert_eq!(s.queue_timeout.as_millis(), 2000);
    assert_eq!(s.max_clients, c.server.max_client_conn);
    assert_eq!(s.rate_limit.map(|r| r.burst), Some(100));
    let d = c.tenant_settings("default");
    assert_eq!(d.pool_size, 20);
    assert_eq!(d.queue_timeout, c.server.query_wait_timeout.get());
    assert_eq!(c.tenant_names(), vec!["acme".to_string(), "default".into()]);
    // Rendered back (pgrouter check), it parses again.
    assert!(Config::parse(&c.to_redacted_toml(), "out").is_ok());
}

#[test]
fn tenant_rules_name_the_keys() {
    let twice = format!(
        "{TWO_USERS}\n[tenants.acme]\nusers = [\"a\"]\n[tenants.globex]\nusers = [\"b\", \"a\"]\n"
    );
    let err = error_of(&twice);
    assert!(
        err.contains("tenants.globex.users[1]") && err.contains("tenants.acme.users[0]"),
        "{err}"
    );
    let unknown = format!("{TWO_USERS}\n[tenants.acme]\nusers = [\"zed\"]\n");
    assert!(error_of(&unknown).contains("tenants.acme.users[0]"));
    let db_twice = format!(
        "{TWO_USERS}\n[tenants.x]\ndatabases = [\"d\"]\n[tenants.y]\ndatabases = [\"d\"]\n"
    );
    assert!(error_of(&db_twice).contains("tenants.y.databases[0]"));
    let empty = format!("{TWO_USERS}\n[tenants.x]\npool_size = 3\n");
    assert!(error_of(&empty).contains("tenants.x.users"));
    let over_cap = format!(
        "[server]\nmax_server_conn_per_backend = 10\n{TWO_USERS}\n[tenants.x]\nusers = [\"a\"]\npool_size = 11\n[pool]\npool_size = 5\n"
    );
    assert!(error_of(&over_cap).contains("tenants.x.pool_size"));
    let clients = format!(
        "[server]\nmax_client_conn = 10\n{TWO_USERS}\n[tenants.x]\nusers = [\"a\"]\nmax_clients = 11\n"
    );
    assert!(error_of(&clients).contains("tenants.x.max_clients"));
    let rate = format!(
        "{TWO_USERS}\n[tenants.x]\nusers = [\"a\"]\nrate_limit = {{ transactions_per_second = 0 }}\n"
    );
    assert!(error_of(&rate).contains("tenants.x.rate_limit.transactions_per_second"));
    let default_members = format!("{TWO_USERS}\n[tenants.default]\nusers = [\"a\"]\n");
    assert!(error_of(&default_members).contains("tenants.default.users"));
    let typo = format!("{TWO_USERS}\n[tenants.x]\nusers = [\"a\"]\npool_sise = 3\n");
    assert!(error_of(&typo).contains("tenants.x.pool_sise"));
}

#[test]
fn oversubscribed_server_cap_is_a_warning() {
    let text = format!(
        "[server]\nmax_server_conn_per_backend = 30\n{TWO_USERS}\n[tenants.x]\nusers = [\"a\"]\npool_size = 15\n"
    );
    let c = Config::parse(&text, "t").unwrap_or_else(|e| panic!("{e}"));
    // x 15 + default 20 > 30.
    let w = c.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("35") && w[0].contains("x 15"), "{w:?}");
    let ok = text.replace("pool_size = 15", "pool_size = 10");
    assert!(Config::parse(&ok, "t")
        .map(|c| c.warnings().is_empty())
        .unwrap_or(false));
}
