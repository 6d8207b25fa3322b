//! Which server takes writes.
//!
//! Without `discover_roles` it is always the configured primary, unless that
//! server reports it is in recovery (then nothing takes writes: the router
//! never routes by role to a server that does not have the role). With
//! `discover_roles` it is the one server that reports it is not in recovery;
//! two such servers (split brain) stop writes until only one remains.

/// What the router knows of one server's role (index 0: the configured
/// primary, then the replicas in config order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Not probed successfully (down, starting).
    Unknown,
    /// `pg_is_in_recovery()` = false.
    Primary,
    Standby,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Writer {
    Node(usize),
    /// Writes are refused with this reason.
    Refused(String),
}

pub fn elect(names: &[String], claims: &[Claim], discover: bool, previous: &Writer) -> Writer {
    let name = |i: usize| names.get(i).cloned().unwrap_or_default();
    if !discover {
        return match claims.first() {
            Some(Claim::Standby) => Writer::Refused(format!(
                "pgrouter: the primary {} reports it is in recovery (a standby); writes are refused until it is a primary",
                name(0)
            )),
            _ => Writer::Node(0),
        };
    }
    let claimants: Vec<usize> = (0..claims.len())
        .filter(|&i| claims[i] == Claim::Primary)
        .collect();
    match claimants.as_slice() {
        [one] => Writer::Node(*one),
        [] => match previous {
            // The writer went silent: keep it, so writes fail with its own
            // connection error (and resume if it comes back).
            Writer::Node(i) if claims.get(*i) == Some(&Claim::Unknown) => Writer::Node(*i),
            _ => Writer::Refused(
                "pgrouter: no server reports being the primary; writes are refused".into(),
            ),
        },
        many => Writer::Refused(format!(
            "pgrouter: split brain: {} all report being the primary; writes are refused until only one does",
            many.iter().map(|&i| name(i)).collect::<Vec<_>>().join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Claim::*;

    fn names() -> Vec<String> {
        vec!["primary".into(), "r1".into(), "r2".into()]
    }

    #[test]
    fn static_roles() {
        let n = names();
        assert_eq!(
            elect(&n, &[Primary, Standby, Standby], false, &Writer::Node(0)),
            Writer::Node(0)
        );
        assert_eq!(
            elect(&n, &[Unknown, Standby, Standby], false, &Writer::Node(0)),
            Writer::Node(0)
        );
        // A promoted replica does not take writes without discovery.
        assert_eq!(
            elect(&n, &[Unknown, Primary, Standby], false, &Writer::Node(0)),
            Writer::Node(0)
        );
        assert!(
            matches!(elect(&n, &[Standby, Standby, Standby], false, &Writer::Node(0)), Writer::Refused(r) if r.contains("in recovery"))
        );
    }

    #[test]
    fn discovery_follows_a_promotion_and_refuses_split_brain() {
        let n = names();
        let mut w = Writer::Node(0);
        w = elect(&n, &[Primary, Standby, Standby], true, &w);
        assert_eq!(w, Writer::Node(0));
        // The primary dies: kept (its errors tell the client) until a promotion.
        w = elect(&n, &[Unknown, Standby, Standby], true, &w);
        assert_eq!(w, Writer::Node(0));
        w = elect(&n, &[Unknown, Primary, Standby], true, &w);
        assert_eq!(w, Writer::Node(1));
        // The old primary comes back as a primary too.
        w = elect(&n, &[Primary, Primary, Standby], true, &w);
        assert!(
            matches!(&w, Writer::Refused(r) if r.contains("split brain") && r.contains("primary, r1"))
        );
        // The old primary goes away again: the one remaining claimant writes.
        w = elect(&n, &[Unknown, Primary, Standby], true, &w);
        assert_eq!(w, Writer::Node(1));
        // Everyone is a standby: nobody writes.
        w = elect(&n, &[Standby, Standby, Standby], true, &w);
        assert!(matches!(w, Writer::Refused(_)));
    }
}
