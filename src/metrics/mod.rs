//! Prometheus metrics (`/metrics`), docs/observability.md lists them all.
//!
//! Two kinds:
//! - hot-path metrics (transactions, queries, durations, pool waits) live in
//!   a [`prometheus::Registry`]; each tenant resolves its label values once
//!   ([`TenantMetrics`]) so a transaction costs a few atomic adds, no lookups;
//! - everything that is already state somewhere (connections, queues, lag,
//!   replica states, rejections, routing decisions, cache hits) is read at
//!   scrape time by [`snapshot`], so the metrics can never drift from it.
//!
//! Labels are bounded: tenants and servers come from the config, the other
//! labels from fixed sets. Never a client, user or query.

pub mod snapshot;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

/// Buckets from 100 µs to 30 s: pooled transactions are sub-millisecond,
/// queue waits and slow statements reach seconds.
pub const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Where a transaction ran: the `route` label.
pub const ROUTES: [&str; 2] = ["primary", "replica"];
/// How a transaction ended: the `outcome` label (`error`: the server sent
/// at least one ErrorResponse during it).
pub const OUTCOMES: [&str; 2] = ["ok", "error"];

#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// The registry and the hot-path metric families.
pub struct Metrics {
    pub registry: Registry,
    transactions: IntCounterVec,
    queries: IntCounterVec,
    duration: HistogramVec,
    pool_wait: HistogramVec,
}

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let transactions = IntCounterVec::new(
            Opts::new(
                "pgrouter_transactions_total",
                "Transactions (server connection loans) by tenant, route and outcome.",
            ),
            &["tenant", "route", "outcome"],
        )?;
        let queries = IntCounterVec::new(
            Opts::new(
                "pgrouter_queries_total",
                "Queries (simple Query and extended Execute messages) by tenant and route.",
            ),
            &["tenant", "route"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "pgrouter_transaction_duration_seconds",
                "Time a transaction held its server connection, by tenant and route.",
            )
            .buckets(BUCKETS.to_vec()),
            &["tenant", "route"],
        )?;
        let pool_wait = HistogramVec::new(
            HistogramOpts::new(
                "pgrouter_pool_wait_seconds",
                "Time a transaction waited for a server connection (zero when one was idle), by tenant.",
            )
            .buckets(BUCKETS.to_vec()),
            &["tenant"],
        )?;
        registry.register(Box::new(transactions.clone()))?;
        registry.register(Box::new(queries.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(pool_wait.clone()))?;
        Ok(Self {
            registry,
            transactions,
            queries,
            duration,
            pool_wait,
        })
    }

    /// The handles of one tenant's series (created at zero, so they are
    /// exported before the first transaction).
    pub fn tenant(&self, tenant: &str) -> TenantMetrics {
        let route = |r: usize| {
            let tx = |o: usize| {
                self.transactions
                    .with_label_values(&[tenant, ROUTES[r], OUTCOMES[o]])
            };
            RouteMetrics {
                transactions: [tx(0), tx(1)],
                queries: self.queries.with_label_values(&[tenant, ROUTES[r]]),
                duration: self.duration.with_label_values(&[tenant, ROUTES[r]]),
            }
        };
        TenantMetrics {
            routes: [route(0), route(1)],
            pool_wait: self.pool_wait.with_label_values(&[tenant]),
        }
    }
}

/// One tenant's series on one route.
pub struct RouteMetrics {
    transactions: [IntCounter; 2],
    queries: IntCounter,
    duration: Histogram,
}

/// Counts of one tenant on one route.
pub struct RouteTotals {
    pub ok: u64,
    pub errors: u64,
    pub queries: u64,
    pub duration_sum: f64,
}

/// One tenant's hot-path series, resolved once.
pub struct TenantMetrics {
    routes: [RouteMetrics; 2],
    pool_wait: Histogram,
}

impl TenantMetrics {
    /// Records a finished transaction.
    pub fn transaction(&self, on_replica: bool, failed: bool, queries: u64, seconds: f64) {
        let r = &self.routes[on_replica as usize];
        r.transactions[failed as usize].inc();
        if queries > 0 {
            r.queries.inc_by(queries);
        }
        r.duration.observe(seconds);
    }

    /// Totals per route (SHOW STATS).
    pub fn route_totals(&self) -> [(&'static str, RouteTotals); 2] {
        [0, 1].map(|i| {
            let r = &self.routes[i];
            (
                ROUTES[i],
                RouteTotals {
                    ok: r.transactions[0].get(),
                    errors: r.transactions[1].get(),
                    queries: r.queries.get(),
                    duration_sum: r.duration.get_sample_sum(),
                },
            )
        })
    }

    /// (sum of seconds, count) of pool waits.
    pub fn pool_wait_totals(&self) -> (f64, u64) {
        (
            self.pool_wait.get_sample_sum(),
            self.pool_wait.get_sample_count(),
        )
    }

    /// Records how long a transaction waited for its server connection.
    pub fn pool_wait(&self, seconds: f64) {
        self.pool_wait.observe(seconds);
    }
}
