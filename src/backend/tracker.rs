//! Response tracker: a synchronous, I/O-free state machine over what the
//! client sent and what the server answered. It answers one question for the
//! pool: "may this server connection be given to someone else now?"
//!
//! Rules (see <https://www.postgresql.org/docs/current/protocol-flow.html>):
//! - every Query ('Q'), FunctionCall ('F') and Sync ('S') earns exactly one
//!   ReadyForQuery ('Z'); Parse/Bind/Describe/Execute/Close/Flush without a
//!   following Sync leave the exchange open;
//! - ReadyForQuery carries the transaction status: 'I' idle, 'T' in a
//!   transaction block, 'E' in a failed transaction block;
//! - CopyIn/CopyOut/CopyBoth responses ('G'/'H'/'W') open COPY mode, which
//!   CommandComplete, ErrorResponse or ReadyForQuery end.

use crate::protocol::scan::Scanner;
use crate::protocol::ProtocolError;

/// Transaction status from the last ReadyForQuery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxStatus {
    Idle,
    InTransaction,
    Failed,
}

impl TxStatus {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'I' => Some(Self::Idle),
            b'T' => Some(Self::InTransaction),
            b'E' => Some(Self::Failed),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyMode {
    None,
    In,
    Out,
    Both,
}

/// What one chunk of server bytes did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fed {
    /// Offset just past the ReadyForQuery that made the connection idle,
    /// when `stop_when_idle` was asked and it happened in this chunk.
    pub idle_at: Option<usize>,
    /// Number of ErrorResponses seen.
    pub errors: u32,
}

#[derive(Debug)]
pub struct ResponseTracker {
    scanner: Scanner,
    /// ReadyForQuery messages still owed by the server.
    pending: u32,
    /// Extended-protocol messages sent since the last Sync.
    unsynced: bool,
    status: TxStatus,
    copy: CopyMode,
    /// The server sent something the protocol does not allow here.
    anomaly: bool,
    /// Syncs sent since the last Execute, and whether the last command was
    /// an Execute (not a Query): the server ignores Syncs it reads in
    /// copy-in mode, so a COPY FROM STDIN started by an Execute does not
    /// answer the Syncs sent between that Execute and CopyDone/CopyFail.
    syncs_since_execute: u32,
    last_was_execute: bool,
    /// Copy-in by an Execute in progress: client Syncs are not answered.
    ignoring_syncs: bool,
}

fn wanted(tag: u8) -> bool {
    matches!(tag, b'Z' | b'S' | b'G' | b'H' | b'W' | b'C' | b'E')
}

impl ResponseTracker {
    pub fn new(max_message: usize) -> Self {
        Self {
            scanner: Scanner::new(max_message),
            pending: 0,
            unsynced: false,
            status: TxStatus::Idle,
            copy: CopyMode::None,
            anomaly: false,
            syncs_since_execute: 0,
            last_was_execute: false,
            ignoring_syncs: false,
        }
    }

    /// Records one message the client sent on to the server.
    pub fn client_sent(&mut self, tag: u8) {
        match tag {
            b'Q' | b'F' => {
                self.pending += 1;
                self.last_was_execute = false;
            }
            b'S' if self.ignoring_syncs => self.unsynced = false,
            b'S' => {
                self.pending += 1;
                self.unsynced = false;
                self.syncs_since_execute += 1;
            }
            b'E' => {
                self.unsynced = true;
                self.last_was_execute = true;
                self.syncs_since_execute = 0;
            }
            b'c' | b'f' => self.ignoring_syncs = false,
            b'P' | b'B' | b'D' | b'C' | b'H' => self.unsynced = true,
            _ => {}
        }
    }

    /// Feeds server bytes. `on_param` receives ParameterStatus pairs. With
    /// `stop_when_idle`, scanning stops at the ReadyForQuery that makes the
    /// connection idle and its end offset is returned.
    pub fn server_bytes(
        &mut self,
        chunk: &[u8],
        stop_when_idle: bool,
        mut on_param: impl FnMut(&str, &str),
    ) -> Result<Fed, ProtocolError> {
        let mut fed = Fed::default();
        let Self {
            scanner,
            pending,
            unsynced,
            status,
            copy,
            anomaly,
            syncs_since_execute,
            last_was_execute,
            ignoring_syncs,
        } = self;
        scanner.feed(chunk, wanted, |tag, body, end| {
            match tag {
                b'Z' => {
                    match body.first().copied().and_then(TxStatus::from_byte) {
                        Some(s) => *status = s,
                        None => *anomaly = true,
                    }
                    if *pending == 0 {
                        *anomaly = true;
                    }
                    *pending = pending.saturating_sub(1);
                    *copy = CopyMode::None;
                    if stop_when_idle && *pending == 0 && !*unsynced && *status == TxStatus::Idle {
                        fed.idle_at = Some(end);
                        return false;
                    }
                }
                b'S' => {
                    if let Ok((name, value)) = crate::protocol::parse::parameter_status(body) {
                        on_param(name, value);
                    }
                }
                b'G' => {
                    *copy = CopyMode::In;
                    if *last_was_execute {
                        // Those Syncs reach the server in copy-in mode.
                        *pending = pending.saturating_sub(*syncs_since_execute);
                        *syncs_since_execute = 0;
                        *ignoring_syncs = true;
                        // The one after CopyDone closes the exchange.
                        *unsynced = true;
                    }
                }
                b'H' => *copy = CopyMode::Out,
                b'W' => *copy = CopyMode::Both,
                b'C' => *copy = CopyMode::None,
                b'E' => {
                    *copy = CopyMode::None;
                    // After an error the server discards up to a Sync,
                    // which it answers.
                    *ignoring_syncs = false;
                    fed.errors += 1;
                }
                _ => {}
            }
            true
        })?;
        Ok(fed)
    }

