use super::*;

fn class(sql: &str) -> Class {
    classify(sql, &FunctionRules::default()).class
}

/// tests/fixtures/statements.txt: `R|sql` or `W|sql`, one per line.
#[test]
fn corpus_is_classified_as_expected() {
    let corpus = include_str!("../../../tests/fixtures/statements.txt");
    let mut n = 0;
    let mut wrong = Vec::new();
    for line in corpus.lines() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (want, sql) = line.split_at(2);
        let want = if want == "R|" {
            Class::Read
        } else {
            Class::Write
        };
        let sql = sql.replace("\\n", "\n");
        let got = classify(&sql, &FunctionRules::default());
        if got.class != want {
            wrong.push(format!("{want:?} expected, got {got:?}: {sql}"));
        }
        n += 1;
    }
    assert!(n >= 150, "corpus has only {n} statements");
    assert!(
        wrong.is_empty(),
        "{} misclassified:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Property: no statement that writes (or calls a writing function) is READ,
/// whatever read-only context it is embedded in. Enumerates every write
/// fragment in every context, with literal and comment noise.
#[test]
fn writes_are_never_read_in_any_context() {
    let fragments = [
        "INSERT INTO t VALUES (1) RETURNING id",
        "UPDATE t SET a = 1 RETURNING a",
        "DELETE FROM t RETURNING *",
    ];
    let functions = [
        "nextval('s')",
        "setval('s', 5)",
        "pg_advisory_lock(1)",
        "pg_try_advisory_xact_lock(1, 2)",
        "set_config('a.b', 'c', false)",
        "pg_notify('ch', 'x')",
        "txid_current()",
        "lo_create(0)",
        "public.nextval('s')",
        "NEXTVAL('s')",
        "my_volatile_fn()",
    ];
    let mut rules = FunctionRules::default();
    rules.write.insert("my_volatile_fn".into());
    let mut checked = 0;
    for f in fragments {
        for sql in [
            format!("WITH x AS ({f}) SELECT * FROM x"),
            format!("WITH x AS (SELECT 1), y AS ({f}) SELECT * FROM x, y"),
            format!("SELECT 1; {f}"),
            format!("{f}; SELECT 1"),
            format!("/* comment */ {f}"),
            format!("EXPLAIN ANALYZE {f}"),
            format!("EXPLAIN (ANALYZE, BUFFERS) {f}"),
        ] {
            assert_eq!(classify(&sql, &rules).class, Class::Write, "{sql}");
            checked += 1;
        }
    }
    for f in functions {
        for sql in [
            format!("SELECT {f}"),
            format!("SELECT a, {f} FROM t WHERE b = 2"),
            format!("SELECT * FROM t WHERE a = (SELECT {f})"),
            format!("SELECT * FROM t WHERE a IN (SELECT b FROM u WHERE c = {f})"),
            format!("SELECT coalesce({f}, 0)"),
            format!("SELECT CASE WHEN x THEN {f} ELSE 1 END FROM t"),
            format!("WITH c AS (SELECT {f}) SELECT * FROM c"),
            format!("SELECT * FROM (SELECT {f}) AS s"),
            format!("SELECT 1 UNION ALL SELECT {f}"),
            format!("SELECT * FROM {f}"),
            format!("VALUES ({f})"),
            format!("SELECT 'x'; SELECT {f}"),
        ] {
            assert_eq!(classify(&sql, &rules).class, Class::Write, "{sql}");
            checked += 1;
        }
    }
    for lock in [
        "FOR UPDATE",
        "FOR SHARE",
        "FOR UPDATE NOWAIT",
        "FOR UPDATE SKIP LOCKED",
        "FOR UPDATE OF t",
    ] {
        for sql in [
            format!("SELECT * FROM t WHERE id = 1 {lock}"),
            format!("SELECT * FROM t WHERE id IN (SELECT id FROM t {lock})"),
            format!("WITH c AS (SELECT * FROM t {lock}) SELECT * FROM c"),
        ] {
            assert_eq!(classify(&sql, &rules).class, Class::Write, "{sql}");
            checked += 1;
        }
    }
    assert!(checked > 150);
}

#[test]
fn configured_read_only_functions_override() {
    let mut rules = FunctionRules::default();
    rules.read_only.insert("nextval".into());
    assert_eq!(classify("SELECT nextval('s')", &rules).class, Class::Read);
}

#[test]
fn reasons() {
    let r = |sql: &str| classify(sql, &FunctionRules::default()).reason;
    assert_eq!(r("SELECT 1"), Reason::Read);
    assert_eq!(r("BEGIN"), Reason::Transaction);
    assert_eq!(r("BEGIN READ ONLY"), Reason::ReadOnlyTransaction);
    assert_eq!(
        r("START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"),
        Reason::ReadOnlyTransaction
    );
    assert_eq!(r("SELECT * FROM t FOR UPDATE"), Reason::Locking);
    assert_eq!(r("SELECT * INTO t2 FROM t"), Reason::SelectInto);
    assert_eq!(
        r("WITH x AS (DELETE FROM t RETURNING 1) SELECT * FROM x"),
        Reason::ModifyingCte
    );
    assert_eq!(r("SELECT nextval('s')"), Reason::WriteFunction);
    assert_eq!(r("VACUUM ANALYZE t"), Reason::ParseFailure);
    assert_eq!(r(""), Reason::Empty);
    assert_eq!(class("TABLE accounts"), Class::Read);
}

#[test]
fn deferred_begin_helpers() {
    assert!(is_plain_begin("BEGIN"));
    assert!(is_plain_begin("begin;"));
    assert!(is_plain_begin(
        "START TRANSACTION ISOLATION LEVEL SERIALIZABLE"
    ));
    assert!(!is_plain_begin("BEGIN READ ONLY"));
    assert!(!is_plain_begin("BEGIN; SELECT 1"));
    assert!(is_set_transaction_read_only("SET TRANSACTION READ ONLY"));
    assert!(is_set_transaction_read_only(
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY;"
    ));
    assert!(!is_set_transaction_read_only("SET TRANSACTION READ WRITE"));
    assert!(!is_set_transaction_read_only(
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"
    ));
    assert!(!is_set_transaction_read_only(
        "SET TRANSACTION READ ONLY; INSERT INTO t VALUES (1)"
    ));
}

#[test]
fn what_ends_a_failed_transaction_block() {
    use super::ends_transaction;
    for sql in [
        "COMMIT",
        "rollback;",
        " END WORK",
        "ABORT TRANSACTION",
        "commit and no chain",
    ] {
        assert!(ends_transaction(sql), "{sql}");
    }
    for sql in [
        "ROLLBACK TO SAVEPOINT a",
        "COMMIT PREPARED 'x'",
        "SELECT 1",
        "commit; select 1",
        "",
    ] {
        assert!(!ends_transaction(sql), "{sql}");
    }
}
