//! The real client address: the one value every per-client feature reads (hashing on `ip`,
//! the access log, `X-Real-IP` and `X-Forwarded-For`, the outbound PROXY header, per-client
//! limits). It is [`Peers::client`], worked out in two steps:
//!
//! 1. once per connection ([`Addressing::accept`]): the socket's peer, or the source of the
//!    connection's PROXY header on a listener with `proxy_protocol = true` (with
//!    `real_ip.header = "proxy_protocol"`, only when the socket's peer is trusted);
//! 2. once per request ([`believe`], called by the request classifier): when that address is
//!    a trusted proxy (`real_ip.from`), the address its `X-Real-IP` or `X-Forwarded-For`
//!    names, walked as nginx's realip module walks it.
//!
//! Imports: `config`, and the proxy's own `exchange` (for [`Peers`]) and `proxy_protocol`.

use super::exchange::Peers;
use super::proxy_protocol::receive::{self, HeaderError};
use super::tls::{local, peer};
use crate::config::{Listener, RealIp, RealIpHeader};
use pingora::protocols::Stream;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// How a listener learns its clients' addresses.
#[derive(Clone, Debug, Default)]
pub struct Addressing {
    /// Every connection starts with a PROXY header.
    pub proxy_protocol: bool,
    /// Trusted proxies and the header they name the client in.
    pub real_ip: Option<Arc<RealIp>>,
}

impl Addressing {
    /// The listener's settings.
    pub fn of(l: &Listener) -> Self {
        Addressing {
            proxy_protocol: l.proxy_protocol,
            real_ip: l.real_ip.clone().map(Arc::new),
        }
    }

    /// The trusted proxies whose request header is believed (none for `proxy_protocol`,
    /// which [`Addressing::accept`] applies).
    pub fn for_requests(&self) -> Option<&RealIp> {
        self.real_ip
            .as_deref()
            .filter(|r| r.header != RealIpHeader::ProxyProtocol)
    }

    /// A new connection's peers, its PROXY header read first when the listener expects one
    /// (within `timeout`). The stream returned reads on from the first byte after the header.
    pub async fn accept(
        &self,
        stream: Stream,
        timeout: Duration,
    ) -> Result<(Stream, Peers), HeaderError> {
        let socket = Peers {
            client: peer(&stream),
            local: local(&stream),
        };
        if !self.proxy_protocol {
            return Ok((stream, socket));
        }
        let (stream, header) = receive::read(stream, timeout).await?;
        let believed = match (header.source, self.real_ip.as_deref()) {
            (None, _) => socket.client,
            (Some(src), Some(r)) if r.header == RealIpHeader::ProxyProtocol => {
                match socket.client {
                    Some(c) if r.trusts(c.ip()) => Some(src),
                    other => other,
                }
            }
            (Some(src), _) => Some(src),
        };
        Ok((
            stream,
            Peers {
                client: believed,
                local: socket.local,
            },
        ))
    }
}

/// The client of one request on a connection whose client is `conn`: with `real_ip`, and
/// `conn` one of its trusted proxies, the address its header names. `x_real_ip` is the first
/// `X-Real-IP` value, `xff` every `X-Forwarded-For` value in order.
pub fn believe(
    real_ip: Option<&RealIp>,
    conn: Option<SocketAddr>,
    x_real_ip: Option<&[u8]>,
    xff: &[&[u8]],
) -> Option<SocketAddr> {
    let (Some(r), Some(conn)) = (real_ip, conn) else {
        return conn;
    };
    Some(match r.header {
        RealIpHeader::XRealIp => match x_real_ip {
            Some(v) => walk(r, conn, &[v]),
            None => conn,
        },
        RealIpHeader::XForwardedFor => walk(r, conn, xff),
        RealIpHeader::ProxyProtocol => conn,
    })
}

/// nginx's walk of a forwarded-address list (`values`, one per header, in order): nothing
/// unless `conn` is trusted; then the rightmost address, and with `recursive`, on leftwards
/// while the address taken is trusted. Addresses are separated by commas or spaces; an entry
/// that is not an address ends the walk at the last one taken.
fn walk(r: &RealIp, conn: SocketAddr, values: &[&[u8]]) -> SocketAddr {
    if !r.trusts(conn.ip()) {
        return conn;
    }
    let sep = |b: &u8| *b == b' ' || *b == b',';
    let mut addr = conn;
    for value in values.iter().rev() {
        let mut rest: &[u8] = value;
        loop {
            let Some(end) = rest.iter().rposition(|b| !sep(b)) else {
                return addr;
            };
            let start = rest[..end].iter().rposition(sep).map_or(0, |i| i + 1);
            let Some(a) = parse_addr(&rest[start..=end]) else {
                return addr;
            };
            addr = a;
            if !r.recursive || !r.trusts(a.ip()) {
                return addr;
            }
            if start == 0 {
                break;
            }
            rest = &rest[..start - 1];
        }
    }
    addr
}

