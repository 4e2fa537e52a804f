//! Backends given by name (`chat.internal:2346`, a Kubernetes headless service): every
//! address the name resolves to is a backend, with the id `ID@ADDRESS`, where ID is the
//! backend's `id` or, by default, the `host:port` as written (`chat.internal:2346@10.0.0.7`).
//! The id depends only on the name and the address, so it is the same after every
//! re-resolution and a toggle or drain set on it keeps its meaning.
//!
//! A name's backends sit where the name stands among the upstream's backends (nginx's server
//! order, which plain `hash` maps keys by), its addresses in ascending order (IPv4 before
//! IPv6), whatever order the DNS answer gave them in: a server that rotates its answers
//! changes nothing.
//!
//! With `resolve` (nginx's parameter of the same name), the name is asked again on its
//! answer's TTL, clamped to [`DEFAULT_MIN_TTL`]..[`DEFAULT_MAX_TTL`] (or `valid`), by
//! `discovery::names`; a new answer becomes [`UpstreamConfig::with_addresses`], which the pool
//! controller applies. The lookups themselves are in [`super::dns`].
//!
//! Imports: nothing else in tideway.

use super::types::{StaticBackend, UpstreamConfig};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Shortest wait before a `resolve` name is asked again, whatever its TTL (a TTL of 0 would
/// otherwise ask without pause).
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(1);
/// Longest wait before a `resolve` name is asked again, whatever its TTL.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(3600);
/// Wait before asking again after a lookup failed (NXDOMAIN, no address, timeout, server
/// error); the name keeps its last addresses meanwhile. `valid`, when shorter, wins.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(5);
/// Longest one lookup of a name (its A and AAAA queries, retries included) may take.
pub const DEFAULT_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Most addresses one name becomes: an answer with more keeps its first ones in ascending
/// order (and says so), so a hostile or broken DNS server cannot flood the pool.
pub const DEFAULT_MAX_ADDRESSES: usize = 256;

/// `[resolver]`: where names are resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolverSettings {
    /// DNS servers to ask, in order (nginx's `resolver`); empty: the system's.
    pub servers: Vec<SocketAddr>,
    /// Ask `resolve` names again after this instead of their TTL (nginx's `valid=`).
    pub valid: Option<Duration>,
}

impl ResolverSettings {
    /// How long to wait before asking a name again after an answer with `ttl`.
    pub fn next_lookup(&self, ttl: Option<Duration>) -> Duration {
        self.valid
            .or(ttl)
            .unwrap_or(DEFAULT_RETRY)
            .clamp(DEFAULT_MIN_TTL, DEFAULT_MAX_TTL)
    }

    /// How long to wait before asking again after a failed lookup.
    pub fn retry(&self) -> Duration {
        self.valid
            .map_or(DEFAULT_RETRY, |v| v.min(DEFAULT_RETRY))
            .max(DEFAULT_MIN_TTL)
    }
}

/// A backend given by name in an upstream.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedServer {
    /// The host name, lowercase, without a trailing dot.
    pub host: String,
    pub port: u16,
    /// Ask again on the answer's TTL (nginx's `resolve`).
    pub resolve: bool,
    /// Its backends' ids are `ID@ADDRESS`.
    pub id: String,
    /// What each of its backends gets; the id and address are set per address.
    pub template: StaticBackend,
    /// Its backends are `backends[at..at + count]` of the upstream.
    pub at: usize,
    pub count: usize,
    /// The TTL of the answer at load (None: the system resolver, which tells none).
    pub ttl: Option<Duration>,
    /// The addresses at load (ascending).
    pub addrs: Vec<IpAddr>,
}

impl NamedServer {
    /// Its backends for `addrs` (ascending, deduplicated).
    pub fn backends(&self, addrs: &[IpAddr]) -> Vec<StaticBackend> {
        addrs
            .iter()
            .map(|ip| StaticBackend {
                id: backend_id(&self.id, *ip),
                addr: SocketAddr::new(*ip, self.port),
                ..self.template.clone()
            })
            .collect()
    }
}

/// The id of a name's backend at `ip`: `ID@ADDRESS` (IPv6 without brackets).
pub fn backend_id(id: &str, ip: IpAddr) -> String {
    format!("{id}@{}", ip.to_canonical())
}

