//! The per-client loop: wait for the client's next message, borrow a server
//! connection, relay until the server reports the transaction is over
//! (ReadyForQuery 'I' with nothing owed), give the connection back.
//!
//! Invariants:
//! - every server byte is fed to the connection's response tracker before it
//!   is forwarded, so "is this connection clean?" is always known;
//! - a connection whose client vanished mid-transaction goes through
//!   [`crate::backend::reset::recover`] (cancel, sync, rollback) or is closed;
//! - client messages are forwarded whole; server bytes are streamed as they
//!   arrive (rows are never decoded).

use super::handshake::LoggedIn;
use super::params;
use super::route::Decision;
use super::session_set::{self, Change};
use super::stream::ClientStream;
use super::ClientError;
use crate::app::Shared;
use crate::backend::conn::{Params, Setting};
use crate::backend::tracker::TxStatus;
use crate::backend::{reset, BackendError};
use crate::config::{ConsistencyScope, PoolMode, ReadYourWrites};
use crate::pool::{Pool, PoolError, PooledConn};
use crate::prepared::rewrite::Rewriter;
use crate::prepared::splice::Splicer;
use crate::prepared::{drops_all_statements, may_drop_statements, ClientStatements};
use crate::protocol::framing;
use crate::protocol::messages::{self, Severity};
use crate::protocol::sqlstate;
use crate::router::consistency::Position;
use crate::router::hint::Route;
use crate::router::RouteReason;
use bytes::{Buf, BytesMut};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// A transaction block the client was told about but no server has: a
/// deferred BEGIN (answered by the router) whose first statement was
/// refused (pool, rate limit, no writer) leaves the client in a failed
/// block, as PostgreSQL would, until it ends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VirtualTx {
    None,
    /// BEGIN answered, nothing on a server yet.
    Open,
    /// A statement in it failed: only COMMIT/ROLLBACK are accepted.
    Failed,
}

/// How a relay ended.
enum Relay {
    /// The transaction is over; the server connection can go back.
    Idle,
    /// The client sent Terminate.
    Terminated,
    /// The server failed before answering anything: the client's messages
    /// are back in its buffer, to be placed again.
    Retry(BackendError),
}

pub struct Session<'a> {
    pub(super) shared: &'a Shared,
    pub(super) client: ClientStream,
    pub(super) login: LoggedIn,
    pub(super) mode: PoolMode,
    /// Boxed: most sessions are idle, holding none, most of the time.
    pub(super) server: Option<Box<PooledConn>>,
    pub(super) out: BytesMut,
    /// Fingerprint of `login.desired`.
    desired_fp: u64,
    /// `SET pgrouter.route`: the client's default route for reads.
    pub(super) route_default: Route,
    /// Read-your-writes position of this client.
    pub(super) position: Position,
    /// Pools of the replicas this client has used (by replica index).
    pub(super) replica_pools: Vec<Option<Arc<Pool>>>,
    /// Reads placed so far (for `primary_reads`).
    pub(super) reads: u32,
    /// The replica the current loan runs on (None: the primary).
    loan_replica: Option<usize>,
    /// The current loan may write (read-your-writes records it).
    loan_wrote: bool,
    /// Why the current loan went where it did (a metric label).
    pub(super) loan_reason: RouteReason,
    /// Queries sent and ErrorResponses seen during the current loan.
    loan_queries: u64,
    loan_errors: u32,
    virtual_tx: VirtualTx,
    /// This client's named prepared statements (crate::prepared).
    pub(super) statements: ClientStatements,
    /// Session-setting changes the current loan's statements make, applied
    /// once it ends committed ([`Session::settle_changes`]).
    loan_changes: Vec<Change>,
    /// What the client's unnamed statement would change, once executed.
    unnamed_changes: Vec<Change>,
    /// Splices the current loan's answers when it rewrites statements.
    splicer: Option<Box<Splicer>>,
    /// Session mode: holding a primary connection until the client leaves.
    /// With replicas, a session-mode client's reads are routed transaction
    /// by transaction until its first write pins it to the primary.
    pub(super) session_pinned: bool,
}

/// A client that has logged in, boxed on its way from the login to its
/// session so that the future awaiting both keeps only a pointer for it.
pub struct Ready {
    pub client: ClientStream,
    pub login: LoggedIn,
}

/// Serves a logged-in client until it leaves, then cleans up.
///
/// One such future lives per connected client: it is the session and
/// little else.
pub fn run<'a>(
    shared: &'a Shared,
    ready: Ready,
) -> impl std::future::Future<Output = Result<(), ClientError>> + 'a {
    let Ready { client, login } = ready;
    let desired_fp = login.desired.fingerprint();
    let mut s = Session {
        shared,
        client,
        login,
        mode: shared.config().server.pool_mode,
        server: None,
        out: BytesMut::new(),
        desired_fp,
        route_default: Route::Auto,
        position: Position::default(),
        replica_pools: Vec::new(),
        reads: 0,
        loan_replica: None,
        loan_wrote: false,
        loan_reason: RouteReason::RoutingOff,
        loan_queries: 0,
        loan_errors: 0,
        virtual_tx: VirtualTx::None,
        statements: ClientStatements::default(),
        loan_changes: Vec::new(),
        unnamed_changes: Vec::new(),
        splicer: None,
        session_pinned: shared.config().server.pool_mode == PoolMode::Session
            && (!shared.config().routing.enabled || shared.replicas().list.is_empty()),
    };
    // An `async move` block capturing `s`, not an `async fn` taking it: an
    // async fn's arguments stay in its future beside their bindings in the
    // body, which would keep every idle session twice.
    async move {
        let result = s.serve().await;
        // Boxed, like `step`: the ending's state (the error being written,
        // a server reset) is needed once, not in every idle session.
        Box::pin(s.finish(result)).await
    }
}

/// What [`Session::step`] left to do.
enum Step {
    /// Wait for the next request.
    Next,
    /// The client said goodbye (Terminate) or left.
    Done,
}

