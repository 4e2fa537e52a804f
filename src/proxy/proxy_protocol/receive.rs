//! The inbound PROXY header: a load balancer in front of tideway opens each connection with
//! it to say whose connection it is. [`parse`] checks it strictly against HAProxy's spec and
//! tells a header still arriving from one that can never be valid, so garbage is refused at
//! its first wrong byte; [`read`] reads one from a new connection under a deadline and puts
//! back whatever followed it (the first bytes of a request or of a TLS handshake).
//!
//! v1: `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` or `PROXY UNKNOWN...\r\n`, at most 107
//! bytes; single spaces, addresses of the named family, ports 0-65535 without leading zeros.
//! v2: the 12-byte signature, version 2, command LOCAL or PROXY, the family and protocol, the
//! length, the addresses, then TLVs, which are skipped. A LOCAL command, an UNKNOWN or UNSPEC
//! family and a unix socket address all leave the connection's own peer as the client.

use super::V2_SIGNATURE;
use crate::net::inbound::Inbound;
use pingora::protocols::Stream;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

/// Longest v1 header, CRLF included (the spec's limit).
pub const V1_MAX: usize = 107;

/// Largest v2 header taken, TLVs included: room for what load balancers add (endpoint ids,
/// TLS details), while a connection can make tideway hold at most this much before it is
/// known to be one.
pub const MAX_V2_HEADER: usize = 4096;

/// How long a TCP listener waits for a connection's PROXY header (nginx's stream
/// `proxy_protocol_timeout`). HTTP listeners use their `header_timeout`, as nginx uses
/// `client_header_timeout`.
pub const DEFAULT_PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

const V1_PREFIX: &[u8] = b"PROXY ";

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("the connection does not start with a PROXY protocol header")]
    NotProxy,
    #[error("PROXY v1 header without CRLF within 107 bytes")]
    V1TooLong,
    #[error("malformed PROXY v1 header")]
    V1Malformed,
    #[error("PROXY v2 header with an unknown version or command")]
    V2Command,
    #[error("PROXY v2 header with an unsupported address family or protocol")]
    V2Family,
    #[error("PROXY v2 header too short for its addresses")]
    V2Short,
    #[error("PROXY v2 header over {MAX_V2_HEADER} bytes")]
    V2TooLong,
    #[error("the connection closed before its PROXY header ended")]
    Closed,
    #[error("no complete PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("reading the PROXY header failed: {0}")]
    Io(String),
}

/// A complete header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Its length: the connection's own bytes start after it.
    pub len: usize,
    /// The client's address; None where the connection's own peer stands (v1 UNKNOWN, v2
    /// LOCAL, UNSPEC or unix).
    pub source: Option<SocketAddr>,
    /// The address the client connected to (the balancer's), when given.
    pub destination: Option<SocketAddr>,
}

/// Parse the header at the start of `buf`: `Ok(None)` while it may still become valid.
pub fn parse(buf: &[u8]) -> Result<Option<Header>, HeaderError> {
    if buf.starts_with(V1_PREFIX) {
        v1(buf)
    } else if buf.starts_with(&V2_SIGNATURE) {
        v2(buf)
    } else if V1_PREFIX.starts_with(buf) || V2_SIGNATURE.starts_with(buf) {
        Ok(None)
    } else {
        Err(HeaderError::NotProxy)
    }
}

fn v1(buf: &[u8]) -> Result<Option<Header>, HeaderError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX {
            Err(HeaderError::V1TooLong)
        } else {
            Ok(None)
        };
    };
    if window[lf - 1] != b'\r' {
        return Err(HeaderError::V1Malformed);
    }
    let line = &window[V1_PREFIX.len()..lf - 1];
    let len = lf + 1;
    // UNKNOWN: whatever follows up to CRLF is ignored (the spec says so).
    if line == b"UNKNOWN" || line.starts_with(b"UNKNOWN ") {
        return Ok(Some(Header {
            len,
            source: None,
            destination: None,
        }));
    }
    let bad = || HeaderError::V1Malformed;
    let line = std::str::from_utf8(line).map_err(|_| bad())?;
    let mut parts = line.split(' ');
    let (Some(family), Some(src), Some(dst), Some(sport), Some(dport), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad());
    };
    let (src, dst): (IpAddr, IpAddr) = match family {
        "TCP4" => (
            src.parse::<Ipv4Addr>().map_err(|_| bad())?.into(),
            dst.parse::<Ipv4Addr>().map_err(|_| bad())?.into(),
        ),
        // Only the textual forms Ipv6Addr takes; an IPv4 address is not one.
        "TCP6" => (
            src.parse::<Ipv6Addr>().map_err(|_| bad())?.into(),
            dst.parse::<Ipv6Addr>().map_err(|_| bad())?.into(),
        ),
        _ => return Err(bad()),
    };
    let (sport, dport) = (port(sport).ok_or_else(bad)?, port(dport).ok_or_else(bad)?);
    Ok(Some(Header {
        len,
        source: Some(SocketAddr::new(src, sport)),
        destination: Some(SocketAddr::new(dst, dport)),
    }))
}

