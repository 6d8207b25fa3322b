//! Decoders for the few messages the router must read: startup packets,
//! password/SASL responses, ErrorResponse fields, ParameterStatus.
//! Bodies exclude the tag and length word.

use super::framing::{malformed, ProtocolError};

pub const PROTOCOL_3_0: u32 = 3 << 16;
pub const SSL_REQUEST_CODE: u32 = 80877103;
pub const GSSENC_REQUEST_CODE: u32 = 80877104;
pub const CANCEL_REQUEST_CODE: u32 = 80877102;
/// PostgreSQL's limit on startup parameters is implicit in the 10 kB packet;
/// we also cap the count so a packet of empty pairs is cheap to reject.
pub const MAX_STARTUP_PARAMS: usize = 64;

/// The first packet a client sends.
#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel { pid: i32, secret: i32 },
    Startup(Startup),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Startup {
    /// Requested minor version of protocol 3 (newer minors get NegotiateProtocolVersion).
    pub minor: u16,
    /// name/value pairs in the order sent (`user`, `database`, `options`, GUCs...).
    pub params: Vec<(String, String)>,
}

impl Startup {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a startup-phase packet (without its length word).
pub fn startup_packet(body: &[u8]) -> Result<StartupPacket, ProtocolError> {
    if body.len() < 4 {
        return Err(malformed("startup", "too short"));
    }
    let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let rest = &body[4..];
    match code {
        SSL_REQUEST_CODE => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE => {
            if rest.len() != 8 {
                return Err(malformed("CancelRequest", "expected 8 bytes of key"));
            }
            let pid = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
            let secret = i32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
            Ok(StartupPacket::Cancel { pid, secret })
        }
        v => {
            let (major, minor) = ((v >> 16) as u16, (v & 0xffff) as u16);
            if major != 3 {
                return Err(ProtocolError::UnsupportedProtocol { major, minor });
            }
            Ok(StartupPacket::Startup(Startup {
                minor,
                params: startup_params(rest)?,
            }))
        }
    }
}

fn startup_params(mut rest: &[u8]) -> Result<Vec<(String, String)>, ProtocolError> {
    let mut params = Vec::new();
    loop {
        let (name, after) = cstr(rest, "startup")?;
        if name.is_empty() {
            if !after.is_empty() {
                return Err(malformed("startup", "bytes after the terminator"));
            }
            break;
        }
        let (value, after) = cstr(after, "startup")?;
        if params.len() == MAX_STARTUP_PARAMS {
            return Err(malformed(
                "startup",
                format!("more than {MAX_STARTUP_PARAMS} parameters"),
            ));
        }
        params.push((name.to_string(), value.to_string()));
        rest = after;
    }
    Ok(params)
}

/// Reads a NUL-terminated UTF-8 string; returns it and the bytes after the NUL.
pub fn cstr<'a>(buf: &'a [u8], what: &'static str) -> Result<(&'a str, &'a [u8]), ProtocolError> {
    // memchr: every Query's text passes here (a byte loop cost ~5
    // instructions per byte).
    let nul = memchr::memchr(0, buf).ok_or_else(|| malformed(what, "missing string terminator"))?;
    let s = std::str::from_utf8(&buf[..nul]).map_err(|_| malformed(what, "invalid UTF-8"))?;
    Ok((s, &buf[nul + 1..]))
}

/// PasswordMessage body (cleartext or md5 response): one C string.
pub fn password(body: &[u8]) -> Result<&str, ProtocolError> {
    cstr(body, "PasswordMessage").map(|(s, _)| s)
}

/// SASLInitialResponse body: mechanism name, then Int32 length and data.
pub fn sasl_initial_response(body: &[u8]) -> Result<(&str, &[u8]), ProtocolError> {
    let (mechanism, rest) = cstr(body, "SASLInitialResponse")?;
    if rest.len() < 4 {
        return Err(malformed("SASLInitialResponse", "missing data length"));
    }
    let len = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let data = &rest[4..];
    if len < 0 || len as usize != data.len() {
        return Err(malformed(
            "SASLInitialResponse",
            "data length does not match",
        ));
    }
    Ok((mechanism, data))
}

