//! Read-your-writes state. A client's last write position (or pin time)
//! lives in its session; with `consistency_scope = "user"` it is also
//! published here so every connection of that user honours it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// WAL insert position after the last write (0: none).
    pub lsn: u64,
    /// "time" mode: reads stay on the primary until then.
    pub pinned_until: Option<Instant>,
}

impl Position {
    pub fn merge(&mut self, other: Position) {
        self.lsn = self.lsn.max(other.lsn);
        self.pinned_until = match (self.pinned_until, other.pinned_until) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Positions per user, for `consistency_scope = "user"`.
#[derive(Default)]
pub struct UserPositions {
    map: Mutex<HashMap<String, Position>>,
}

impl UserPositions {
    pub fn get(&self, user: &str) -> Position {
        self.map
            .lock()
            .ok()
            .and_then(|m| m.get(user).copied())
            .unwrap_or_default()
    }

    pub fn record(&self, user: &str, p: Position) {
        if let Ok(mut m) = self.map.lock() {
            m.entry(user.to_string()).or_default().merge(p);
        }
    }
}
