//! What one server connection has prepared, bounded (LRU).

use super::Statement;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Process-wide counters (for metrics): how often a server connection
/// already had the statement a client used, had to prepare it, or closed
/// one to make room.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub prepares: AtomicU64,
    pub evictions: AtomicU64,
}

pub static STATS: CacheStats = CacheStats {
    hits: AtomicU64::new(0),
    prepares: AtomicU64::new(0),
    evictions: AtomicU64::new(0),
};

/// Server-side statements of one connection, by server name.
#[derive(Debug)]
pub struct ServerStatements {
    capacity: usize,
    tick: u64,
    /// server name -> (statement, last use). foldhash, not SipHash: looked
    /// up on every Bind, and a randomly seeded fast hash is enough for a
    /// map bounded by `capacity`.
    map: HashMap<Arc<str>, (Arc<Statement>, u64), foldhash::fast::RandomState>,
}

/// What [`ServerStatements::ensure`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Ensure {
    /// Prepared already.
    Present,
    /// Must be prepared; `evict` names a statement to close first (the
    /// cache was full, or a hash collision holds the name).
    Prepare { evict: Option<Arc<str>> },
}

impl ServerStatements {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            tick: 0,
            map: HashMap::default(),
        }
    }

    /// Looks `stmt` up and, when absent, records it as prepared (the caller
    /// sends the Parse, and the Close of `evict` before it).
    pub fn ensure(&mut self, stmt: &Arc<Statement>) -> Ensure {
        self.tick += 1;
        let tick = self.tick;
        if let Some((have, used)) = self.map.get_mut(&stmt.server_name) {
            if have.sql == stmt.sql && have.param_types == stmt.param_types {
                *used = tick;
                STATS.hits.fetch_add(1, Ordering::Relaxed);
                return Ensure::Present;
            }
            STATS.prepares.fetch_add(1, Ordering::Relaxed);
            // Same name, other statement: replace it.
            let name = stmt.server_name.clone();
            self.map.insert(name.clone(), (stmt.clone(), tick));
            return Ensure::Prepare { evict: Some(name) };
        }
        let evict = if self.map.len() >= self.capacity {
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(n, _)| n.clone());
            if let Some(n) = &oldest {
                self.map.remove(n);
                STATS.evictions.fetch_add(1, Ordering::Relaxed);
            }
            oldest
        } else {
            None
        };
        self.map
            .insert(stmt.server_name.clone(), (stmt.clone(), tick));
        STATS.prepares.fetch_add(1, Ordering::Relaxed);
        Ensure::Prepare { evict }
    }

    /// Applies `[pool] max_prepared_statements` (evictions happen as
    /// statements are added).
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
    }

    /// Forgets a statement whose Parse failed on the server.
    pub fn forget(&mut self, server_name: &str) {
        self.map.remove(server_name);
    }

    /// DISCARD ALL / DEALLOCATE ALL ran on the connection.
    pub fn clear(&mut self) {
        self.map.clear();
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_recently_used_is_evicted() {
        let mut c = ServerStatements::new(2);
        let (a, b, d) = (
            Statement::new("SELECT 1", vec![]),
            Statement::new("SELECT 2", vec![]),
            Statement::new("SELECT 3", vec![]),
        );
        assert_eq!(c.ensure(&a), Ensure::Prepare { evict: None });
        assert_eq!(c.ensure(&b), Ensure::Prepare { evict: None });
        assert_eq!(c.ensure(&a), Ensure::Present); // a is now the most recent
        assert_eq!(
            c.ensure(&d),
            Ensure::Prepare {
                evict: Some(b.server_name.clone())
            }
        );
        assert_eq!(c.ensure(&a), Ensure::Present);
        assert_eq!(c.len(), 2);
        c.clear();
        assert!(c.is_empty());
    }
}
