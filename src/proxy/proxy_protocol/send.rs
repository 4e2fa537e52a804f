//! The outbound PROXY header (v1 text, v2 binary) tideway sends a backend before the
//! client's bytes, so the backend learns the client's address.

use super::V2_SIGNATURE;
use crate::config::ProxyProtocol;
use std::net::SocketAddr;

/// The header for a connection from `client` to `local` (tideway's listening address). When
/// one is IPv4 and the other IPv6 (a client named by a PROXY header or a trusted proxy), both
/// are written as IPv6, the IPv4 one mapped, so the client's address is never lost.
pub fn header(version: ProxyProtocol, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let v6 = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 => v6,
    };
    let (client, local) = if client.is_ipv4() == local.is_ipv4() {
        (client, local)
    } else {
        (v6(client), v6(local))
    };
    match version {
        ProxyProtocol::V1 => match (client, local) {
            (SocketAddr::V4(c), SocketAddr::V4(l)) => format!(
                "PROXY TCP4 {} {} {} {}\r\n",
                c.ip(),
                l.ip(),
                c.port(),
                l.port()
            )
            .into_bytes(),
            (SocketAddr::V6(c), SocketAddr::V6(l)) => format!(
                "PROXY TCP6 {} {} {} {}\r\n",
                c.ip(),
                l.ip(),
                c.port(),
                l.port()
            )
            .into_bytes(),
            _ => b"PROXY UNKNOWN\r\n".to_vec(),
        },
        ProxyProtocol::V2 => {
            let mut out = V2_SIGNATURE.to_vec();
            out.push(0x21); // version 2, PROXY command
            match (client, local) {
                (SocketAddr::V4(c), SocketAddr::V4(l)) => {
                    out.push(0x11); // TCP over IPv4
                    out.extend_from_slice(&12u16.to_be_bytes());
                    out.extend_from_slice(&c.ip().octets());
                    out.extend_from_slice(&l.ip().octets());
                    out.extend_from_slice(&c.port().to_be_bytes());
                    out.extend_from_slice(&l.port().to_be_bytes());
                }
                (SocketAddr::V6(c), SocketAddr::V6(l)) => {
                    out.push(0x21); // TCP over IPv6
                    out.extend_from_slice(&36u16.to_be_bytes());
                    out.extend_from_slice(&c.ip().octets());
                    out.extend_from_slice(&l.ip().octets());
                    out.extend_from_slice(&c.port().to_be_bytes());
                    out.extend_from_slice(&l.port().to_be_bytes());
                }
                _ => {
                    out.push(0x00); // UNSPEC
                    out.extend_from_slice(&0u16.to_be_bytes());
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_encode_the_client() {
        let c: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        let l: SocketAddr = "10.9.9.9:443".parse().unwrap();
        assert_eq!(
            header(ProxyProtocol::V1, c, l),
            b"PROXY TCP4 10.1.2.3 10.9.9.9 5555 443\r\n"
        );
        let v2 = header(ProxyProtocol::V2, c, l);
        assert_eq!(&v2[..12], &V2_SIGNATURE);
        assert_eq!(v2[12..16], [0x21, 0x11, 0, 12]);
        assert_eq!(&v2[16..20], &[10, 1, 2, 3]);
        assert_eq!(&v2[24..26], &5555u16.to_be_bytes());
        assert_eq!(v2.len(), 28);
    }

    #[test]
    fn mixed_families_are_written_as_ipv6() {
        let c: SocketAddr = "[2001:db8::7]:5555".parse().unwrap();
        let l: SocketAddr = "10.9.9.9:443".parse().unwrap();
        assert_eq!(
            header(ProxyProtocol::V1, c, l),
            b"PROXY TCP6 2001:db8::7 ::ffff:10.9.9.9 5555 443\r\n"
        );
        let v2 = header(ProxyProtocol::V2, l, c);
        assert_eq!(v2[12..16], [0x21, 0x21, 0, 36]);
        assert_eq!(
            &v2[16..32],
            &"::ffff:10.9.9.9"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
    }
}
