//! Routing hints in SQL text, and `SET pgrouter.route`, which the router
//! answers itself (it never reaches a server).
//!
//! - A leading comment `/* pgrouter:primary */` or `/* pgrouter:replica */`
//!   overrides the class of that statement (a replica hint on a write is
//!   ignored: writes always go to the primary).
//! - `SET pgrouter.route = 'primary' | 'replica' | 'auto'` (or `TO`) sets the
//!   client's default; `RESET pgrouter.route` restores `auto`.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Auto,
    Primary,
    Replica,
}

/// The hint in a leading comment, if any.
pub fn leading_hint(sql: &str) -> Option<Route> {
    let t = sql.trim_start();
    let body = t.strip_prefix("/*")?;
    let end = body.find("*/")?;
    match body[..end].trim().to_ascii_lowercase().as_str() {
        "pgrouter:primary" => Some(Route::Primary),
        "pgrouter:replica" => Some(Route::Replica),
        _ => None,
    }
}

/// Whether the statement may be one the router answers itself (`SET`,
/// `RESET` or `SHOW` of a `pgrouter.*` setting): a cheap first look that
/// every simple query gets, so [`set_route`] and [`causal_token`] run only
/// for the few that start with one of those words.
pub fn may_be_router_command(sql: &str) -> bool {
    starts_with_word(sql, &["set", "reset", "show"])
}

/// Whether the statement's first word is one of `words` (lower case),
/// followed by a blank, without allocating.
fn starts_with_word(sql: &str, words: &[&str]) -> bool {
    // ASCII blanks: PostgreSQL's lexer knows no others.
    let t = sql.as_bytes().trim_ascii_start();
    // The first word's length first: most queries fail on it alone.
    let len = t
        .iter()
        .position(|c| !c.is_ascii_alphabetic())
        .unwrap_or(t.len());
    if !t.get(len).is_some_and(u8::is_ascii_whitespace) {
        return false;
    }
    words
        .iter()
        .any(|w| w.len() == len && t[..len].eq_ignore_ascii_case(w.as_bytes()))
}

/// Recognises `SET pgrouter.route ...` / `RESET pgrouter.route`.
/// `Some(Ok(route))` to apply, `Some(Err(msg))` for a bad value, `None` if
/// the statement is something else.
pub fn set_route(sql: &str) -> Option<Result<Route, String>> {
    if !starts_with_word(sql, &["set", "reset"]) {
        return None;
    }
    let t = sql.trim().trim_end_matches(';').trim();
    let lower = t.to_ascii_lowercase();
    let words: Vec<&str> = lower.split_whitespace().collect();
    match words.as_slice() {
        ["reset", "pgrouter.route"] => return Some(Ok(Route::Auto)),
        ["set", rest @ ..] | ["set", "session", rest @ ..]
            if rest.first() == Some(&"pgrouter.route") => {}
        _ => {
            // `SET pgrouter.route='x'` without spaces.
            if !lower.starts_with("set pgrouter.route") {
                return None;
            }
        }
    }
    let after = lower.split_once("pgrouter.route")?.1.trim();
    let value = after
        .strip_prefix('=')
        .or_else(|| after.strip_prefix("to "))
        .unwrap_or(after)
        .trim()
        .trim_matches(|c| c == '\'' || c == '"');
    Some(match value {
        "auto" | "default" => Ok(Route::Auto),
        "primary" => Ok(Route::Primary),
        "replica" => Ok(Route::Replica),
        other => Err(format!(
            "invalid value for parameter \"pgrouter.route\": \"{other}\" (use 'primary', 'replica' or 'auto')"
        )),
    })
}

/// `SHOW pgrouter.causal_token` / `SET pgrouter.causal_token = '<lsn>'`:
/// read-your-writes across router instances (docs/scale-out.md).
#[derive(Debug, PartialEq, Eq)]
pub enum CausalToken {
    Show,
    /// The position to wait for, or why the value is not one.
    Set(Result<u64, String>),
}

pub const CAUSAL_TOKEN: &str = "pgrouter.causal_token";

