//! Session parameters a client asks for at startup, and which of the
//! server's reported parameters a client can change.
//!
//! In transaction mode a client meets a different server session each
//! transaction, so the router remembers what the client wants (startup values,
//! plus later SETs of reported parameters it sees in ParameterStatus) and
//! brings each server session it lends in line before the client's first
//! message, with one SET batch only when a value differs.

use crate::backend::conn::Params;
use crate::protocol::ProtocolError;

/// Startup keys that are not session parameters.
const NOT_PARAMS: &[&str] = &["user", "database", "options", "replication"];

/// Reported parameters (GUC_REPORT) a client may change with SET.
pub const CLIENT_SETTABLE: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
];

pub fn is_client_settable(name: &str) -> bool {
    CLIENT_SETTABLE.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// The parameters a client asked for in its startup packet, including
/// `-c name=value` / `--name=value` entries of `options`.
pub fn from_startup(params: &[(String, String)]) -> Result<Params, ProtocolError> {
    let mut out = Params::default();
    for (k, v) in params {
        if k.starts_with("_pq_.") || NOT_PARAMS.contains(&k.as_str()) {
            continue;
        }
        out.set(k, v);
    }
    if let Some((_, options)) = params.iter().find(|(k, _)| k == "options") {
        for (k, v) in parse_options(options)? {
            out.set(&k, &v);
        }
    }
    Ok(out)
}

/// Parses libpq's `options` string: space-separated, backslash escapes,
/// `-c name=value`, `-cname=value` or `--name=value`.
pub fn parse_options(options: &str) -> Result<Vec<(String, String)>, ProtocolError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let bad = |w: &str| ProtocolError::Malformed {
        what: "startup",
        detail: format!("unsupported entry {w:?} in options (pgrouter accepts -c name=value)"),
    };
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let setting = if w == "-c" {
            it.next().ok_or_else(|| bad(&w))?
        } else if let Some(s) = w.strip_prefix("-c") {
            s.to_string()
        } else if let Some(s) = w.strip_prefix("--") {
            s.to_string()
        } else {
            return Err(bad(&w));
        };
        let (k, v) = setting.split_once('=').ok_or_else(|| bad(&setting))?;
        out.push((k.replace('-', "_"), v.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_sets_are_shared_and_copied_on_write() {
        let interner = Interner::default();
        let make = |tz: &str| {
            let mut p = Params::default();
            p.set("client_encoding", "UTF8");
            p.set("TimeZone", tz);
            p
        };
        let mut a = interner.intern(make("UTC"));
        let b = interner.intern(make("UTC"));
        let c = interner.intern(make("Europe/Paris"));
        assert!(std::sync::Arc::ptr_eq(&a, &b));
        assert!(!std::sync::Arc::ptr_eq(&a, &c));
        // A client's SET changes its own copy only.
        std::sync::Arc::make_mut(&mut a).set("TimeZone", "Asia/Tokyo");
        assert_eq!(a.get("timezone"), Some("Asia/Tokyo"));
        assert_eq!(b.get("timezone"), Some("UTC"));
        assert!(std::sync::Arc::ptr_eq(&b, &interner.intern(make("UTC"))));
    }

    #[test]
    fn sets_nobody_holds_are_forgotten() {
        let interner = Interner::default();
        for i in 0..(Interner::MAX * 3) {
            let mut p = Params::default();
            p.set("application_name", &format!("app{i}"));
            drop(interner.intern(p));
        }
        let held = interner.0.lock().map(|s| s.len()).unwrap_or(usize::MAX);
        assert!(held <= 1, "{held} unused sets kept");
    }

    #[test]
    fn options_forms() {
        let got =
            parse_options("-c search_path=a,b --statement-timeout=5s -cDateStyle=ISO\\ ,\\ MDY");
        assert_eq!(
            got,
            Ok(vec![
                ("search_path".into(), "a,b".into()),
                ("statement_timeout".into(), "5s".into()),
                ("DateStyle".into(), "ISO , MDY".into()),
            ])
        );
        assert!(parse_options("-x").is_err());
        assert!(parse_options("-c novalue").is_err());
    }

    #[test]
    fn startup_params_skip_identity() {
        let p = from_startup(&[
            ("user".into(), "u".into()),
            ("database".into(), "d".into()),
            ("application_name".into(), "psql".into()),
            ("options".into(), "-c TimeZone=UTC".into()),
        ]);
        let p = p.unwrap_or_default();
        assert_eq!(p.get("user"), None);
        assert_eq!(p.get("application_name"), Some("psql"));
        assert_eq!(p.get("timezone"), Some("UTC"));
    }
}

/// Parameter sets shared between clients. Most applications' clients ask
/// for the same few sets, and each set is a dozen names and values: with
/// thousands of clients connected, one copy per client was a good part of
/// the router's memory.
#[derive(Default)]
pub struct Interner(std::sync::Mutex<Vec<std::sync::Arc<Params>>>);

impl Interner {
    /// Sets kept for sharing; beyond that, a new set is not shared.
    const MAX: usize = 64;

    /// The shared copy of `p` (one is made if there is room).
    pub fn intern(&self, mut p: Params) -> std::sync::Arc<Params> {
        p.shrink_to_fit();
        let Ok(mut sets) = self.0.lock() else {
            return std::sync::Arc::new(p);
        };
        if let Some(a) = sets.iter().find(|a| ***a == p) {
            return a.clone();
        }
        // Forget sets no client holds any more.
        sets.retain(|a| std::sync::Arc::strong_count(a) > 1);
        let a = std::sync::Arc::new(p);
        if sets.len() < Self::MAX {
            sets.push(a.clone());
        }
        a
    }
}
