//! Scrape-time metrics: read from the router's state when `/metrics` is
//! fetched, then encoded with the registry's hot-path families.

use super::MetricsError;
use crate::app::Shared;
use crate::lag::elect::Writer;
use crate::lag::health::State;
use crate::router::cache::STATS as CACHE;
use crate::router::RouteReason;
use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, GaugeVec, IntCounterVec, Opts, TextEncoder};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

const STATES: [State; 5] = [
    State::Starting,
    State::Healthy,
    State::Evicted,
    State::Down,
    State::Misconfigured,
];

/// Collects families built at scrape time.
#[derive(Default)]
struct Families(Vec<MetricFamily>);

impl Families {
    fn gauge<'a>(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
        rows: impl IntoIterator<Item = (Vec<&'a str>, f64)>,
    ) -> Result<(), MetricsError> {
        let v = GaugeVec::new(Opts::new(name, help), labels)?;
        for (values, x) in rows {
            v.with_label_values(&values).set(x);
        }
        self.0.extend(v.collect());
        Ok(())
    }

    fn counter<'a>(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
        rows: impl IntoIterator<Item = (Vec<&'a str>, u64)>,
    ) -> Result<(), MetricsError> {
        let v = IntCounterVec::new(Opts::new(name, help), labels)?;
        for (values, x) in rows {
            v.with_label_values(&values).inc_by(x);
        }
        self.0.extend(v.collect());
        Ok(())
    }
}

