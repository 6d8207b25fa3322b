//! Statement classification: READ (may run on a replica) or WRITE (must run
//! on the primary). Pure: SQL text in, class and reason out.
//!
//! The rule is fail-closed: a statement is READ only when it is provably a
//! read. Anything sqlparser cannot parse, anything unknown, is WRITE.
//! READ means: SELECT/VALUES/TABLE/SHOW/EXPLAIN (without ANALYZE of a
//! write), COPY ... TO, SET/RESET of session settings (not of transaction
//! modes), and transaction-control statements that start a READ ONLY
//! transaction, provided the statement has
//! - no locking clause (FOR UPDATE / NO KEY UPDATE / SHARE / KEY SHARE),
//! - no SELECT INTO,
//! - no data-modifying CTE (WITH x AS (INSERT ...)),
//! - no call to a function that writes or takes session state
//!   ([`BUILTIN_WRITE_FUNCTIONS`], plus configured and catalog-discovered ones).

use sqlparser::ast::{
    CopySource, CopyTarget, Expr, ObjectName, ObjectNamePart, Query, SetExpr, Statement,
    TableFactor, TransactionAccessMode, TransactionMode, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::collections::HashSet;
use std::ops::ControlFlow;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    Read,
    Write,
}

/// Why a statement got its class (also a metrics label, so a small closed set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    Read,
    ReadOnlyTransaction,
    Write,
    Transaction,
    Locking,
    SelectInto,
    ModifyingCte,
    WriteFunction,
    ParseFailure,
    Empty,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Read => "read",
            Reason::ReadOnlyTransaction => "read_only_transaction",
            Reason::Write => "write",
            Reason::Transaction => "explicit_transaction",
            Reason::Locking => "locking_clause",
            Reason::SelectInto => "select_into",
            Reason::ModifyingCte => "data_modifying_cte",
            Reason::WriteFunction => "side_effecting_function",
            Reason::ParseFailure => "parse_failure",
            Reason::Empty => "empty",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classification {
    pub class: Class,
    pub reason: Reason,
}

impl Classification {
    const fn read(reason: Reason) -> Self {
        Self {
            class: Class::Read,
            reason,
        }
    }
    const fn write(reason: Reason) -> Self {
        Self {
            class: Class::Write,
            reason,
        }
    }
}

/// Built-in functions that write, take locks, or depend on session state a
/// replica does not have. Matched by unqualified, lower-cased name.
pub const BUILTIN_WRITE_FUNCTIONS: &[&str] = &[
    "nextval",
    "setval",
    "currval",
    "lastval",
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_advisory_xact_lock",
    "pg_advisory_xact_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "pg_try_advisory_xact_lock",
    "pg_try_advisory_xact_lock_shared",
    "pg_advisory_unlock",
    "pg_advisory_unlock_shared",
    "pg_advisory_unlock_all",
    "pg_notify",
    "set_config",
    "lo_create",
    "lo_creat",
    "lo_import",
    "lo_unlink",
    "lo_open",
    "lowrite",
    "lo_put",
    "lo_from_bytea",
    "lo_truncate",
    "lo_truncate64",
    "txid_current",
    "pg_current_xact_id",
    "txid_current_if_assigned",
    "pg_current_xact_id_if_assigned",
    "pg_current_wal_lsn",
    "pg_current_wal_insert_lsn",
    "pg_current_wal_flush_lsn",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_create_physical_replication_slot",
    "pg_create_logical_replication_slot",
    "pg_drop_replication_slot",
    "pg_copy_physical_replication_slot",
    "pg_copy_logical_replication_slot",
    "pg_replication_slot_advance",
    "pg_logical_slot_get_changes",
    "pg_logical_slot_get_binary_changes",
    "pg_logical_emit_message",
    "pg_replication_origin_create",
    "pg_replication_origin_drop",
    "dblink_exec",
    "dblink",
    "dblink_connect",
    "dblink_send_query",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_stat_reset",
    "pg_stat_reset_shared",
    "pg_stat_reset_single_table_counters",
    "pg_import_system_collations",
    "setseed",
    "pg_sequence_last_value",
];

/// Which function names count as writes: built-ins, plus configured and
/// catalog-discovered volatile functions, minus configured read-only ones.
#[derive(Clone, Debug, Default)]
pub struct FunctionRules {
    pub write: HashSet<String>,
    pub read_only: HashSet<String>,
}

