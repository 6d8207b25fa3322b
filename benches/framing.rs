//! Hot pure paths of the forwarding loop: framing client messages, scanning
//! server responses (header-only, bytes forwarded untouched), and the
//! response tracker that decides when a server connection is free again.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgrouter::backend::tracker::ResponseTracker;
use pgrouter::protocol::framing::{complete_len, PG_MAX_MESSAGE_LEN};
use pgrouter::protocol::scan::Scanner;
use std::hint::black_box;

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// What PostgreSQL answers to pgbench -S: RowDescription, one DataRow,
/// CommandComplete, ReadyForQuery.
fn oltp_response() -> Vec<u8> {
    let mut rowdesc = 1u16.to_be_bytes().to_vec();
    rowdesc.extend_from_slice(b"abalance\0");
    rowdesc.extend_from_slice(&[0; 18]);
    let mut row = 1u16.to_be_bytes().to_vec();
    row.extend_from_slice(&4u32.to_be_bytes());
    row.extend_from_slice(b"1234");
    [
        msg(b'T', &rowdesc),
        msg(b'D', &row),
        msg(b'C', b"SELECT 1\0"),
        msg(b'Z', b"I"),
    ]
    .concat()
}

fn rows_response(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut row = 3u16.to_be_bytes().to_vec();
        for col in [
            format!("{i}"),
            "some text value of a typical length".to_string(),
            format!("{}", i * 7),
        ] {
            row.extend_from_slice(&(col.len() as u32).to_be_bytes());
            row.extend_from_slice(col.as_bytes());
        }
        out.extend(msg(b'D', &row));
    }
    out.extend(msg(b'C', b"SELECT 100\0"));
    out.extend(msg(b'Z', b"I"));
    out
}

fn benches(c: &mut Criterion) {
    let query = msg(
        b'Q',
        b"SELECT abalance FROM pgbench_accounts WHERE aid = 12345;\0",
    );
    c.bench_function("client: frame one Query", |b| {
        b.iter(|| complete_len(black_box(&query), PG_MAX_MESSAGE_LEN))
    });

    let oltp = oltp_response();
    let mut g = c.benchmark_group("server response");
    g.throughput(Throughput::Elements(1));
    g.bench_function("tracker: pgbench -S response", |b| {
        b.iter(|| {
            let mut t = ResponseTracker::new(PG_MAX_MESSAGE_LEN);
            t.client_sent(b'Q');
            let fed = t.server_bytes(black_box(&oltp), true, |_, _| {});
            black_box(fed.map(|f| f.idle_at))
        })
    });
    let rows = rows_response(100);
    g.throughput(Throughput::Bytes(rows.len() as u64));
    g.bench_function("scanner: 100 DataRows, header-only", |b| {
        b.iter(|| {
            let mut s = Scanner::new(PG_MAX_MESSAGE_LEN);
            black_box(s.feed(black_box(&rows), |t| t == b'Z', |_, _, _| true))
        })
    });
    g.finish();
}

criterion_group!(framing, benches);
criterion_main!(framing);
