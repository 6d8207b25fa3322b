//! A logged-in server connection: socket, read buffer, what the router knows
//! of its session parameters, and its response tracker.

use super::tracker::ResponseTracker;
use super::{BackendError, Target};
use crate::protocol::{framing, messages, parse};
use bytes::BytesMut;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a session parameter got its value, and so how to give it again.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Setting {
    /// A value as the server reports it (ParameterStatus) or a startup
    /// packet gives it: applied with `set_config`, which reads it as a
    /// configuration file would (a list stays a list).
    Value(String),
    /// A client's own `SET` statement, replayed verbatim: its value may be a
    /// list of identifiers or a form no single literal reproduces.
    Statement(String),
}

impl Setting {
    pub fn as_str(&self) -> &str {
        match self {
            Setting::Value(v) | Setting::Statement(v) => v,
        }
    }
}

/// Session parameter settings by name, compared case-insensitively (small:
/// a Vec beats a map here).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, Setting)>);

impl Params {
    /// The value or statement text of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.setting(name).map(Setting::as_str)
    }
    pub fn setting(&self, name: &str) -> Option<&Setting> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
    /// Whether [`Params::set`] with these would change anything.
    pub fn would_change(&self, name: &str, value: &str) -> bool {
        !matches!(self.setting(name), Some(Setting::Value(v)) if v == value)
    }
    pub fn set(&mut self, name: &str, value: &str) {
        match self
            .0
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            Some((_, Setting::Value(v))) if v == value => {}
            Some((_, v)) => *v = Setting::Value(value.to_string()),
            None => self
                .0
                .push((name.to_string(), Setting::Value(value.to_string()))),
        }
    }
    pub fn set_setting(&mut self, name: &str, setting: Setting) {
        match self
            .0
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            Some((_, v)) => *v = setting,
            None => self.0.push((name.to_string(), setting)),
        }
    }
    pub fn shrink_to_fit(&mut self) {
        self.0.shrink_to_fit();
    }
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Setting)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
    /// The names and texts (for ParameterStatus and SHOW).
    pub fn values(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    /// An order-independent fingerprint of the names (case-folded) and
    /// settings; never 0, so 0 can mean "unknown".
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let fp = self.0.iter().fold(0u64, |acc, (k, v)| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            k.to_ascii_lowercase().hash(&mut h);
            v.hash(&mut h);
            acc ^ h.finish()
        });
        fp | 1
    }
}

/// What a drained internal query returned.
#[derive(Default)]
struct Drained {
    error: Option<parse::ErrorFields>,
    first_value: Option<String>,
}

/// The first column of a DataRow body, as text (None for NULL).
fn first_column(body: &[u8]) -> Option<String> {
    let n = u16::from_be_bytes([*body.first()?, *body.get(1)?]);
    if n == 0 {
        return None;
    }
    let len = i32::from_be_bytes(body.get(2..6)?.try_into().ok()?);
    if len < 0 {
        return None;
    }
    let value = body.get(6..6 + len as usize)?;
    Some(String::from_utf8_lossy(value).into_owned())
}

pub struct ServerConn {
    stream: super::tls::ServerStream,
    /// Bytes read from the server and not yet handled.
    pub buf: BytesMut,
    pub target: Arc<Target>,
    /// The server's BackendKeyData, for cancel requests.
    pub pid: i32,
    pub secret: i32,
    /// Parameter values this session has, as far as the router knows.
    pub params: Params,
    /// Silent (unreported) parameters this session has away from its login
    /// defaults, set by the router or by a client (to RESET when the next
    /// client does not want them).
    pub router_set: Vec<String>,
    /// A client changed session settings in a way the router could not
    /// follow: reset (RESET ALL, session authorization) before reuse.
    pub params_unknown: bool,
    /// The client that ran SQL-level PREPARE here: its statements are
    /// deallocated before another client uses the connection.
    pub sql_prepared_by: Option<u64>,
    pub tracker: ResponseTracker,
    pub created: Instant,
    /// Reaper ticks spent idle in the pool since last use.
    pub idle_ticks: u32,
    /// Fingerprint of the client parameters this session was last brought in
    /// line with (0: unknown). Equal fingerprints skip the comparison.
    pub synced_fp: u64,
    /// Set on any I/O or protocol failure: never reuse.
    pub broken: bool,
    /// Named statements prepared on this session by the router.
    pub prepared: crate::prepared::cache::ServerStatements,
}