impl Session<'_> {
    async fn serve(&mut self) -> Result<(), ClientError> {
        loop {
            // Detached: wait for a whole message (or shutdown).
            if self.shared.shutdown.is_triggered() {
                return Err(shutting_down());
            }
            let Session { client, login, .. } = self;
            if client.complete_len()?.is_none() {
                let next = async {
                    client.wait_unbuffered().await?;
                    client.fill_message().await
                };
                match login.key.shutdown.as_mut() {
                    Some(rx) => tokio::select! {
                        biased;
                        r = next => { r?; }
                        _ = rx => {
                            login.key.shutdown = None;
                            return Err(shutting_down());
                        }
                    },
                    None => {
                        next.await?;
                    }
                }
            }
            // The work of one request runs boxed: while the client is idle
            // (most clients, most of the time) its session keeps only this
            // small loop's state, not that of a whole transaction.
            match Box::pin(self.step()).await? {
                Step::Next => {}
                Step::Done => return Ok(()),
            }
        }
    }

    /// Handles the request at the head of the client's buffer: answers it
    /// or runs it as a transaction on a server connection.
    async fn step(&mut self) -> Result<Step, ClientError> {
        if self.virtual_tx == VirtualTx::Failed && self.client.buf[0] != b'X' {
            self.answer_aborted().await?;
            return Ok(Step::Next);
        }
        let tag = self.client.buf[0];
        if !framing::is_session_message(tag) {
            return Err(ClientError::fatal(
                sqlstate::PROTOCOL_VIOLATION,
                framing::unexpected_message(tag),
            ));
        }
        match tag {
            b'X' => return Ok(Step::Done),
            b'S' => {
                // A Sync with nothing before it needs no server.
                self.consume_message()?;
                self.out.clear();
                messages::ready_for_query(&mut self.out, b'I');
                self.flush_out().await?;
                return Ok(Step::Next);
            }
            // Flush alone, or COPY messages outside COPY: the server
            // would ignore them too.
            b'H' | b'd' | b'c' | b'f' => {
                self.consume_message()?;
                return Ok(Step::Next);
            }
            _ => {}
        }
        let mut decision = self.decide()?;
        let mut replay_begin = None;
        if let Decision::DeferBegin(begin) = decision {
            match self.defer_begin().await? {
                Some(d) => decision = d,
                None => return Ok(Step::Done),
            }
            replay_begin = Some(begin);
            self.virtual_tx = VirtualTx::Open;
        }
        if let Decision::SetRoute(r) = decision {
            self.answer_set_route(r).await?;
            return Ok(Step::Next);
        }
        if let Decision::CausalToken(t) = decision {
            self.answer_causal_token(t).await?;
            return Ok(Step::Next);
        }
        let read = matches!(decision, Decision::Read(_));
        match decision {
            Decision::Primary { write, reason } => {
                self.loan_wrote = write;
                self.loan_reason = reason;
                if write && self.mode == PoolMode::Session {
                    self.session_pinned = true;
                }
            }
            Decision::Read(reason) => {
                self.loan_wrote = false;
                self.loan_reason = reason;
            }
            _ => self.loan_wrote = false,
        }
        if !self.admit_transaction().await? {
            return Ok(Step::Next);
        }
        let mut retried = false;
        loop {
            let asked = Instant::now();
            let placed = if read {
                self.acquire_for_read().await?
            } else {
                match self.writer_pool() {
                    Ok(pool) => self
                        .acquire_from(pool)
                        .await?
                        .map(|c| (c, None))
                        .map_err(|e| (e.sqlstate().to_string(), e.client_message())),
                    Err(refusal) => Err(refusal),
                }
            };
            let (server, replica) = match placed {
                Ok(p) => p,
                Err((code, message)) => {
                    self.fail_request(&code, &message).await?;
                    break;
                }
            };
            let started = Instant::now();
            let metrics = &self.login.tenant.metrics;
            metrics.pool_wait((started - asked).as_secs_f64());
            self.shared
                .route_stats
                .record(replica.is_some(), self.loan_reason);
            self.loan_replica = replica;
            self.loan_queries = 0;
            self.loan_errors = 0;
            // A read whose server fails before answering anything moves
            // elsewhere, once (writes never: they may have happened).
            let retryable = read && !retried && replay_begin.is_none();
            let target = server.target.clone();
            if let Err(e) = self.attach(Box::new(server)).await? {
                self.end_replica_loan();
                if retryable {
                    self.server_failed(replica, &target, &e);
                    retried = true;
                    continue;
                }
                self.fail_request(e.sqlstate(), &e.client_message()).await?;
                break;
            }
            if let Some(begin) = replay_begin.take() {
                // The client already holds our BEGIN's answer: open the
                // transaction on the server it was routed to.
                self.replay_begin(&begin).await?;
                self.virtual_tx = VirtualTx::None;
            }
            let relayed = self.relay(retryable).await;
            let ended = match &relayed {
                Ok(Relay::Retry(_)) => None,
                Ok(Relay::Idle) | Ok(Relay::Terminated) => Some(self.loan_errors > 0),
                Err(_) => Some(true),
            };
            if let Some(failed) = ended {
                let client = &self.login.key.slot.client;
                client.transactions.fetch_add(1, Ordering::Relaxed);
                let took = started.elapsed();
                self.login.tenant.metrics.transaction(
                    replica.is_some(),
                    failed,
                    self.loan_queries,
                    took.as_secs_f64(),
                );
                let slow = self.shared.config().server.log_slow_transactions.get();
                if !slow.is_zero() && took >= slow {
                    tracing::warn!(
                        tenant = %self.login.tenant.name,
                        user = %client.user,
                        server = %target,
                        duration_ms = took.as_millis() as u64,
                        queries = self.loan_queries,
                        failed,
                        "slow transaction"
                    );
                }
            }
            match relayed? {
                Relay::Idle => {
                    self.settle_changes();
                    if self.loan_wrote && self.loan_replica.is_none() {
                        self.record_write().await;
                    }
                    if !self.out.is_empty() {
                        // The held-back ReadyForQuery: only now that the
                        // write position is published may the client go on.
                        let r = self.flush_out().await;
                        self.out.clear();
                        r?;
                    }
                    self.detach();
                    break;
                }
                Relay::Terminated => return Ok(Step::Done),
                Relay::Retry(e) => {
                    self.login.key.slot.detach();
                    self.end_replica_loan();
                    // Dropped, not released: the connection is closed.
                    self.server = None;
                    self.server_failed(replica, &target, &e);
                    retried = true;
                }
            }
        }
        Ok(Step::Next)
    }

    /// The tenant's rate limit: waits for a token, or answers the request
    /// with 53400 (false) when none comes within the tenant's queue_timeout.
    async fn admit_transaction(&mut self) -> Result<bool, ClientError> {
        if self.login.tenant.is_paused() {
            let tenant = self.login.tenant.clone();
            self.watching_client(Box::pin(tenant.wait_resumed()))
                .await?;
        }
        match self.login.tenant.admit_transaction() {
            Ok(wait) if wait.is_zero() => Ok(true),
            Ok(wait) => {
                self.watching_client(Box::pin(tokio::time::sleep(wait)))
                    .await?;
                Ok(true)
            }
            Err(e) => {
                self.fail_request(e.sqlstate(), &e.to_string()).await?;
                Ok(false)
            }
        }
    }

    /// A server failed under a read: keep new reads off it until the next
    /// probe says otherwise, and drop its idle connections (likely dead too).
    fn server_failed(
        &self,
        replica: Option<usize>,
        target: &crate::backend::Target,
        e: &BackendError,
    ) {
        tracing::warn!(server = %target, error = %e, "server failed before answering a read; retrying it elsewhere");
        self.shared
            .route_stats
            .read_retries
            .fetch_add(1, Ordering::Relaxed);
        if let Some(r) = replica.and_then(|i| self.shared.replicas().list.get(i).cloned()) {
            r.mark_down(std::time::Instant::now());
        }
        self.shared.pools.close_idle_for(target);
    }

    fn consume_message(&mut self) -> Result<(), ClientError> {
        if let Some(n) = self.client.complete_len()? {
            let _ = self.client.buf.split_to(n);
        }
        Ok(())
    }

    pub(super) async fn flush_out(&mut self) -> Result<(), ClientError> {
        let out = std::mem::take(&mut self.out);
        let r = self.client.write_all(&out).await;
        self.out = out;
        r
    }

    /// Waits for a server connection from `pool`; notices a client that
    /// leaves meanwhile.
    pub(super) async fn acquire_from(
        &mut self,
        pool: Arc<Pool>,
    ) -> Result<Result<PooledConn, PoolError>, ClientError> {
        if let Some(conn) = pool.try_acquire_idle() {
            return Ok(Ok(conn));
        }
        // The slow path (a wait in the queue, a new connection: a future of
        // kilobytes) is boxed so every request's future stays small.
        self.watching_client(Box::pin(pool.acquire(pool.wait_limit())))
            .await
    }

    /// Awaits `fut` while watching the client, so one that leaves during
    /// the wait ends it at once (and leaves any queue it was in).
    async fn watching_client<T>(
        &mut self,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, ClientError> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                biased;
                r = &mut fut => return Ok(r),
                // Reading only to notice EOF; bounded so a flood cannot grow it.
                r = self.client.read_more(), if self.client.buf.len() < 1 << 20 => { r?; }
            }
        }
    }

    /// Answers the client's pending request with an ERROR (the connection
    /// stays usable): a simple Query gets ErrorResponse + ReadyForQuery; an
    /// extended-protocol batch is skipped up to its Sync first.
    async fn fail_request(&mut self, code: &str, message: &str) -> Result<(), ClientError> {
        let first = self.client.buf[0];
        loop {
            let n = self.client.fill_message().await?;
            let tag = self.client.buf[0];
            let _ = self.client.buf.split_to(n);
            if first == b'Q' || tag == b'S' || tag == b'Q' {
                break;
            }
        }
        self.out.clear();
        messages::error_response(&mut self.out, Severity::Error, code, message, None);
        let status = if self.virtual_tx == VirtualTx::None {
            b'I'
        } else {
            self.virtual_tx = VirtualTx::Failed;
            b'E'
        };
        messages::ready_for_query(&mut self.out, status);
        self.flush_out().await
    }

    /// In a failed virtual transaction: COMMIT/ROLLBACK end it (tag
    /// ROLLBACK, as PostgreSQL answers both in a failed block); anything
    /// else gets 25P02. Simple Query or an extended batch up to its Sync.
    async fn answer_aborted(&mut self) -> Result<(), ClientError> {
        use crate::router::classify::ends_transaction;
        self.out.clear();
        let first = self.client.buf[0];
        if first == b'Q' || first == b'S' {
            let n = self.client.fill_message().await?;
            let msg = self.client.buf.split_to(n);
            let ends = first == b'Q'
                && crate::protocol::parse::cstr(&msg[5..], "Query")
                    .is_ok_and(|(q, _)| ends_transaction(q));
            if ends {
                messages::command_complete(&mut self.out, "ROLLBACK");
                self.virtual_tx = VirtualTx::None;
            } else if first == b'Q' {
                aborted_error(&mut self.out);
            }
            let status = if ends { b'I' } else { b'E' };
            messages::ready_for_query(&mut self.out, status);
            return self.flush_out().await;
        }
        // Extended protocol: answer each message of the batch.
        let mut ends = None;
        loop {
            let n = self.client.fill_message().await?;
            let msg = self.client.buf.split_to(n);
            let tag = msg[0];
            if ends.is_none() {
                ends = Some(
                    tag == b'P'
                        && crate::protocol::parse::cstr(&msg[5..], "Parse")
                            .and_then(|(_, rest)| crate::protocol::parse::cstr(rest, "Parse"))
                            .is_ok_and(|(q, _)| ends_transaction(q)),
                );
                if ends == Some(false) {
                    aborted_error(&mut self.out);
                }
            }
            let ok = ends == Some(true);
            match tag {
                b'S' => {
                    let status = if ok {
                        self.virtual_tx = VirtualTx::None;
                        b'I'
                    } else {
                        b'E'
                    };
                    messages::ready_for_query(&mut self.out, status);
                    return self.flush_out().await;
                }
                b'P' if ok => messages::parse_complete(&mut self.out),
                b'B' if ok => messages::bind_complete(&mut self.out),
                b'D' if ok => messages::no_data(&mut self.out),
                b'E' if ok => messages::command_complete(&mut self.out, "ROLLBACK"),
                b'C' if ok => messages::close_complete(&mut self.out),
                _ => {}
            }
        }
    }

    /// Brings the server session's parameters in line with the client's and
    /// records where its queries run (for cancel).
    async fn attach(
        &mut self,
        mut server: Box<PooledConn>,
    ) -> Result<Result<(), BackendError>, ClientError> {
        // Both rarely have work to do: boxed, they add nothing to the size
        // of every request's future.
        if self.needs_cleaning(&server) {
            if let Err(e) = Box::pin(self.clean_for_me(&mut server)).await {
                return Ok(Err(e));
            }
        }
        if server.synced_fp != self.desired_fp {
            if let Err(e) = Box::pin(self.sync_params(&mut server)).await? {
                return Ok(Err(e));
            }
        }
        self.login
            .key
            .slot
            .attach(&server.target, server.pid, server.secret);
        self.server = Some(server);
        Ok(Ok(()))
    }

    /// Whether [`Session::clean_for_me`] has anything to undo.
    fn needs_cleaning(&self, server: &PooledConn) -> bool {
        let me = self.login.key.slot.client.id;
        server.params_unknown || server.sql_prepared_by.is_some_and(|owner| owner != me)
    }

    /// Undoes what an earlier client left on the server session that the
    /// router could not carry or must not show (called when
    /// [`Session::needs_cleaning`]): settings changed in ways it
    /// could not follow, and SQL-level prepared statements of another client.
    async fn clean_for_me(&self, server: &mut PooledConn) -> Result<(), BackendError> {
        let me = self.login.key.slot.client.id;
        let foreign_statements = server.sql_prepared_by.is_some_and(|owner| owner != me);
        let mut sql = String::new();
        if foreign_statements {
            sql.push_str("DEALLOCATE ALL;");
        }
        if server.params_unknown {
            sql.push_str(RESET_SESSION);
        }
        let timeout = self.shared.config().server.server_reset_timeout.get();
        if let Some(err) = server.run_internal(&sql, timeout).await? {
            server.broken = true;
            return Err(BackendError::Refused {
                target: server.target.to_string(),
                fields: err,
            });
        }
        if foreign_statements {
            server.prepared.clear();
            server.sql_prepared_by = None;
        }
        if server.params_unknown {
            server.forget_settings();
        }
        Ok(())
    }

    /// Sends the SET/RESET batch that makes the server session match the
    /// client's parameters (only what differs), then records the match.
    async fn sync_params(
        &mut self,
        server: &mut PooledConn,
    ) -> Result<Result<(), BackendError>, ClientError> {
        let sql = param_sync_sql(&self.login.desired, server);
        if !sql.is_empty() {
            let set_names: Vec<String> = self
                .login
                .desired
                .iter()
                .filter(|(k, v)| server.params.setting(k) != Some(*v))
                .map(|(k, _)| k.to_string())
                .collect();
            for k in &set_names {
                server.params.remove(k);
            }
            let timeout = self.shared.config().server.server_reset_timeout.get();
            match server.run_internal(&sql, timeout).await {
                Err(e) => return Ok(Err(e)),
                Ok(Some(err)) => {
                    return Err(ClientError::fatal(
                        &err.code,
                        format!("pgrouter: cannot apply session parameters: {}", err.message),
                    ))
                }
                Ok(None) => {}
            }
            let reset: Vec<String> = server
                .router_set
                .iter()
                .filter(|k| self.login.desired.get(k).is_none())
                .cloned()
                .collect();
            for k in reset {
                server.params.remove(&k);
                server.router_set.retain(|n| n != &k);
            }
            for k in set_names {
                let reported = params::is_client_settable(&k);
                match server.params.get(&k).map(str::to_string) {
                    // Reported parameter: the server told us its (normalised) value.
                    Some(v) if reported => {
                        if self.login.desired.would_change(&k, &v) {
                            Arc::make_mut(&mut self.login.desired).set(&k, &v);
                        }
                    }
                    _ => {
                        if let Some(v) = self.login.desired.setting(&k).cloned() {
                            server.params.set_setting(&k, v);
                        }
                        if !server.router_set.iter().any(|n| n.eq_ignore_ascii_case(&k)) {
                            server.router_set.push(k);
                        }
                    }
                }
            }
        }
        self.desired_fp = self.login.desired.fingerprint();
        server.synced_fp = self.desired_fp;
        Ok(Ok(()))
    }

    async fn replay_begin(&mut self, begin: &str) -> Result<(), ClientError> {
        let timeout = self.shared.config().server.server_reset_timeout.get();
        let Some(server) = self.server.as_mut() else {
            return Ok(());
        };
        match server.run_internal(begin, timeout).await {
            Ok(None) if server.tracker.status() == TxStatus::InTransaction => Ok(()),
            Ok(Some(e)) => Err(ClientError::fatal(
                &e.code,
                format!("pgrouter: cannot open the transaction: {}", e.message),
            )),
            Ok(None) => Err(ClientError::fatal(
                sqlstate::PROTOCOL_VIOLATION,
                "pgrouter: the server did not open the transaction",
            )),
            Err(e) => Err(server_lost(e)),
        }
    }

    fn detach(&mut self) {
        self.login.key.slot.detach();
        self.end_replica_loan();
        if let Some(sp) = self.splicer.take() {
            sp.recycle();
        }
        if let Some(server) = self.server.take() {
            server.release();
        }
    }

    fn end_replica_loan(&mut self) {
        if let Some(idx) = self.loan_replica.take() {
            if let Some(r) = self.shared.replicas().list.get(idx) {
                r.outstanding.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Applies the session-setting changes of the loan that just ended
    /// (see [`session_set::settle`]).
    fn settle_changes(&mut self) {
        if self.loan_changes.is_empty() {
            return;
        }
        if let Some(server) = self.server.as_mut() {
            session_set::settle(
                &self.loan_changes,
                self.loan_errors > 0,
                self.login.key.slot.client.id,
                Arc::make_mut(&mut self.login.desired),
                &self.login.startup,
                server,
            );
            self.desired_fp = self.login.desired.fingerprint();
        }
        self.loan_changes.clear();
    }

    /// Whether named statements are tracked and moved between server
    /// connections (transaction mode with `max_prepared_statements` > 0);
    /// otherwise they live on the server connection that prepared them.
    pub(super) fn tracks_statements(&self) -> bool {
        tracks_statements(self.mode, self.shared.config().pool.max_prepared_statements)
    }

    /// Relays in both directions until the transaction ends (transaction
    /// mode), or until the client terminates.
    async fn relay(&mut self, retryable: bool) -> Result<Relay, ClientError> {
        let stop_when_idle = self.mode == PoolMode::Transaction || !self.session_pinned;
        // In user scope, another connection of the same user may read as soon
        // as this client sees its commit, so the final ReadyForQuery of a
        // write transaction waits until the write position is published.
        // (One look at the configuration for the whole loan.)
        let (hold_ready, max_prepared, silence) = {
            let config = self.shared.config();
            let routing = &config.routing;
            let hold = self.loan_wrote
                && self.loan_replica.is_none()
                && routing.consistency_scope == ConsistencyScope::User
                && routing.read_your_writes != ReadYourWrites::Off;
            // A read on a replica the monitor finds unreachable must not
            // wait on it for ever: once its connection has been silent for
            // a probe timeout too, the read moves elsewhere (not answered
            // yet) or fails.
            (
                hold,
                config.pool.max_prepared_statements,
                config.lag.probe_timeout.get(),
            )
        };
        let watched = self
            .loan_replica
            .and_then(|i| self.shared.replicas().list.get(i).map(|r| r.status.clone()));
        // Forward up to one sync point at a time (the next one is routed
        // anew once this one is answered and the session is idle):
        // - for a read: a pipelined write behind it must not reach a
        //   replica, and on the primary (a read placed there) its write
        //   position must be recorded;
        // - for a write whose commit must be published first (hold_ready):
        //   else the commit's ReadyForQuery would reach the client, mid-loan,
        //   before the position is recorded (drivers that pipeline, such as
        //   postgres.js, then read stale data on another connection).
        let one_sync = self.loan_replica.is_some()
            || hold_ready
            || (!self.loan_wrote
                && !matches!(
                    self.loan_reason,
                    RouteReason::RoutingOff | RouteReason::SessionPinned
                ));
        // Named statements are tracked and rewritten in transaction mode,
        // whatever the loan starts with (drivers often BEGIN with a simple
        // Query and prepare inside): every answer goes through the splicer,
        // which copies nothing while it owes nothing special.
        if let Some(old) = self.splicer.take() {
            old.recycle();
        }
        self.splicer = tracks_statements(self.mode, max_prepared).then(Splicer::spare);
        if let (Some(_), Some(server)) = (&self.splicer, self.server.as_mut()) {
            server.prepared.set_capacity(max_prepared);
        }
        self.out.clear();
        let Session {
            client,
            server,
            login,
            desired_fp,
            out,
            loan_queries,
            loan_errors,
            statements,
            splicer,
            loan_changes,
            unnamed_changes,
            ..
        } = self;
        let mut to_server = BytesMut::new();
        let mut spliced = BytesMut::new();
        let Some(server) = server.as_deref_mut() else {
            return Ok(Relay::Idle);
        };
        // What was sent before the server answered anything (retryable only).
        let mut answered = false;
        let mut sent = BytesMut::new();
        loop {
            // Forward every whole client message buffered so far.
            let mut off = 0;
            let mut terminated = false;
            // Whether `to_server` holds this batch (some message of it is
            // rewritten); until then the client's bytes go out as they are.
            let mut rewriting = false;
            // Holding: on a replica, until the current sync point is answered.
            let hold = one_sync && server.tracker.pending() > 0;
            while let (false, Some(n)) = (
                hold,
                framing::complete_len(&client.buf[off..], client.max_message)?,
            ) {
                let tag = client.buf[off];
                if tag == b'X' {
                    terminated = true;
                    break;
                }
                if !framing::is_session_message(tag) {
                    // Not forwarded: the server would end its session.
                    return Err(ClientError::fatal(
                        sqlstate::PROTOCOL_VIOLATION,
                        framing::unexpected_message(tag),
                    ));
                }
                server.tracker.client_sent(tag);
                if matches!(tag, b'Q' | b'E') {
                    *loan_queries += 1;
                }
                let msg = &client.buf[off..off + n];
                // (A pinned session keeps its server connection, and its
                // settings with it, until server_reset_query.)
                if stop_when_idle && matches!(tag, b'Q' | b'P' | b'B') {
                    note_changes(
                        msg,
                        statements,
                        splicer.is_some(),
                        loan_changes,
                        unnamed_changes,
                    );
                }
                if tag == b'Q' && !(statements.is_empty() && server.prepared.is_empty()) {
                    let sql = crate::protocol::parse::cstr(&msg[5..], "Query").map(|(q, _)| q);
                    if let Ok(sql) = sql {
                        // Forgetting what the server still has only costs a
                        // re-prepare; the client's names go only when all
                        // of its statements do.
                        if may_drop_statements(sql) {
                            server.prepared.clear();
                        }
                        if drops_all_statements(sql) {
                            statements.clear();
                        }
                    }
                }
                if let Some(sp) = splicer.as_mut() {
                    if !rewriting && !names_statement(msg) {
                        // Goes out as the client wrote it, from its buffer.
                        sp.forward(tag);
                    } else {
                        if !rewriting {
                            // Room for the whole batch, and longer names, at
                            // once (growing message by message cost ~250
                            // instructions per message).
                            to_server.reserve(client.buf.len() + 256);
                            to_server.extend_from_slice(&client.buf[..off]);
                            rewriting = true;
                        }
                        let mut r = Rewriter {
                            client: statements,
                            server: &mut server.prepared,
                            splicer: sp,
                        };
                        r.message(msg, &mut to_server)?;
                    }
                }
                off += n;
                if one_sync && matches!(tag, b'S' | b'Q') {
                    break;
                }
            }
            if off > 0 {
                let bytes: &[u8] = if rewriting {
                    &to_server
                } else {
                    &client.buf[..off]
                };
                match server.write_all(bytes).await {
                    Ok(()) => {}
                    // Nothing consumed from the client yet: place it again.
                    Err(e) if retryable && !answered && sent.is_empty() => {
                        return Ok(Relay::Retry(e))
                    }
                    Err(e) => return Err(server_lost(e)),
                }
                if retryable && !answered {
                    sent.extend_from_slice(&client.buf[..off]);
                }
                client.buf.advance(off);
                to_server.clear();
                // Router-made answers that wait for nothing (a cached Parse
                // followed by Flush) go out now.
                if let Some(sp) = splicer.as_mut() {
                    sp.ready(&mut spliced);
                    if !spliced.is_empty() {
                        client.write_all(&spliced).await?;
                        spliced.clear();
                    }
                }
            }
            if terminated {
                return Ok(Relay::Terminated);
            }
            tokio::select! {
                biased;
                r = server.read_more() => {
                    match r {
                        Ok(_) if retryable && !answered => {
                            if let Some(e) = shutting_down_server(server) {
                                // Terminated by its operator before answering
                                // (a shutdown, a crash of a sibling): as good
                                // as a failed connection for a read.
                                sent.extend_from_slice(&client.buf);
                                client.buf = sent;
                                return Ok(Relay::Retry(e));
                            }
                            answered = true;
                            sent = BytesMut::new();
                        }
                        Ok(_) => {}
                        Err(e) if retryable && !answered => {
                            // Put back what was sent, in front of anything newer.
                            sent.extend_from_slice(&client.buf);
                            client.buf = sent;
                            return Ok(Relay::Retry(e));
                        }
                        Err(e) => return Err(server_lost(e)),
                    }
                    let conn = &mut **server;
                    let (tracker, buf, sparams) = (&mut conn.tracker, &conn.buf, &mut conn.params);
                    let desired = &mut login.desired;
                    let mut desired_changed = false;
                    let fed = tracker
                        .server_bytes(buf, stop_when_idle, |k, v| {
                            sparams.set(k, v);
                            if params::is_client_settable(k) {
                                // The client changed it (SET): remember it for
                                // the server sessions it meets next.
                                if desired.would_change(k, v) {
                                    Arc::make_mut(desired).set(k, v);
                                }
                                desired_changed = true;
                            }
                        })
                        .map_err(|e| {
                            conn.broken = true;
                            server_lost(BackendError::protocol(&conn.target, e))
                        })?;
                    *loan_errors += fed.errors;
                    if desired_changed {
                        *desired_fp = desired.fingerprint();
                        conn.synced_fp = *desired_fp;
                    }
                    match fed.idle_at {
                        Some(end) => {
                            let rfq = end.checked_sub(6).filter(|&s| conn.buf[s..end].starts_with(b"Z\0\0\0\x05"));
                            let cut = match (hold_ready, rfq) {
                                (true, Some(start)) => start,
                                _ => end,
                            };
                            match splicer.as_mut() {
                                Some(sp) if sp.passthrough() && cut == end => {
                                    // The loan ends here: the splicer's
                                    // state matters no more, only a named
                                    // Parse that may have failed.
                                    if sp.owes_named_parse() {
                                        sp.scan(&conn.buf[..cut]);
                                        for n in sp.take_unprepared() {
                                            conn.prepared.forget(&n);
                                        }
                                    }
                                    client.write_all(&conn.buf[..cut]).await?;
                                }
                                Some(sp) => {
                                    sp.feed(&conn.buf[..cut], &mut spliced);
                                    sp.after_feed(&mut spliced);
                                    client.write_all(&spliced).await?;
                                    spliced.clear();
                                    sp.feed(&conn.buf[cut..end], out);
                                    sp.after_feed(out);
                                    for n in sp.take_unprepared() {
                                        conn.prepared.forget(&n);
                                    }
                                }
                                None => {
                                    out.extend_from_slice(&conn.buf[cut..end]);
                                    client.write_all(&conn.buf[..cut]).await?;
                                }
                            }
                            if end < conn.buf.len() {
                                // Bytes after the final ReadyForQuery of an idle
                                // session: not for this client; never reuse.
                                conn.broken = true;
                            }
                            conn.buf.clear();
                            return Ok(Relay::Idle);
                        }
                        None => {
                            match splicer.as_mut() {
                                Some(sp) if sp.passthrough() => {
                                    sp.scan(&conn.buf);
                                    // A Parse that failed after its hidden
                                    // Close was answered in an earlier read.
                                    for n in sp.take_unprepared() {
                                        conn.prepared.forget(&n);
                                    }
                                    client.write_all(&conn.buf).await?;
                                }
                                Some(sp) => {
                                    sp.feed(&conn.buf, &mut spliced);
                                    sp.after_feed(&mut spliced);
                                    for n in sp.take_unprepared() {
                                        conn.prepared.forget(&n);
                                    }
                                    client.write_all(&spliced).await?;
                                    spliced.clear();
                                }
                                None => client.write_all(&conn.buf).await?,
                            }
                            conn.buf.clear();
                        }
                    }
                }
                // Bounded: a client pipelining far ahead waits for us.
                r = client.read_more(), if client.buf.len() < 1 << 20 => { r?; }
                () = stalled(watched.as_deref(), silence) => {
                    server.broken = true;
                    let e = BackendError::Stalled {
                        target: server.target.to_string(),
                        ms: silence.as_millis(),
                    };
                    if retryable && !answered {
                        sent.extend_from_slice(&client.buf);
                        client.buf = sent;
                        return Ok(Relay::Retry(e));
                    }
                    return Err(server_lost(e));
                }
            }
        }
    }

    /// Ends the session: tells the client why, if it is still there to
    /// hear it, and gives back or cleans the server connection.
    async fn finish(&mut self, result: Result<(), ClientError>) -> Result<(), ClientError> {
        if let Err(e) = &result {
            if let Some((code, message)) = e.response() {
                self.out.clear();
                messages::error_response(&mut self.out, Severity::Fatal, code, &message, None);
                let out = std::mem::take(&mut self.out);
                let _ = self.client.write_all(&out).await;
            }
        }
        self.release_on_exit().await;
        result
    }

    /// Gives back or cleans the server connection when the session ends.
    async fn release_on_exit(&mut self) {
        self.login.key.slot.detach();
        self.end_replica_loan();
        let Some(mut server) = self.server.take() else {
            return;
        };
        let timeout = self.shared.config().server.server_reset_timeout.get();
        if self.session_pinned && server.is_reusable() {
            let q = self
                .shared
                .config()
                .server
                .server_reset_query
                .trim()
                .to_string();
            if !q.is_empty() {
                if !matches!(server.run_internal(&q, timeout).await, Ok(None)) {
                    return; // dropped: closed
                }
                // (DISCARD ALL by default: back at the login defaults.)
                server.forget_settings();
            }
            server.release();
            return;
        }
        if !self.loan_changes.is_empty() {
            // The client left mid-transaction after changing settings or
            // preparing statements: clean before anyone else uses them.
            server.params_unknown = true;
            if self.loan_changes.contains(&Change::SqlPrepare) {
                server.sql_prepared_by = Some(self.login.key.slot.client.id);
            }
        }
        if reset::recover(&mut server, timeout).await {
            server.release();
        }
    }
}

fn aborted_error(out: &mut BytesMut) {
    messages::error_response(
        out,
        Severity::Error,
        sqlstate::IN_FAILED_SQL_TRANSACTION,
        "current transaction is aborted, commands ignored until end of transaction block",
        None,
    );
}

fn shutting_down() -> ClientError {
    ClientError::fatal(
        sqlstate::ADMIN_SHUTDOWN,
        "pgrouter: terminating connection because the router is shutting down",
    )
}

/// The SET/RESET batch that makes `server`'s session match `desired`.
fn param_sync_sql(desired: &Params, server: &PooledConn) -> String {
    let mut sql = String::new();
    for (k, v) in desired.iter() {
        if server.params.setting(k) == Some(v) {
            continue;
        }
        match v {
            Setting::Statement(stmt) => {
                sql.push_str(stmt);
                sql.push(';');
            }
            // Reported parameters are single values; set_config reads the
            // others as a configuration file would, so `a,b` stays a list.
            Setting::Value(v) if params::is_client_settable(k) => sql.push_str(&format!(
                "SET {} = {};",
                messages::quote_ident(k),
                messages::quote_literal(v)
            )),
            Setting::Value(v) => sql.push_str(&format!(
                "SELECT pg_catalog.set_config({}, {}, false);",
                messages::quote_literal(k),
                messages::quote_literal(v)
            )),
        }
    }
    for k in &server.router_set {
        if desired.get(k).is_none() {
            sql.push_str(&reset_sql(k));
        }
    }
    sql
}

/// Returns one silent parameter to the session's login default.
fn reset_sql(name: &str) -> String {
    if name.eq_ignore_ascii_case("session_authorization") {
        "SET SESSION AUTHORIZATION DEFAULT;".to_string()
    } else {
        format!("RESET {};", messages::quote_ident(name))
    }
}

/// Back to the login defaults, whatever a client did to the session's
/// settings (DISCARD ALL's first steps, keeping prepared statements).
const RESET_SESSION: &str = "SET SESSION AUTHORIZATION DEFAULT; RESET ROLE; RESET ALL";

/// Named statements are tracked and moved between server connections in
/// transaction mode with `max_prepared_statements` > 0.
fn tracks_statements(mode: PoolMode, max_prepared: usize) -> bool {
    mode == PoolMode::Transaction && max_prepared > 0
}

/// Whether the prepared-statement rewriter may change this client message:
/// a Parse, Bind, Describe or Close of a named statement (or one too
/// malformed to tell, which the rewriter refuses). The unnamed statement and
/// portals, and every other message, reach the server as the client wrote
/// them (drivers that use only unnamed statements copy nothing).
fn names_statement(msg: &[u8]) -> bool {
    let body = msg.get(5..).unwrap_or(&[]);
    match msg.first() {
        Some(b'P') => body.first() != Some(&0),
        // Bind: portal name, then statement name.
        Some(b'B') => memchr::memchr(0, body).is_none_or(|i| body.get(i + 1) != Some(&0)),
        Some(b'D' | b'C') => match body.split_first() {
            Some((b'S', name)) => name.first() != Some(&0),
            Some((b'P', name)) => memchr::memchr(0, name).is_none(),
            _ => true,
        },
        _ => false,
    }
}

/// Notes the session-setting changes a client message will make when it
/// runs: a Query's at once; a statement's when a Bind executes it (a Parse
/// alone changes nothing). Named statements the router does not track may
/// run anywhere later, so one that changes settings marks the loan Untracked.
fn note_changes(
    msg: &[u8],
    statements: &ClientStatements,
    tracked: bool,
    loan: &mut Vec<Change>,
    unnamed: &mut Vec<Change>,
) {
    use crate::protocol::parse::cstr;
    let body = msg.get(5..).unwrap_or(&[]);
    match msg.first() {
        Some(b'Q') => match cstr(body, "Query") {
            Ok((sql, _)) => session_set::scan(sql, loan),
            // Text the router cannot read (not UTF-8: a client_encoding
            // such as LATIN1): it may change settings, so the connection
            // is reset after use rather than lent on as it is.
            Err(_) => loan.push(Change::Untracked),
        },
        Some(b'P') => {
            let Ok((name, rest)) = cstr(body, "Parse") else {
                return;
            };
            let Ok((sql, _)) = cstr(rest, "Parse") else {
                if name.is_empty() {
                    unnamed.clear();
                    unnamed.push(Change::Untracked);
                }
                return;
            };
            if name.is_empty() {
                unnamed.clear();
                session_set::scan(sql, unnamed);
            } else if !tracked && session_set::changes_settings(sql) {
                loan.push(Change::Untracked);
            }
        }
        Some(b'B') => {
            let Ok((_, rest)) = cstr(body, "Bind") else {
                return;
            };
            let Ok((name, _)) = cstr(rest, "Bind") else {
                return;
            };
            if name.is_empty() {
                loan.extend(unnamed.iter().cloned());
            } else if let Some(st) = statements.get(name).filter(|st| st.changes_settings) {
                session_set::scan(&st.sql, loan);
            }
        }
        _ => {}
    }
    if loan.len() > MAX_NOTED_CHANGES {
        // A transaction of endless SETs: remember only that the connection
        // needs a reset (the client keeps the settings it had).
        let prepared = loan.contains(&Change::SqlPrepare);
        loan.clear();
        loan.push(Change::Untracked);
        if prepared {
            loan.push(Change::SqlPrepare);
        }
    }
}

/// Bound on the session-setting changes noted in one loan.
const MAX_NOTED_CHANGES: usize = 256;

/// A server connection whose first bytes say it is being terminated: a
/// FATAL 57P01-57P03 error (admin shutdown, crash shutdown, cannot connect
/// now), or the WARNING 57P01/57P02 a backend sends as it quits on an
/// immediate shutdown or a crash. Returns it as an error and marks the
/// connection broken.
fn shutting_down_server(server: &mut PooledConn) -> Option<BackendError> {
    let buf = &server.buf;
    let tag = *buf.first()?;
    if !matches!(tag, b'E' | b'N') || buf.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    let body = buf.get(5..1 + len)?;
    let fields = crate::protocol::parse::error_fields(body);
    let severity_ok = match tag {
        b'E' => fields.severity == "FATAL",
        _ => fields.severity == "WARNING",
    };
    if !severity_ok || !fields.code.starts_with("57P") {
        return None;
    }
    server.broken = true;
    Some(BackendError::Refused {
        target: server.target.to_string(),
        fields,
    })
}

/// See [`crate::lag::NodeStatus::stalled`]; never completes without a node.
async fn stalled(node: Option<&crate::lag::NodeStatus>, silence: std::time::Duration) {
    match node {
        Some(n) => n.stalled(silence).await,
        None => std::future::pending().await,
    }
}

fn server_lost(e: BackendError) -> ClientError {
    ClientError::fatal(sqlstate::CONNECTION_FAILURE, e.client_message())
}

#[cfg(test)]
mod tests {
    use super::names_statement;
    use crate::protocol::test_frame as msg;

    /// Every connected client holds one session inside its task, and
    /// tokio allocates tasks in 128-byte steps (the task cell is aligned
    /// to 128): at 400 bytes the whole task is 768 bytes (measured with
    /// -Zprint-type-sizes, 2026-12-06), 8 more would make it 896 for each
    /// of 10,000 idle clients. Keep new per-session state out of line
    /// (boxed, or made when first needed), or re-measure and update this.
    #[test]
    fn a_session_fits_its_task_size_step() {
        // (tokio's TcpStream is 32 bytes in release builds, more in debug.)
        let socket = std::mem::size_of::<tokio::net::TcpStream>();
        let session = std::mem::size_of::<super::Session<'static>>();
        assert!(
            session - socket <= 400 - 32,
            "Session is {session} bytes with a {socket}-byte socket"
        );
    }

    #[test]
    fn a_query_the_router_cannot_read_marks_the_connection_for_reset() {
        use super::{note_changes, Change};
        let statements = crate::prepared::ClientStatements::default();
        let (mut loan, mut unnamed) = (Vec::new(), Vec::new());
        // SET app.x = 'café' sent with client_encoding LATIN1.
        let latin1 = msg(b'Q', b"SET app.x = 'caf\xe9'\0");
        note_changes(&latin1, &statements, true, &mut loan, &mut unnamed);
        assert_eq!(loan, [Change::Untracked]);
        // The same as an unnamed Parse: its Bind brings the reset along.
        loan.clear();
        let parse = msg(b'P', b"\0SET app.x = 'caf\xe9'\0\0\0");
        note_changes(&parse, &statements, true, &mut loan, &mut unnamed);
        note_changes(
            &msg(b'B', b"\0\0\0\0\0\0\0\0"),
            &statements,
            true,
            &mut loan,
            &mut unnamed,
        );
        assert_eq!(loan, [Change::Untracked]);
        // Readable text is scanned as before.
        loan.clear();
        note_changes(
            &msg(b'Q', b"SELECT 1\0"),
            &statements,
            true,
            &mut loan,
            &mut unnamed,
        );
        assert!(loan.is_empty());
    }

    #[test]
    fn only_messages_about_named_statements_go_through_the_rewriter() {
        // Parse: statement name, query, parameter types.
        assert!(!names_statement(&msg(b'P', b"\0SELECT 1\0\0\0")));
        assert!(names_statement(&msg(b'P', b"s1\0SELECT 1\0\0\0")));
        // Bind: portal name, then statement name.
        assert!(!names_statement(&msg(b'B', b"\0\0\0\0\0\0\0\0")));
        assert!(!names_statement(&msg(b'B', b"p1\0\0\0\0\0\0\0\0")));
        assert!(names_statement(&msg(b'B', b"\0s1\0\0\0\0\0\0\0")));
        // Describe / Close: kind, then name.
        assert!(!names_statement(&msg(b'D', b"S\0")));
        assert!(!names_statement(&msg(b'D', b"Pp1\0")));
        assert!(names_statement(&msg(b'D', b"Ss1\0")));
        assert!(names_statement(&msg(b'C', b"Ss1\0")));
        assert!(!names_statement(&msg(b'C', b"P\0")));
        // Too malformed to tell: the rewriter refuses them.
        assert!(names_statement(&msg(b'P', b"")));
        assert!(names_statement(&msg(b'B', b"p1")));
        assert!(names_statement(&msg(b'D', b"Pp1")));
        assert!(names_statement(&msg(b'D', b"X\0")));
        // Everything else passes as written.
        for tag in [b'E', b'S', b'H', b'Q', b'd'] {
            assert!(!names_statement(&msg(tag, b"\0")));
        }
    }
}
