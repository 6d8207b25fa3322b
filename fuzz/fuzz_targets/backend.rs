//! Server bytes: the response tracker (ReadyForQuery accounting, COPY
//! state), the response splicer and the messages the router decodes.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgrouter::backend::tracker::ResponseTracker;
use pgrouter::prepared::splice::Splicer;
use pgrouter::protocol::{framing, parse};

fuzz_target!(|data: &[u8]| {
    // The first bytes say what the client sent (so the tracker owes
    // answers); the rest is what the server answers, fed in two chunks.
    let (tags, server) = data.split_at(data.len().min(8));
    let mut tracker = ResponseTracker::new(1 << 20);
    for &t in tags {
        tracker.client_sent(b"QPBEDSCHdcf"[t as usize % 11]);
    }
    let cut = server.len() / 2;
    for chunk in [&server[..cut], &server[cut..]] {
        if tracker.server_bytes(chunk, true, |_, _| {}).is_err() {
            break;
        }
    }
    let mut splicer = Splicer::default();
    let mut out = BytesMut::new();
    splicer.feed(server, &mut out);
    splicer.after_feed(&mut out);
    let mut buf = BytesMut::from(server);
    while let Ok(Some(msg)) = framing::split_message(&mut buf, 1 << 20) {
        let body = &msg[5..];
        match msg[0] {
            b'E' | b'N' => {
                let _ = parse::error_fields(body);
            }
            b'S' => {
                let _ = parse::parameter_status(body);
            }
            _ => {}
        }
    }
});