/// An address as a forwarding header carries it: `IP`, `IPv4:port`, `[IPv6]` or
/// `[IPv6]:port` (port 0 when none is given).
fn parse_addr(token: &[u8]) -> Option<SocketAddr> {
    let s = std::str::from_utf8(token).ok()?;
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 0));
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa);
    }
    let v6 = s.strip_prefix('[')?.strip_suffix(']')?;
    Some(SocketAddr::new(v6.parse::<IpAddr>().ok()?, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::real_ip::parse_range;

    fn real_ip(header: RealIpHeader, recursive: bool) -> RealIp {
        RealIp {
            from: ["127.0.0.0/8", "10.0.0.0/8"]
                .iter()
                .map(|r| parse_range(r).unwrap())
                .collect(),
            header,
            recursive,
        }
    }

    fn ip(r: &RealIp, conn: &str, xreal: Option<&str>, xff: &[&str]) -> String {
        let xff: Vec<&[u8]> = xff.iter().map(|v| v.as_bytes()).collect();
        let got = believe(
            Some(r),
            Some(conn.parse().unwrap()),
            xreal.map(str::as_bytes),
            &xff,
        );
        got.unwrap().ip().to_string()
    }

    #[test]
    fn xff_last_address_only_from_a_trusted_peer() {
        let r = real_ip(RealIpHeader::XForwardedFor, false);
        let t = "10.1.1.1:5000";
        assert_eq!(ip(&r, t, None, &["1.1.1.1, 2.2.2.2"]), "2.2.2.2");
        // Not recursive: the last address, even a trusted one.
        assert_eq!(ip(&r, t, None, &["1.1.1.1, 10.2.2.2"]), "10.2.2.2");
        // Untrusted peer: its header is not believed.
        assert_eq!(ip(&r, "8.8.8.8:1", None, &["1.1.1.1"]), "8.8.8.8");
        // No header, or a bad last entry: the peer stands.
        assert_eq!(ip(&r, t, None, &[]), "10.1.1.1");
        assert_eq!(ip(&r, t, None, &["1.1.1.1, junk"]), "10.1.1.1");
        assert_eq!(ip(&r, t, None, &[" , ,"]), "10.1.1.1");
        // Several headers: the last one's last address. Ports and brackets are taken.
        assert_eq!(ip(&r, t, None, &["1.1.1.1", "3.3.3.3:80"]), "3.3.3.3");
        assert_eq!(ip(&r, t, None, &["[2001:db8::1]:443"]), "2001:db8::1");
        assert_eq!(ip(&r, t, None, &["2001:db8::2 ,"]), "2001:db8::2");
        // An IPv4-mapped peer is trusted as IPv4.
        assert_eq!(ip(&r, "[::ffff:10.0.0.9]:1", None, &["4.4.4.4"]), "4.4.4.4");
    }

    #[test]
    fn xff_recursive_takes_the_rightmost_untrusted() {
        let r = real_ip(RealIpHeader::XForwardedFor, true);
        let t = "127.0.0.1:5000";
        assert_eq!(ip(&r, t, None, &["1.1.1.1, 2.2.2.2, 10.0.0.2"]), "2.2.2.2");
        assert_eq!(ip(&r, t, None, &["1.1.1.1", "2.2.2.2 10.0.0.2"]), "2.2.2.2");
        assert_eq!(
            ip(&r, t, None, &["1.1.1.1", "10.0.0.3", "10.0.0.2"]),
            "1.1.1.1"
        );
        // All trusted: the leftmost.
        assert_eq!(ip(&r, t, None, &["10.0.0.5, 10.0.0.2"]), "10.0.0.5");
        // A bad entry stops the walk at the last address taken.
        assert_eq!(ip(&r, t, None, &["1.1.1.1, junk, 10.0.0.2"]), "10.0.0.2");
        assert_eq!(ip(&r, t, None, &["1.1.1.1", " ", "10.0.0.2"]), "10.0.0.2");
    }

    #[test]
    fn x_real_ip_and_no_settings() {
        let r = real_ip(RealIpHeader::XRealIp, false);
        assert_eq!(
            ip(&r, "10.0.0.1:1", Some("5.5.5.5"), &["6.6.6.6"]),
            "5.5.5.5"
        );
        assert_eq!(ip(&r, "10.0.0.1:1", None, &["6.6.6.6"]), "10.0.0.1");
        assert_eq!(ip(&r, "9.9.9.9:1", Some("5.5.5.5"), &[]), "9.9.9.9");
        let conn = Some("9.9.9.9:1".parse().unwrap());
        assert_eq!(believe(None, conn, Some(b"5.5.5.5"), &[]), conn);
        assert_eq!(believe(Some(&r), None, Some(b"5.5.5.5"), &[]), None);
    }
}