    /// Idle and clean: nothing owed, nothing half-sent, no transaction open.
    pub fn is_idle(&self) -> bool {
        self.pending == 0
            && !self.unsynced
            && self.status == TxStatus::Idle
            && self.copy == CopyMode::None
            && self.scanner.at_boundary()
            && !self.anomaly
    }

    pub fn pending(&self) -> u32 {
        self.pending
    }
    pub fn unsynced(&self) -> bool {
        self.unsynced
    }
    pub fn status(&self) -> TxStatus {
        self.status
    }
    pub fn copy(&self) -> CopyMode {
        self.copy
    }
    pub fn anomaly(&self) -> bool {
        self.anomaly
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::protocol::test_frame as msg;

    fn feed(t: &mut ResponseTracker, parts: &[(u8, &[u8])]) -> Fed {
        let bytes: Vec<u8> = parts.iter().flat_map(|(tag, b)| msg(*tag, b)).collect();
        t.server_bytes(&bytes, true, |_, _| {}).unwrap_or_default()
    }

    #[test]
    fn simple_query_cycle() {
        let mut t = ResponseTracker::new(1 << 20);
        t.client_sent(b'Q');
        assert!(!t.is_idle());
        let f = feed(
            &mut t,
            &[
                (b'T', b"x"),
                (b'D', b"row"),
                (b'C', b"SELECT 1\0"),
                (b'Z', b"I"),
            ],
        );
        assert!(f.idle_at.is_some());
        assert!(t.is_idle());
    }

    #[test]
    fn transaction_block_keeps_connection() {
        let mut t = ResponseTracker::new(1 << 20);
        t.client_sent(b'Q');
        let f = feed(&mut t, &[(b'C', b"BEGIN\0"), (b'Z', b"T")]);
        assert_eq!(f.idle_at, None);
        assert_eq!(t.status(), TxStatus::InTransaction);
        assert!(!t.is_idle());
        t.client_sent(b'Q');
        feed(&mut t, &[(b'E', b"Cboom\0\0"), (b'Z', b"E")]);
        assert_eq!(t.status(), TxStatus::Failed);
        t.client_sent(b'Q');
        let f = feed(&mut t, &[(b'C', b"ROLLBACK\0"), (b'Z', b"I")]);
        assert!(f.idle_at.is_some() && t.is_idle());
    }

    /// Table-driven: client messages, server replies, idle afterwards?
    #[test]
    fn extended_protocol_table() {
        type Case<'a> = (&'a [u8], &'a [(u8, &'a [u8])], bool);
        let cases: &[Case] = &[
            (
                b"PBES",
                &[(b'1', b""), (b'2', b""), (b'C', b"x\0"), (b'Z', b"I")],
                true,
            ),
            // Flush without Sync: results arrive but the exchange is still open.
            (b"PBEH", &[(b'1', b""), (b'2', b""), (b'C', b"x\0")], false),
            // Two pipelined Syncs: idle only after the second ReadyForQuery.
            (b"PBESPBES", &[(b'1', b""), (b'Z', b"I")], false),
            (b"PBESPBES", &[(b'Z', b"I"), (b'Z', b"I")], true),
            // Error: server skips to Sync, still one ReadyForQuery.
            (b"PBES", &[(b'E', b"C42601\0\0"), (b'Z', b"I")], true),
        ];
        for (i, (sent, replies, idle)) in cases.iter().enumerate() {
            let mut t = ResponseTracker::new(1 << 20);
            for tag in sent.iter() {
                t.client_sent(*tag);
            }
            feed(&mut t, replies);
            assert_eq!(t.is_idle(), *idle, "case {i}");
        }
    }

    #[test]
    fn copy_modes() {
        let mut t = ResponseTracker::new(1 << 20);
        t.client_sent(b'Q');
        feed(&mut t, &[(b'G', b"\0\0\0")]);
        assert_eq!(t.copy(), CopyMode::In);
        t.client_sent(b'd');
        t.client_sent(b'c');
        feed(&mut t, &[(b'C', b"COPY 1\0")]);
        assert_eq!(t.copy(), CopyMode::None);
        let f = feed(&mut t, &[(b'Z', b"I")]);
        assert!(f.idle_at.is_some());
    }

    #[test]
    fn copy_in_by_execute_ignores_the_syncs_sent_during_copy() {
        // tokio-postgres: Bind, Execute, Sync; CopyData; CopyDone, Sync.
        let mut t = ResponseTracker::new(1 << 20);
        for tag in [b'B', b'E', b'S'] {
            t.client_sent(tag);
        }
        feed(&mut t, &[(b'2', b""), (b'G', b"\0\0\0")]);
        t.client_sent(b'd');
        t.client_sent(b'c');
        t.client_sent(b'S');
        feed(&mut t, &[(b'C', b"COPY 1\0")]);
        let f = feed(&mut t, &[(b'Z', b"I")]);
        assert!(f.idle_at.is_some());
        assert!(t.is_idle());
    }

    #[test]
    fn params_and_unexpected_ready() {
        let mut t = ResponseTracker::new(1 << 20);
        t.client_sent(b'Q');
        let mut seen = Vec::new();
        let bytes = [msg(b'S', b"TimeZone\0UTC\0"), msg(b'Z', b"I")].concat();
        let r = t.server_bytes(&bytes, true, |k, v| {
            seen.push((k.to_string(), v.to_string()))
        });
        assert!(r.is_ok());
        assert_eq!(seen, vec![("TimeZone".to_string(), "UTC".to_string())]);
        // A ReadyForQuery nobody asked for marks the connection unusable.
        feed(&mut t, &[(b'Z', b"I")]);
        assert!(t.anomaly() && !t.is_idle());
    }
}
