//! Encoders for the messages the router writes itself. Every router-made
//! message goes through here (never hand-written bytes elsewhere).

use bytes::{BufMut, BytesMut};

/// Writes `tag | len | body` where `body` is produced by `f`.
fn tagged(buf: &mut BytesMut, tag: u8, f: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_u32(0);
    f(buf);
    let len = (buf.len() - at) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn cstr(buf: &mut BytesMut, s: &str) {
    // A NUL inside would end the field early; the router never sends such text,
    // but replace it rather than emit a malformed message.
    if s.as_bytes().contains(&0) {
        buf.put_slice(s.replace('\0', "?").as_bytes());
    } else {
        buf.put_slice(s.as_bytes());
    }
    buf.put_u8(0);
}

/// Severity of a router-made ErrorResponse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the connection stays usable.
    Error,
    /// The router closes the connection after sending it.
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// ErrorResponse ('E') with severity, SQLSTATE, message and optional detail/hint.
pub fn error_response(
    buf: &mut BytesMut,
    severity: Severity,
    code: &str,
    message: &str,
    detail: Option<&str>,
) {
    tagged(buf, b'E', |b| {
        b.put_u8(b'S');
        cstr(b, severity.as_str());
        b.put_u8(b'V');
        cstr(b, severity.as_str());
        b.put_u8(b'C');
        cstr(b, code);
        b.put_u8(b'M');
        cstr(b, message);
        if let Some(d) = detail {
            b.put_u8(b'D');
            cstr(b, d);
        }
        b.put_u8(0);
    });
}

/// NoticeResponse ('N') at NOTICE severity.
pub fn notice(buf: &mut BytesMut, message: &str) {
    tagged(buf, b'N', |b| {
        for (field, value) in [
            (b'S', "NOTICE"),
            (b'V', "NOTICE"),
            (b'C', "00000"),
            (b'M', message),
        ] {
            b.put_u8(field);
            cstr(b, value);
        }
        b.put_u8(0);
    });
}

pub fn parse_complete(buf: &mut BytesMut) {
    tagged(buf, b'1', |_| {});
}

pub fn bind_complete(buf: &mut BytesMut) {
    tagged(buf, b'2', |_| {});
}

pub fn close_complete(buf: &mut BytesMut) {
    tagged(buf, b'3', |_| {});
}

/// NoData ('n'): Describe of a statement that returns no rows.
pub fn no_data(buf: &mut BytesMut) {
    tagged(buf, b'n', |_| {});
}

/// EmptyQueryResponse ('I'): the answer to a Query with no statement.
pub fn empty_query_response(buf: &mut BytesMut) {
    tagged(buf, b'I', |_| {});
}

/// CommandComplete ('C') with a command tag such as "SET".
pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    tagged(buf, b'C', |b| cstr(b, tag));
}

/// RowDescription ('T') for text columns (type `text`, OID 25).
pub fn row_description(buf: &mut BytesMut, columns: &[&str]) {
    tagged(buf, b'T', |b| {
        b.put_u16(columns.len() as u16);
        for c in columns {
            cstr(b, c);
            b.put_u32(0); // table OID
            b.put_u16(0); // column number
            b.put_u32(25); // type OID: text
            b.put_i16(-1); // variable length
            b.put_i32(-1); // no type modifier
            b.put_u16(0); // text format
        }
    });
}

/// DataRow ('D') of text values (`None`: NULL).
pub fn data_row(buf: &mut BytesMut, values: &[Option<&str>]) {
    tagged(buf, b'D', |b| {
        b.put_u16(values.len() as u16);
        for v in values {
            match v {
                Some(v) => {
                    b.put_u32(v.len() as u32);
                    b.put_slice(v.as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
    });
}

pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    tagged(buf, b'Z', |b| b.put_u8(status));
}

pub fn auth_ok(buf: &mut BytesMut) {
    tagged(buf, b'R', |b| b.put_u32(0));
}

pub fn auth_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    tagged(buf, b'R', |b| {
        b.put_u32(5);
        b.put_slice(&salt);
    });
}

pub fn auth_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    tagged(buf, b'R', |b| {
        b.put_u32(10);
        for m in mechanisms {
            cstr(b, m);
        }
        b.put_u8(0);
    });
}

pub fn auth_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    tagged(buf, b'R', |b| {
        b.put_u32(11);
        b.put_slice(data);
    });
}

