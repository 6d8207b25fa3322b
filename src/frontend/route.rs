//! The routing half of a client session: where the next transaction runs,
//! and read-your-writes bookkeeping after it. See docs/routing.md.
//!
//! A route is chosen once per loan, from its first message (a Query's text,
//! or a Parse's statement): writes and anything unknown go to the primary;
//! reads go to a replica that has replayed the client's last write, or to
//! the primary when none is known to have.

use super::session::Session;
use super::ClientError;
use crate::config::{ConsistencyScope, Fallback, ReadYourWrites};
use crate::lag::elect::Writer;
use crate::lag::health::State;
use crate::pool::{Pool, PoolError, PooledConn};
use crate::protocol::framing;
use crate::protocol::messages::{self, Severity};
use crate::protocol::{parse, sqlstate};
use crate::router::cache::classify_cached;
use crate::router::classify::{
    is_plain_begin, is_set_transaction_read_only, Class, Classification, Reason,
};
use crate::router::consistency::Position;
use crate::router::hint::{self, Route};
use crate::router::lsn;
use crate::router::RouteReason;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the client's next transaction goes.
pub(super) enum Decision {
    /// The primary; `write` when it may write (read-your-writes records it).
    Primary { write: bool, reason: RouteReason },
    /// A replica if one is usable and caught up.
    Read(RouteReason),
    /// `SET pgrouter.route`: answered by the router.
    SetRoute(Result<Route, String>),
    /// `SHOW`/`SET pgrouter.causal_token`, answered by the router.
    CausalToken(hint::CausalToken),
    /// A plain `BEGIN`: answered by the router; the transaction is routed by
    /// its first statement (a replica if that is `SET TRANSACTION READ ONLY`)
    /// and the BEGIN replayed there.
    DeferBegin(String),
}

/// A failed read placement: (SQLSTATE, message).
pub(super) type Refusal = (String, String);