/// Recognises the causal-token commands; None for anything else.
pub fn causal_token(sql: &str) -> Option<CausalToken> {
    if !starts_with_word(sql, &["set", "show"]) {
        return None;
    }
    let t = sql.trim().trim_end_matches(';').trim();
    let lower = t.to_ascii_lowercase();
    if lower.split_whitespace().collect::<Vec<_>>() == ["show", CAUSAL_TOKEN] {
        return Some(CausalToken::Show);
    }
    let rest = lower
        .strip_prefix("set")
        .map(str::trim_start)
        .map(|r| r.strip_prefix("session").map(str::trim_start).unwrap_or(r))?;
    let after = rest.strip_prefix(CAUSAL_TOKEN)?.trim();
    let value = after
        .strip_prefix('=')
        .or_else(|| after.strip_prefix("to "))?
        .trim()
        .trim_matches(|c| c == '\'' || c == '"');
    Some(CausalToken::Set(
        super::lsn::parse(value)
            .or_else(|| value.is_empty().then_some(0))
            .ok_or_else(|| {
                format!(
                    "invalid value for parameter \"{CAUSAL_TOKEN}\": \"{value}\" (a token from SHOW {CAUSAL_TOKEN}, like '0/16B3748')"
                )
            }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_token_commands() {
        assert_eq!(
            causal_token("SHOW pgrouter.causal_token"),
            Some(CausalToken::Show)
        );
        assert_eq!(
            causal_token("show  PGROUTER.CAUSAL_TOKEN ;"),
            Some(CausalToken::Show)
        );
        assert_eq!(
            causal_token("SET pgrouter.causal_token = '0/16B3748'"),
            Some(CausalToken::Set(Ok(0x16B3748)))
        );
        assert_eq!(
            causal_token("set session pgrouter.causal_token to '1/0'"),
            Some(CausalToken::Set(Ok(1 << 32)))
        );
        assert_eq!(
            causal_token("SET pgrouter.causal_token = ''"),
            Some(CausalToken::Set(Ok(0)))
        );
        assert!(matches!(
            causal_token("SET pgrouter.causal_token = 'nope'"),
            Some(CausalToken::Set(Err(_)))
        ));
        assert_eq!(causal_token("SHOW search_path"), None);
        assert_eq!(causal_token("SET pgrouter.route = primary"), None);
        assert_eq!(causal_token("SELECT 1"), None);
    }

    #[test]
    fn hints() {
        assert_eq!(
            leading_hint("/* pgrouter:primary */ SELECT 1"),
            Some(Route::Primary)
        );
        assert_eq!(
            leading_hint("  /*pgrouter:replica*/SELECT 1"),
            Some(Route::Replica)
        );
        assert_eq!(leading_hint("SELECT 1 /* pgrouter:primary */"), None);
        assert_eq!(leading_hint("/* other */ SELECT 1"), None);
    }

    #[test]
    fn set_route_forms() {
        assert_eq!(
            set_route("SET pgrouter.route = 'primary'"),
            Some(Ok(Route::Primary))
        );
        assert_eq!(
            set_route("set pgrouter.route to replica;"),
            Some(Ok(Route::Replica))
        );
        assert_eq!(
            set_route("SET pgrouter.route='auto'"),
            Some(Ok(Route::Auto))
        );
        assert_eq!(set_route("RESET pgrouter.route"), Some(Ok(Route::Auto)));
        assert!(matches!(
            set_route("SET pgrouter.route = 'sideways'"),
            Some(Err(_))
        ));
        assert_eq!(set_route("SET search_path = x"), None);
        assert_eq!(set_route("SELECT 1"), None);
        assert_eq!(
            set_route("\n  Set\tpgrouter.route = primary"),
            Some(Ok(Route::Primary))
        );
        assert_eq!(set_route("setx pgrouter.route = primary"), None);
        assert_eq!(causal_token("SHOWpgrouter.causal_token"), None);
    }

    #[test]
    fn the_first_look_lets_every_router_command_through() {
        for sql in [
            "SET pgrouter.route = 'primary'",
            "\n  Set\tpgrouter.route = primary",
            "RESET pgrouter.route",
            "show  PGROUTER.CAUSAL_TOKEN ;",
            "set session pgrouter.causal_token to '1/0'",
        ] {
            assert!(may_be_router_command(sql), "{sql:?}");
            assert!(set_route(sql).is_some() || causal_token(sql).is_some());
        }
        for sql in [
            "SELECT 1",
            "select pg_sleep(1)",
            "settle",
            "SET",
            "/* set */ SELECT 1",
            "",
        ] {
            assert!(!may_be_router_command(sql), "{sql:?}");
        }
    }
}
