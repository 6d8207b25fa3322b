//! Thread-per-core session workers.
//!
//! Each worker thread runs a single-threaded tokio runtime; the listener
//! hands every accepted connection to one worker, round-robin. A session
//! then lives on one thread for its whole life, so relaying a transaction
//! never wakes another thread (measured: the multi-threaded scheduler cost
//! ~0.2 futex calls and several µs of CPU per pgbench -S transaction).
//! Pools stay shared across workers.

use super::listener::handle;
use crate::app::Shared;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::sync::{Notify, OwnedSemaphorePermit};

/// An accepted client, on its way to a worker.
pub struct Job {
    pub stream: std::net::TcpStream,
    pub permit: Option<OwnedSemaphorePermit>,
    pub overflow: Option<OwnedSemaphorePermit>,
}

pub struct Workers {
    senders: Vec<mpsc::UnboundedSender<Job>>,
    next: AtomicUsize,
}

impl Workers {
    /// Starts `n` worker threads (0: one per available core).
    pub fn start(n: usize, shared: Arc<Shared>) -> std::io::Result<Workers> {
        let n = if n == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            n
        };
        let mut senders = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = mpsc::unbounded_channel();
            // I/O and timers only: signals and child processes belong to the
            // main runtime (with them enabled, every park here would also
            // check the orphan-process queue).
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()?;
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("pgrouter-worker-{i}"))
                .spawn(move || rt.block_on(run_worker(rx, shared)))?;
            senders.push(tx);
        }
        Ok(Workers {
            senders,
            next: AtomicUsize::new(0),
        })
    }

    /// Hands a connection to the next worker.
    pub fn dispatch(&self, job: Job) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.senders.len();
        // A send fails only if that worker thread died; the client is then
        // closed (dropped), never left hanging.
        let _ = self.senders[i].send(job);
    }
}

async fn run_worker(mut rx: mpsc::UnboundedReceiver<Job>, shared: Arc<Shared>) {
    let live = Arc::new(Live::default());
    while let Some(job) = rx.recv().await {
        let Ok(stream) = tokio::net::TcpStream::from_std(job.stream) else {
            continue;
        };
        let guard = Live::enter(&live);
        tokio::spawn(handle(
            stream,
            shared.clone(),
            job.permit,
            job.overflow,
            guard,
        ));
    }
    // The listener is gone (shutdown): let sessions finish their transactions
    // before this thread's runtime, and the tasks on it, are dropped.
    let limit = shared.config().server.shutdown_timeout.get() + Duration::from_secs(1);
    let _ = tokio::time::timeout(limit, live.all_done()).await;
}

/// Counts a worker's sessions. (A JoinSet would do, at a list entry per
/// session; this is a counter.)
#[derive(Default)]
struct Live {
    count: AtomicUsize,
    none_left: Notify,
}

/// Held by a session's task; leaving (or unwinding) counts it out.
pub(crate) struct LiveGuard(Arc<Live>);

impl Live {
    fn enter(live: &Arc<Live>) -> LiveGuard {
        live.count.fetch_add(1, Ordering::AcqRel);
        LiveGuard(live.clone())
    }

    async fn all_done(&self) {
        loop {
            let notified = self.none_left.notified();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none_left.notify_waiters();
        }
    }
}