impl FunctionRules {
    pub fn is_write(&self, name: &str) -> bool {
        if self.read_only.contains(name) {
            return false;
        }
        BUILTIN_WRITE_FUNCTIONS.contains(&name) || self.write.contains(name)
    }
}

/// Classifies one simple-protocol query string (possibly several statements:
/// one write makes the whole batch a write) or one Parse'd statement.
pub fn classify(sql: &str, functions: &FunctionRules) -> Classification {
    if let Some(c) = keyword_fast_path(sql) {
        return c;
    }
    let statements = match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(s) => s,
        Err(_) => {
            return fallback_rules(sql).unwrap_or(Classification::write(Reason::ParseFailure))
        }
    };
    if statements.is_empty() {
        return Classification::read(Reason::Empty);
    }
    let mut result = Classification::read(Reason::Read);
    for s in &statements {
        let c = classify_statement(s, functions);
        if c.class == Class::Write {
            return c;
        }
        if c.reason == Reason::ReadOnlyTransaction {
            result = c;
        }
    }
    result
}

fn classify_statement(s: &Statement, functions: &FunctionRules) -> Classification {
    match s {
        Statement::Query(q) => classify_query(q, functions),
        Statement::ShowVariable { .. } | Statement::ShowVariables { .. } => {
            Classification::read(Reason::Read)
        }
        Statement::Explain {
            analyze,
            options,
            statement,
            ..
        } => {
            let analyze = *analyze
                || options.as_ref().is_some_and(|o| {
                    o.iter().any(|opt| {
                        opt.name.value.eq_ignore_ascii_case("analyze")
                            && !matches!(&opt.arg, Some(Expr::Value(v)) if v.to_string().eq_ignore_ascii_case("false"))
                    })
                });
            if analyze {
                classify_statement(statement, functions)
            } else {
                Classification::read(Reason::Read)
            }
        }
        Statement::StartTransaction { modes, .. } => {
            if read_only(modes) {
                Classification::read(Reason::ReadOnlyTransaction)
            } else {
                Classification::write(Reason::Transaction)
            }
        }
        // COPY ... TO reads (unless its query writes); COPY ... FROM writes.
        Statement::Copy {
            to: true,
            target,
            source,
            ..
        } if !matches!(target, CopyTarget::Program { .. }) => match source {
            CopySource::Query(q) => classify_query(q, functions),
            CopySource::Table { .. } => Classification::read(Reason::Read),
        },
        _ => Classification::write(Reason::Write),
    }
}

fn read_only(modes: &[TransactionMode]) -> bool {
    modes.iter().any(|m| {
        matches!(
            m,
            TransactionMode::AccessMode(TransactionAccessMode::ReadOnly)
        )
    })
}

fn classify_query(q: &Query, functions: &FunctionRules) -> Classification {
    scan(q, functions).unwrap_or(Classification::read(Reason::Read))
}

/// Walks every query, subquery, CTE and expression of `node`; returns the
/// first reason it must be a write.
fn scan<V: Visit>(node: &V, functions: &FunctionRules) -> Option<Classification> {
    let mut v = WriteFinder { functions };
    match node.visit(&mut v) {
        ControlFlow::Break(c) => Some(c),
        ControlFlow::Continue(()) => None,
    }
}

struct WriteFinder<'a> {
    functions: &'a FunctionRules,
}

impl Visitor for WriteFinder<'_> {
    type Break = Classification;

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<Classification> {
        if !q.locks.is_empty() {
            return ControlFlow::Break(Classification::write(Reason::Locking));
        }
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                if modifies(&cte.query.body) {
                    return ControlFlow::Break(Classification::write(Reason::ModifyingCte));
                }
            }
        }
        if let Some(c) = body_write(&q.body) {
            return ControlFlow::Break(c);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<Classification> {
        // Statements nested in a query (SetExpr::Insert...) are writes.
        match s {
            Statement::Query(_) => ControlFlow::Continue(()),
            _ => ControlFlow::Break(Classification::write(Reason::ModifyingCte)),
        }
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<Classification> {
        match e {
            Expr::Function(f) => self.check_function(&f.name),
            _ => ControlFlow::Continue(()),
        }
    }

    /// Functions called in FROM (`SELECT * FROM nextval('s')`) are table
    /// factors, not expressions.
    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<Classification> {
        match t {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => self.check_function(name),
            _ => ControlFlow::Continue(()),
        }
    }
}

impl WriteFinder<'_> {
    fn check_function(&self, name: &ObjectName) -> ControlFlow<Classification> {
        if let Some(ObjectNamePart::Identifier(ident)) = name.0.last() {
            if self.functions.is_write(&ident.value.to_ascii_lowercase()) {
                return ControlFlow::Break(Classification::write(Reason::WriteFunction));
            }
        }
        ControlFlow::Continue(())
    }
}