pub fn auth_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    tagged(buf, b'R', |b| {
        b.put_u32(12);
        b.put_slice(data);
    });
}

pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    tagged(buf, b'S', |b| {
        cstr(b, name);
        cstr(b, value);
    });
}

pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    tagged(buf, b'K', |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

/// NegotiateProtocolVersion ('v'): the newest minor version we speak and the
/// `_pq_.` options we did not recognise.
pub fn negotiate_protocol_version(buf: &mut BytesMut, minor: u32, unrecognized: &[String]) {
    tagged(buf, b'v', |b| {
        b.put_u32(minor);
        b.put_u32(unrecognized.len() as u32);
        for o in unrecognized {
            cstr(b, o);
        }
    });
}

/// A simple Query ('Q').
pub fn query(buf: &mut BytesMut, sql: &str) {
    tagged(buf, b'Q', |b| cstr(b, sql));
}

pub fn sync(buf: &mut BytesMut) {
    tagged(buf, b'S', |_| {});
}

pub fn terminate(buf: &mut BytesMut) {
    tagged(buf, b'X', |_| {});
}

pub fn copy_fail(buf: &mut BytesMut, reason: &str) {
    tagged(buf, b'f', |b| cstr(b, reason));
}

/// CancelRequest: an untagged 16-byte packet sent on a fresh connection.
pub fn cancel_request(buf: &mut BytesMut, pid: i32, secret: i32) {
    buf.put_u32(16);
    buf.put_u32(80877102);
    buf.put_i32(pid);
    buf.put_i32(secret);
}

/// SSLRequest: asks the server to switch to TLS before the startup packet.
pub fn ssl_request(buf: &mut BytesMut) {
    buf.put_u32(8);
    buf.put_u32(crate::protocol::parse::SSL_REQUEST_CODE);
}

/// StartupMessage for protocol 3.0 with the given parameters.
pub fn startup(buf: &mut BytesMut, params: &[(&str, &str)]) {
    let at = buf.len();
    buf.put_u32(0);
    buf.put_u32(crate::protocol::parse::PROTOCOL_3_0);
    for (k, v) in params {
        cstr(buf, k);
        cstr(buf, v);
    }
    buf.put_u8(0);
    let len = (buf.len() - at) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// PasswordMessage ('p') with a cleartext or md5 password.
pub fn password(buf: &mut BytesMut, password: &str) {
    tagged(buf, b'p', |b| cstr(b, password));
}

/// SASLInitialResponse ('p').
pub fn sasl_initial_response(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    tagged(buf, b'p', |b| {
        cstr(b, mechanism);
        b.put_i32(data.len() as i32);
        b.put_slice(data);
    });
}

/// SASLResponse ('p').
pub fn sasl_response(buf: &mut BytesMut, data: &[u8]) {
    tagged(buf, b'p', |b| b.put_slice(data));
}

/// Quotes a value as a SQL string literal: 'it''s', E'a\\b'.
pub fn quote_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 3);
    // With backslashes, an E'' literal: it means the same whatever the
    // session's standard_conforming_strings.
    if value.contains('\\') {
        out.push('E');
    }
    out.push('\'');
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// Quotes a name as a SQL identifier ("DateStyle").
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_layout() {
        let mut b = BytesMut::new();
        error_response(&mut b, Severity::Error, "28P01", "bad", None);
        assert_eq!(b[0], b'E');
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        assert_eq!(len + 1, b.len());
        let fields = crate::protocol::parse::error_fields(&b[5..]);
        assert_eq!(fields.code, "28P01");
        assert_eq!(fields.message, "bad");
        assert_eq!(fields.severity, "ERROR");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"a\b'c"), r"E'a\\b''c'");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
