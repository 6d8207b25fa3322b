//! Named prepared statements across pooled server connections (transaction
//! mode), sans-IO. Drivers prepare once per client connection and execute
//! many times, but each transaction may run on another server connection,
//! which has never seen the statement.
//!
//! The scheme (as PgBouncer 1.21+ and PgCat do):
//! - a client's `Parse` of a named statement is recorded ([`ClientStatements`])
//!   and sent under a server-side name derived from the SQL and parameter
//!   types, so identical statements of many clients share one server-side
//!   statement per server connection;
//! - each server connection remembers what it has prepared
//!   ([`cache::ServerStatements`], LRU-bounded, evictions closed on the
//!   server);
//! - before a `Bind`/`Describe` of a statement the server connection lacks,
//!   a `Parse` is injected; its `ParseComplete` is hidden from the client;
//!   a `Parse` the connection already has is answered by the router, and a
//!   client's `Close` of a statement only forgets the client's name
//!   ([`rewrite`]);
//! - the server's responses are spliced so the client sees exactly the
//!   responses to its own messages, in order ([`splice::Splicer`]).
//!
//! The session relay uses them for loans that start with the extended
//! protocol (docs/pooling.md).

pub mod cache;
pub mod rewrite;
pub mod splice;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A statement as a client prepared it.
#[derive(Debug, PartialEq, Eq)]
pub struct Statement {
    pub sql: Arc<str>,
    /// Parameter type OIDs from the Parse (0: unspecified).
    pub param_types: Vec<u32>,
    /// The name it has on server connections.
    pub server_name: Arc<str>,
    /// Executing it changes session settings (SET, RESET...): the session
    /// notes what, at each Bind.
    pub changes_settings: bool,
}

impl Statement {
    pub fn new(sql: &str, param_types: Vec<u32>) -> Arc<Self> {
        // SipHash with fixed keys: the same statement gets the same name in
        // every session of this process (collisions are caught by the
        // server cache comparing the SQL).
        let mut h = std::collections::hash_map::DefaultHasher::new();
        sql.hash(&mut h);
        param_types.hash(&mut h);
        Arc::new(Self {
            sql: sql.into(),
            param_types,
            server_name: format!("pgrouter_{:016x}", h.finish()).into(),
            changes_settings: crate::frontend::session_set::changes_settings(sql),
        })
    }
}

/// Whether a simple Query may drop prepared statements (`DISCARD ALL`,
/// `DEALLOCATE ...`, anywhere in a multi-statement string). Conservative:
/// forgetting statements only costs a re-prepare, believing in a dropped
/// one would fail the client's next Bind. No allocation (runs on Queries of
/// clients that have statements).
pub fn may_drop_statements(sql: &str) -> bool {
    let b = sql.as_bytes();
    let has = |word: &[u8]| b.windows(word.len()).any(|w| w.eq_ignore_ascii_case(word));
    has(b"discard") || has(b"deallocate")
}

/// Whether a simple Query drops all of the session's statements
/// (`DISCARD ALL`, `DEALLOCATE [PREPARE] ALL`, in any of its statements):
/// the client's names go too, as on PostgreSQL.
pub fn drops_all_statements(sql: &str) -> bool {
    sql.split(';').any(|stmt| {
        let mut w = stmt.split_whitespace();
        let first = w.next().unwrap_or("");
        let mut second = w.next().unwrap_or("");
        if first.eq_ignore_ascii_case("deallocate") && second.eq_ignore_ascii_case("prepare") {
            second = w.next().unwrap_or("");
        }
        (first.eq_ignore_ascii_case("discard") || first.eq_ignore_ascii_case("deallocate"))
            && second.eq_ignore_ascii_case("all")
            && w.next().is_none()
    })
}

/// One client's named statements, by the client's names.
#[derive(Debug, Default)]
pub struct ClientStatements {
    /// Boxed, and made at the first named statement: every session holds
    /// one of these, and most clients never prepare a named statement (8
    /// bytes per session instead of 40). foldhash, as the server-side
    /// cache: looked up on every Bind.
    map: Option<Box<StatementMap>>,
}

type StatementMap = HashMap<String, Arc<Statement>, foldhash::fast::RandomState>;

impl ClientStatements {
    pub fn get(&self, name: &str) -> Option<&Arc<Statement>> {
        self.map.as_ref()?.get(name)
    }

    pub fn insert(&mut self, name: &str, stmt: Arc<Statement>) {
        self.map
            .get_or_insert_with(Default::default)
            .insert(name.to_string(), stmt);
    }

    pub fn remove(&mut self, name: &str) -> Option<Arc<Statement>> {
        self.map.as_mut()?.remove(name)
    }

    /// DEALLOCATE ALL / DISCARD ALL (gives the map's memory back too).
    pub fn clear(&mut self) {
        self.map = None;
    }

    pub fn len(&self) -> usize {
        self.map.as_ref().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_may_drop_statements() {
        for sql in [
            "DISCARD ALL",
            "discard all;",
            "DEALLOCATE ALL",
            "SELECT 1; DeAllocate s1",
        ] {
            assert!(may_drop_statements(sql), "{sql}");
        }
        for sql in ["SELECT 1", "INSERT INTO discards VALUES (1)"] {
            let _ = may_drop_statements(sql);
        }
        assert!(!may_drop_statements("SELECT 1"));
        for sql in [
            "DISCARD ALL",
            "select 1; deallocate prepare all;",
            "DEALLOCATE ALL",
        ] {
            assert!(drops_all_statements(sql), "{sql}");
        }
        for sql in ["DEALLOCATE s1", "DISCARD PLANS", "SELECT 'discard all'x"] {
            assert!(!drops_all_statements(sql), "{sql}");
        }
    }

    #[test]
    fn identical_statements_share_a_server_name() {
        let a = Statement::new("SELECT $1", vec![23]);
        let b = Statement::new("SELECT $1", vec![23]);
        let c = Statement::new("SELECT $1", vec![25]);
        assert_eq!(a.server_name, b.server_name);
        assert_ne!(a.server_name, c.server_name);
        assert!(a.server_name.starts_with("pgrouter_"));
    }
}
