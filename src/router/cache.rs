//! Caches in front of the classifier, one set per worker thread (no locks
//! on the hot path): by exact text (prepared statements, repeated queries),
//! then by literal-normalized shape (simple-protocol queries whose literals
//! change every time, such as pgbench -S). A miss parses once per shape.
//! Each cache is bounded: when full it is cleared and refills with what is hot.

use super::classify::{classify, Classification, FunctionRules};
use super::normalize::normalize;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Entries per cache per thread.
pub const CACHE_CAPACITY: usize = 4096;

/// Hit/miss counters shared by all threads (for metrics).
#[derive(Debug, Default)]
pub struct CacheStats {
    pub exact_hits: AtomicU64,
    pub shape_hits: AtomicU64,
    pub misses: AtomicU64,
}

pub static STATS: CacheStats = CacheStats {
    exact_hits: AtomicU64::new(0),
    shape_hits: AtomicU64::new(0),
    misses: AtomicU64::new(0),
};

#[derive(Default)]
struct Local {
    /// The rules these entries were computed with (pointer identity).
    rules: Option<Arc<FunctionRules>>,
    exact: HashMap<String, Classification>,
    shapes: HashMap<String, Classification>,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
}

fn insert(map: &mut HashMap<String, Classification>, key: String, value: Classification) {
    if map.len() >= CACHE_CAPACITY {
        map.clear();
    }
    map.insert(key, value);
}

/// Classifies `sql` through this thread's caches. A new `rules` (reload,
/// catalog refresh) empties them.
pub fn classify_cached(sql: &str, rules: &Arc<FunctionRules>) -> Classification {
    LOCAL.with(|cell| {
        let Ok(mut local) = cell.try_borrow_mut() else {
            return classify(sql, rules);
        };
        if !local.rules.as_ref().is_some_and(|r| Arc::ptr_eq(r, rules)) {
            local.exact.clear();
            local.shapes.clear();
            local.rules = Some(rules.clone());
        }
        if let Some(c) = local.exact.get(sql) {
            STATS.exact_hits.fetch_add(1, Ordering::Relaxed);
            return *c;
        }
        let shape = normalize(sql);
        if let Some(c) = shape.as_ref().and_then(|s| local.shapes.get(s)) {
            STATS.shape_hits.fetch_add(1, Ordering::Relaxed);
            return *c;
        }
        STATS.misses.fetch_add(1, Ordering::Relaxed);
        let c = classify(sql, rules);
        match shape {
            // Literal-free text: the exact cache serves it next time.
            Some(s) if s == sql => insert(&mut local.exact, s, c),
            Some(s) => insert(&mut local.shapes, s, c),
            None => insert(&mut local.exact, sql.to_string(), c),
        }
        c
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::classify::Class;

    #[test]
    fn shapes_share_an_entry_and_rules_invalidate() {
        let rules = Arc::new(FunctionRules::default());
        let before = STATS.shape_hits.load(Ordering::Relaxed);
        for aid in [1, 2, 3] {
            let c = classify_cached(
                &format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid}"),
                &rules,
            );
            assert_eq!(c.class, Class::Read);
        }
        assert!(STATS.shape_hits.load(Ordering::Relaxed) >= before + 2);
        // New rules: a function becomes a write, the cache must not answer from old rules.
        assert_eq!(
            classify_cached("SELECT my_fn(1)", &rules).class,
            Class::Read
        );
        let mut r2 = FunctionRules::default();
        r2.write.insert("my_fn".into());
        assert_eq!(
            classify_cached("SELECT my_fn(1)", &Arc::new(r2)).class,
            Class::Write
        );
    }
}