/// A v1 port: 1 to 5 digits, no leading zero (but `0` itself), at most 65535.
fn port(s: &str) -> Option<u16> {
    let ok = !s.is_empty()
        && s.len() <= 5
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    ok.then(|| s.parse().ok()).flatten()
}

fn v2(buf: &[u8]) -> Result<Option<Header>, HeaderError> {
    // Checked as soon as each byte is in, so garbage after the signature is refused early.
    if let Some(&ver_cmd) = buf.get(12) {
        if ver_cmd >> 4 != 2 || ver_cmd & 0x0F > 1 {
            return Err(HeaderError::V2Command);
        }
    }
    if let Some(&fam) = buf.get(13) {
        // AF_UNSPEC, AF_INET, AF_INET6, AF_UNIX over UNSPEC or STREAM; never DGRAM.
        if !matches!(fam, 0x00 | 0x10 | 0x11 | 0x20 | 0x21 | 0x30 | 0x31) {
            return Err(HeaderError::V2Family);
        }
    }
    if buf.len() < 16 {
        return Ok(None);
    }
    let local = buf[12] & 0x0F == 0;
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > MAX_V2_HEADER {
        return Err(HeaderError::V2TooLong);
    }
    if buf.len() < len {
        return Ok(None);
    }
    let body = &buf[16..len];
    let none = Header {
        len,
        source: None,
        destination: None,
    };
    let need = match buf[13] >> 4 {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if body.len() < need {
        // A LOCAL header's addresses are ignored, but still must fit its length.
        return Err(HeaderError::V2Short);
    }
    if local {
        return Ok(Some(none));
    }
    let at = |i: usize| u16::from_be_bytes([body[i], body[i + 1]]);
    Ok(Some(match buf[13] {
        0x11 => {
            let ip = |i: usize| IpAddr::from([body[i], body[i + 1], body[i + 2], body[i + 3]]);
            Header {
                len,
                source: Some(SocketAddr::new(ip(0), at(8))),
                destination: Some(SocketAddr::new(ip(4), at(10))),
            }
        }
        0x21 => {
            let ip = |i: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&body[i..i + 16]);
                IpAddr::from(o)
            };
            Header {
                len,
                source: Some(SocketAddr::new(ip(0), at(32))),
                destination: Some(SocketAddr::new(ip(16), at(34))),
            }
        }
        // UNSPEC, unix sockets, or an INET family with an UNSPEC protocol: the connection's
        // own peer stands.
        _ => none,
    }))
}

/// Read the PROXY header that starts `stream`, within `timeout`. The bytes read past it are
/// put back, so the stream reads on from the first byte after the header.
pub async fn read(stream: Stream, timeout: Duration) -> Result<(Stream, Header), HeaderError> {
    let mut stream = stream;
    let deadline = Instant::now() + timeout;
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    loop {
        if let Some(h) = parse(&buf)? {
            let stream = put_back(stream, &buf[h.len..])?;
            return Ok((stream, h));
        }
        if buf.capacity() - buf.len() < 128 {
            buf.reserve(512);
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Err(_) => return Err(HeaderError::Timeout(timeout)),
            Ok(Ok(0)) => return Err(HeaderError::Closed),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(HeaderError::Io(e.to_string())),
        }
    }
}

/// Make `bytes` the next bytes `stream` reads (an accepted connection replays them first).
fn put_back(stream: Stream, bytes: &[u8]) -> Result<Stream, HeaderError> {
    if bytes.is_empty() {
        return Ok(stream);
    }
    match stream.into_any().downcast::<Inbound>() {
        Ok(mut tcp) => {
            tcp.replay(bytes);
            Ok(tcp)
        }
        Err(_) => Err(HeaderError::Io(
            "bytes after the PROXY header cannot be put back on this stream".into(),
        )),
    }
}

#[cfg(test)]
#[path = "receive_tests.rs"]
mod tests;
