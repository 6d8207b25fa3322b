//! Literal normalization for the classifier's shape cache.
//!
//! pgbench -S and most ORMs' simple-protocol queries differ only in their
//! literals, so caching by exact text misses every time. This scanner
//! replaces number and string literals with `?` and drops comments, so
//! `... WHERE aid = 17` and `... WHERE aid = 42` share one cache entry.
//!
//! It must never merge two statements of different class, so it refuses
//! (returns `None`, forcing a full parse) whenever it is not certain where a
//! literal ends: backslashes inside strings (E'' strings or
//! standard_conforming_strings = off), dollar quoting, unterminated quotes or
//! comments. Literals never change a statement's class; names do, and names
//! (including quoted identifiers) are kept as they are.

/// Returns the normalized shape of `sql`, or `None` when unsure.
pub fn normalize(sql: &str) -> Option<String> {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    // Start of the current run of plain text, copied in one go.
    let mut run = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' => {
                // E'...' / e'...' strings use backslash escapes: give up.
                if i > 0 && matches!(b[i - 1], b'e' | b'E') && (i < 2 || !is_ident(b[i - 2])) {
                    return None;
                }
                out.push_str(&sql[run..i]);
                i += 1;
                loop {
                    match b.get(i) {
                        None => return None,
                        Some(b'\\') => return None,
                        Some(b'\'') if b.get(i + 1) == Some(&b'\'') => i += 2,
                        Some(b'\'') => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
                out.push('?');
                run = i;
            }
            b'"' => {
                // Quoted identifier: keep it verbatim.
                i += 1;
                loop {
                    match b.get(i) {
                        None => return None,
                        Some(b'"') if b.get(i + 1) == Some(&b'"') => i += 2,
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
            }
            b'$' => {
                // $1 parameters are kept; $tag$ / $$ quoting is refused.
                if b.get(i + 1).is_some_and(|d| d.is_ascii_digit()) {
                    i += 1;
                    while b.get(i).is_some_and(|d| d.is_ascii_digit()) {
                        i += 1;
                    }
                } else if i > 0 && is_ident(b[i - 1]) {
                    i += 1; // part of an identifier such as a$b
                } else {
                    return None;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                out.push_str(&sql[run..i]);
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                out.push(' ');
                run = i;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                out.push_str(&sql[run..i]);
                let mut depth = 0usize;
                loop {
                    if i + 1 >= b.len() {
                        return None;
                    }
                    if b[i] == b'/' && b[i + 1] == b'*' {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b[i + 1] == b'/' {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                out.push(' ');
                run = i;
            }
            b'0'..=b'9' if i == 0 || !is_ident(b[i - 1]) => {
                out.push_str(&sql[run..i]);
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_')
                {
                    // Exponents: 1e-5
                    if matches!(b[i], b'e' | b'E') && matches!(b.get(i + 1), Some(b'-' | b'+')) {
                        i += 1;
                    }
                    i += 1;
                }
                out.push('?');
                run = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[run..]);
    Some(out)
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn literals_become_placeholders() {
        assert_eq!(
            normalize("SELECT abalance FROM pgbench_accounts WHERE aid = 12345;").as_deref(),
            Some("SELECT abalance FROM pgbench_accounts WHERE aid = ?;")
        );
        assert_eq!(
            normalize("SELECT 'it''s', 1.5e-3, x1 FROM t2").as_deref(),
            Some("SELECT ?, ?, x1 FROM t2")
        );
        assert_eq!(
            normalize("SELECT $1, \"Col 2\"").as_deref(),
            Some("SELECT $1, \"Col 2\"")
        );
        assert_eq!(
            normalize("SELECT 1 -- 'x\n").as_deref(),
            Some("SELECT ?  \n")
        );
        assert_eq!(
            normalize("SELECT /* a /* b */ ' */ 1").as_deref(),
            Some("SELECT   ?")
        );
    }

    #[test]
    fn unsure_inputs_are_refused() {
        for sql in [
            "SELECT E'a\\'b'",
            "SELECT 'a\\'",
            "DO $$ BEGIN END $$",
            "SELECT $tag$x$tag$",
            "SELECT 'unterminated",
            "SELECT /* open",
            "SELECT \"open",
        ] {
            assert_eq!(normalize(sql), None, "{sql}");
        }
    }

    #[test]
    fn names_are_kept() {
        // Different function names must give different shapes.
        assert_ne!(
            normalize("SELECT nextval('s')"),
            normalize("SELECT currval('s')")
        );
        assert_ne!(
            normalize("SELECT * FROM t FOR UPDATE"),
            normalize("SELECT * FROM t")
        );
    }
}
