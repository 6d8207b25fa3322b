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

use classify::Reason;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a transaction went where it did: the `reason` label of
/// `pgrouter_routing_decisions_total` (a fixed set: bounded cardinality).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteReason {
    /// A plain read (a replica, or the primary when one is the fallback).
    Read,
    ReadOnlyTransaction,
    /// `/* pgrouter:primary|replica */` or `SET pgrouter.route`.
    Hint,
    Write,
    ExplicitTransaction,
    LockingClause,
    SelectInto,
    DataModifyingCte,
    SideEffectingFunction,
    ParseFailure,
    /// Bind/Execute of a statement prepared earlier, a named Parse, a
    /// FunctionCall: no SQL text to classify.
    PreparedStatement,
    /// No replica had replayed the client's last write (or the time pin).
    ReadYourWrites,
    /// Every replica usable otherwise is evicted for lag.
    ReplicaLag,
    /// No replica is healthy (down, starting, misconfigured).
    NoHealthyReplica,
    /// `primary_reads = true`: the primary's turn in the rotation.
    LoadBalance,
    /// Routing disabled or no replicas configured.
    RoutingOff,
    /// Session mode after a write: the session stays on the primary.
    SessionPinned,
}

impl RouteReason {
    pub const ALL: [RouteReason; 17] = [
        RouteReason::Read,
        RouteReason::ReadOnlyTransaction,
        RouteReason::Hint,
        RouteReason::Write,
        RouteReason::ExplicitTransaction,
        RouteReason::LockingClause,
        RouteReason::SelectInto,
        RouteReason::DataModifyingCte,
        RouteReason::SideEffectingFunction,
        RouteReason::ParseFailure,
        RouteReason::PreparedStatement,
        RouteReason::ReadYourWrites,
        RouteReason::ReplicaLag,
        RouteReason::NoHealthyReplica,
        RouteReason::LoadBalance,
        RouteReason::RoutingOff,
        RouteReason::SessionPinned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RouteReason::Read => "read",
            RouteReason::ReadOnlyTransaction => "read_only_transaction",
            RouteReason::Hint => "hint",
            RouteReason::Write => "write",
            RouteReason::ExplicitTransaction => "explicit_transaction",
            RouteReason::LockingClause => "locking_clause",
            RouteReason::SelectInto => "select_into",
            RouteReason::DataModifyingCte => "data_modifying_cte",
            RouteReason::SideEffectingFunction => "side_effecting_function",
            RouteReason::ParseFailure => "parse_failure",
            RouteReason::PreparedStatement => "prepared_statement",
            RouteReason::ReadYourWrites => "read_your_writes",
            RouteReason::ReplicaLag => "replica_lag",
            RouteReason::NoHealthyReplica => "no_healthy_replica",
            RouteReason::LoadBalance => "load_balance",
            RouteReason::RoutingOff => "routing_off",
            RouteReason::SessionPinned => "session_pinned",
        }
    }

    /// Whether a transaction with this reason can land on a replica.
    pub fn on_replica(self) -> bool {
        matches!(
            self,
            RouteReason::Read | RouteReason::ReadOnlyTransaction | RouteReason::Hint
        )
    }
}

impl From<Reason> for RouteReason {
    fn from(r: Reason) -> Self {
        match r {
            Reason::Read | Reason::Empty => RouteReason::Read,
            Reason::ReadOnlyTransaction => RouteReason::ReadOnlyTransaction,
            Reason::Write => RouteReason::Write,
            Reason::Transaction => RouteReason::ExplicitTransaction,
            Reason::Locking => RouteReason::LockingClause,
            Reason::SelectInto => RouteReason::SelectInto,
            Reason::ModifyingCte => RouteReason::DataModifyingCte,
            Reason::WriteFunction => RouteReason::SideEffectingFunction,
            Reason::ParseFailure => RouteReason::ParseFailure,
        }
    }
}

const REASONS: usize = RouteReason::ALL.len();

/// Routing counters (exported by [`crate::metrics`]).
#[derive(Debug, Default)]
pub struct RouteStats {
    /// Transactions placed, by [primary, replica] and reason.
    decisions: [[AtomicU64; REASONS]; 2],
    /// `/* pgrouter:replica */` hints on writes (ignored).
    pub replica_hints_ignored: AtomicU64,
    /// Reads placed again because their server failed before answering.
    pub read_retries: AtomicU64,
}

impl RouteStats {
    /// Counts one placement.
    pub fn record(&self, on_replica: bool, reason: RouteReason) {
        self.decisions[on_replica as usize][reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Placements so far on the primary (`false`) or a replica for `reason`.
    pub fn decisions(&self, on_replica: bool, reason: RouteReason) -> u64 {
        self.decisions[on_replica as usize][reason as usize].load(Ordering::Relaxed)
    }
}
