//! All pools, keyed by (tenant, server, user, database), created on first use.
//! The tenant is part of the key because two tenants' users may log into
//! the server as the same role, and must still not share connections.

use super::Pool;
use crate::backend::connect::Login;
use crate::backend::Target;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    tenant: Arc<str>,
    target: Arc<Target>,
    user: String,
    database: String,
}

#[derive(Default)]
pub struct Pools {
    map: Mutex<HashMap<Key, Arc<Pool>>>,
}

impl Pools {
    /// The pool for this key, made by `make` if there is none yet.
    pub fn get_or_create(
        &self,
        tenant: &Arc<str>,
        target: &Arc<Target>,
        login: &Login,
        make: impl FnOnce() -> Arc<Pool>,
    ) -> Arc<Pool> {
        let key = Key {
            tenant: tenant.clone(),
            target: target.clone(),
            user: login.user.clone(),
            database: login.database.clone(),
        };
        let Ok(mut map) = self.map.lock() else {
            // A poisoned registry means a panic elsewhere; still serve.
            return make();
        };
        map.entry(key).or_insert_with(make).clone()
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

    /// Pools below their `min_pool_size`.
    pub fn to_warm(&self) -> Vec<Arc<Pool>> {
        self.all()
            .into_iter()
            .filter(|p| p.needs_warming())
            .collect()
    }
}