impl ServerConn {
    pub(crate) fn new(
        stream: super::tls::ServerStream,
        target: Arc<Target>,
        max_message: usize,
    ) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            target,
            pid: 0,
            secret: 0,
            params: Params::default(),
            router_set: Vec::new(),
            params_unknown: false,
            sql_prepared_by: None,
            tracker: ResponseTracker::new(max_message),
            created: Instant::now(),
            idle_ticks: 0,
            synced_fp: 0,
            broken: false,
            prepared: crate::prepared::cache::ServerStatements::new(200),
        }
    }

    /// After the session's settings went back to its login defaults (RESET
    /// ALL, DISCARD ALL): forget the silent ones it had (reported ones came
    /// back in ParameterStatus), and compare afresh on the next loan.
    pub fn forget_settings(&mut self) {
        for name in std::mem::take(&mut self.router_set) {
            self.params.remove(&name);
        }
        self.params_unknown = false;
        self.synced_fp = 0;
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<(), BackendError> {
        if let Err(e) = self.stream.write_all(bytes).await {
            self.broken = true;
            return Err(BackendError::io(&self.target, e));
        }
        Ok(())
    }

    /// Reads more bytes into `buf`. Cancel-safe (a cancelled read reads nothing).
    pub async fn read_more(&mut self) -> Result<usize, BackendError> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) => {
                self.broken = true;
                Err(BackendError::Closed {
                    target: self.target.to_string(),
                })
            }
            Ok(n) => Ok(n),
            Err(e) => {
                self.broken = true;
                Err(BackendError::io(&self.target, e))
            }
        }
    }

    /// Whether the session is encrypted (SHOW SERVERS).
    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// May this connection be given to another client?
    pub fn is_reusable(&self) -> bool {
        !self.broken && self.buf.is_empty() && self.tracker.is_idle()
    }

    /// A cheap liveness check for an idle pooled connection: an idle server
    /// sends nothing, so readable data or EOF means it was terminated.
    pub fn looks_alive(&mut self) -> bool {
        if self.stream.has_input() {
            self.broken = true;
            return false;
        }
        true
    }

    /// Runs a router-issued simple query to completion, discarding its output.
    /// Returns the server's error, if any. Only for a connection no client is
    /// reading from (parameter sync, ROLLBACK, reset).
    pub async fn run_internal(
        &mut self,
        sql: &str,
        timeout: Duration,
    ) -> Result<Option<parse::ErrorFields>, BackendError> {
        self.query_internal(sql, timeout).await.map(|o| o.error)
    }

    /// Like [`ServerConn::run_internal`], returning the first column of the
    /// first row as text (e.g. `SELECT pg_current_wal_insert_lsn()`).
    pub async fn query_value(
        &mut self,
        sql: &str,
        timeout: Duration,
    ) -> Result<Option<String>, BackendError> {
        let out = self.query_internal(sql, timeout).await?;
        Ok(if out.error.is_some() {
            None
        } else {
            out.first_value
        })
    }

    async fn query_internal(
        &mut self,
        sql: &str,
        timeout: Duration,
    ) -> Result<Drained, BackendError> {
        let mut out = BytesMut::new();
        messages::query(&mut out, sql);
        self.write_all(&out).await?;
        self.tracker.client_sent(b'Q');
        match tokio::time::timeout(timeout, self.drain_collect()).await {
            Ok(r) => r,
            Err(_) => {
                self.broken = true;
                Err(BackendError::io(
                    &self.target,
                    std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{sql:?} timed out")),
                ))
            }
        }
    }

    /// Reads and discards server output until no ReadyForQuery is owed;
    /// returns the first ErrorResponse seen.
    pub async fn drain(&mut self) -> Result<Option<parse::ErrorFields>, BackendError> {
        self.drain_collect().await.map(|d| d.error)
    }

    /// Reads server output until no ReadyForQuery is owed, keeping the first
    /// error and the first column of the first DataRow (output here is small).
    async fn drain_collect(&mut self) -> Result<Drained, BackendError> {
        let mut drained = Drained::default();
        let mut pending_bytes = BytesMut::new();
        while self.tracker.pending() > 0 {
            if self.buf.is_empty() {
                self.read_more().await?;
            }
            let chunk = self.buf.split();
            let Self {
                tracker, params, ..
            } = self;
            let fed = tracker.server_bytes(&chunk, false, |k, v| params.set(k, v));
            if let Err(e) = fed {
                self.broken = true;
                return Err(BackendError::protocol(&self.target, e));
            }
            pending_bytes.extend_from_slice(&chunk);
            while let Ok(Some(msg)) =
                framing::split_message(&mut pending_bytes, framing::PG_MAX_MESSAGE_LEN)
            {
                match msg[0] {
                    b'E' if drained.error.is_none() => {
                        drained.error = Some(parse::error_fields(&msg[5..]))
                    }
                    b'D' if drained.first_value.is_none() => {
                        drained.first_value = first_column(&msg[5..])
                    }
                    _ => {}
                }
            }
        }
        Ok(drained)
    }
}
