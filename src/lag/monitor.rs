//! The per-server monitor task: probe, publish, log what changed, sleep.

use super::elect::Writer;
use super::health::State;
use super::probe::{ProbeConn, ProbeLogin};
use super::Published;
use crate::app::Shared;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Probes node `idx` until shutdown or until a reload removes it.
pub async fn run(shared: Arc<Shared>, idx: usize, login: ProbeLogin) {
    let Some(node) = shared.monitor.nodes().get(idx).cloned() else {
        return;
    };
    let target = node.target.clone();
    let mut conn: Option<ProbeConn> = None;
    let mut failures: u32 = 0;
    loop {
        if node.status.state() == State::Removed {
            tracing::info!(server = %target, "removed by a reload: no longer probed");
            return;
        }
        // Read each round: a reload may change them.
        let (interval, timeout, max_backoff) = {
            let config = shared.config();
            let cfg = &config.lag;
            (
                cfg.probe_interval.get(),
                cfg.probe_timeout.get(),
                cfg.max_backoff.get(),
            )
        };
        let started = Instant::now();
        let result = match &conn {
            Some(c) => c.probe(&target, timeout).await,
            None => match ProbeConn::connect(&target, &login).await {
                Ok(c) => {
                    let r = c.probe(&target, timeout).await;
                    conn = Some(c);
                    r
                }
                Err(e) => Err(e),
            },
        };
        match &result {
            Ok(p) => {
                failures = 0;
                if let (Some(l), Some(r)) = (p.replay_lsn, idx.checked_sub(1)) {
                    if let Some(replica) = shared.replicas().list.get(r) {
                        replica.observe_replay(l);
                    }
                }
            }
            Err(_) => {
                // A fresh connection next time (this one may be wedged).
                conn = None;
                failures = failures.saturating_add(1);
            }
        }
        let published = shared.monitor.publish(idx, &result, Instant::now());
        report(&shared, idx, &result, &published);
        let delay = match failures {
            0 => interval,
            n => (interval * 2u32.saturating_pow(n - 1)).min(max_backoff.max(interval)),
        };
        tokio::select! {
            _ = tokio::time::sleep_until((started + delay).into()) => {}
            _ = shared.shutdown.wait() => return,
        }
    }
}

fn report(
    shared: &Shared,
    idx: usize,
    result: &Result<super::probe::Probe, super::LagError>,
    published: &Published,
) {
    let Some(node) = shared.monitor.nodes().get(idx).cloned() else {
        return;
    };
    let target = &node.target;
    let lag_ms = node.status.lag().as_millis();
    let lag_bytes = node
        .status
        .lag_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    match (published.changed, result) {
        (Some(State::Down), Err(e)) => {
            tracing::warn!(server = %target, error = %e, "server down: no new traffic by role until it answers again");
            // Its idle connections are most likely dead too.
            shared.pools.close_idle_for(target);
        }
        (Some(State::Evicted), _) => {
            tracing::warn!(server = %target, lag_ms, lag_bytes, "replica evicted: lag over the threshold");
        }
        (Some(State::Misconfigured), Ok(p)) => {
            tracing::error!(server = %target, in_recovery = p.in_recovery, "server does not have its configured role; no traffic by role goes to it");
        }
        (Some(State::Healthy), _) => {
            tracing::info!(server = %target, lag_ms, "server healthy: taking traffic");
        }
        _ => {}
    }
    if published.writer_changed {
        match &**shared.monitor.writer() {
            Writer::Node(w) => {
                let name = shared
                    .monitor
                    .nodes()
                    .get(*w)
                    .map(|n| n.target.to_string())
                    .unwrap_or_default();
                tracing::warn!(writer = %name, "writes now go to {name}");
            }
            Writer::Refused(reason) => tracing::error!(%reason, "writes refused"),
        }
    }
}

/// Waits until every server has been probed once, up to `limit`.
pub async fn first_round(shared: &Shared, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !shared.monitor.all_probed() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
