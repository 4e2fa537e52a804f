use super::*;
use crate::config::ProxyProtocol;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn done(buf: &[u8]) -> Header {
    parse(buf)
        .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(buf)))
        .unwrap_or_else(|| panic!("{:?}: incomplete", String::from_utf8_lossy(buf)))
}

/// Every proper prefix of a valid header is incomplete, never an error.
fn prefixes_incomplete(full: &[u8]) {
    for n in 0..full.len() {
        assert_eq!(parse(&full[..n]), Ok(None), "prefix of {n} bytes");
    }
}

#[test]
fn v1_tcp4_tcp6_and_unknown() {
    let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n";
    let h = done(&[&line[..], b"GET /"].concat());
    assert_eq!(h.len, line.len());
    assert_eq!(h.source, Some(sa("203.0.113.7:51000")));
    assert_eq!(h.destination, Some(sa("10.0.0.1:443")));
    let h = done(b"PROXY TCP6 2001:db8::7 ::1 65535 0\r\n");
    assert_eq!(h.source, Some(sa("[2001:db8::7]:65535")));
    assert_eq!(h.destination, Some(sa("[::1]:0")));
    for unknown in [
        &b"PROXY UNKNOWN\r\n"[..],
        b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
    ] {
        let h = done(unknown);
        assert_eq!((h.len, h.source), (unknown.len(), None));
    }
    prefixes_incomplete(b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n");
}

#[test]
fn v1_refuses_what_the_spec_does_not_allow() {
    let bad: [&[u8]; 16] = [
        b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\n", // LF without CR
        b"PROXY TCP4  203.0.113.7 10.0.0.1 51000 443\r\n", // two spaces
        b"PROXY TCP4 203.0.113.7 10.0.0.1 51000\r\n",   // a port missing
        b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443 9\r\n", // one field too many
        b"PROXY TCP4 2001:db8::7 10.0.0.1 51000 443\r\n", // family mismatch
        b"PROXY TCP6 203.0.113.7 ::1 51000 443\r\n",    // family mismatch
        b"PROXY TCP4 203.0.113.256 10.0.0.1 51000 443\r\n",
        b"PROXY TCP4 203.0.113.07 10.0.0.1 51000 443\r\n", // leading zero in an octet
        b"PROXY TCP4 203.0.113.7 10.0.0.1 65536 443\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 051000 443\r\n", // leading zero in a port
        b"PROXY TCP4 203.0.113.7 10.0.0.1 +5100 443\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 5100 -1\r\n",
        b"PROXY UDP4 203.0.113.7 10.0.0.1 51000 443\r\n",
        b"PROXY tcp4 203.0.113.7 10.0.0.1 51000 443\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443 \r\n", // trailing space
        b"PROXY UNKNOWNX\r\n",
    ];
    for b in bad {
        assert_eq!(
            parse(b),
            Err(HeaderError::V1Malformed),
            "{:?}",
            String::from_utf8_lossy(b)
        );
    }
}

#[test]
fn v1_over_107_bytes_is_refused_and_107_is_taken() {
    // The longest legal line: UNKNOWN with filler, CRLF ending at byte 107.
    let mut max = b"PROXY UNKNOWN ".to_vec();
    max.resize(V1_MAX - 2, b'x');
    max.extend_from_slice(b"\r\n");
    assert_eq!(max.len(), V1_MAX);
    assert_eq!(done(&max).len, V1_MAX);
    let mut over = b"PROXY UNKNOWN ".to_vec();
    over.resize(V1_MAX - 1, b'x');
    assert_eq!(
        parse(&over),
        Ok(None),
        "106 bytes without CRLF may still end"
    );
    over.push(b'x');
    assert_eq!(parse(&over), Err(HeaderError::V1TooLong));
    over.extend_from_slice(b"\r\n");
    assert_eq!(parse(&over), Err(HeaderError::V1TooLong));
}

#[test]
fn garbage_is_refused_at_its_first_wrong_byte() {
    for b in [
        &b"G"[..],
        b"GET / HTTP/1.1\r\n",
        b"\x16\x03\x01", // a TLS ClientHello
        b"\r\n\r\n\x00\r\nQUIT\x0b",
        b"PROXZ ",
    ] {
        assert_eq!(
            parse(b),
            Err(HeaderError::NotProxy),
            "{:?}",
            String::from_utf8_lossy(b)
        );
    }
}

#[test]
fn v2_round_trips_what_tideway_sends() {
    for (c, l) in [
        ("203.0.113.7:51000", "10.0.0.1:443"),
        ("[2001:db8::7]:4000", "[2001:db8::1]:80"),
    ] {
        let mut wire = super::super::header(ProxyProtocol::V2, sa(c), sa(l));
        let n = wire.len();
        prefixes_incomplete(&wire);
        wire.extend_from_slice(b"\x16\x03\x01");
        let h = done(&wire);
        assert_eq!(
            (h.len, h.source, h.destination),
            (n, Some(sa(c)), Some(sa(l)))
        );
        let v1 = super::super::header(ProxyProtocol::V1, sa(c), sa(l));
        assert_eq!(done(&v1).source, Some(sa(c)));
    }
}

fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(cmd);
    out.push(fam);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

#[test]
fn v2_local_unspec_and_tlvs() {
    let mut body = vec![192, 0, 2, 1, 10, 0, 0, 1, 0x13, 0x88, 0x01, 0xBB];
    // A TLV (PP2_TYPE_AUTHORITY "example.com") after the addresses is skipped.
    body.extend_from_slice(&[0x02, 0x00, 0x0B]);
    body.extend_from_slice(b"example.com");
    let h = done(&v2(0x21, 0x11, &body));
    assert_eq!(h.len, 16 + body.len());
    assert_eq!(h.source, Some(sa("192.0.2.1:5000")));
    // LOCAL: a health check from the balancer itself; its own address stands.
    let h = done(&v2(0x20, 0x11, &body));
    assert_eq!((h.len, h.source), (16 + body.len(), None));
    assert_eq!(done(&v2(0x20, 0x00, &[])).source, None);
    // PROXY with UNSPEC: the connection's peer stands; a unix address is not an IP.
    assert_eq!(done(&v2(0x21, 0x00, &[])).source, None);
    assert_eq!(done(&v2(0x21, 0x31, &[0u8; 216])).source, None);
}

#[test]
fn v2_refuses_bad_version_command_family_and_lengths() {
    let v4 = [192, 0, 2, 1, 10, 0, 0, 1, 0x13, 0x88, 0x01, 0xBB];
    assert_eq!(parse(&v2(0x11, 0x11, &v4)), Err(HeaderError::V2Command));
    assert_eq!(parse(&v2(0x22, 0x11, &v4)), Err(HeaderError::V2Command));
    // Refused as soon as the wrong byte is in, before the length is.
    assert_eq!(
        parse(&v2(0x31, 0x11, &v4)[..13]),
        Err(HeaderError::V2Command)
    );
    assert_eq!(parse(&v2(0x21, 0x12, &v4)), Err(HeaderError::V2Family)); // UDP
    assert_eq!(parse(&v2(0x21, 0x41, &v4)), Err(HeaderError::V2Family));
    assert_eq!(parse(&v2(0x21, 0x11, &v4[..11])), Err(HeaderError::V2Short));
    assert_eq!(
        parse(&v2(0x21, 0x21, &[0u8; 35])),
        Err(HeaderError::V2Short)
    );
    assert_eq!(parse(&v2(0x20, 0x11, &v4[..4])), Err(HeaderError::V2Short));
    let huge = v2(0x21, 0x11, &vec![0u8; MAX_V2_HEADER]);
    assert_eq!(parse(&huge[..16]), Err(HeaderError::V2TooLong));
    let largest = v2(0x21, 0x11, &vec![0u8; MAX_V2_HEADER - 16]);
    assert_eq!(done(&largest).len, MAX_V2_HEADER);
    // Truncated: incomplete, whatever is missing.
    let full = v2(0x21, 0x11, &v4);
    prefixes_incomplete(&full);
}

#[tokio::test]
async fn bytes_put_back_come_first_and_the_stream_stays_a_plain_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = tokio::net::TcpStream::connect(l.local_addr().unwrap())
        .await
        .unwrap();
    let (tcp, peer) = l.accept().await.unwrap();
    client.write_all(b"world").await.unwrap();
    let stream: Stream = Box::new(Inbound::new(tcp, peer, None));
    let mut stream = put_back(stream, b"hello ").unwrap();
    // A WebSocket on it may still close both plain sockets at once (websocket.rs asks this).
    assert!(stream.as_any().is::<Inbound>());
    let mut got = [0u8; 11];
    stream.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"hello world");
}