fn modifies(body: &SetExpr) -> bool {
    match body {
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => true,
        SetExpr::Query(q) => modifies(&q.body),
        SetExpr::SetOperation { left, right, .. } => modifies(left) || modifies(right),
        _ => false,
    }
}

fn body_write(body: &SetExpr) -> Option<Classification> {
    match body {
        SetExpr::Select(s) if s.into.is_some() => Some(Classification::write(Reason::SelectInto)),
        SetExpr::Select(_) | SetExpr::Values(_) | SetExpr::Table(_) | SetExpr::Query(_) => None,
        SetExpr::SetOperation { left, right, .. } => body_write(left).or_else(|| body_write(right)),
        _ => Some(Classification::write(Reason::ModifyingCte)),
    }
}

/// Keywords that decide the class without a parse (~20-50 ns instead of µs).
/// Only single statements; anything else goes to the parser.
fn keyword_fast_path(sql: &str) -> Option<Classification> {
    let t = sql.trim().trim_end_matches(';').trim_end();
    if t.is_empty() {
        return Some(Classification::read(Reason::Empty));
    }
    if t.contains(';') {
        return None;
    }
    let word_end = t
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(t.len());
    let (word, rest) = t.split_at(word_end);
    let rest = rest.trim();
    match word.to_ascii_uppercase().as_str() {
        "BEGIN" | "START" if !rest.to_ascii_uppercase().contains("ONLY") => {
            Some(Classification::write(Reason::Transaction))
        }
        "COMMIT" | "END" | "ROLLBACK" | "ABORT" if rest.is_empty() => {
            Some(Classification::read(Reason::Read))
        }
        "SHOW" => Some(Classification::read(Reason::Read)),
        // Session settings write nothing, and pgrouter carries them to the
        // client's next server connections wherever they ran
        // (frontend::session_set). Not transaction modes: a standby refuses
        // `SET transaction_read_only = off` and its relatives.
        "SET" | "RESET" if !rest.to_ascii_lowercase().contains("transaction") => {
            Some(Classification::read(Reason::Read))
        }
        _ => None,
    }
}

/// A lone `BEGIN`/`START TRANSACTION` that does not say READ ONLY (its
/// route can wait for the transaction's first statement).
pub fn is_plain_begin(sql: &str) -> bool {
    keyword_fast_path(sql) == Some(Classification::write(Reason::Transaction))
}

/// `COMMIT`, `ROLLBACK`, `END` or `ABORT` (with optional `WORK` /
/// `TRANSACTION` / `AND [NO] CHAIN`), but not `... PREPARED` or
/// `ROLLBACK TO [SAVEPOINT]`: what ends a failed transaction block.
pub fn ends_transaction(sql: &str) -> bool {
    let t = sql.trim().trim_end_matches(';').trim().to_ascii_lowercase();
    let mut words = t.split_whitespace();
    let first = words.next().unwrap_or("");
    let second = words.next().unwrap_or("");
    matches!(first, "commit" | "rollback" | "end" | "abort")
        && !matches!(second, "prepared" | "to")
        && !t.contains(';')
}

/// `SET TRANSACTION ... READ ONLY` (as the first statement of a transaction).
pub fn is_set_transaction_read_only(sql: &str) -> bool {
    let Ok(statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
        return false;
    };
    matches!(statements.as_slice(), [Statement::Set(sqlparser::ast::Set::SetTransaction { modes, session: false, .. })] if read_only(modes))
}

/// Read-only shapes sqlparser does not parse: `TABLE t`.
fn fallback_rules(sql: &str) -> Option<Classification> {
    let t = sql.trim().trim_end_matches(';').trim();
    let mut words = t.split_whitespace();
    if words.next()?.eq_ignore_ascii_case("table") {
        let name = words.next()?;
        let simple = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '"');
        if words.next().is_none() && simple {
            return Some(Classification::read(Reason::Read));
        }
    }
    None
}

#[cfg(test)]
mod tests;
