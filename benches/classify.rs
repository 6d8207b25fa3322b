//! Statement classification cost: uncached (full sqlparser parse), cached by
//! exact text, and cached by literal-normalized shape.

use criterion::{criterion_group, criterion_main, Criterion};
use pgrouter::router::cache::classify_cached;
use pgrouter::router::classify::{classify, FunctionRules};
use pgrouter::router::normalize::normalize;
use std::hint::black_box;
use std::sync::Arc;

const STATEMENTS: &[(&str, &str)] = &[
    (
        "pgbench select",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
    ),
    (
        "insert returning",
        "INSERT INTO orders (user_id, total) VALUES (42, 19.99) RETURNING id",
    ),
    (
        "cte + 3-way join",
        "WITH recent AS (SELECT * FROM orders WHERE created_at > now() - interval '7 days') \
         SELECT u.id, count(r.id), max(p.price) FROM users u JOIN recent r ON r.user_id = u.id \
         JOIN products p ON p.id = r.product_id WHERE u.country = 'NL' GROUP BY u.id",
    ),
];

fn benches(c: &mut Criterion) {
    let rules = Arc::new(FunctionRules::default());
    for (name, sql) in STATEMENTS {
        c.bench_function(&format!("classify uncached: {name}"), |b| {
            b.iter(|| classify(black_box(sql), &rules))
        });
        classify_cached(sql, &rules);
        c.bench_function(&format!("classify cache hit: {name}"), |b| {
            b.iter(|| classify_cached(black_box(sql), &rules))
        });
    }
    // Literals differ every time (pgbench -S in simple mode): shape-cache hits.
    let texts: Vec<String> = (0..1000)
        .map(|i| {
            format!(
                "SELECT abalance FROM pgbench_accounts WHERE aid = {};",
                1000 + i * 7919 % 100000
            )
        })
        .collect();
    classify_cached(&texts[0], &rules);
    let mut i = 0;
    c.bench_function(
        "classify shape-cache hit: pgbench select, new literal each time",
        |b| {
            b.iter(|| {
                i = (i + 1) % texts.len();
                classify_cached(black_box(&texts[i]), &rules)
            })
        },
    );
    c.bench_function("normalize: pgbench select", |b| {
        b.iter(|| normalize(black_box(&texts[1])))
    });
}

criterion_group!(classification, benches);
criterion_main!(classification);
