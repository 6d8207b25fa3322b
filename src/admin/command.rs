//! The admin console's commands, parsed from a simple Query's text.

/// What SHOW can list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Show {
    Pools,
    Clients,
    Servers,
    Replicas,
    Tenants,
    Stats,
    Config,
    Version,
    Help,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Show(Show),
    Reload,
    /// PAUSE [tenant]: new transactions wait, running ones finish, then the
    /// tenant's server connections are closed.
    Pause(Option<String>),
    Resume(Option<String>),
    Shutdown,
}

/// Parses one command (without its `;`). Keywords are case-insensitive.
pub fn parse(text: &str) -> Result<Command, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let upper: Vec<&str> = upper.iter().map(String::as_str).collect();
    let tenant = |i: usize| -> Result<Option<String>, String> {
        match words.len() {
            n if n == i => Ok(None),
            n if n == i + 1 => Ok(Some(words[i].trim_matches('"').to_string())),
            _ => Err(format!("too many arguments: {text:?}")),
        }
    };
    match upper.as_slice() {
        ["SHOW", what] => Ok(Command::Show(match *what {
            "POOLS" => Show::Pools,
            "CLIENTS" => Show::Clients,
            "SERVERS" => Show::Servers,
            "REPLICAS" => Show::Replicas,
            "TENANTS" => Show::Tenants,
            "STATS" => Show::Stats,
            "CONFIG" => Show::Config,
            "VERSION" => Show::Version,
            "HELP" => Show::Help,
            _ => return Err(format!("unknown SHOW {:?}; try SHOW HELP", words[1])),
        })),
        ["RELOAD"] => Ok(Command::Reload),
        ["SHUTDOWN"] => Ok(Command::Shutdown),
        ["PAUSE", ..] => Ok(Command::Pause(tenant(1)?)),
        ["RESUME", ..] => Ok(Command::Resume(tenant(1)?)),
        _ => Err(format!("unknown command {text:?}; try SHOW HELP")),
    }
}

/// Splits a Query's text into commands (`;`-separated, empty ones dropped).
pub fn split(text: &str) -> impl Iterator<Item = &str> {
    text.split(';').map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(parse("show pools"), Ok(Command::Show(Show::Pools)));
        assert_eq!(
            parse("  SHOW   Replicas "),
            Ok(Command::Show(Show::Replicas))
        );
        assert_eq!(parse("pause acme"), Ok(Command::Pause(Some("acme".into()))));
        assert_eq!(parse("RESUME"), Ok(Command::Resume(None)));
        assert!(parse("SHOW nonsense").is_err());
        assert!(parse("PAUSE a b").is_err());
        assert!(parse("SELECT 1").is_err());
        let cmds: Vec<&str> = split("SHOW POOLS; show clients;;").collect();
        assert_eq!(cmds, ["SHOW POOLS", "show clients"]);
    }
}
