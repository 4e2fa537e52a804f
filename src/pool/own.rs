//! tideway's own listening addresses: every listener (those started with the process and those
//! a reload added) and the admin API. A backend at one of them would make tideway proxy to
//! itself, so the registration API refuses them and the data plane answers 508 instead of
//! connecting. An HTTP listener whose routes all answer themselves (`return`) is not in the
//! set: nothing sent to it can come back (nginx configs use such a server of the same instance
//! as a backend; `crate::server::listeners` decides).
//!
//! The set is one `ArcSwap`, replaced whole by the reload's switch ([`OwnAddrs::set`]) and
//! read without locks. A lookup costs a scan of the set's ports; only a backend on the port of
//! a wildcard bind (`0.0.0.0:P`, `[::]:P`) that is not loopback pays for a system call, which
//! asks the kernel whether its address is one of this host's (the source address a UDP socket
//! connected to it gets: the address itself exactly when it is local; no packet is sent).
//!
//! Imports nothing of tideway's.

use arc_swap::ArcSwap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The addresses tideway listens on, replaced whole on reload.
#[derive(Debug, Default)]
pub struct OwnAddrs {
    current: ArcSwap<Vec<SocketAddr>>,
}

impl OwnAddrs {
    /// Replace the set (at start, and at a reload's switch).
    pub fn set(&self, addrs: Vec<SocketAddr>) {
        self.current.store(Arc::new(addrs));
    }

    /// The current set.
    pub fn get(&self) -> Arc<Vec<SocketAddr>> {
        self.current.load_full()
    }

    /// The own address `addr` would reach, if any: the same address, or a wildcard bind on
    /// its port when `addr` is loopback, unspecified or one of this host's addresses.
    pub fn reaches(&self, addr: SocketAddr) -> Option<SocketAddr> {
        let set = self.current.load();
        let mut wildcard = None;
        for own in set.iter().filter(|o| o.port() == addr.port()) {
            let (ip, mine) = (addr.ip().to_canonical(), own.ip().to_canonical());
            if ip == mine || ip.is_unspecified() {
                return Some(*own);
            }
            if mine.is_unspecified() {
                if ip.is_loopback() {
                    return Some(*own);
                }
                wildcard = Some(*own);
            }
        }
        wildcard.filter(|_| is_local(addr.ip().to_canonical()))
    }
}

/// Is `ip` an address of this host? The kernel picks `ip` itself as the source of a socket
/// connected to it exactly when it is local.
pub fn is_local(ip: IpAddr) -> bool {
    if ip.is_loopback() || ip.is_unspecified() {
        return true;
    }
    let any: SocketAddr = match ip {
        IpAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let Ok(socket) = std::net::UdpSocket::bind(any) else {
        return false;
    };
    // The port does not matter: a UDP connect only chooses the route and the source.
    socket.connect((ip, 9)).is_ok()
        && socket
            .local_addr()
            .is_ok_and(|l| l.ip().to_canonical() == ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn exact_loopback_and_wildcard_matches() {
        let own = OwnAddrs::default();
        own.set(vec![
            a("127.0.0.1:8080"),
            a("0.0.0.0:9000"),
            a("10.9.9.9:7000"),
        ]);
        assert_eq!(own.reaches(a("127.0.0.1:8080")), Some(a("127.0.0.1:8080")));
        assert_eq!(
            own.reaches(a("[::ffff:127.0.0.1]:8080")),
            Some(a("127.0.0.1:8080"))
        );
        assert_eq!(own.reaches(a("0.0.0.0:8080")), Some(a("127.0.0.1:8080")));
        assert_eq!(own.reaches(a("127.0.0.1:8081")), None, "another port");
        assert_eq!(
            own.reaches(a("127.0.0.2:8080")),
            None,
            "another loopback address"
        );
        // A wildcard bind takes every local address on its port, and no remote one.
        assert_eq!(own.reaches(a("127.0.0.5:9000")), Some(a("0.0.0.0:9000")));
        assert_eq!(own.reaches(a("[::1]:9000")), Some(a("0.0.0.0:9000")));
        assert_eq!(
            own.reaches(a("192.0.2.1:9000")),
            None,
            "TEST-NET-1 is not ours"
        );
        assert_eq!(own.reaches(a("10.9.9.9:7000")), Some(a("10.9.9.9:7000")));
        own.set(vec![]);
        assert_eq!(own.reaches(a("127.0.0.1:8080")), None, "replaced whole");
    }

    #[test]
    fn local_addresses_are_told_apart() {
        assert!(is_local("127.0.0.1".parse().unwrap()));
        assert!(!is_local("192.0.2.1".parse().unwrap()));
        // This host's address on its default route, when it has one, is local.
        let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        if probe.connect("192.0.2.1:9").is_ok() {
            let mine = probe.local_addr().unwrap().ip();
            assert!(is_local(mine), "{mine}");
        }
    }
}
