//! A route's access list: nginx's `allow` and `deny` (the access module), as a route's
//! `access = ["allow 10.0.0.0/8", "deny all"]`. Rules are checked in order against the real
//! client address (after the PROXY header and `real_ip`); the first that matches decides, and
//! an address no rule matches is allowed, as in nginx.
//!
//! Address families are kept apart as nginx keeps them: an IPv4 rule never matches an IPv6
//! client, nor an IPv6 rule an IPv4 one, and `all` matches both. A client that arrives as an
//! IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, on a dual-stack socket) is checked as the IPv4
//! address it carries whenever the list has any IPv4 rule or `all` (nginx's rule), else
//! against the IPv6 rules as is.
//!
//! Imports: nothing else in tideway.

use ipnet::IpNet;
use std::net::IpAddr;

/// One `allow` or `deny`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRule {
    pub allow: bool,
    /// None: `all`.
    pub net: Option<IpNet>,
}

/// An ordered list of rules (a level's `allow`/`deny`s, which replace an enclosing level's).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AccessList {
    pub rules: Vec<AccessRule>,
}

impl AccessRule {
    /// Read `allow ADDR` / `deny ADDR` (ADDR an address, a CIDR range or `all`).
    pub fn parse(text: &str) -> Result<AccessRule, String> {
        let mut words = text.split_whitespace();
        let (verb, what) = match (words.next(), words.next(), words.next()) {
            (Some(v), Some(w), None) => (v, w),
            _ => {
                return Err(format!(
                    "invalid access rule {text:?}; expected \"allow ADDRESS\" or \"deny ADDRESS\" (an address, a CIDR range or all)"
                ))
            }
        };
        let allow = match verb {
            "allow" => true,
            "deny" => false,
            _ => {
                return Err(format!(
                    "invalid access rule {text:?}; it starts with allow or deny"
                ))
            }
        };
        Ok(AccessRule {
            allow,
            net: parse_net(what)?,
        })
    }
}

/// An address, a CIDR range (low bits dropped, as nginx does) or `all` (None).
pub fn parse_net(what: &str) -> Result<Option<IpNet>, String> {
    if what == "all" {
        return Ok(None);
    }
    if what.starts_with("unix:") {
        return Err(
            "\"unix:\" rules are for unix sockets, which tideway does not listen on".into(),
        );
    }
    what.parse::<IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| what.parse::<IpAddr>().map(IpNet::from))
        .map(Some)
        .map_err(|_| {
            format!("invalid address {what:?}; expected an address, a CIDR range such as \"10.0.0.0/8\" or all")
        })
}

impl AccessList {
    /// Does the list let `client` in? None (no address known) matches only `all` rules.
    pub fn allows(&self, client: Option<IpAddr>) -> bool {
        let client = match client {
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                // nginx checks a mapped address as IPv4 when it has IPv4 rules (`all` is one).
                Some(v4)
                    if self
                        .rules
                        .iter()
                        .any(|r| r.net.is_none_or(|n| n.addr().is_ipv4())) =>
                {
                    Some(IpAddr::V4(v4))
                }
                _ => Some(IpAddr::V6(v6)),
            },
            other => other,
        };
        for r in &self.rules {
            let hit = match (r.net, client) {
                (None, _) => true,
                (Some(net), Some(ip)) => net.contains(&ip),
                (Some(_), None) => false,
            };
            if hit {
                return r.allow;
            }
        }
        true
    }

    /// The rules as written (`allow 10.0.0.0/8`, `deny all`).
    pub fn texts(&self) -> Vec<String> {
        self.rules
            .iter()
            .map(|r| {
                let verb = if r.allow { "allow" } else { "deny" };
                match r.net {
                    None => format!("{verb} all"),
                    Some(n) if n.prefix_len() == n.max_prefix_len() => {
                        format!("{verb} {}", n.addr())
                    }
                    Some(n) => format!("{verb} {n}"),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(rules: &[&str]) -> AccessList {
        AccessList {
            rules: rules
                .iter()
                .map(|r| AccessRule::parse(r).unwrap())
                .collect(),
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn the_first_matching_rule_decides_and_no_match_allows() {
        let l = list(&["deny 10.0.0.1", "allow 10.0.0.0/8", "deny all"]);
        assert!(!l.allows(ip("10.0.0.1")));
        assert!(l.allows(ip("10.9.9.9")));
        assert!(!l.allows(ip("192.168.1.1")));
        assert!(!l.allows(ip("::1")), "all covers IPv6");
        assert!(!l.allows(None), "all covers a client without an address");
        let only = list(&["deny 10.0.0.0/8"]);
        assert!(only.allows(ip("11.0.0.1")), "no rule matches: allowed");
        assert!(only.allows(ip("::1")), "an IPv4 rule never matches IPv6");
        assert!(only.allows(None));
    }

    #[test]
    fn mapped_addresses_are_checked_as_nginx_checks_them() {
        let l = list(&["allow 127.0.0.1", "deny all"]);
        assert!(l.allows(ip("::ffff:127.0.0.1")));
        assert!(!l.allows(ip("::ffff:127.0.0.2")));
        let deny4 = list(&["deny 10.0.0.0/8"]);
        assert!(
            !deny4.allows(ip("::ffff:10.1.2.3")),
            "mapped: checked as IPv4"
        );
        // Without IPv4 rules, the mapped address meets the IPv6 ones as it is.
        let v6 = list(&["deny ::ffff:0:0/96", "allow ::/0"]);
        assert!(!v6.allows(ip("::ffff:10.1.2.3")));
        assert!(v6.allows(ip("2001:db8::1")));
        let v6net = list(&["allow 2001:db8::/32", "deny all"]);
        assert!(v6net.allows(ip("2001:db8:1::5")));
        assert!(!v6net.allows(ip("2001:db9::5")));
    }

    #[test]
    fn rules_read_as_nginx_writes_them() {
        assert_eq!(
            list(&[
                "allow 10.1.2.3/8",
                "deny all",
                "deny ::1",
                "allow 2001:db8::/32"
            ])
            .texts(),
            [
                "allow 10.0.0.0/8",
                "deny all",
                "deny ::1",
                "allow 2001:db8::/32"
            ]
        );
        for bad in [
            "allow",
            "permit 10.0.0.1",
            "allow 10.0.0",
            "deny 10.0.0.0/33",
            "deny unix:",
            "allow a b",
            "deny example.com",
        ] {
            assert!(AccessRule::parse(bad).is_err(), "{bad}");
        }
    }
}
