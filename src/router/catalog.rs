//! User-defined functions that can write, read from the primary's catalog.
//!
//! A SELECT that calls a VOLATILE function (`pg_proc.provolatile = 'v'`)
//! outside pg_catalog/information_schema may write, so it goes to the
//! primary. The list is loaded when a database's first client logs in
//! (before any of its reads are routed) and refreshed every
//! `[routing] catalog_refresh`. Names from every database are merged: a
//! function volatile anywhere is treated as a write everywhere (safe).

use crate::backend::{BackendError, ServerConn};
use std::collections::HashSet;
use std::time::Duration;

const VOLATILE_FUNCTIONS_SQL: &str =
    "SELECT coalesce(string_agg(DISTINCT lower(p.proname), ','), '') \
     FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
     WHERE p.provolatile = 'v' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg_toast%'";

/// Names (lower-cased) of the database's user-defined volatile functions.
pub async fn volatile_functions(
    conn: &mut ServerConn,
    timeout: Duration,
) -> Result<HashSet<String>, BackendError> {
    let list = conn
        .query_value(VOLATILE_FUNCTIONS_SQL, timeout)
        .await?
        .unwrap_or_default();
    Ok(list
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect())
}
