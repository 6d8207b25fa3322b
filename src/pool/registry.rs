//! All pools, keyed by (server, user, database), created on first use.

use super::{Pool, PoolSettings};
use crate::backend::connect::Login;
use crate::backend::Target;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    target: Arc<Target>,
    user: String,
    database: String,
}

#[derive(Default)]
pub struct Pools {
    map: Mutex<HashMap<Key, Arc<Pool>>>,
}

impl Pools {
    pub fn get_or_create(
        &self,
        target: &Arc<Target>,
        login: &Login,
        settings: impl FnOnce() -> PoolSettings,
        breaker: &Arc<super::breaker::Breaker>,
    ) -> Arc<Pool> {
        let key = Key {
            target: target.clone(),
            user: login.user.clone(),
            database: login.database.clone(),
        };
        let Ok(mut map) = self.map.lock() else {
            // A poisoned registry means a panic elsewhere; still serve.
            return Pool::new(target.clone(), login.clone(), settings(), breaker.clone());
        };
        map.entry(key)
            .or_insert_with(|| {
                Pool::new(target.clone(), login.clone(), settings(), breaker.clone())
            })
            .clone()
    }

    /// Forgets a pool that never logged in (a mistyped database name), so
    /// clients cannot grow the registry without bound.
    pub fn forget_unproven(&self, pool: &Arc<Pool>) {
        if pool.is_proven() {
            return;
        }
        if let Ok(mut map) = self.map.lock() {
            map.retain(|_, p| !Arc::ptr_eq(p, pool));
        }
    }

    pub fn all(&self) -> Vec<Arc<Pool>> {
        self.map
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Closes the idle connections of every pool of `target` (it went down).
    pub fn close_idle_for(&self, target: &Target) {
        for p in self.all() {
            if *p.target == *target {
                p.close_idle();
            }
        }
    }

    pub fn reap(&self, now: Instant, tick: std::time::Duration) -> usize {
        self.all().iter().map(|p| p.reap(now, tick)).sum()
    }
}
