//! Rewriting a client's extended-protocol messages for the server
//! connection it has now (see the module docs of [`super`]).

use super::cache::{Ensure, ServerStatements};
use super::splice::{empty_message, Splicer};
use super::{ClientStatements, Statement};
use crate::protocol::parse::cstr;
use crate::protocol::ProtocolError;
use bytes::{BufMut, BytesMut};
use std::sync::Arc;

/// Per-message state: the client's statements, the server connection's,
/// and the splicer of its answers.
pub struct Rewriter<'a> {
    pub client: &'a mut ClientStatements,
    pub server: &'a mut ServerStatements,
    pub splicer: &'a mut Splicer,
}

fn put_cstr(b: &mut BytesMut, s: &str) {
    b.put_slice(s.as_bytes());
    b.put_u8(0);
}

fn frame(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let at = out.len();
    out.put_u32(0);
    body(out);
    let len = (out.len() - at) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn parse_message(out: &mut BytesMut, s: &Statement) {
    frame(out, b'P', |b| {
        put_cstr(b, &s.server_name);
        put_cstr(b, &s.sql);
        b.put_u16(s.param_types.len() as u16);
        for t in &s.param_types {
            b.put_u32(*t);
        }
    });
}

fn close_statement(out: &mut BytesMut, name: &str) {
    frame(out, b'C', |b| {
        b.put_u8(b'S');
        put_cstr(b, name);
    });
}

impl Rewriter<'_> {
    /// Rewrites one whole client message (`msg` includes its header) into
    /// what the server gets (`to_server`), recording what the client is
    /// owed. Messages about unnamed statements and portals pass unchanged.
    pub fn message(&mut self, msg: &[u8], to_server: &mut BytesMut) -> Result<(), ProtocolError> {
        let tag = msg.first().copied().unwrap_or(0);
        let body = msg.get(5..).unwrap_or(&[]);
        match tag {
            b'P' => {
                let (name, rest) = cstr(body, "Parse")?;
                if name.is_empty() {
                    return self.pass(msg, to_server);
                }
                let (sql, rest) = cstr(rest, "Parse")?;
                let types = param_types(rest)?;
                let stmt = Statement::new(sql, types);
                self.client.insert(name, stmt.clone());
                if self.ensure(&stmt, to_server, false) {
                    parse_message(to_server, &stmt);
                    self.splicer.forward_parse(stmt.server_name.clone());
                } else {
                    self.splicer.synth(empty_message(b'1'));
                }
                Ok(())
            }
            b'B' => {
                let (portal, rest) = cstr(body, "Bind")?;
                let (name, rest) = cstr(rest, "Bind")?;
                let Some(stmt) = self.client.get(name).cloned() else {
                    // Unnamed, or unknown: the server answers (26000).
                    return self.pass(msg, to_server);
                };
                self.ensure(&stmt, to_server, true);
                frame(to_server, b'B', |b| {
                    put_cstr(b, portal);
                    put_cstr(b, &stmt.server_name);
                    b.put_slice(rest);
                });
                self.splicer.forward(b'B');
                Ok(())
            }
            b'D' => {
                let kind = body.first().copied().unwrap_or(0);
                let (name, _) = cstr(body.get(1..).unwrap_or(&[]), "Describe")?;
                let stmt = match kind {
                    b'S' => self.client.get(name).cloned(),
                    _ => None,
                };
                let Some(stmt) = stmt else {
                    return self.pass(msg, to_server);
                };
                self.ensure(&stmt, to_server, true);
                frame(to_server, b'D', |b| {
                    b.put_u8(b'S');
                    put_cstr(b, &stmt.server_name);
                });
                self.splicer.forward(b'D');
                Ok(())
            }
            b'C' => {
                let kind = body.first().copied().unwrap_or(0);
                let (name, _) = cstr(body.get(1..).unwrap_or(&[]), "Close")?;
                if kind == b'S' && !name.is_empty() {
                    // Other clients may share the server-side statement:
                    // only the client's name goes (PostgreSQL answers
                    // CloseComplete for unknown names too).
                    self.client.remove(name);
                    self.splicer.synth(empty_message(b'3'));
                    return Ok(());
                }
                self.pass(msg, to_server)
            }
            _ => self.pass(msg, to_server),
        }
    }

    fn pass(&mut self, msg: &[u8], to_server: &mut BytesMut) -> Result<(), ProtocolError> {
        to_server.extend_from_slice(msg);
        self.splicer.forward(msg.first().copied().unwrap_or(0));
        Ok(())
    }

    /// Makes sure the server connection will have `stmt` by the time the
    /// next message runs. With `inject`, a missing statement is prepared by
    /// an injected (hidden) Parse; without, the caller sends the client's.
    /// Returns whether it was missing. A Close of the same name always
    /// precedes a Parse: closing a statement that does not exist is not an
    /// error, and one left over (a hash collision, a Parse skipped after an
    /// error) would otherwise make the Parse fail with 42P05.
    fn ensure(&mut self, stmt: &Arc<Statement>, to_server: &mut BytesMut, inject: bool) -> bool {
        let evict = match self.server.ensure(stmt) {
            Ensure::Present => return false,
            Ensure::Prepare { evict } => evict,
        };
        if let Some(old) = evict.filter(|e| **e != *stmt.server_name) {
            close_statement(to_server, &old);
            self.splicer.hide(b'C');
        }
        close_statement(to_server, &stmt.server_name);
        self.splicer.hide(b'C');
        if inject {
            parse_message(to_server, stmt);
            self.splicer.hide_parse(stmt.server_name.clone());
        }
        true
    }
}

