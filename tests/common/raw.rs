//! A raw-socket client for sending exact (and deliberately wrong) bytes.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct RawClient {
    pub stream: TcpStream,
}

pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

pub fn startup_packet(minor: u16, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = ((3u32 << 16) | minor as u32).to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut p = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    p.extend(body);
    p
}

/// Parse (unnamed statement, no parameters) + Bind + Execute + Sync.
pub fn extended_query(sql: &str) -> Vec<u8> {
    let mut parse = vec![0u8];
    parse.extend_from_slice(sql.as_bytes());
    parse.extend_from_slice(&[0, 0, 0]);
    [
        msg(b'P', &parse),
        msg(b'B', b"\0\0\0\0\0\0\0\0"),
        msg(b'E', b"\0\0\0\0\0"),
        msg(b'S', b""),
    ]
    .concat()
}

pub fn query(sql: &str) -> Vec<u8> {
    let mut b = sql.as_bytes().to_vec();
    b.push(0);
    msg(b'Q', &b)
}

/// (SQLSTATE, message) of an ErrorResponse body.
pub fn error_fields(body: &[u8]) -> (String, String) {
    let (mut code, mut message) = (String::new(), String::new());
    for field in body.split(|&b| b == 0) {
        if let Some((&k, v)) = field.split_first() {
            let v = String::from_utf8_lossy(v).to_string();
            match k {
                b'C' => code = v,
                b'M' => message = v,
                _ => {}
            }
        }
    }
    (code, message)
}

impl RawClient {
    pub async fn connect(port: u16) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        RawClient { stream }
    }

    /// Connects and logs in as a trust user; returns once ReadyForQuery arrives.
    pub async fn login(port: u16, user: &str, db: &str) -> RawClient {
        let mut c = Self::connect(port).await;
        c.send(&startup_packet(0, &[("user", user), ("database", db)]))
            .await;
        c.until_ready().await;
        c
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .unwrap_or_else(|e| panic!("send: {e}"));
    }

    /// Next message, or None on EOF / 10 s of silence.
    pub async fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut hdr = [0u8; 5];
        let read =
            tokio::time::timeout(Duration::from_secs(10), self.stream.read_exact(&mut hdr)).await;
        if !matches!(read, Ok(Ok(_))) {
            return None;
        }
        let len = u32::from_be_bytes([hdr[1], hdr[2], hdr[3], hdr[4]]) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        self.stream.read_exact(&mut body).await.ok()?;
        Some((hdr[0], body))
    }

    /// Reads messages up to and including ReadyForQuery; returns them.
    pub async fn until_ready(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut got = Vec::new();
        while let Some(m) = self.next().await {
            let done = m.0 == b'Z';
            got.push(m);
            if done {
                return got;
            }
        }
        panic!(
            "connection ended before ReadyForQuery; got {:?}",
            got.iter().map(|m| m.0 as char).collect::<String>()
        );
    }

    /// True once the peer has closed (EOF) within 5 s.
    pub async fn closed(&mut self) -> bool {
        let mut b = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut b)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}
