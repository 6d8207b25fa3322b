//! SHOW commands: each builds a [`Table`] from the router's live state.

use super::command::Show;
use crate::app::Shared;
use crate::lag::elect::{Claim, Writer};
use crate::router::lsn;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

/// A result set: text columns, NULL as `None`.
pub struct Table {
    pub columns: &'static [&'static str],
    pub rows: Vec<Vec<Option<String>>>,
}

impl Table {
    fn new(columns: &'static [&'static str]) -> Self {
        Self {
            columns,
            rows: Vec::new(),
        }
    }

    fn push(&mut self, row: Vec<Option<String>>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }
}

fn v(x: impl ToString) -> Option<String> {
    Some(x.to_string())
}

pub fn show(shared: &Shared, what: Show) -> Table {
    match what {
        Show::Pools => pools(shared),
        Show::Clients => clients(shared),
        Show::Servers => servers(shared),
        Show::Replicas => replicas(shared),
        Show::Tenants => tenants(shared),
        Show::Stats => stats(shared),
        Show::Config => config(shared),
        Show::Version => {
            let mut t = Table::new(&["version"]);
            t.push(vec![v(format!("pgrouter {}", env!("CARGO_PKG_VERSION")))]);
            t
        }
        Show::Help => {
            let mut t = Table::new(&["command", "description"]);
            for (c, d) in [
                (
                    "SHOW POOLS",
                    "server connections per tenant, server, user and database",
                ),
                (
                    "SHOW CLIENTS",
                    "connected clients and the server connection each holds",
                ),
                ("SHOW SERVERS", "server connections, lent or idle"),
                (
                    "SHOW REPLICAS",
                    "every server's role, state, lag and replay position",
                ),
                (
                    "SHOW TENANTS",
                    "tenant limits, clients, queue and rejections",
                ),
                ("SHOW STATS", "transactions, queries and timings per tenant"),
                ("SHOW CONFIG", "effective settings (passwords hidden)"),
                ("SHOW VERSION", "pgrouter's version"),
                ("RELOAD", "re-read router.toml and apply it"),
                (
                    "PAUSE [tenant]",
                    "let running transactions finish, hold new ones, close server connections",
                ),
                ("RESUME [tenant]", "release held transactions"),
                ("SHUTDOWN", "drain clients and exit, as on SIGTERM"),
            ] {
                t.push(vec![v(c), v(d)]);
            }
            t
        }
    }
}

fn pools(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        "tenant",
        "server",
        "role",
        "user",
        "database",
        "active",
        "idle",
        "pool_size",
        "waiting",
        "checkouts",
        "connects",
        "connect_failures",
        "wait_timeouts",
    ]);
    let mut pools = shared.pools.all();
    pools.sort_by(|a, b| {
        (a.tenant(), &a.target.name, &a.login.user, &a.login.database).cmp(&(
            b.tenant(),
            &b.target.name,
            &b.login.user,
            &b.login.database,
        ))
    });
    for p in pools {
        let (idle, active) = p.counts();
        let s = &p.stats;
        t.push(vec![
            v(p.tenant()),
            v(&p.target.name),
            v(p.target.role.as_str()),
            v(&p.login.user),
            v(&p.login.database),
            v(active),
            v(idle),
            v(p.size()),
            v(p.budget.queue.waiting()),
            v(s.checkouts.load(Ordering::Relaxed)),
            v(s.connects.load(Ordering::Relaxed)),
            v(s.connect_failures.load(Ordering::Relaxed)),
            v(s.wait_timeouts.load(Ordering::Relaxed)),
        ]);
    }
    t
}

fn clients(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        "id",
        "user",
        "database",
        "tenant",
        "addr",
        "connected_s",
        "state",
        "server",
        "server_pid",
        "transactions",
    ]);
    for row in shared.cancels.clients() {
        let c = &row.info.client;
        let age = c
            .since
            .and_then(|s| SystemTime::now().duration_since(s).ok())
            .map(|d| format!("{:.1}", d.as_secs_f64()));
        t.push(vec![
            v(c.id),
            v(&c.user),
            v(&c.database),
            v(&c.tenant),
            c.peer.map(|p| p.to_string()),
            age,
            v(if row.server.is_some() {
                "active"
            } else {
                "idle"
            }),
            row.server.as_ref().map(|(s, _)| s.clone()),
            row.server.as_ref().map(|(_, pid)| pid.to_string()),
            v(c.transactions.load(Ordering::Relaxed)),
        ]);
    }
    t
}

