//! Read/write routing.
//!
//! - [`classify`]: SQL text → READ or WRITE, with the reason (pure).
//! - [`normalize`]: literal stripping for the classifier's shape cache.
//! - [`cache`]: bounded caches in front of the classifier.

pub mod cache;
pub mod classify;
pub mod normalize;
