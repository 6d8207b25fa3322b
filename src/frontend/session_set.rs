//! The statements by which a client changes its session's settings (`SET`,
//! `RESET`, `DISCARD ALL`, `set_config`), recognised in the SQL it sends, so
//! the router can carry them to the next server connection it lends.
//!
//! Reported parameters (TimeZone, DateStyle, ...) need none of this: the
//! server announces their changes in ParameterStatus. The rest (search_path,
//! statement_timeout, role, custom `app.x` settings) are silent, so the
//! router reads the statements, and applies what they did once the
//! transaction they ran in has committed (see `Session::settle_changes`).
//! Whatever changes session settings in a way not tracked here marks the
//! server connection for a reset before anyone else uses it.

use super::params::is_client_settable;
use crate::backend::conn::{Params, ServerConn, Setting};

/// What one statement does to the session's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// `SET [SESSION] name ...`: `stmt` (the statement itself) restores it.
    Set { name: String, stmt: String },
    /// `RESET name`, `SET name TO DEFAULT`.
    Reset(String),
    /// `RESET ALL` (`discard`: false) or `DISCARD ALL` (true, which also
    /// resets the role and session authorization).
    ResetAll { discard: bool },
    /// ROLLBACK / ABORT: changes in the same transaction may be undone.
    Rollback,
    /// SQL-level `PREPARE`: the statement stays on this server connection
    /// (not transactional), kept from other clients.
    SqlPrepare,
    /// `DEALLOCATE [PREPARE] ALL`.
    DeallocateAll,
    /// A change the router cannot follow (`SET SESSION CHARACTERISTICS`,
    /// `set_config(..., false)`): the server connection is reset after use.
    Untracked,
}

/// Appends the changes `sql` (one Query string, possibly several
/// statements, or one Parse) makes. Cheap for everything else: a look at
/// each statement's first word, and one substring search.
pub fn scan(sql: &str, out: &mut Vec<Change>) {
    if mentions_set_config(sql) {
        out.push(Change::Untracked);
    }
    // Splitting at every ';' may cut a string literal: a fragment then
    // looks like nothing, or like a change that ends up Untracked (a
    // harmless reset), never like a different setting.
    let mut start = 0;
    for end in memchr::memchr_iter(b';', sql.as_bytes()).chain([sql.len()]) {
        // ';' is ASCII: both ends are character boundaries.
        if let Some(c) = sql.get(start..end).and_then(statement) {
            out.push(c);
        }
        start = end + 1;
    }
}

/// Whether `sql` changes session settings at all (cheap; no allocation for
/// the usual answer, no).
pub fn changes_settings(sql: &str) -> bool {
    let mut v = Vec::new();
    scan(sql, &mut v);
    !v.is_empty()
}

/// Whether `set_config` appears, in any case. Runs on every Query: looks
/// closer only at underscores.
fn mentions_set_config(sql: &str) -> bool {
    let b = sql.as_bytes();
    memchr::memchr_iter(b'_', b).any(|i| {
        i >= 3
            && b[i - 3..i].eq_ignore_ascii_case(b"set")
            && b.get(i + 1..i + 7)
                .is_some_and(|w| w.eq_ignore_ascii_case(b"config"))
    })
}

/// Skips whitespace and comments.
fn skip_blank(mut s: &str) -> &str {
    // Most statements start with a letter.
    if s.as_bytes()
        .first()
        .is_some_and(|&b| !b.is_ascii_whitespace() && b != b'-' && b != b'/')
    {
        return s;
    }
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.split_once("*/").map_or("", |(_, r)| r);
        } else {
            return s;
        }
    }
}