/// May an answer's address be a backend? Not the unspecified address (it reaches this host),
/// not multicast or broadcast, not link-local (169.254.0.0/16, fe80::/10), and none of the
/// cloud metadata services' addresses (also fd00:ec2::254 and 100.100.100.200): a DNS
/// answer must not send clients there.
pub fn usable(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    !(ip.is_unspecified()
        || ip.is_multicast()
        || link_local
        || super::scope::METADATA.contains(&ip)
        || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()))
}

/// An answer made into backend addresses: unusable ones out, ascending, deduplicated, at most
/// [`DEFAULT_MAX_ADDRESSES`]. Returns them and how many were left out.
pub fn settle(ips: impl IntoIterator<Item = IpAddr>) -> (Vec<IpAddr>, usize) {
    let mut all: Vec<IpAddr> = ips.into_iter().map(|ip| ip.to_canonical()).collect();
    all.sort();
    all.dedup();
    let distinct = all.len();
    all.retain(|ip| usable(*ip));
    all.truncate(DEFAULT_MAX_ADDRESSES);
    let left_out = distinct - all.len();
    (all, left_out)
}

/// `host:port` -> a literal address, or a name and its port.
pub enum Target {
    Addr(SocketAddr),
    Name(String, u16),
}

/// Read a backend address: `IP:PORT`, `[IPv6]:PORT` or `NAME:PORT`.
pub fn target(s: &str) -> Result<Target, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(Target::Addr(a));
    }
    let expected = || {
        format!("invalid address {s:?}; expected host:port, e.g. \"127.0.0.1:8080\" or \"chat.internal:2346\"")
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(expected)?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(expected)?;
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(expected());
    }
    Ok(Target::Name(host, port))
}

