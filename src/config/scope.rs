//! `registration = { ... }` of an upstream: who may register what through the register token.
//! The admin token is not bound by it.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Registrations (from the API or etcd) one upstream takes, by default.
pub const DEFAULT_MAX_REGISTRATIONS: usize = 1000;
/// Highest weight a register-token holder may give itself, by default (config allows 1000).
pub const DEFAULT_MAX_REGISTERED_WEIGHT: u32 = 100;

/// Ranges a registration may come from when none are configured: loopback, private (RFC 1918)
/// and unique-local IPv6 addresses.
pub const DEFAULT_ALLOW: [&str; 6] = [
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
];

/// Cloud metadata services: refused unless an allow entry names exactly this host.
pub(crate) const METADATA: [IpAddr; 3] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    // Alibaba Cloud's.
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
];

/// What the register token may do in one upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationScope {
    pub allow: Vec<IpNet>,
    pub max_backends: usize,
    pub max_weight: u32,
}

impl Default for RegistrationScope {
    fn default() -> Self {
        RegistrationScope {
            allow: DEFAULT_ALLOW
                .iter()
                .map(|n| n.parse().expect("valid default range"))
                .collect(),
            max_backends: DEFAULT_MAX_REGISTRATIONS,
            max_weight: DEFAULT_MAX_REGISTERED_WEIGHT,
        }
    }
}

impl RegistrationScope {
    /// May a registration point at `ip`? Never the unspecified, multicast or broadcast
    /// address; a metadata service only when listed as a single host; otherwise when an allow
    /// range contains it (link-local ranges are not in the defaults).
    pub fn allows(&self, ip: IpAddr) -> bool {
        // `::ffff:169.254.169.254` is 169.254.169.254 to the kernel, and so here.
        let ip = ip.to_canonical();
        let never =
            ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST);
        if never {
            return false;
        }
        if METADATA.contains(&ip) {
            return self
                .allow
                .iter()
                .any(|n| n.addr() == ip && n.prefix_len() == n.max_prefix_len());
        }
        self.allow.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_default_takes_private_ranges_only() {
        let s = RegistrationScope::default();
        for ok in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.5",
            "192.168.1.9",
            "::1",
            "fd12::5",
        ] {
            assert!(s.allows(ip(ok)), "{ok}");
        }
        for no in [
            "::ffff:169.254.169.254",
            "::ffff:8.8.8.8",
            "8.8.8.8",
            "169.254.169.254",
            "169.254.1.1",
            "fe80::1",
            "fd00:ec2::254",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "255.255.255.255",
            "172.32.0.1",
        ] {
            assert!(!s.allows(ip(no)), "{no}");
        }
    }

    #[test]
    fn link_local_and_metadata_only_when_listed() {
        let s = RegistrationScope {
            allow: vec!["169.254.0.0/16".parse().unwrap()],
            ..RegistrationScope::default()
        };
        assert!(s.allows(ip("169.254.1.1")));
        assert!(!s.allows(ip("169.254.169.254")), "a range is not enough");
        let s = RegistrationScope {
            allow: vec!["169.254.169.254/32".parse().unwrap()],
            ..RegistrationScope::default()
        };
        assert!(s.allows(ip("169.254.169.254")));
    }
}
