//! Client bytes: the startup phase (startup packet, its parameters, SASL
//! and password messages) and the session phase (framing, the statements
//! the router reads in Query/Parse, and the named-statement rewriter).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgrouter::frontend::{params, session_set};
use pgrouter::prepared::cache::ServerStatements;
use pgrouter::prepared::rewrite::Rewriter;
use pgrouter::prepared::splice::Splicer;
use pgrouter::prepared::ClientStatements;
use pgrouter::protocol::{framing, parse};

const MAX: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    // Startup phase.
    let mut buf = BytesMut::from(data);
    while let Ok(Some(packet)) = framing::split_startup(&mut buf) {
        if let Ok(parse::StartupPacket::Startup(s)) = parse::startup_packet(&packet) {
            let _ = params::from_startup(&s.params);
        }
    }
    // Session phase.
    let mut buf = BytesMut::from(data);
    let mut client = ClientStatements::default();
    let mut server = ServerStatements::new(4);
    let mut splicer = Splicer::default();
    let mut to_server = BytesMut::new();
    let mut changes = Vec::new();
    while let Ok(Some(msg)) = framing::split_message(&mut buf, MAX) {
        let body = &msg[5..];
        match msg[0] {
            b'p' => {
                let _ = parse::password(body);
                let _ = parse::sasl_initial_response(body);
            }
            b'Q' => {
                if let Ok((sql, _)) = parse::cstr(body, "Query") {
                    session_set::scan(sql, &mut changes);
                }
            }
            _ => {}
        }
        let mut rewriter = Rewriter {
            client: &mut client,
            server: &mut server,
            splicer: &mut splicer,
        };
        let _ = rewriter.message(&msg, &mut to_server);
        if to_server.len() > MAX {
            to_server.clear();
        }
        changes.truncate(64);
    }
});
