//! Splicing server responses so the client sees exactly the answers to its
//! own messages, in order: answers to messages the router injected are
//! dropped, answers the router makes itself are inserted where the server's
//! would have been. Works on a byte stream (rows are never buffered: only
//! message headers are looked at).

use bytes::{BufMut, Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Arc;

use crate::spares::Spares;

#[derive(Debug)]
enum Owed {
    /// The server answers a client message: forwarded. A Parse carries the
    /// server-side name it prepares.
    Forward(u8, Option<Arc<str>>),
    /// The server answers a message the router injected: dropped.
    Hide(u8, Option<Arc<str>>),
    /// The router answers (nothing was sent to the server).
    Synth(Bytes),
}

/// Whether server message `server` completes the answer to client message
/// `client` (extended protocol: one completion per message; Query, Sync and
/// FunctionCall end with ReadyForQuery).
fn completes(client: u8, server: u8) -> bool {
    match client {
        b'P' => server == b'1',
        b'B' => server == b'2',
        b'C' => server == b'3',
        b'D' => matches!(server, b'T' | b'n'),
        b'E' => matches!(server, b'C' | b'I' | b's'),
        b'S' | b'Q' | b'F' => server == b'Z',
        _ => false,
    }
}

fn extended(client: u8) -> bool {
    matches!(client, b'P' | b'B' | b'C' | b'D' | b'E')
}

#[derive(Debug, Default)]
pub struct Splicer {
    queue: VecDeque<Owed>,
    /// Header bytes of a message not yet complete.
    header: Vec<u8>,
    /// How many of them the caller already wrote (after a scan).
    header_emitted: usize,
    /// Body bytes left of the current message, and whether it is forwarded.
    body_left: usize,
    forwarding: bool,
    /// Server names whose Parse failed or was skipped after an error: the
    /// connection does not have them after all.
    unprepared: Vec<Arc<str>>,
    /// Hide and Synth entries queued: while 0, the client gets the server's
    /// bytes unchanged ([`Splicer::passthrough`]).
    special: usize,
    /// In a COPY FROM STDIN started by an Execute: the server ignores the
    /// Syncs it reads until CopyDone/CopyFail, so they are owed nothing.
    ignoring_syncs: bool,
}

/// Spare splicers one worker thread keeps for the next loan.
const SPARES_PER_THREAD: usize = 64;

thread_local! {
    /// Splicers of loans that ended, with their queue's memory. Boxed: the
    /// sessions hold them boxed, and the box is one of the allocations saved.
    static SPARES: Spares<Box<Splicer>> = const { Spares::new(SPARES_PER_THREAD) };
}

impl Splicer {
    /// A fresh splicer, from this thread's spares when it has one.
    pub fn spare() -> Box<Splicer> {
        SPARES.with(Spares::take).unwrap_or_default()
    }

    /// Gives a splicer back for another loan, emptied. One that grew for an
    /// unusual batch is let go.
    pub fn recycle(mut self: Box<Self>) {
        if self.queue.capacity() > 64
            || self.header.capacity() > 16
            || self.unprepared.capacity() > 16
        {
            return;
        }
        // Emptied in place (a rebuilt value would drop and move the old).
        let Splicer {
            queue,
            header,
            header_emitted,
            body_left,
            forwarding,
            unprepared,
            special,
            ignoring_syncs,
        } = &mut *self;
        queue.clear();
        header.clear();
        unprepared.clear();
        (*header_emitted, *body_left, *forwarding) = (0, 0, false);
        (*special, *ignoring_syncs) = (0, false);
        SPARES.with(|s| s.put(self));
    }

    /// A client message sent to the server as is. Only messages the
    /// server answers get an entry: not Flush, nor CopyData/CopyDone/
    /// CopyFail (COPY's end is answered as the Execute's or Query's).
    pub fn forward(&mut self, client_tag: u8) {
        match client_tag {
            b'c' | b'f' => self.ignoring_syncs = false,
            b'S' if self.ignoring_syncs => return,
            _ => {}
        }
        if matches!(
            client_tag,
            b'P' | b'B' | b'D' | b'E' | b'C' | b'S' | b'Q' | b'F'
        ) {
            self.queue.push_back(Owed::Forward(client_tag, None));
        }
    }

    /// A client's Parse sent as a Parse of `server_name`.
    pub fn forward_parse(&mut self, server_name: Arc<str>) {
        self.queue.push_back(Owed::Forward(b'P', Some(server_name)));
    }

    /// A message the router injected (its answer is not the client's).
    pub fn hide(&mut self, tag: u8) {
        self.special += 1;
        self.queue.push_back(Owed::Hide(tag, None));
    }

    /// A Parse of `server_name` the router injected.
    pub fn hide_parse(&mut self, server_name: Arc<str>) {
        self.special += 1;
        self.queue.push_back(Owed::Hide(b'P', Some(server_name)));
    }

    /// Statements the connection turned out not to have prepared (their
    /// Parse failed or was skipped): forget them in its cache.
    pub fn take_unprepared(&mut self) -> Vec<Arc<str>> {
        std::mem::take(&mut self.unprepared)
    }

    /// An answer the router makes for a client message it did not send.
    pub fn synth(&mut self, message: Bytes) {
        self.special += 1;
        self.queue.push_back(Owed::Synth(message));
    }

    /// Nothing owed: the splicer is idle.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.header.is_empty() && self.body_left == 0
    }

    fn pop(&mut self) -> Option<Owed> {
        let o = self.queue.pop_front();
        if matches!(o, Some(Owed::Hide(..) | Owed::Synth(_))) {
            self.special -= 1;
        }
        o
    }

    /// True when the next server bytes reach the client unchanged: nothing
    /// hidden or router-made is owed and no message is half-read. The
    /// caller may then write the bytes itself and [`Splicer::scan`] them.
    pub fn passthrough(&self) -> bool {
        self.special == 0
            && self.header_emitted == self.header.len()
            && (self.body_left == 0 || self.forwarding)
    }

    /// Whether a forwarded Parse of a router-named statement is still
    /// unanswered: only then does following the rest of an answer that
    /// passes through unchanged learn anything (whether it failed).
    pub fn owes_named_parse(&self) -> bool {
        self.queue
            .iter()
            .any(|o| matches!(o, Owed::Forward(b'P', Some(_))))
    }

    /// Follows server bytes that [`Splicer::passthrough`] said reach the
    /// client unchanged (keeps the owed answers in step, copies nothing).
    pub fn scan(&mut self, chunk: &[u8]) {
        let mut sink = BytesMut::new();
        self.run(chunk, &mut sink, false);
    }

    /// Emits router-made answers that no longer wait for the server.
    pub fn ready(&mut self, out: &mut BytesMut) {
        while let Some(Owed::Synth(_)) = self.queue.front() {
            if let Some(Owed::Synth(m)) = self.pop() {
                out.extend_from_slice(&m);
            }
        }
    }

    /// Feeds server bytes; what the client should get is appended to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut BytesMut) {
        self.run(chunk, out, true);
    }

    fn run(&mut self, mut chunk: &[u8], out: &mut BytesMut, emit: bool) {
        while !chunk.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(chunk.len());
                if self.forwarding && emit {
                    out.extend_from_slice(&chunk[..n]);
                }
                self.body_left -= n;
                chunk = &chunk[n..];
                continue;
            }
            let need = 5 - self.header.len();
            let n = need.min(chunk.len());
            self.header.extend_from_slice(&chunk[..n]);
            chunk = &chunk[n..];
            if self.header.len() < 5 {
                if !emit {
                    // The caller wrote this partial header as it is.
                    self.header_emitted = self.header.len();
                }
                return;
            }
            let tag = self.header[0];
            let len = u32::from_be_bytes([
                self.header[1],
                self.header[2],
                self.header[3],
                self.header[4],
            ]) as usize;
            self.forwarding = self.start(tag, out);
            if self.forwarding && emit {
                out.extend_from_slice(&self.header[self.header_emitted.min(5)..]);
            }
            self.header_emitted = 0;
            self.header.clear();
            self.body_left = len.saturating_sub(4);
        }
    }

    /// Decides what to do with a server message starting now; returns
    /// whether it is forwarded. Updates the queue.
    fn start(&mut self, tag: u8, out: &mut BytesMut) -> bool {
        // Part of this message may already be out (after a scan): nothing
        // may go before it. Only a message answering the head can be
        // half-written then, so router answers at the head wait for it.
        if self.header_emitted == 0 {
            self.ready(out);
        }
        let head = match self.queue.front() {
            Some(Owed::Forward(t, _)) => Some((*t, true)),
            Some(Owed::Hide(t, _)) => Some((*t, false)),
            _ => None,
        };
        let Some((client, forward)) = head else {
            return true; // nothing owed: pass it on
        };
        // Asynchronous messages belong to nobody's answer.
        if matches!(tag, b'N' | b'A' | b'S') {
            return true;
        }
        if tag == b'G' && client == b'E' {
            // Syncs sent after this Execute reach the server in copy-in
            // mode, and so will those sent before CopyDone.
            let mut kept = VecDeque::with_capacity(self.queue.len());
            kept.extend(self.queue.pop_front());
            for o in self.queue.drain(..) {
                if !matches!(o, Owed::Forward(b'S', _)) {
                    kept.push_back(o);
                }
            }
            self.queue = kept;
            self.ignoring_syncs = true;
            return forward;
        }
        if tag == b'E' {
            self.ignoring_syncs = false;
        }
        if tag == b'E' && extended(client) {
            // The server skips to the next Sync: so do the owed answers.
            let mut dropped = self.pop().into_iter().collect::<Vec<_>>();
            while let Some(o) = self.queue.front() {
                if matches!(o, Owed::Forward(b'S', _) | Owed::Hide(b'S', _)) {
                    break;
                }
                dropped.extend(self.pop());
            }
            for o in dropped {
                if let Owed::Forward(b'P', Some(n)) | Owed::Hide(b'P', Some(n)) = o {
                    self.unprepared.push(n);
                }
            }
            return true; // the client must see why
        }
        if completes(client, tag) {
            self.pop();
            // Router-made answers right after this one are due now; they
            // go after this message, so they are emitted at the next start
            // or by the caller's `ready` after the feed.
        }
        forward
    }

    /// After a feed: router-made answers now at the head go out (they
    /// follow the message just completed).
    pub fn after_feed(&mut self, out: &mut BytesMut) {
        if self.body_left == 0 && self.header.is_empty() {
            self.ready(out);
        }
    }
}

