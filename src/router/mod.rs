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