/// The whole `/metrics` page in the Prometheus text format.
pub fn render(shared: &Shared) -> Result<String, MetricsError> {
    let mut f = Families::default();
    clients_and_pools(shared, &mut f)?;
    servers(shared, &mut f)?;
    routing(shared, &mut f)?;
    logins(shared, &mut f)?;
    f.gauge(
        "pgrouter_build_info",
        "pgrouter's version (always 1).",
        &["version"],
        [(vec![env!("CARGO_PKG_VERSION")], 1.0)],
    )?;
    f.gauge(
        "pgrouter_start_time_seconds",
        "When this router started, in seconds since the Unix epoch.",
        &[],
        [(vec![], shared.started_unix)],
    )?;
    let mut all = shared.metrics.registry.gather();
    all.extend(f.0);
    all.retain(|mf| !mf.get_metric().is_empty());
    all.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = Vec::new();
    TextEncoder::new().encode(&all, &mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn logins(shared: &Shared, f: &mut Families) -> Result<(), MetricsError> {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &shared.logins.stats;
    f.counter(
        "pgrouter_logins_total",
        "Client logins by result: ok, failed (wrong password, unknown user, timeout), locked_out (refused: too many failures from the address).",
        &["result"],
        [
            (vec!["ok"], s.ok.load(Relaxed)),
            (vec!["failed"], s.failed.load(Relaxed)),
            (vec!["locked_out"], s.locked_out.load(Relaxed)),
        ],
    )?;
    f.gauge(
        "pgrouter_login_locked_addresses",
        "Client addresses refused now for too many failed logins ([auth] max_failed_logins).",
        &[],
        [(
            vec![],
            shared.logins.locked_addresses(std::time::Instant::now()) as f64,
        )],
    )
}

fn clients_and_pools(shared: &Shared, f: &mut Families) -> Result<(), MetricsError> {
    let tenants = shared.tenants();
    let tenants = tenants.all();
    // (server, tenant) -> (active, idle)
    let mut conns: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    for p in shared.pools.all() {
        let (idle, used) = p.counts();
        let e = conns
            .entry((p.target.name.clone(), p.tenant().to_string()))
            .or_default();
        e.0 += used;
        e.1 += idle;
    }
    let mut clients = Vec::new();
    for t in tenants {
        let active: usize = t.servers().iter().map(|(_, _, in_use)| in_use).sum();
        let waiting = t.queue.waiting();
        let idle = t.clients().saturating_sub(active + waiting);
        clients.push((t.name.clone(), active, waiting, idle));
    }
    f.gauge(
        "pgrouter_clients",
        "Connected clients by tenant and state (active: holds a server connection; waiting: queued for one; idle).",
        &["tenant", "state"],
        clients.iter().flat_map(|(t, a, w, i)| {
            [
                (vec![&**t, "active"], *a as f64),
                (vec![&**t, "waiting"], *w as f64),
                (vec![&**t, "idle"], *i as f64),
            ]
        }),
    )?;
    f.gauge(
        "pgrouter_client_connections",
        "Connected clients, all tenants.",
        &[],
        [(vec![], shared.client_count() as f64)],
    )?;
    f.gauge(
        "pgrouter_max_client_connections",
        "server.max_client_conn.",
        &[],
        [(vec![], shared.config().server.max_client_conn as f64)],
    )?;
    f.gauge(
        "pgrouter_server_connections",
        "Open server connections by server, tenant and state (active: lent to a client; idle: in the pool).",
        &["server", "tenant", "state"],
        conns.iter().flat_map(|((s, t), (a, i))| {
            [
                (vec![s.as_str(), t.as_str(), "active"], *a as f64),
                (vec![s.as_str(), t.as_str(), "idle"], *i as f64),
            ]
        }),
    )?;
    f.gauge(
        "pgrouter_tenant_pool_size",
        "Server connections a tenant may use on each server (pool_size).",
        &["tenant"],
        tenants
            .iter()
            .map(|t| (vec![&*t.name], t.settings().pool_size as f64)),
    )?;
    f.gauge(
        "pgrouter_tenant_max_clients",
        "Clients a tenant may connect (max_clients).",
        &["tenant"],
        tenants
            .iter()
            .map(|t| (vec![&*t.name], t.settings().max_clients as f64)),
    )?;
    f.counter(
        "pgrouter_tenant_rejections_total",
        "Requests refused by a tenant's bulkhead, by reason (queue_full, queue_timeout: 53300; max_clients: 53300 at login; rate_limited: 53400).",
        &["tenant", "reason"],
        tenants.iter().flat_map(|t| {
            let q = &t.queue.stats;
            let s = &t.stats;
            [
                (vec![&*t.name, "queue_full"], q.queue_full.load(Ordering::Relaxed)),
                (vec![&*t.name, "queue_timeout"], q.timeouts.load(Ordering::Relaxed)),
                (vec![&*t.name, "max_clients"], s.clients_refused.load(Ordering::Relaxed)),
                (vec![&*t.name, "rate_limited"], s.rate_refused.load(Ordering::Relaxed)),
            ]
        }),
    )?;
    f.counter(
        "pgrouter_tenant_queued_total",
        "Transactions that had to queue for a server connection.",
        &["tenant"],
        tenants
            .iter()
            .map(|t| (vec![&*t.name], t.queue.stats.waits.load(Ordering::Relaxed))),
    )?;
    f.counter(
        "pgrouter_tenant_rate_delayed_total",
        "Transactions delayed by a tenant's rate limit (then admitted).",
        &["tenant"],
        tenants
            .iter()
            .map(|t| (vec![&*t.name], t.stats.rate_delayed.load(Ordering::Relaxed))),
    )?;
    Ok(())
}

fn servers(shared: &Shared, f: &mut Families) -> Result<(), MetricsError> {
    let nodes = shared.monitor.nodes();
    let name = |i: usize| nodes[i].target.name.as_str();
    // Removed replicas (by a reload) are not exported.
    let live: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].status.state() != State::Removed)
        .collect();
    let replicas: Vec<usize> = live.iter().copied().filter(|&i| i > 0).collect();
    f.gauge(
        "pgrouter_server_state",
        "Health state of each server (1 for its current state, 0 for the others).",
        &["server", "state"],
        live.iter().copied().flat_map(|i| {
            let now = nodes[i].status.state();
            STATES.map(|s| (vec![name(i), s.as_str()], (s == now) as u8 as f64))
        }),
    )?;
    let writer = match &**shared.monitor.writer() {
        Writer::Node(i) => Some(*i),
        Writer::Refused(_) => None,
    };
    f.gauge(
        "pgrouter_server_is_writer",
        "1 for the server that takes writes now.",
        &["server"],
        live.iter()
            .copied()
            .map(|i| (vec![name(i)], (writer == Some(i)) as u8 as f64)),
    )?;
    f.gauge(
        "pgrouter_server_circuit_open",
        "1 while a server's circuit breaker is open (new connections refused).",
        &["server"],
        live.iter().copied().map(|i| {
            (
                vec![name(i)],
                nodes[i].status.breaker.is_open() as u8 as f64,
            )
        }),
    )?;
    f.counter(
        "pgrouter_server_probe_failures_total",
        "Failed health probes per server.",
        &["server"],
        live.iter().copied().map(|i| {
            (
                vec![name(i)],
                nodes[i].status.probe_failures.load(Ordering::Relaxed),
            )
        }),
    )?;
    let mut per_server: BTreeMap<&str, [u64; 3]> = BTreeMap::new();
    let pools = shared.pools.all();
    for p in &pools {
        let e = per_server.entry(p.target.name.as_str()).or_default();
        e[0] += p.stats.connects.load(Ordering::Relaxed);
        e[1] += p.stats.connect_failures.load(Ordering::Relaxed);
        e[2] += p.stats.discarded.load(Ordering::Relaxed);
    }
    f.counter(
        "pgrouter_server_connects_total",
        "Server connections opened.",
        &["server"],
        per_server.iter().map(|(s, v)| (vec![*s], v[0])),
    )?;
    f.counter(
        "pgrouter_server_connect_failures_total",
        "Server connections that failed to open (refused, timed out, login failed).",
        &["server"],
        per_server.iter().map(|(s, v)| (vec![*s], v[1])),
    )?;
    f.counter(
        "pgrouter_server_connections_discarded_total",
        "Server connections closed instead of reused (broken, dirty, expired).",
        &["server"],
        per_server.iter().map(|(s, v)| (vec![*s], v[2])),
    )?;
    f.gauge(
        "pgrouter_replica_lag_seconds",
        "Replication lag of each replica as last probed (seconds behind the primary's last commit).",
        &["server"],
        replicas
            .iter()
            .copied()
            .map(|i| (vec![name(i)], nodes[i].status.lag().as_secs_f64())),
    )?;
    f.gauge(
        "pgrouter_replica_lag_bytes",
        "Replication lag of each replica in bytes of WAL not yet replayed.",
        &["server"],
        replicas.iter().copied().map(|i| {
            (
                vec![name(i)],
                nodes[i].status.lag_bytes.load(Ordering::Relaxed) as f64,
            )
        }),
    )?;
    f.counter(
        "pgrouter_replica_evictions_total",
        "Times a replica was taken out of reads for lag.",
        &["server"],
        replicas.iter().copied().map(|i| {
            (
                vec![name(i)],
                nodes[i].status.evictions.load(Ordering::Relaxed),
            )
        }),
    )?;
    f.counter(
        "pgrouter_replica_readmissions_total",
        "Times a replica was given reads again after catching up or coming back.",
        &["server"],
        replicas.iter().map(|&i| {
            (
                vec![name(i)],
                nodes[i].status.readmissions.load(Ordering::Relaxed),
            )
        }),
    )?;
    let lag = &shared.config().lag;
    f.gauge(
        "pgrouter_replica_max_lag_seconds",
        "The eviction threshold (lag.max_lag).",
        &[],
        [(vec![], lag.max_lag.get().as_secs_f64())],
    )?;
    f.gauge(
        "pgrouter_replica_max_lag_bytes",
        "The eviction threshold in bytes (lag.max_lag_bytes; 0: not used).",
        &[],
        [(vec![], lag.max_lag_bytes as f64)],
    )?;
    Ok(())
}