/// A message with an empty body (ParseComplete '1', BindComplete '2',
/// CloseComplete '3', NoData 'n').
pub fn empty_message(tag: u8) -> Bytes {
    let mut b = BytesMut::with_capacity(5);
    b.put_u8(tag);
    b.put_u32(4);
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::protocol::test_frame as msg;

    fn tags(b: &[u8]) -> String {
        let mut out = String::new();
        let mut i = 0;
        while i + 5 <= b.len() {
            out.push(b[i] as char);
            let len = u32::from_be_bytes([b[i + 1], b[i + 2], b[i + 3], b[i + 4]]) as usize;
            i += 1 + len;
        }
        out
    }

    fn run(s: &mut Splicer, server: &[Vec<u8>], split_every: usize) -> String {
        let bytes = server.concat();
        let mut out = BytesMut::new();
        for piece in bytes.chunks(split_every.max(1)) {
            s.feed(piece, &mut out);
            s.after_feed(&mut out);
        }
        tags(&out)
    }

    #[test]
    fn injected_parse_is_hidden_and_cached_parse_is_answered_in_order() {
        for split in [1, 3, 1000] {
            let mut s = Splicer::default();
            // Client: Parse(s1, cached) Bind(s2 -> inject Parse) Execute Sync.
            s.synth(empty_message(b'1'));
            s.hide(b'P');
            s.forward(b'B');
            s.forward(b'E');
            s.forward(b'S');
            let server = [
                msg(b'1', b""),
                msg(b'2', b""),
                msg(b'D', b"\0\x01\0\0\0\x011"),
                msg(b'C', b"SELECT 1\0"),
                msg(b'Z', b"I"),
            ];
            assert_eq!(run(&mut s, &server, split), "12DCZ", "split {split}");
            assert!(s.is_empty());
        }
    }

    #[test]
    fn an_error_skips_the_owed_answers_up_to_sync() {
        let mut s = Splicer::default();
        s.hide_parse("pgrouter_a".into()); // injected Parse fails (table dropped)
        s.forward(b'B');
        s.forward_parse("pgrouter_b".into()); // skipped by the server
        s.synth(empty_message(b'3')); // a Close the router answers
        s.forward(b'E');
        s.forward(b'S');
        let server = [msg(b'E', b"SERROR\0C42P01\0\0"), msg(b'Z', b"I")];
        assert_eq!(run(&mut s, &server, 2), "EZ");
        assert!(s.is_empty());
        let gone: Vec<String> = s.take_unprepared().iter().map(|n| n.to_string()).collect();
        assert_eq!(gone, ["pgrouter_a", "pgrouter_b"]);
    }

    #[test]
    fn router_answers_without_a_server_answer_go_out_at_once() {
        let mut s = Splicer::default();
        let mut out = BytesMut::new();
        s.synth(empty_message(b'1'));
        s.forward(b'H'); // Flush: nothing owed
        s.ready(&mut out);
        assert_eq!(tags(&out), "1");
        // Close of a client statement answered at its place before Sync's RFQ.
        s.forward(b'B');
        s.synth(empty_message(b'3'));
        s.forward(b'S');
        let server = [msg(b'2', b""), msg(b'Z', b"I")];
        assert_eq!(run(&mut s, &server, 1), "23Z");
    }

    #[test]
    fn passthrough_while_nothing_special_is_owed() {
        let mut s = Splicer::default();
        s.forward(b'P');
        s.forward(b'B');
        s.forward(b'E');
        s.forward(b'S');
        assert!(s.passthrough());
        let server = [
            msg(b'1', b""),
            msg(b'2', b""),
            msg(b'C', b"SELECT 0\0"),
            msg(b'Z', b"I"),
        ]
        .concat();
        s.scan(&server[..7]);
        assert!(s.passthrough());
        s.scan(&server[7..]);
        assert!(s.is_empty());
        s.synth(empty_message(b'1'));
        assert!(!s.passthrough());
    }

    #[test]
    fn a_failed_named_parse_is_learned_from_a_passthrough_scan() {
        let mut s = Splicer::default();
        s.hide(b'C'); // the Close the router sends before a Parse
        s.forward_parse("pgrouter_a".into());
        s.forward(b'S');
        assert!(s.owes_named_parse());
        let mut out = BytesMut::new();
        s.feed(&msg(b'3', b""), &mut out);
        assert!(out.is_empty(), "the hidden CloseComplete is not shown");
        // The Close is answered: what follows passes through unchanged,
        // and still tells that the Parse failed.
        assert!(s.passthrough());
        s.scan(&[msg(b'E', b"SERROR\0C42601\0\0"), msg(b'Z', b"I")].concat());
        assert!(!s.owes_named_parse());
        let gone: Vec<String> = s.take_unprepared().iter().map(|n| n.to_string()).collect();
        assert_eq!(gone, ["pgrouter_a"]);
        // Unnamed statements owe nothing worth following.
        s.forward(b'P');
        s.forward(b'S');
        assert!(!s.owes_named_parse());
    }

    #[test]
    fn a_scan_that_ends_mid_header_is_not_written_twice() {
        let mut s = Splicer::default();
        s.forward(b'B');
        s.forward(b'S');
        let first = [msg(b'2', b""), msg(b'Z', b"I")].concat();
        let mut client = first[..7].to_vec(); // written raw by the caller
        s.scan(&first[..7]);
        // The client pipelines a cached Parse meanwhile.
        s.synth(empty_message(b'1'));
        s.forward(b'S');
        assert!(!s.passthrough());
        let mut out = BytesMut::new();
        s.feed(&first[7..], &mut out);
        s.feed(&msg(b'Z', b"I"), &mut out);
        s.after_feed(&mut out);
        client.extend_from_slice(&out);
        assert_eq!(tags(&client), "2Z1Z");
        assert!(s.is_empty());
    }

    #[test]
    fn copy_messages_owe_nothing() {
        let mut s = Splicer::default();
        let mut out = BytesMut::new();
        // Parse/Bind/Execute of COPY FROM STDIN (a client sends its data
        // only after CopyInResponse), the data, CopyDone, Sync; then a
        // cached Parse the router answers, and a Bind.
        for t in [b'P', b'B', b'E'] {
            s.forward(t);
        }
        s.feed(
            &[msg(b'1', b""), msg(b'2', b""), msg(b'G', b"\0\0\0")].concat(),
            &mut out,
        );
        for t in [b'd', b'd', b'c', b'S'] {
            s.forward(t);
        }
        s.synth(empty_message(b'1'));
        s.forward(b'B');
        s.forward(b'S');
        let rest = [
            msg(b'C', b"COPY 2\0"),
            msg(b'Z', b"T"),
            msg(b'2', b""),
            msg(b'Z', b"I"),
        ];
        for piece in rest.concat().chunks(3) {
            s.feed(piece, &mut out);
            s.after_feed(&mut out);
        }
        assert_eq!(tags(&out), "12GCZ12Z");
        assert!(s.is_empty());
    }

    #[test]
    fn copy_in_by_execute_owes_nothing_for_syncs_sent_during_copy() {
        let mut s = Splicer::default();
        for t in [b'B', b'E', b'S'] {
            s.forward(t);
        }
        let mut out = BytesMut::new();
        s.feed(&[msg(b'2', b""), msg(b'G', b"\0\0\0")].concat(), &mut out);
        for t in [b'd', b'c', b'S'] {
            s.forward(t);
        }
        s.synth(empty_message(b'1')); // then a cached Parse
        s.forward(b'S');
        s.feed(
            &[msg(b'C', b"COPY 1\0"), msg(b'Z', b"T"), msg(b'Z', b"T")].concat(),
            &mut out,
        );
        s.after_feed(&mut out);
        assert_eq!(tags(&out), "2GCZ1Z");
        assert!(s.is_empty());
    }

    #[test]
    fn notices_and_describe_pass_through() {
        let mut s = Splicer::default();
        s.forward(b'P');
        s.forward(b'D');
        s.forward(b'S');
        let server = [
            msg(b'N', b"SNOTICE\0\0"),
            msg(b'1', b""),
            msg(b't', b"\0\0"),
            msg(b'T', b"\0\0"),
            msg(b'Z', b"I"),
        ];
        assert_eq!(run(&mut s, &server, 4), "N1tTZ");
    }
}
