//! Read/write routing.
//!
//! - [`classify`]: SQL text → READ or WRITE, with the reason (pure).
//! - [`normalize`]: literal stripping for the classifier's shape cache.
//! - [`cache`]: bounded caches in front of the classifier.
//! - [`catalog`]: user-defined volatile functions from the primary's catalog.
//! - [`hint`]: `/* pgrouter:primary */` hints and `SET pgrouter.route`.
//! - [`replicas`]: replica state and the load balancer.
//! - [`consistency`]: read-your-writes positions; [`lsn`]: WAL positions.

pub mod cache;
pub mod catalog;
pub mod classify;
pub mod consistency;
pub mod hint;
pub mod lsn;
pub mod normalize;
pub mod replicas;

use std::sync::atomic::AtomicU64;

/// Routing counters (exported as metrics by the observability layer).
#[derive(Debug, Default)]
pub struct RouteStats {
    /// Statements sqlparser could not parse (sent to the primary).
    pub parse_failures: AtomicU64,
    /// `/* pgrouter:replica */` hints on writes (ignored).
    pub replica_hints_ignored: AtomicU64,
    /// Transactions placed on the primary because they may write.
    pub writes: AtomicU64,
    /// Reads placed on a replica / on the primary.
    pub reads_on_replica: AtomicU64,
    pub reads_on_primary: AtomicU64,
    /// Reads sent to the primary because no replica had replayed the client's writes.
    pub reads_kept_for_consistency: AtomicU64,
    /// Reads placed again because their server failed before answering.
    pub read_retries: AtomicU64,
}
