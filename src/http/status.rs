//! `/status`: every server with its configured and reported role, health
//! state, lag, circuit and pool usage, where writes go, and each tenant's
//! clients, queue and connections (JSON).

use crate::app::Shared;
use crate::lag::elect::{Claim, Writer};
use crate::router::lsn;
use std::fmt::Write;
use std::sync::atomic::Ordering;

pub fn render(shared: &Shared) -> String {
    let monitor = &shared.monitor;
    let mut out = String::from("{");
    let monitored = shared.config().lag.enabled && shared.config().routing.enabled;
    let _ = write!(
        out,
        "\"monitor\":{monitored},\"max_lag_seconds\":{:.3},",
        shared.config().lag.max_lag.get().as_secs_f64()
    );
    match &**monitor.writer() {
        Writer::Node(i) => {
            let name = monitor
                .nodes()
                .get(*i)
                .map(|n| n.target.name.clone())
                .unwrap_or_default();
            let _ = write!(out, "\"writer\":{},\"writes_refused\":null,", quote(&name));
        }
        Writer::Refused(reason) => {
            let _ = write!(out, "\"writer\":null,\"writes_refused\":{},", quote(reason));
        }
    }
    let _ = write!(out, "\"clients\":{},\"servers\":[", shared.client_count());
    let pools = shared.pools.all();
    let mut first = true;
    for (i, node) in monitor.nodes().iter().enumerate() {
        if node.status.state() == crate::lag::health::State::Removed {
            continue;
        }
        let st = &node.status;
        let (mut idle, mut used) = (0, 0);
        for p in pools.iter().filter(|p| *p.target == *node.target) {
            let (a, b) = p.counts();
            idle += a;
            used += b;
        }
        let reported = match st.claim() {
            Claim::Primary => "primary",
            Claim::Standby => "standby",
            Claim::Unknown => "unknown",
        };
        let last_error = st
            .last_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .map(|e| quote(&e))
            .unwrap_or_else(|| "null".into());
        let lsn_of = |v: u64| {
            if v == 0 {
                "null".to_string()
            } else {
                quote(&lsn::format(v))
            }
        };
        let _ = write!(
            out,
            "{}{{\"name\":{},\"host\":{},\"port\":{},\"configured_role\":\"{}\",\"reported_role\":\"{}\",\
             \"state\":\"{}\",\"lag_seconds\":{:.3},\"lag_bytes\":{},\"current_lsn\":{},\"replay_lsn\":{},\
             \"replay_paused\":{},\"evictions\":{},\"readmissions\":{},\"probe_failures\":{},\
             \"circuit\":\"{}\",\"last_error\":{},\"server_connections\":{{\"idle\":{},\"in_use\":{}}}}}",
            if std::mem::take(&mut first) { "" } else { "," },
            quote(&node.target.name),
            quote(&node.target.host),
            node.target.port,
            if i == 0 { "primary" } else { "replica" },
            reported,
            st.state().as_str(),
            st.lag().as_secs_f64(),
            st.lag_bytes.load(Ordering::Relaxed),
            lsn_of(st.current_lsn.load(Ordering::Relaxed)),
            lsn_of(st.replay_lsn.load(Ordering::Relaxed)),
            st.replay_paused.load(Ordering::Relaxed),
            st.evictions.load(Ordering::Relaxed),
            st.readmissions.load(Ordering::Relaxed),
            st.probe_failures.load(Ordering::Relaxed),
            if st.breaker.is_open() { "open" } else { "closed" },
            last_error,
            idle,
            used,
        );
    }
    out.push_str("],\"tenants\":[");
    for (i, t) in shared.tenants().all().iter().enumerate() {
        let q = &t.queue;
        let _ = write!(
            out,
            "{}{{\"name\":{},\"clients\":{},\"max_clients\":{},\"pool_size\":{},\"waiting\":{},\
             \"queue_limit\":{},\"queue_timeout_ms\":{},\"waits\":{},\"queue_full\":{},\"queue_timeouts\":{},\
             \"clients_refused\":{},\"rate_delayed\":{},\"rate_refused\":{},\"paused\":{},\"transactions\":{},\"servers\":[",
            if i == 0 { "" } else { "," },
            quote(&t.name),
            t.clients(),
            t.settings().max_clients,
            t.settings().pool_size,
            q.waiting(),
            q.limit(),
            q.timeout().as_millis(),
            q.stats.waits.load(Ordering::Relaxed),
            q.stats.queue_full.load(Ordering::Relaxed),
            q.stats.timeouts.load(Ordering::Relaxed),
            t.stats.clients_refused.load(Ordering::Relaxed),
            t.stats.rate_delayed.load(Ordering::Relaxed),
            t.stats.rate_refused.load(Ordering::Relaxed),
            t.is_paused(),
            t.metrics
                .route_totals()
                .iter()
                .map(|(_, r)| r.ok + r.errors)
                .sum::<u64>(),
        );
        for (j, (server, open, in_use)) in t.servers().iter().enumerate() {
            let _ = write!(
                out,
                "{}{{\"name\":{},\"open\":{open},\"in_use\":{in_use}}}",
                if j == 0 { "" } else { "," },
                quote(server),
            );
        }
        out.push_str("]}");
    }
    out.push_str("]}");
    out
}

/// A JSON string literal.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoting() {
        assert_eq!(
            super::quote("a\"b\\c\nd\u{1}"),
            "\"a\\\"b\\\\c\\nd\\u0001\""
        );
    }
}
