//! SQL text: the read/write classifier (sqlparser and the router's own
//! keyword scans), routing hints and the router-answered commands.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgrouter::frontend::session_set;
use pgrouter::router::classify::{classify, FunctionRules};
use pgrouter::router::hint;

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let rules = FunctionRules::default();
    let _ = classify(sql, &rules);
    let _ = hint::leading_hint(sql);
    let _ = hint::set_route(sql);
    let _ = hint::causal_token(sql);
    let mut changes = Vec::new();
    session_set::scan(sql, &mut changes);
});
