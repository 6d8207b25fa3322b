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

/// Recognises `SET pgrouter.route ...` / `RESET pgrouter.route`.
/// `Some(Ok(route))` to apply, `Some(Err(msg))` for a bad value, `None` if
/// the statement is something else.
pub fn set_route(sql: &str) -> Option<Result<Route, String>> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
