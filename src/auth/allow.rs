//! Network rules: `allow = ["10.0.0.0/8", "::1"]` on a user or a tenant.
//! A client whose address no rule admits is refused (28000) before it
//! authenticates, with the same message whether or not the user exists.

use std::net::IpAddr;

/// One `address/prefix` rule (a bare address is a single host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0..={max}"))?,
        };
        Ok(Self { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Whether `rules` admit `ip` (no rules: everyone). Rules that do not
/// parse admit nobody (the config check rejects them first).
pub fn admits(rules: &[String], ip: IpAddr) -> bool {
    rules.is_empty()
        || rules
            .iter()
            .any(|r| Cidr::parse(r).is_ok_and(|c| c.contains(ip)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn blocks_and_hosts() {
        let rules = vec![
            "10.0.0.0/8".to_string(),
            "192.168.1.7".into(),
            "fd00::/8".into(),
        ];
        assert!(admits(&rules, ip("10.200.3.4")));
        assert!(admits(&rules, ip("192.168.1.7")));
        assert!(!admits(&rules, ip("192.168.1.8")));
        assert!(!admits(&rules, ip("11.0.0.1")));
        assert!(admits(&rules, ip("fd12::1")));
        assert!(!admits(&rules, ip("fe80::1")));
        assert!(admits(&rules, ip("::ffff:10.1.2.3")), "IPv4-mapped");
        assert!(admits(&[], ip("1.2.3.4")), "no rules: everyone");
        assert!(admits(&["0.0.0.0/0".into()], ip("8.8.8.8")));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("example.com").is_err());
    }
}