fn param_types(rest: &[u8]) -> Result<Vec<u32>, ProtocolError> {
    let bad = || ProtocolError::Malformed {
        what: "Parse",
        detail: "parameter types cut short".into(),
    };
    let n = rest.get(..2).ok_or_else(bad)?;
    let n = u16::from_be_bytes([n[0], n[1]]) as usize;
    let types = rest.get(2..2 + 4 * n).ok_or_else(bad)?;
    Ok(types
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::protocol::test_frame as msg;

    fn parse(name: &str, sql: &str) -> Vec<u8> {
        msg(
            b'P',
            &[name.as_bytes(), b"\0", sql.as_bytes(), b"\0\0\0"].concat(),
        )
    }

    fn bind(name: &str) -> Vec<u8> {
        msg(b'B', &[b"\0", name.as_bytes(), b"\0\0\0\0\0\0\0"].concat())
    }

    /// (tag, first cstr after an optional kind byte) of each message.
    fn summary(b: &[u8]) -> Vec<(char, String)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i + 5 <= b.len() {
            let tag = b[i];
            let len = u32::from_be_bytes([b[i + 1], b[i + 2], b[i + 3], b[i + 4]]) as usize;
            let body = &b[i + 5..i + 1 + len];
            let body = if matches!(tag, b'C' | b'D') {
                &body[1..]
            } else {
                body
            };
            let name = match tag {
                b'B' => cstr(body, "")
                    .ok()
                    .and_then(|(_, r)| cstr(r, "").ok())
                    .map(|(n, _)| n),
                _ => cstr(body, "").ok().map(|(n, _)| n),
            };
            out.push((tag as char, name.unwrap_or("").to_string()));
            i += 1 + len;
        }
        out
    }

    #[test]
    fn statements_are_prepared_once_per_server_connection_and_shared() {
        let (mut c1, mut c2) = (ClientStatements::default(), ClientStatements::default());
        let mut server = ServerStatements::new(10);
        let mut splicer = Splicer::default();
        let server_name = Statement::new("SELECT 1", vec![]).server_name.to_string();
        let mut to_server = BytesMut::new();
        // Client 1 prepares s1 and binds it: Close+Parse under the shared name.
        let mut r = Rewriter {
            client: &mut c1,
            server: &mut server,
            splicer: &mut splicer,
        };
        r.message(&parse("s1", "SELECT 1"), &mut to_server)
            .unwrap_or_else(|e| panic!("{e}"));
        r.message(&bind("s1"), &mut to_server)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            summary(&to_server),
            [
                ('C', server_name.clone()),
                ('P', server_name.clone()),
                ('B', server_name.clone())
            ]
        );
        // Client 2 prepares the same SQL as "q": answered by the router.
        to_server.clear();
        let mut r = Rewriter {
            client: &mut c2,
            server: &mut server,
            splicer: &mut splicer,
        };
        r.message(&parse("q", "SELECT 1"), &mut to_server)
            .unwrap_or_else(|e| panic!("{e}"));
        r.message(&bind("q"), &mut to_server)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(summary(&to_server), [('B', server_name.clone())]);
        // On a fresh server connection, client 1's Bind injects the Parse.
        let mut fresh = ServerStatements::new(10);
        to_server.clear();
        let mut r = Rewriter {
            client: &mut c1,
            server: &mut fresh,
            splicer: &mut splicer,
        };
        r.message(&bind("s1"), &mut to_server)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            summary(&to_server),
            [
                ('C', server_name.clone()),
                ('P', server_name.clone()),
                ('B', server_name)
            ]
        );
        // Close forgets the client's name only; unknown names pass through.
        to_server.clear();
        let close = msg(b'C', b"Ss1\0");
        let mut r = Rewriter {
            client: &mut c1,
            server: &mut fresh,
            splicer: &mut splicer,
        };
        r.message(&close, &mut to_server)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(to_server.is_empty());
        r.message(&bind("s1"), &mut to_server)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(summary(&to_server), [('B', "s1".to_string())]);
        // Unnamed statements pass unchanged.
        to_server.clear();
        r.message(&parse("", "SELECT 2"), &mut to_server)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(summary(&to_server), [('P', String::new())]);
    }

    #[test]
    fn a_truncated_parse_is_a_protocol_error() {
        let mut c = ClientStatements::default();
        let mut s = ServerStatements::new(2);
        let mut sp = Splicer::default();
        let mut r = Rewriter {
            client: &mut c,
            server: &mut s,
            splicer: &mut sp,
        };
        let bad = msg(b'P', b"s1\0SELECT $1\0\0\x02\0\0");
        assert!(r.message(&bad, &mut BytesMut::new()).is_err());
    }
}