impl UpstreamConfig {
    /// This upstream with the backends of its `resolve` names on `host` made `addrs`
    /// (ascending, as [`settle`] leaves them); None when it has no such name or nothing
    /// changes.
    pub fn with_addresses(&self, host: &str, addrs: &[IpAddr]) -> Option<UpstreamConfig> {
        let mut names = self.names.clone();
        names.sort_by_key(|n| n.at);
        let mut backends = Vec::with_capacity(self.backends.len());
        let mut from = 0;
        let mut changed = false;
        for n in &mut names {
            backends.extend_from_slice(&self.backends[from..n.at]);
            let old = &self.backends[n.at..n.at + n.count];
            from = n.at + n.count;
            n.at = backends.len();
            if n.resolve && n.host == host {
                let new = n.backends(addrs);
                changed |= new
                    .iter()
                    .map(|b| (&b.id, b.addr))
                    .ne(old.iter().map(|b| (&b.id, b.addr)));
                backends.extend(new);
                n.addrs = addrs.to_vec();
            } else {
                backends.extend_from_slice(old);
            }
            n.count = backends.len() - n.at;
        }
        backends.extend_from_slice(&self.backends[from..]);
        changed.then(|| UpstreamConfig {
            name: self.name.clone(),
            policy: self.policy.clone(),
            backends,
            names,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::UpstreamPolicy;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn targets_are_addresses_or_names() {
        assert!(matches!(target("127.0.0.1:80"), Ok(Target::Addr(_))));
        assert!(matches!(target("[::1]:80"), Ok(Target::Addr(_))));
        match target("Chat.Internal.:2346") {
            Ok(Target::Name(h, p)) => assert_eq!((h.as_str(), p), ("chat.internal", 2346)),
            _ => panic!("a name"),
        }
        for bad in [
            "nowhere", "chat:0", "chat:x", "::1:80", "-a.b:1", "a..b:1", ":80", "a b:1",
        ] {
            assert!(target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers_are_sorted_deduplicated_filtered_and_capped() {
        let (addrs, out) = settle(
            [
                "10.0.0.2",
                "0.0.0.0",
                "10.0.0.1",
                "::",
                "224.0.0.1",
                "255.255.255.255",
                "10.0.0.2",
                "::ffff:10.0.0.3",
                "fd00::1",
                "169.254.169.254",
                "fe80::1",
                "fd00:ec2::254",
                "100.100.100.200",
            ]
            .map(ip),
        );
        assert_eq!(
            addrs,
            ["10.0.0.1", "10.0.0.2", "10.0.0.3", "fd00::1"].map(ip)
        );
        assert_eq!(out, 8, "unusable ones are counted; duplicates are not");
        // A flood of records: the lowest DEFAULT_MAX_ADDRESSES, whatever their order.
        let many: Vec<IpAddr> = (0..5000u32)
            .rev()
            .map(|i| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)))
            .collect();
        let (addrs, out) = settle(many);
        assert_eq!(addrs.len(), DEFAULT_MAX_ADDRESSES);
        assert_eq!(out, 5000 - DEFAULT_MAX_ADDRESSES);
        assert_eq!(addrs[0], ip("10.0.0.0"));
    }

    #[test]
    fn waits_are_clamped_and_valid_overrides_the_ttl() {
        let s = ResolverSettings::default();
        assert_eq!(s.next_lookup(Some(Duration::ZERO)), DEFAULT_MIN_TTL);
        assert_eq!(
            s.next_lookup(Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert_eq!(
            s.next_lookup(Some(Duration::from_secs(86400 * 7))),
            DEFAULT_MAX_TTL
        );
        assert_eq!(s.retry(), DEFAULT_RETRY);
        let v = ResolverSettings {
            valid: Some(Duration::from_secs(2)),
            ..ResolverSettings::default()
        };
        assert_eq!(
            v.next_lookup(Some(Duration::from_secs(300))),
            Duration::from_secs(2)
        );
        assert_eq!(v.retry(), Duration::from_secs(2));
    }

    fn backend(id: &str, addr: &str) -> StaticBackend {
        StaticBackend {
            id: id.into(),
            addr: addr.parse().unwrap(),
            weight: 1,
            max_conns: 0,
            disabled: false,
            backup: false,
            max_fails: None,
            fail_timeout: None,
        }
    }

    /// `a`, then the name `n.test:80` (resolve) at 10.0.0.1 and 10.0.0.2, then `z`.
    pub(crate) fn upstream() -> UpstreamConfig {
        let named = NamedServer {
            host: "n.test".into(),
            port: 80,
            resolve: true,
            id: "n.test:80".into(),
            template: StaticBackend {
                weight: 3,
                ..backend("n.test:80", "0.0.0.0:80")
            },
            at: 1,
            count: 2,
            ttl: Some(Duration::from_secs(1)),
            addrs: vec![ip("10.0.0.1"), ip("10.0.0.2")],
        };
        let mut backends = vec![backend("a", "127.0.0.1:1")];
        backends.extend(named.backends(&named.addrs));
        backends.push(backend("z", "127.0.0.1:2"));
        UpstreamConfig {
            name: "u".into(),
            policy: UpstreamPolicy::default(),
            backends,
            names: vec![named],
        }
    }

    #[test]
    fn a_new_answer_replaces_the_names_backends_in_its_place() {
        let u = upstream();
        let ids = |u: &UpstreamConfig| u.backends.iter().map(|b| b.id.clone()).collect::<Vec<_>>();
        assert_eq!(
            ids(&u),
            ["a", "n.test:80@10.0.0.1", "n.test:80@10.0.0.2", "z"]
        );
        assert!(
            u.with_addresses("n.test", &u.names[0].addrs).is_none(),
            "unchanged"
        );
        assert!(u.with_addresses("other.test", &[ip("10.0.0.9")]).is_none());
        let v = u
            .with_addresses("n.test", &[ip("10.0.0.2"), ip("10.0.0.3"), ip("fd00::1")])
            .unwrap();
        assert_eq!(
            ids(&v),
            [
                "a",
                "n.test:80@10.0.0.2",
                "n.test:80@10.0.0.3",
                "n.test:80@fd00::1",
                "z"
            ]
        );
        assert!(v.backends[1..4]
            .iter()
            .all(|b| b.weight == 3 && b.addr.port() == 80));
        assert_eq!((v.names[0].at, v.names[0].count), (1, 3));
        let w = v.with_addresses("n.test", &[ip("10.0.0.1")]).unwrap();
        assert_eq!(ids(&w), ["a", "n.test:80@10.0.0.1", "z"]);
        // A name that is not resolved again never changes.
        let mut fixed = upstream();
        fixed.names[0].resolve = false;
        assert!(fixed.with_addresses("n.test", &[ip("10.0.0.7")]).is_none());
    }
}