impl Session<'_> {
    /// Decides from what the client has buffered: a Query's text, or the
    /// extended-protocol messages up to the first Sync.
    pub(super) fn decide(&self) -> Result<Decision, ClientError> {
        let n = self.client.complete_len()?.unwrap_or(0);
        let msg = &self.client.buf[..n];
        let tag = msg.first().copied().unwrap_or(0);
        let query = match tag {
            b'Q' => parse::cstr(msg.get(5..).unwrap_or(&[]), "Query")
                .ok()
                .map(|(s, _)| s),
            _ => None,
        };
        if let Some(q) = query.filter(|q| hint::may_be_router_command(q)) {
            if let Some(r) = hint::set_route(q) {
                return Ok(Decision::SetRoute(r));
            }
            if let Some(t) = hint::causal_token(q) {
                return Ok(Decision::CausalToken(t));
            }
        }
        let routing = &self.shared.config().routing;
        if !routing.enabled || self.shared.replicas().list.is_empty() {
            return Ok(Decision::Primary {
                write: false,
                reason: RouteReason::RoutingOff,
            });
        }
        if self.session_pinned {
            return Ok(Decision::Primary {
                write: false,
                reason: RouteReason::SessionPinned,
            });
        }
        if query.is_some_and(is_plain_begin) {
            return Ok(Decision::DeferBegin(query.unwrap_or_default().to_string()));
        }
        let stats = &self.shared.route_stats;
        let rules = self.shared.function_rules.load();
        let classified = match query {
            Some(sql) => Some((sql, classify_cached(sql, &rules), true)),
            None if tag == b'Q' => None,
            None => self.classify_batch(&rules),
        };
        // SQL the router cannot see (a Bind of a statement it does not
        // know, a FunctionCall): the primary.
        let Some((sql, c, executes)) = classified else {
            return Ok(Decision::Primary {
                write: true,
                reason: RouteReason::PreparedStatement,
            });
        };
        if c.class == Class::Write {
            if c.reason == Reason::ParseFailure {
                tracing::debug!(%sql, "statement not parsed; sent to the primary");
            }
            if hint::leading_hint(sql) == Some(Route::Replica) {
                stats.replica_hints_ignored.fetch_add(1, Ordering::Relaxed);
            }
            // Preparing a write (Parse/Describe without Execute) writes
            // nothing: no read-your-writes wait for it.
            return Ok(Decision::Primary {
                write: executes,
                reason: c.reason.into(),
            });
        }
        let hinted = hint::leading_hint(sql);
        let reason = match hinted {
            Some(_) => RouteReason::Hint,
            None if self.route_default != Route::Auto => RouteReason::Hint,
            None => c.reason.into(),
        };
        Ok(match hinted.unwrap_or(self.route_default) {
            Route::Primary => Decision::Primary {
                write: false,
                reason,
            },
            Route::Replica | Route::Auto => Decision::Read(reason),
        })
    }

    /// Classifies the extended-protocol messages buffered up to the first
    /// Sync: each Parse's SQL, and the SQL of each named statement a Bind or
    /// Describe uses (prepared in an earlier transaction, looked up in the
    /// client's statements: classified at Parse, through the classifier's
    /// cache). A batch is a read only if every statement in it is.
    ///
    /// Returns the first statement's SQL and class, or the first write's,
    /// and whether the batch executes anything; None when a message runs SQL the router cannot see: a Bind of an
    /// unnamed statement from an earlier transaction or of an unknown name, a
    /// FunctionCall, a malformed message, or a named statement in a session
    /// that does not track them (it must stay where it is prepared: the
    /// primary). Messages not yet buffered are not seen: a write pipelined
    /// behind reads in one batch still arriving fails on the replica
    /// (25006) rather than run in the wrong place.
    fn classify_batch<'a>(
        &'a self,
        rules: &Arc<crate::router::classify::FunctionRules>,
    ) -> Option<(&'a str, Classification, bool)> {
        let tracked = self.tracks_statements();
        let mut buf: &[u8] = &self.client.buf;
        let mut first: Option<(&str, Classification)> = None;
        // Statements parsed earlier in this batch (already classified).
        let mut parsed: Vec<&str> = Vec::new();
        let mut executes = false;
        let mut synced = false;
        while let Ok(Some(n)) = framing::complete_len(buf, self.client.max_message) {
            let (msg, rest) = buf.split_at(n);
            buf = rest;
            let body = msg.get(5..).unwrap_or(&[]);
            let sql = match msg[0] {
                b'S' => {
                    synced = true;
                    break;
                }
                b'P' => {
                    let (name, rest) = parse::cstr(body, "Parse").ok()?;
                    if !name.is_empty() && !tracked {
                        return None;
                    }
                    parsed.push(name);
                    Some(parse::cstr(rest, "Parse").ok()?.0)
                }
                b'B' => {
                    let (_, rest) = parse::cstr(body, "Bind").ok()?;
                    let (name, _) = parse::cstr(rest, "Bind").ok()?;
                    self.statement_sql(name, &parsed)?
                }
                b'D' if body.first() == Some(&b'S') => {
                    let (name, _) = parse::cstr(&body[1..], "Describe").ok()?;
                    self.statement_sql(name, &parsed)?
                }
                b'F' => return None,
                b'E' => {
                    executes = true;
                    None
                }
                _ => None,
            };
            let Some(sql) = sql else { continue };
            let c = classify_cached(sql, rules);
            match first {
                None => first = Some((sql, c)),
                Some((_, f)) if f.class == Class::Read && c.class == Class::Write => {
                    first = Some((sql, c));
                }
                Some(_) => {}
            }
        }
        // Without a Sync yet (Parse + Describe + Flush, as postgres.js
        // sends to learn types), the Execute may still come in this loan:
        // count it as executing, or a write would go unrecorded.
        first.map(|(sql, c)| (sql, c, executes || !synced))
    }

    /// The SQL of the statement a Bind or Describe names: Some(None) when it
    /// was parsed earlier in the same batch (already classified), None when
    /// the router cannot know it.
    fn statement_sql(&self, name: &str, parsed: &[&str]) -> Option<Option<&str>> {
        if parsed.contains(&name) {
            return Some(None);
        }
        if name.is_empty() {
            return None;
        }
        self.statements.get(name).map(|s| Some(&*s.sql))
    }

    /// Answers a plain BEGIN itself, then decides from the next message:
    /// `SET TRANSACTION READ ONLY` may run on a replica, anything else is the
    /// primary's. Returns None if the client left (nothing to clean up).
    pub(super) async fn defer_begin(&mut self) -> Result<Option<Decision>, ClientError> {
        if let Some(n) = self.client.complete_len()? {
            let _ = self.client.buf.split_to(n);
        }
        self.out.clear();
        messages::command_complete(&mut self.out, "BEGIN");
        messages::ready_for_query(&mut self.out, b'T');
        self.flush_out().await?;
        self.out.clear();
        let n = match self.client.fill_message().await {
            Ok(n) => n,
            Err(ClientError::Gone(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let msg = &self.client.buf[..n];
        if msg[0] == b'X' {
            return Ok(None);
        }
        let read_only = msg[0] == b'Q'
            && parse::cstr(&msg[5..], "Query")
                .is_ok_and(|(sql, _)| is_set_transaction_read_only(sql));
        Ok(Some(if read_only {
            Decision::Read(RouteReason::ReadOnlyTransaction)
        } else {
            Decision::Primary {
                write: true,
                reason: RouteReason::ExplicitTransaction,
            }
        }))
    }

    /// Answers `SET pgrouter.route` without a server.
    pub(super) async fn answer_set_route(
        &mut self,
        r: Result<Route, String>,
    ) -> Result<(), ClientError> {
        if let Some(n) = self.client.complete_len()? {
            let _ = self.client.buf.split_to(n);
        }
        self.out.clear();
        match r {
            Ok(route) => {
                self.route_default = route;
                messages::command_complete(&mut self.out, "SET");
            }
            Err(m) => messages::error_response(&mut self.out, Severity::Error, "22023", &m, None),
        }
        messages::ready_for_query(&mut self.out, b'I');
        self.flush_out().await
    }

    /// Answers `SHOW pgrouter.causal_token` (this client's write position,
    /// as an LSN: '' before any write) and `SET pgrouter.causal_token`
    /// (wait for that position, as if this client had written it).
    pub(super) async fn answer_causal_token(
        &mut self,
        t: hint::CausalToken,
    ) -> Result<(), ClientError> {
        if let Some(n) = self.client.complete_len()? {
            let _ = self.client.buf.split_to(n);
        }
        self.out.clear();
        match t {
            hint::CausalToken::Show => {
                let lsn = self.position().lsn;
                // u64::MAX: a write whose position could not be read; no
                // token can stand for it.
                let token = match lsn {
                    0 | u64::MAX => String::new(),
                    l => crate::router::lsn::format(l),
                };
                messages::row_description(&mut self.out, &[hint::CAUSAL_TOKEN]);
                messages::data_row(&mut self.out, &[Some(&token)]);
                messages::command_complete(&mut self.out, "SHOW");
            }
            hint::CausalToken::Set(Ok(lsn)) => {
                self.position.merge(Position {
                    lsn,
                    pinned_until: None,
                });
                messages::command_complete(&mut self.out, "SET");
            }
            hint::CausalToken::Set(Err(m)) => {
                messages::error_response(&mut self.out, Severity::Error, "22023", &m, None)
            }
        }
        messages::ready_for_query(&mut self.out, b'I');
        self.flush_out().await
    }

    /// This client's read-your-writes position (with its user's, in user scope).
    fn position(&self) -> Position {
        let mut p = self.position;
        if self.shared.config().routing.consistency_scope == ConsistencyScope::User {
            p.merge(self.shared.user_positions.get(&self.login.user.cfg.name));
        }
        p
    }

    /// The pool of the server that takes writes now (the configured primary
    /// unless roles are discovered), or a refusal when none may.
    pub(super) fn writer_pool(&mut self) -> Result<Arc<Pool>, Refusal> {
        let writer = match &**self.shared.monitor.writer() {
            Writer::Node(i) => *i,
            Writer::Refused(reason) => {
                return Err((sqlstate::CANNOT_CONNECT_NOW.to_string(), reason.clone()))
            }
        };
        Ok(match writer {
            0 => self.login.pool.clone(),
            i => self.replica_pool(i - 1),
        })
    }

    fn replica_pool(&mut self, idx: usize) -> Arc<Pool> {
        if self.replica_pools.len() <= idx {
            self.replica_pools.resize(idx + 1, None);
        }
        if let Some(p) = &self.replica_pools[idx] {
            return p.clone();
        }
        let target = self.shared.replicas().list[idx].target.clone();
        let p = self
            .shared
            .pool_for(&target, &self.login.user, &self.login.database);
        self.replica_pools[idx] = Some(p.clone());
        p
    }

    /// Places a read: a usable replica that has replayed the client's last
    /// write, else the primary (or an error, with `fallback = "error"`).
    /// Returns the connection and the replica index (None: primary), and
    /// sets `loan_reason` when the read lands on the primary.
    pub(super) async fn acquire_for_read(
        &mut self,
    ) -> Result<Result<(PooledConn, Option<usize>), Refusal>, ClientError> {
        // Copy the few settings used (a clone of the whole section would
        // allocate on every read).
        let (ryw, causal_wait, fallback, primary_reads) = {
            let config = self.shared.config();
            let routing = &config.routing;
            (
                routing.read_your_writes,
                routing.causal_wait.get(),
                routing.fallback,
                routing.primary_reads,
            )
        };
        let pos = self.position();
        let pinned =
            ryw == ReadYourWrites::Time && pos.pinned_until.is_some_and(|t| Instant::now() < t);
        let min_lsn = if ryw == ReadYourWrites::Lsn {
            pos.lsn
        } else {
            0
        };
        let n = self.shared.replicas().list.len();
        self.reads = self.reads.wrapping_add(1);
        let primary_turn = primary_reads && self.reads.is_multiple_of(n as u32 + 1);
        // Why the read ends up on the primary, if it does.
        let mut why = if pinned {
            RouteReason::ReadYourWrites
        } else {
            RouteReason::LoadBalance
        };
        if !pinned && !primary_turn {
            why = RouteReason::NoHealthyReplica;
            for _ in 0..n {
                let Some((idx, known)) = self.shared.replicas().pick(Instant::now, min_lsn) else {
                    if self
                        .shared
                        .replicas()
                        .list
                        .iter()
                        .any(|r| r.status.state() == State::Evicted)
                    {
                        why = RouteReason::ReplicaLag;
                    }
                    break;
                };
                let replica = self.shared.replicas().list[idx].clone();
                let pool = self.replica_pool(idx);
                let mut conn = match self.acquire_from(pool).await? {
                    Ok(c) => c,
                    Err(PoolError::Backend(e)) => {
                        // Nothing was sent yet: try elsewhere.
                        tracing::warn!(replica = %replica.target, error = %e, "replica unavailable; marking it down");
                        replica.mark_down(Instant::now());
                        continue;
                    }
                    Err(e) => return Ok(Err((e.sqlstate().to_string(), e.client_message()))),
                };
                if min_lsn > 0
                    && !known
                    && !Box::pin(self.caught_up(&mut conn, &replica, min_lsn, causal_wait)).await
                {
                    conn.release();
                    why = RouteReason::ReadYourWrites;
                    break;
                }
                replica.outstanding.fetch_add(1, Ordering::Relaxed);
                return Ok(Ok((conn, Some(idx))));
            }
            if fallback == Fallback::Error && min_lsn == 0 {
                return Ok(Err((
                    sqlstate::CANNOT_CONNECT_NOW.to_string(),
                    "pgrouter: no replica is available for this read (fallback = \"error\")".into(),
                )));
            }
        }
        self.loan_reason = why;
        let pool = match self.writer_pool() {
            Ok(p) => p,
            Err(refusal) => return Ok(Err(refusal)),
        };
        Ok(match self.acquire_from(pool).await? {
            Ok(c) => Ok((c, None)),
            Err(e) => Err((e.sqlstate().to_string(), e.client_message())),
        })
    }

    /// Asks the replica how far it has replayed (waiting up to `wait`).
    async fn caught_up(
        &self,
        conn: &mut PooledConn,
        replica: &crate::router::replicas::Replica,
        min_lsn: u64,
        wait: Duration,
    ) -> bool {
        let deadline = Instant::now() + wait;
        let timeout = self.shared.config().server.server_reset_timeout.get();
        loop {
            let replayed = match conn
                .query_value("SELECT pg_last_wal_replay_lsn()", timeout)
                .await
            {
                Ok(Some(v)) => lsn::parse(&v).unwrap_or(0),
                _ => return false,
            };
            replica.observe_replay(replayed);
            if replayed >= min_lsn {
                return true;
            }
            if Instant::now() + Duration::from_millis(5) > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// After a transaction that may have written: remember how far the
    /// primary's WAL was, so this client's (or user's) reads wait for it.
    pub(super) async fn record_write(&mut self) {
        // Copied out: the config is not held across the await below.
        let (ryw, pin, scope) = {
            let config = self.shared.config();
            let r = &config.routing;
            (
                r.read_your_writes,
                r.pin_duration.get(),
                r.consistency_scope,
            )
        };
        let now = Instant::now();
        let mut p = Position::default();
        match ryw {
            ReadYourWrites::Off => return,
            ReadYourWrites::Time => p.pinned_until = Some(now + pin),
            ReadYourWrites::Lsn => {
                let timeout = self.shared.config().server.server_reset_timeout.get();
                let lsn = match self.server.as_mut() {
                    Some(server) if server.is_reusable() => server
                        .query_value("SELECT pg_current_wal_insert_lsn()", timeout)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|v| lsn::parse(&v)),
                    _ => None,
                };
                match lsn {
                    Some(l) => p.lsn = l,
                    // Position unknown: the safe answer is the primary.
                    None => p.lsn = u64::MAX,
                }
            }
        }
        self.position.merge(p);
        if scope == ConsistencyScope::User {
            self.shared
                .user_positions
                .record(&self.login.user.cfg.name, p);
        }
    }
}
