//! A streaming scanner over server-to-client bytes.
//!
//! The router forwards server output as it arrives, chunk by chunk, and never
//! buffers a whole DataRow or CopyData. The scanner tracks message boundaries
//! across chunk edges and hands the caller only the messages it asked for
//! ("interesting" tags such as ReadyForQuery), with their body and the offset
//! in the chunk where they end. Header-only scanning costs a few ns a message;
//! a full decode costs 15x more (see shared/CRATES.md).

use super::framing::{ProtocolError, HEADER_LEN};

/// Bodies of interesting messages larger than this are reported truncated;
/// none of the messages the router reads comes close.
const MAX_CAPTURE: usize = 64 * 1024;

#[derive(Debug, Default)]
pub struct Scanner {
    hdr: [u8; HEADER_LEN],
    hdr_len: usize,
    tag: u8,
    remaining: usize,
    capturing: bool,
    body: Vec<u8>,
    max: usize,
}

impl Scanner {
    pub fn new(max_message: usize) -> Self {
        Self {
            max: max_message,
            ..Default::default()
        }
    }

    /// True when the scanner stands exactly on a message boundary.
    pub fn at_boundary(&self) -> bool {
        self.hdr_len == 0 && self.remaining == 0
    }

    /// Feeds a chunk. For each completed message whose tag passes `wanted`,
    /// calls `on(tag, body, end)` where `end` is the offset just past the
    /// message in `chunk`. Returning `false` from `on` stops the scan there
    /// (the rest of the chunk is left unscanned) and `feed` returns that offset.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        wanted: impl Fn(u8) -> bool,
        mut on: impl FnMut(u8, &[u8], usize) -> bool,
    ) -> Result<usize, ProtocolError> {
        let mut i = 0;
        while i < chunk.len() {
            if self.remaining > 0 {
                let take = self.remaining.min(chunk.len() - i);
                if self.capturing && self.body.len() < MAX_CAPTURE {
                    let room = (MAX_CAPTURE - self.body.len()).min(take);
                    self.body.extend_from_slice(&chunk[i..i + room]);
                }
                i += take;
                self.remaining -= take;
                if self.remaining == 0 && self.capturing {
                    self.capturing = false;
                    if !on(self.tag, &self.body, i) {
                        return Ok(i);
                    }
                }
                continue;
            }
            // Fast path: a whole header in the chunk and no partial header pending.
            let (tag, body_len) = if self.hdr_len == 0 && chunk.len() - i >= HEADER_LEN {
                let h = &chunk[i..i + HEADER_LEN];
                i += HEADER_LEN;
                parse_header(h[0], [h[1], h[2], h[3], h[4]], self.max)?
            } else {
                let take = (HEADER_LEN - self.hdr_len).min(chunk.len() - i);
                self.hdr[self.hdr_len..self.hdr_len + take].copy_from_slice(&chunk[i..i + take]);
                self.hdr_len += take;
                i += take;
                if self.hdr_len < HEADER_LEN {
                    break;
                }
                self.hdr_len = 0;
                let h = self.hdr;
                parse_header(h[0], [h[1], h[2], h[3], h[4]], self.max)?
            };
            let want = wanted(tag);
            if want && chunk.len() - i >= body_len {
                // Whole body in this chunk: report without copying.
                let end = i + body_len;
                if !on(tag, &chunk[i..end], end) {
                    return Ok(end);
                }
                i = end;
                continue;
            }
            self.tag = tag;
            self.remaining = body_len;
            self.capturing = want;
            self.body.clear();
            if body_len == 0 && want {
                self.capturing = false;
                if !on(tag, &[], i) {
                    return Ok(i);
                }
            }
        }
        Ok(chunk.len())
    }
}

fn parse_header(tag: u8, len: [u8; 4], max: usize) -> Result<(u8, usize), ProtocolError> {
    let len = u32::from_be_bytes(len);
    if len < 4 {
        return Err(ProtocolError::LengthTooSmall {
            tag: tag as char,
            len,
        });
    }
    let body = len as usize - 4;
    if body > max {
        return Err(ProtocolError::TooLarge {
            tag: tag as char,
            len: len as usize,
            max,
        });
    }
    Ok((tag, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::protocol::test_frame as msg;

    fn stream() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend(msg(b'T', b"rowdesc"));
        for i in 0..50u8 {
            s.extend(msg(b'D', &vec![i; i as usize * 7]));
        }
        s.extend(msg(b'C', b"SELECT 50\0"));
        s.extend(msg(b'Z', b"I"));
        s
    }

    /// Whatever the chunking, the same messages are reported at the same
    /// absolute offsets.
    #[test]
    fn chunking_does_not_matter() {
        let s = stream();
        let whole = {
            let mut sc = Scanner::new(1 << 20);
            let mut got = Vec::new();
            let r = sc.feed(
                &s,
                |t| t == b'C' || t == b'Z',
                |t, b, end| {
                    got.push((t, b.to_vec(), end));
                    true
                },
            );
            assert_eq!(r, Ok(s.len()));
            got
        };
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[1], (b'Z', b"I".to_vec(), s.len()));
        for size in [1, 2, 3, 5, 7, 64, 1000] {
            let mut sc = Scanner::new(1 << 20);
            let mut got = Vec::new();
            let mut base = 0;
            for chunk in s.chunks(size) {
                let r = sc.feed(
                    chunk,
                    |t| t == b'C' || t == b'Z',
                    |t, b, end| {
                        got.push((t, b.to_vec(), base + end));
                        true
                    },
                );
                assert_eq!(r, Ok(chunk.len()));
                base += chunk.len();
            }
            assert_eq!(got, whole, "chunk size {size}");
            assert!(sc.at_boundary());
        }
    }

    #[test]
    fn stop_reports_offset() {
        let mut s = msg(b'Z', b"I");
        s.extend(msg(b'N', b"late"));
        let mut sc = Scanner::new(100);
        let r = sc.feed(&s, |t| t == b'Z', |_, _, _| false);
        assert_eq!(r, Ok(6));
    }

    #[test]
    fn bad_lengths_are_errors() {
        let mut sc = Scanner::new(100);
        assert!(sc.feed(b"D\0\0\0\x02", |_| false, |_, _, _| true).is_err());
        let mut sc = Scanner::new(100);
        assert!(sc.feed(b"D\x40\0\0\0", |_| false, |_, _, _| true).is_err());
    }
}
