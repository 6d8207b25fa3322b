//! Cancel keys. The router gives each client its own BackendKeyData; while
//! the client holds a server connection, its slot names that server session,
//! so a CancelRequest with the router's key reaches the right server.
//!
//! The registry is also how shutdown reaches idle sessions: each slot holds a
//! one-shot sender. (A single shared watch channel would make every idle
//! session register with one shared lock on every transaction.) And it is
//! the list of connected clients the admin console shows (SHOW CLIENTS).

use crate::backend::connect::send_cancel;
use crate::backend::Target;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

#[derive(Clone)]
struct ServerKey {
    target: Arc<Target>,
    pid: i32,
    secret: i32,
}

/// Who a client is (SHOW CLIENTS).
#[derive(Debug, Default)]
pub struct ClientInfo {
    pub id: u64,
    pub user: String,
    pub database: String,
    pub tenant: Arc<str>,
    pub peer: Option<std::net::SocketAddr>,
    pub since: Option<std::time::SystemTime>,
    /// Transactions finished.
    pub transactions: std::sync::atomic::AtomicU64,
}

impl ClientInfo {
    /// A client that has just logged in.
    pub fn new(
        id: u64,
        user: &str,
        database: &str,
        tenant: Arc<str>,
        peer: Option<std::net::SocketAddr>,
    ) -> Self {
        Self {
            id,
            user: user.to_string(),
            database: database.to_string(),
            tenant,
            peer,
            since: Some(std::time::SystemTime::now()),
            transactions: Default::default(),
        }
    }
}

/// A client as SHOW CLIENTS lists it.
pub struct ClientRow {
    pub info: Arc<CancelSlot>,
    /// The server connection it holds now: (server, backend pid).
    pub server: Option<(String, i32)>,
}

/// Where one client's queries currently run.
#[derive(Default)]
pub struct CancelSlot {
    pub client: ClientInfo,
    current: Mutex<Option<ServerKey>>,
    /// Fires when the router shuts down.
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
}

impl CancelSlot {
    pub fn attach(&self, target: &Arc<Target>, pid: i32, secret: i32) {
        if let Ok(mut c) = self.current.lock() {
            *c = Some(ServerKey {
                target: target.clone(),
                pid,
                secret,
            });
        }
    }
    pub fn detach(&self) {
        if let Ok(mut c) = self.current.lock() {
            *c = None;
        }
    }
}

pub struct CancelRegistry {
    next_pid: AtomicI32,
    slots: Mutex<HashMap<(i32, i32), Arc<CancelSlot>>>,
}

impl Default for CancelRegistry {
    fn default() -> Self {
        Self {
            // Start somewhere random so keys differ across restarts.
            next_pid: AtomicI32::new(rand::random_range(1..1 << 30)),
            slots: Mutex::new(HashMap::new()),
        }
    }
}

/// Removes the client's key when its session ends.
pub struct CancelKey {
    pub pid: i32,
    pub secret: i32,
    pub slot: Arc<CancelSlot>,
    /// Resolves when the router shuts down; `None` once it has fired.
    pub shutdown: Option<oneshot::Receiver<()>>,
    registry: Arc<CancelRegistry>,
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        if let Ok(mut s) = self.registry.slots.lock() {
            s.remove(&(self.pid, self.secret));
        }
    }
}

impl CancelRegistry {
    pub fn register(self: &Arc<Self>, client: ClientInfo) -> CancelKey {
        let pid = self.next_pid.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff;
        let secret: i32 = rand::random();
        let (tx, rx) = oneshot::channel();
        let slot = Arc::new(CancelSlot {
            client,
            current: Mutex::new(None),
            shutdown: Mutex::new(Some(tx)),
        });
        if let Ok(mut s) = self.slots.lock() {
            s.insert((pid, secret), slot.clone());
        }
        CancelKey {
            pid,
            secret,
            slot,
            shutdown: Some(rx),
            registry: self.clone(),
        }
    }

    /// Every connected client, oldest first, with the server it holds.
    pub fn clients(&self) -> Vec<ClientRow> {
        let Ok(slots) = self.slots.lock() else {
            return Vec::new();
        };
        let mut rows: Vec<ClientRow> = slots
            .values()
            .map(|slot| ClientRow {
                server: slot
                    .current
                    .lock()
                    .ok()
                    .and_then(|c| c.as_ref().map(|k| (k.target.name.clone(), k.pid))),
                info: slot.clone(),
            })
            .collect();
        rows.sort_by_key(|r| r.info.client.id);
        rows
    }

    /// Tells every session that the router is shutting down.
    pub fn shutdown_all(&self) {
        let Ok(slots) = self.slots.lock() else { return };
        for slot in slots.values() {
            if let Some(tx) = slot.shutdown.lock().ok().and_then(|mut s| s.take()) {
                let _ = tx.send(());
            }
        }
    }

    /// Forwards a cancel to the server running that client's query. Unknown
    /// keys and idle clients are ignored, as PostgreSQL does.
    pub async fn cancel(&self, pid: i32, secret: i32, timeout: Duration) -> bool {
        let key = {
            let Ok(slots) = self.slots.lock() else {
                return false;
            };
            let Some(slot) = slots.get(&(pid, secret)) else {
                return false;
            };
            let Ok(current) = slot.current.lock() else {
                return false;
            };
            current.clone()
        };
        match key {
            Some(k) => send_cancel(&k.target, k.pid, k.secret, timeout)
                .await
                .is_ok(),
            None => false,
        }
    }
}