fn servers(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        "server",
        "tenant",
        "user",
        "database",
        "pid",
        "state",
        "client_id",
        "age_s",
    ]);
    for row in shared.cancels.clients() {
        let c = &row.info.client;
        if let Some((server, pid)) = &row.server {
            t.push(vec![
                v(server),
                v(&c.tenant),
                v(&c.user),
                v(&c.database),
                v(pid),
                v("active"),
                v(c.id),
                None,
            ]);
        }
    }
    for p in shared.pools.all() {
        for (pid, age) in p.idle_conns() {
            t.push(vec![
                v(&p.target.name),
                v(p.tenant()),
                v(&p.login.user),
                v(&p.login.database),
                v(pid),
                v("idle"),
                None,
                v(format!("{:.1}", age.as_secs_f64())),
            ]);
        }
    }
    t
}

fn replicas(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        "name",
        "host",
        "port",
        "configured_role",
        "reported_role",
        "writer",
        "state",
        "lag_s",
        "lag_bytes",
        "replay_lsn",
        "replay_paused",
        "evictions",
        "readmissions",
        "circuit",
        "last_error",
    ]);
    let writer = match &**shared.monitor.writer() {
        Writer::Node(i) => Some(*i),
        Writer::Refused(_) => None,
    };
    for (i, n) in shared.monitor.nodes().iter().enumerate() {
        if n.status.state() == crate::lag::health::State::Removed {
            continue;
        }
        let st = &n.status;
        let replay = st.replay_lsn.load(Ordering::Relaxed);
        t.push(vec![
            v(&n.target.name),
            v(&n.target.host),
            v(n.target.port),
            v(if i == 0 { "primary" } else { "replica" }),
            v(match st.claim() {
                Claim::Primary => "primary",
                Claim::Standby => "standby",
                Claim::Unknown => "unknown",
            }),
            v(writer == Some(i)),
            v(st.state().as_str()),
            v(format!("{:.3}", st.lag().as_secs_f64())),
            v(st.lag_bytes.load(Ordering::Relaxed)),
            (replay > 0).then(|| lsn::format(replay)),
            v(st.replay_paused.load(Ordering::Relaxed)),
            v(st.evictions.load(Ordering::Relaxed)),
            v(st.readmissions.load(Ordering::Relaxed)),
            v(if st.breaker.is_open() {
                "open"
            } else {
                "closed"
            }),
            st.last_error.lock().ok().and_then(|e| e.clone()),
        ]);
    }
    t
}

fn tenants(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        "name",
        "paused",
        "clients",
        "max_clients",
        "pool_size",
        "active",
        "waiting",
        "queue_limit",
        "queue_timeout_ms",
        "rate_limit",
        "queue_full",
        "queue_timeouts",
        "clients_refused",
        "rate_refused",
    ]);
    for tn in shared.tenants().all() {
        let active: usize = tn.servers().iter().map(|(_, _, u)| u).sum();
        let q = &tn.queue;
        t.push(vec![
            v(&tn.name),
            v(tn.is_paused()),
            v(tn.clients()),
            v(tn.settings().max_clients),
            v(tn.settings().pool_size),
            v(active),
            v(q.waiting()),
            v(q.limit()),
            v(q.timeout().as_millis()),
            tn.settings()
                .rate_limit
                .map(|r| format!("{}/s burst {}", r.transactions_per_second, r.burst)),
            v(q.stats.queue_full.load(Ordering::Relaxed)),
            v(q.stats.timeouts.load(Ordering::Relaxed)),
            v(tn.stats.clients_refused.load(Ordering::Relaxed)),
            v(tn.stats.rate_refused.load(Ordering::Relaxed)),
        ]);
    }
    t
}

fn stats(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        "tenant",
        "route",
        "transactions",
        "errors",
        "queries",
        "avg_transaction_ms",
        "avg_wait_ms",
    ]);
    for tn in shared.tenants().all() {
        let (wait_sum, wait_count) = tn.metrics.pool_wait_totals();
        for (route, s) in tn.metrics.route_totals() {
            let avg = |sum: f64, n: u64| {
                if n == 0 {
                    "0.000".to_string()
                } else {
                    format!("{:.3}", sum * 1000.0 / n as f64)
                }
            };
            t.push(vec![
                v(&tn.name),
                v(route),
                v(s.ok + s.errors),
                v(s.errors),
                v(s.queries),
                v(avg(s.duration_sum, s.ok + s.errors)),
                v(avg(wait_sum, wait_count)),
            ]);
        }
    }
    t
}

fn config(shared: &Shared) -> Table {
    let mut t = Table::new(&["key", "value"]);
    for (k, val) in shared.config().flat() {
        t.push(vec![v(k), v(val)]);
    }
    t
}