/// The next word (letters, digits, `_`) and what follows it.
fn word(s: &str) -> (&str, &str) {
    let s = skip_blank(s);
    // Bytes, not chars: the word ends at an ASCII byte (or a non-ASCII
    // character's first byte), a character boundary either way.
    let end = s
        .bytes()
        .position(|c| !(c.is_ascii_alphanumeric() || c == b'_'))
        .unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// A parameter name: `name`, `a.b`, or a quoted identifier. Unquoted parts
/// fold to lower case, as PostgreSQL folds them.
fn param_name(s: &str) -> Option<(String, &str)> {
    let mut s = skip_blank(s);
    let mut name = String::new();
    loop {
        if let Some(rest) = s.strip_prefix('"') {
            let end = rest.find('"')?;
            name.push_str(&rest[..end]);
            s = &rest[end + 1..];
        } else {
            let (w, rest) = word(s);
            if w.is_empty() {
                return None;
            }
            name.push_str(&w.to_ascii_lowercase());
            s = rest;
        }
        match s.strip_prefix('.') {
            Some(rest) => {
                name.push('.');
                s = rest;
            }
            None => return Some((name, s)),
        }
    }
}

fn is(w: &str, keyword: &str) -> bool {
    w.eq_ignore_ascii_case(keyword)
}

/// What one statement (no `;`) does, if anything.
pub fn statement(stmt: &str) -> Option<Change> {
    let stmt = skip_blank(stmt);
    let (first, rest) = word(stmt);
    // Every query passes here: most first words have none of the lengths
    // below (set, reset/abort, discard/prepare, rollback, deallocate).
    if !matches!(first.len(), 3 | 5 | 7 | 8 | 10) {
        return None;
    }
    let stmt = stmt.trim_end();
    if is(first, "set") {
        set(stmt, rest)
    } else if is(first, "reset") {
        reset(rest)
    } else if is(first, "discard") {
        let (w, tail) = word(rest);
        (is(w, "all") && skip_blank(tail).is_empty()).then_some(Change::ResetAll { discard: true })
    } else if is(first, "prepare") {
        let (w, _) = word(rest);
        (!is(w, "transaction")).then_some(Change::SqlPrepare)
    } else if is(first, "deallocate") {
        let (mut w, mut tail) = word(rest);
        if is(w, "prepare") {
            (w, tail) = word(tail);
        }
        (is(w, "all") && skip_blank(tail).is_empty()).then_some(Change::DeallocateAll)
    } else if is(first, "rollback") || is(first, "abort") {
        // ROLLBACK PREPARED ends another transaction; harmless to count.
        Some(Change::Rollback)
    } else {
        None
    }
}

fn set(stmt: &str, rest: &str) -> Option<Change> {
    let (mut w, mut after) = word(rest);
    if is(w, "local") {
        // Gone when the transaction ends.
        return None;
    }
    if is(w, "session") {
        let (w2, after2) = word(after);
        if is(w2, "authorization") {
            return Some(special("session_authorization", stmt, after2));
        }
        if is(w2, "characteristics") {
            return Some(Change::Untracked);
        }
        (w, after) = (w2, after2);
    }
    if is(w, "transaction") || is(w, "constraints") {
        return None;
    }
    let known = |name: &str, value: &str| Some(special(name, stmt, value));
    if is(w, "time") {
        let (zone, value) = word(after);
        return if is(zone, "zone") {
            known("timezone", value)
        } else {
            Some(Change::Untracked)
        };
    }
    if is(w, "schema") {
        return known("search_path", after);
    }
    if is(w, "names") {
        return known("client_encoding", after);
    }
    if is(w, "role") {
        return known("role", after);
    }
    if is(w, "xml") {
        let (option, value) = word(after);
        return if is(option, "option") {
            known("xmloption", value)
        } else {
            Some(Change::Untracked)
        };
    }
    // SET name {TO | =} value
    let Some((name, after)) = param_name(rest_after_session(rest)) else {
        return Some(Change::Untracked);
    };
    let after = skip_blank(after);
    let value = match after.strip_prefix('=') {
        Some(v) => v,
        None => {
            let (to, v) = word(after);
            if !is(to, "to") {
                return Some(Change::Untracked);
            }
            v
        }
    };
    Some(special(&name, stmt, value))
}

/// `rest` without a leading SESSION keyword.
fn rest_after_session(rest: &str) -> &str {
    let (w, after) = word(rest);
    if is(w, "session") {
        after
    } else {
        rest
    }
}

/// A SET of `name` whose value text is `value`: DEFAULT resets it; a
/// reported parameter is left to ParameterStatus.
fn special(name: &str, stmt: &str, value: &str) -> Change {
    let value = skip_blank(value).trim_end();
    if value.is_empty() {
        // A syntax error on the server: nothing changes, but stay safe.
        return Change::Untracked;
    }
    if is(value, "default") || (name == "timezone" && is(value, "local")) {
        return Change::Reset(name.to_string());
    }
    Change::Set {
        name: name.to_string(),
        stmt: stmt.to_string(),
    }
}

fn reset(rest: &str) -> Option<Change> {
    let (w, after) = word(rest);
    if is(w, "all") && skip_blank(after).is_empty() {
        return Some(Change::ResetAll { discard: false });
    }
    let name = if is(w, "time") {
        "timezone".to_string()
    } else if is(w, "session") {
        let (w2, _) = word(after);
        if !is(w2, "authorization") {
            return Some(Change::Untracked);
        }
        "session_authorization".to_string()
    } else if is(w, "transaction") {
        return None;
    } else {
        match param_name(rest) {
            Some((name, _)) => name,
            None => return Some(Change::Untracked),
        }
    };
    Some(Change::Reset(name))
}

/// Whether the router follows `name` through SQL (reported parameters it
/// follows through ParameterStatus instead).
fn tracked_by_sql(name: &str) -> bool {
    !is_client_settable(name)
}

/// Survive RESET ALL (but not DISCARD ALL), as on PostgreSQL.
fn survives_reset_all(name: &str) -> bool {
    name.eq_ignore_ascii_case("role") || name.eq_ignore_ascii_case("session_authorization")
}

/// Applies what a finished loan's statements did: to the settings the client
/// wants (`desired`, carried to its next server connections; `startup` is
/// what RESET returns to) and to what the router knows of `server`.
///
/// Only a loan that ended without an error and without a ROLLBACK counts:
/// a failed implicit transaction undoes its SETs, and after an error or a
/// ROLLBACK (TO SAVEPOINT) which ones survived is unknown, so the server
/// connection is reset before its next use and the client keeps what it had.
pub fn settle(
    changes: &[Change],
    failed: bool,
    client_id: u64,
    desired: &mut Params,
    startup: &Params,
    server: &mut ServerConn,
) {
    if changes.is_empty() {
        return;
    }
    // PREPARE and DEALLOCATE are not undone by a rollback.
    for c in changes {
        match c {
            Change::SqlPrepare => server.sql_prepared_by = Some(client_id),
            Change::DeallocateAll | Change::ResetAll { discard: true } => {
                server.sql_prepared_by = None
            }
            _ => {}
        }
    }
    let changes_settings = |c: &Change| {
        !matches!(
            c,
            Change::Rollback | Change::SqlPrepare | Change::DeallocateAll
        )
    };
    if failed || changes.contains(&Change::Rollback) {
        if changes.iter().any(changes_settings) {
            server.params_unknown = true;
        }
        return;
    }
    let reset = |name: &str, desired: &mut Params, server: &mut ServerConn| {
        match startup.setting(name) {
            Some(s) => desired.set_setting(name, s.clone()),
            None => desired.remove(name),
        }
        server.params.remove(name);
        server.router_set.retain(|n| !n.eq_ignore_ascii_case(name));
    };
    for c in changes {
        match c {
            Change::Set { name, stmt } if tracked_by_sql(name) => {
                let s = Setting::Statement(stmt.clone());
                desired.set_setting(name, s.clone());
                server.params.set_setting(name, s);
                if !server
                    .router_set
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(name))
                {
                    server.router_set.push(name.clone());
                }
            }
            Change::Reset(name) if tracked_by_sql(name) => reset(name, desired, server),
            Change::ResetAll { discard } => {
                let names: Vec<String> = desired
                    .iter()
                    .map(|(k, _)| k.to_string())
                    .chain(server.router_set.iter().cloned())
                    .filter(|k| tracked_by_sql(k) && (*discard || !survives_reset_all(k)))
                    .collect();
                for name in names {
                    reset(&name, desired, server);
                }
            }
            Change::Untracked => server.params_unknown = true,
            _ => {}
        }
    }
    // Compare afresh when it is next lent (a RESET may have left it
    // differing from a startup value the client still wants).
    server.synced_fp = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Option<Change> {
        let mut v = Vec::new();
        scan(sql, &mut v);
        assert!(v.len() <= 1, "{sql}: {v:?}");
        v.pop()
    }

    fn set(name: &str, stmt: &str) -> Option<Change> {
        Some(Change::Set {
            name: name.into(),
            stmt: stmt.into(),
        })
    }

    #[test]
    fn set_forms() {
        assert_eq!(
            one("SET search_path TO a, \"B\""),
            set("search_path", "SET search_path TO a, \"B\"")
        );
        assert_eq!(
            one("  set SESSION statement_timeout = '5s';"),
            set("statement_timeout", "set SESSION statement_timeout = '5s'")
        );
        assert_eq!(
            one("SET app.tenant_id='42'"),
            set("app.tenant_id", "SET app.tenant_id='42'")
        );
        assert_eq!(
            one("SET \"App\".x TO 1"),
            set("App.x", "SET \"App\".x TO 1")
        );
        assert_eq!(
            one("/* c */ SET ROLE reader"),
            set("role", "SET ROLE reader")
        );
        assert_eq!(one("SET SCHEMA 's'"), set("search_path", "SET SCHEMA 's'"));
        assert_eq!(
            one("SET TIME ZONE 'UTC'"),
            set("timezone", "SET TIME ZONE 'UTC'")
        );
        assert_eq!(
            one("SET SESSION AUTHORIZATION bob"),
            set("session_authorization", "SET SESSION AUTHORIZATION bob")
        );
        assert_eq!(
            one("SET work_mem TO DEFAULT"),
            Some(Change::Reset("work_mem".into()))
        );
        assert_eq!(
            one("SET TIME ZONE LOCAL"),
            Some(Change::Reset("timezone".into()))
        );
        assert_eq!(one("SET LOCAL search_path = x"), None);
        assert_eq!(one("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"), None);
        assert_eq!(one("SET CONSTRAINTS ALL DEFERRED"), None);
        assert_eq!(
            one("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"),
            Some(Change::Untracked)
        );
        assert_eq!(one("SET search_path"), Some(Change::Untracked));
    }

    #[test]
    fn reset_and_discard_forms() {
        assert_eq!(
            one("RESET search_path"),
            Some(Change::Reset("search_path".into()))
        );
        assert_eq!(one("reset all"), Some(Change::ResetAll { discard: false }));
        assert_eq!(
            one("DISCARD ALL;"),
            Some(Change::ResetAll { discard: true })
        );
        assert_eq!(one("DISCARD PLANS"), None);
        assert_eq!(one("RESET ROLE"), Some(Change::Reset("role".into())));
        assert_eq!(
            one("RESET SESSION AUTHORIZATION"),
            Some(Change::Reset("session_authorization".into()))
        );
        assert_eq!(
            one("RESET TIME ZONE"),
            Some(Change::Reset("timezone".into()))
        );
        assert_eq!(one("ROLLBACK"), Some(Change::Rollback));
        assert_eq!(
            one("PREPARE q (int) AS SELECT $1"),
            Some(Change::SqlPrepare)
        );
        assert_eq!(one("PREPARE TRANSACTION 'x'"), None);
        assert_eq!(one("DEALLOCATE PREPARE ALL"), Some(Change::DeallocateAll));
        assert_eq!(one("deallocate all"), Some(Change::DeallocateAll));
        assert_eq!(one("DEALLOCATE q"), None);
        assert_eq!(one("abort"), Some(Change::Rollback));
    }

    #[test]
    fn other_statements_change_nothing() {
        for sql in [
            "SELECT 1",
            "SELECT * FROM settings",
            "INSERT INTO resets VALUES (1)",
            "UPDATE t SET a = 1",
            "COMMIT",
            "",
        ] {
            assert_eq!(one(sql), None, "{sql}");
        }
        assert_eq!(
            one("SELECT pg_catalog.set_config('app.x', '1', false)"),
            Some(Change::Untracked)
        );
        assert_eq!(
            one("select SET_CONFIG('a.b', 'c', false)"),
            Some(Change::Untracked)
        );
        assert_eq!(
            one("SELECT set_configuration FROM _config"),
            Some(Change::Untracked)
        );
        assert_eq!(one("SELECT my_set_conf, _config FROM set_"), None);
        let mut v = Vec::new();
        scan("BEGIN; SET search_path = a; COMMIT", &mut v);
        assert_eq!(
            v,
            vec![set("search_path", "SET search_path = a").unwrap_or(Change::Untracked)]
        );
    }
}
