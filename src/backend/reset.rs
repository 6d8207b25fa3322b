//! Cleaning a server connection whose client left mid-transaction.
//!
//! PgBouncer closes such a connection but does not cancel a statement that is
//! still running, so locks stay held until it ends (a `pg_sleep(60)` holds
//! them a full minute). Here a running statement is cancelled first, then
//! any open extended-protocol exchange is synced, COPY is failed, and an open
//! transaction is rolled back. Only a connection that comes back idle and
//! clean is reused; anything else is closed.

use super::conn::ServerConn;
use super::connect::send_cancel;
use super::tracker::{CopyMode, TxStatus};
use crate::protocol::messages;
use bytes::BytesMut;
use std::time::Duration;

/// Returns true when `conn` is clean and may go back to the pool.
pub async fn recover(conn: &mut ServerConn, timeout: Duration) -> bool {
    if conn.broken {
        return false;
    }
    match tokio::time::timeout(timeout, recover_inner(conn, timeout)).await {
        Ok(Ok(())) => conn.is_reusable(),
        _ => {
            conn.broken = true;
            false
        }
    }
}

async fn recover_inner(
    conn: &mut ServerConn,
    timeout: Duration,
) -> Result<(), super::BackendError> {
    let t = &conn.tracker;
    if t.pending() > 0 {
        // A statement may be running and holding locks: stop it now.
        send_cancel(&conn.target, conn.pid, conn.secret, timeout).await?;
    }
    let mut out = BytesMut::new();
    if matches!(conn.tracker.copy(), CopyMode::In | CopyMode::Both) {
        messages::copy_fail(&mut out, "pgrouter: client disconnected");
    }
    if conn.tracker.unsynced() {
        messages::sync(&mut out);
        conn.tracker.client_sent(b'S');
    }
    if !out.is_empty() {
        conn.write_all(&out).await?;
    }
    conn.drain().await?;
    if conn.tracker.status() != TxStatus::Idle {
        conn.run_internal("ROLLBACK", timeout).await?;
    }
    Ok(())
}