/// The fields of an ErrorResponse/NoticeResponse the router uses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
}

/// Parses ErrorResponse/NoticeResponse fields leniently (a server error is
/// reported whatever its shape).
pub fn error_fields(body: &[u8]) -> ErrorFields {
    let mut f = ErrorFields::default();
    let mut rest = body;
    while let Some((&kind, after)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let Ok((value, after)) = cstr(after, "ErrorResponse") else {
            break;
        };
        match kind {
            b'V' => f.severity = value.to_string(),
            b'S' if f.severity.is_empty() => f.severity = value.to_string(),
            b'C' => f.code = value.to_string(),
            b'M' => f.message = value.to_string(),
            b'D' => f.detail = Some(value.to_string()),
            _ => {}
        }
        rest = after;
    }
    f
}

/// ParameterStatus body: name and value.
pub fn parameter_status(body: &[u8]) -> Result<(&str, &str), ProtocolError> {
    let (name, rest) = cstr(body, "ParameterStatus")?;
    let (value, _) = cstr(rest, "ParameterStatus")?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup_body(minor: u16, pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut v = (PROTOCOL_3_0 | minor as u32).to_be_bytes().to_vec();
        for (k, val) in pairs {
            v.extend_from_slice(k.as_bytes());
            v.push(0);
            v.extend_from_slice(val.as_bytes());
            v.push(0);
        }
        v.push(0);
        v
    }

    #[test]
    fn parses_startup() {
        let b = startup_body(0, &[("user", "app"), ("database", "db")]);
        let StartupPacket::Startup(s) = startup_packet(&b).unwrap_or(StartupPacket::SslRequest)
        else {
            panic!("not a startup");
        };
        assert_eq!(s.get("user"), Some("app"));
        assert_eq!(s.get("database"), Some("db"));
        assert_eq!(s.minor, 0);
    }

    #[test]
    fn rejects_bad_startups() {
        assert!(startup_packet(&[0, 2, 0, 0, 0]).is_err()); // protocol 2
        let mut b = startup_body(0, &[("user", "app")]);
        b.pop(); // no terminator
        assert!(startup_packet(&b).is_err());
        let b = startup_body(0, &[("user", "\u{0}")]);
        assert!(startup_packet(&b).is_err());
        let mut b = (PROTOCOL_3_0).to_be_bytes().to_vec();
        b.extend_from_slice(b"user\0\xff\xfe\0\0");
        assert!(matches!(
            startup_packet(&b),
            Err(ProtocolError::Malformed { .. })
        ));
        let many: Vec<(String, String)> = (0..100).map(|i| (format!("k{i}"), "v".into())).collect();
        let pairs: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert!(startup_packet(&startup_body(0, &pairs)).is_err());
    }

    #[test]
    fn parses_special_requests() {
        assert_eq!(
            startup_packet(&SSL_REQUEST_CODE.to_be_bytes()),
            Ok(StartupPacket::SslRequest)
        );
        let mut c = CANCEL_REQUEST_CODE.to_be_bytes().to_vec();
        c.extend_from_slice(&7i32.to_be_bytes());
        c.extend_from_slice(&(-9i32).to_be_bytes());
        assert_eq!(
            startup_packet(&c),
            Ok(StartupPacket::Cancel { pid: 7, secret: -9 })
        );
    }

    #[test]
    fn sasl_initial_response_lengths() {
        let mut b = b"SCRAM-SHA-256\0".to_vec();
        b.extend_from_slice(&3i32.to_be_bytes());
        b.extend_from_slice(b"abc");
        assert_eq!(
            sasl_initial_response(&b),
            Ok(("SCRAM-SHA-256", &b"abc"[..]))
        );
        b.push(b'x');
        assert!(sasl_initial_response(&b).is_err());
    }
}