fn routing(shared: &Shared, f: &mut Families) -> Result<(), MetricsError> {
    let stats = &shared.route_stats;
    let mut rows = Vec::new();
    for r in RouteReason::ALL {
        rows.push((vec!["primary", r.as_str()], stats.decisions(false, r)));
        if r.on_replica() {
            rows.push((vec!["replica", r.as_str()], stats.decisions(true, r)));
        }
    }
    f.counter(
        "pgrouter_routing_decisions_total",
        "Transactions placed, by target (primary/replica) and the reason for it.",
        &["target", "reason"],
        rows,
    )?;
    f.counter(
        "pgrouter_read_retries_total",
        "Reads placed again because their server failed before answering.",
        &[],
        [(vec![], stats.read_retries.load(Ordering::Relaxed))],
    )?;
    f.counter(
        "pgrouter_replica_hints_ignored_total",
        "/* pgrouter:replica */ hints on writes (ignored: writes go to the primary).",
        &[],
        [(vec![], stats.replica_hints_ignored.load(Ordering::Relaxed))],
    )?;
    f.counter(
        "pgrouter_classifier_cache_hits_total",
        "Statement classifications answered from cache, by kind (exact text or literal-normalized shape).",
        &["kind"],
        [
            (vec!["exact"], CACHE.exact_hits.load(Ordering::Relaxed)),
            (vec!["shape"], CACHE.shape_hits.load(Ordering::Relaxed)),
        ],
    )?;
    f.counter(
        "pgrouter_classifier_cache_misses_total",
        "Statements parsed by the classifier (cache misses).",
        &[],
        [(vec![], CACHE.misses.load(Ordering::Relaxed))],
    )?;
    let prepared = &crate::prepared::cache::STATS;
    f.counter(
        "pgrouter_prepared_statements_total",
        "Uses of clients' named statements by whether the server connection had it (hit) or pgrouter prepared it there (prepared).",
        &["result"],
        [
            (vec!["hit"], prepared.hits.load(Ordering::Relaxed)),
            (vec!["prepared"], prepared.prepares.load(Ordering::Relaxed)),
        ],
    )?;
    f.counter(
        "pgrouter_prepared_statement_evictions_total",
        "Statements closed on a server connection to stay within max_prepared_statements.",
        &[],
        [(vec![], prepared.evictions.load(Ordering::Relaxed))],
    )?;
    Ok(())
}
