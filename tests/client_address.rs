//! The real client address on HTTP listeners: the inbound PROXY protocol (v1, v2) and trusted
//! proxies' X-Forwarded-For / X-Real-IP, seen from the backend (the demo backend reports the
//! forwarding headers it got), the access log and `ip` hashing. Raw sockets, real processes.

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GET: &[u8] = b"GET /who HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n";

/// Bounded wait for anything a test reads.
const READ_LIMIT: Duration = Duration::from_secs(10);

fn v1(src: &str, sport: u16) -> Vec<u8> {
    let family = if src.contains(':') { "TCP6" } else { "TCP4" };
    let dst = if src.contains(':') {
        "::1"
    } else {
        "127.0.0.1"
    };
    format!("PROXY {family} {src} {dst} {sport} 80\r\n").into_bytes()
}

const SIG: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 PROXY header for an IPv4 or IPv6 `src`, with a TLV (skipped by tideway).
fn v2(src: &str, sport: u16) -> Vec<u8> {
    let ip: std::net::IpAddr = src.parse().unwrap();
    let (fam, mut body) = match ip {
        std::net::IpAddr::V4(a) => (0x11, [a.octets().to_vec(), vec![127, 0, 0, 1]].concat()),
        std::net::IpAddr::V6(a) => (
            0x21,
            [
                a.octets().to_vec(),
                std::net::Ipv6Addr::LOCALHOST.octets().to_vec(),
            ]
            .concat(),
        ),
    };
    body.extend_from_slice(&sport.to_be_bytes());
    body.extend_from_slice(&80u16.to_be_bytes());
    body.extend_from_slice(&[0x04, 0x00, 0x03, b'x', b'y', b'z']); // PP2_TYPE_NOOP
    let mut out = SIG.to_vec();
    out.extend_from_slice(&[0x21, fam]);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// v2 LOCAL (a balancer's own health check): the socket's peer stands.
fn v2_local() -> Vec<u8> {
    [SIG, &[0x20, 0x00, 0, 0]].concat()
}

/// Open a connection, send each piece as its own write (a pause between, so they go out as
/// separate segments), and read everything answered until the connection closes. A reset
/// counts as the end.
async fn exchange(addr: SocketAddr, pieces: &[&[u8]]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    for (i, p) in pieces.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if s.write_all(p).await.is_err() {
            break;
        }
    }
    let mut got = Vec::new();
    let _ = tokio::time::timeout(READ_LIMIT, s.read_to_end(&mut got))
        .await
        .expect("the connection was neither answered nor closed in time");
    got
}

/// The backend's report of the forwarding headers it got: (X-Real-IP, X-Forwarded-For).
fn seen(answer: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no answer: {text:?}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    (s("x_real_ip"), s("x_forwarded_for"))
}

fn pair(real: &str, xff: &str) -> (String, String) {
    (real.to_string(), xff.to_string())
}

async fn proxy(listener: &str, upstream: &str) -> Proxy {
    start_proxy_opts("access_log = true", "", listener, upstream, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_v1_and_v2_name_the_client_the_backend_sees() {
    let b = backend("b").await;
    let p = proxy(
        "proxy_protocol = true",
        &format!("[upstream.app]\n{}", backends_toml(&[(&b, 1)])),
    )
    .await;
    let cases: [(Vec<u8>, &str); 6] = [
        (v1("203.0.113.7", 51000), "203.0.113.7"),
        (v1("2001:db8::7", 51000), "2001:db8::7"),
        (v2("198.51.100.4", 40000), "198.51.100.4"),
        (v2("2001:db8::9", 40000), "2001:db8::9"),
        (v2_local(), "127.0.0.1"),
        (b"PROXY UNKNOWN\r\n".to_vec(), "127.0.0.1"),
    ];
    for (header, client) in &cases {
        // Header and request in one segment: the request bytes after the header are kept.
        let got = exchange(p.http, &[&[header.as_slice(), GET].concat()]).await;
        assert_eq!(seen(&got), pair(client, client), "{header:?}");
    }
    // A spoofed X-Forwarded-For from the client stays a prior hop, as nginx keeps it.
    let spoof = b"GET / HTTP/1.1\r\nHost: app\r\nX-Forwarded-For: 1.2.3.4\r\nX-Real-IP: 1.2.3.4\r\nConnection: close\r\n\r\n";
    let got = exchange(p.http, &[&v1("203.0.113.7", 1), spoof]).await;
    assert_eq!(seen(&got), pair("203.0.113.7", "1.2.3.4, 203.0.113.7"));
    // The header split over several segments, the request in another.
    let h = v2("192.0.2.33", 7000);
    let got = exchange(p.http, &[&h[..3], &h[3..13], &h[13..17], &h[17..], GET]).await;
    assert_eq!(seen(&got), pair("192.0.2.33", "192.0.2.33"));
    let h = v1("192.0.2.34", 7000);
    let got = exchange(
        p.http,
        &[
            &h[..1],
            &h[1..9],
            &h[9..h.len() - 1],
            &h[h.len() - 1..],
            GET,
        ],
    )
    .await;
    assert_eq!(seen(&got), pair("192.0.2.34", "192.0.2.34"));
    // Keep-alive: every request on the connection is the header's client's.
    let keep = b"GET / HTTP/1.1\r\nHost: app\r\n\r\n";
    let got = exchange(p.http, &[&[&v1("192.0.2.35", 1)[..], keep, GET].concat()]).await;
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert_eq!(
        text.matches("\"x_real_ip\":\"192.0.2.35\"").count(),
        2,
        "{text}"
    );
    // The access log names the header's client, not the balancer.
    let log = p.dir.path().join("tideway.log");
    let deadline = Instant::now() + READ_LIMIT;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("198.51.100.4 - - [") && text.contains("2001:db8::7 - - [") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "access log lacks the clients:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A backend that answers every request on every connection with 200 "ok" and records the
/// first bytes of each connection it accepts, in order.
async fn recording_backend() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = c.read(&mut buf).await.unwrap_or(0);
                let _ = tx.send(buf[..n].to_vec());
                let _ = c
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_valid_header_a_connection_is_closed_and_reaches_no_backend() {
    let (addr, mut accepted) = recording_backend().await;
    let p = proxy(
        "proxy_protocol = true\nlimits = { header_timeout = \"1s\" }",
        &format!("[upstream.app]\nbackends = [{{ addr = \"{addr}\" }}]"),
    )
    .await;
    let mut bad_v2 = v2("192.0.2.1", 1);
    bad_v2[12] = 0x22; // command 2 does not exist
    let too_long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 120], b"\r\n", GET].concat();
    let garbage: [&[u8]; 6] = [
        GET,                                     // no header at all
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc", // a TLS ClientHello
        b"PROXY TCP4 203.0.113.7 127.0.0.1 99999 80\r\nGET / HTTP/1.1\r\n\r\n",
        &bad_v2,
        &too_long,
        b"PROXY TCP4 203.0.113.7", // then the client closes its side mid-header
    ];
    for g in garbage {
        let got = exchange(p.http, &[g]).await;
        assert!(got.is_empty(), "{g:?} was answered: {got:?}");
    }
    // Half a header, then silence: closed by the header timeout.
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"PROXY TCP4 203.0.113.7 ").await.unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(READ_LIMIT, s.read_to_end(&mut rest))
        .await
        .expect("a silent half header is closed by the header timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // The first connection the backend ever sees is the first valid one.
    let got = exchange(p.http, &[&[&v1("203.0.113.7", 5)[..], GET].concat()]).await;
    assert!(got.ends_with(b"ok"), "{}", String::from_utf8_lossy(&got));
    let first = tokio::time::timeout(READ_LIMIT, accepted.recv())
        .await
        .unwrap()
        .unwrap();
    let first = String::from_utf8_lossy(&first);
    assert!(first.starts_with("GET /who HTTP/1.1\r\n"), "{first}");
    assert!(first.contains("x-real-ip: 203.0.113.7\r\n"), "{first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_on_ip_goes_by_the_real_client() {
    let (a, b) = (backend("a").await, backend("b").await);
    let p = proxy(
        "proxy_protocol = true",
        &format!(
            "[upstream.app]\nbalance = \"hash\"\nhash_key = \"ip\"\n{}",
            backends_toml(&[(&a, 1), (&b, 1)])
        ),
    )
    .await;
    let id = |got: Vec<u8>| {
        let text = String::from_utf8_lossy(&got).into_owned();
        let body = text.split_once("\r\n\r\n").unwrap().1.to_string();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["id"].as_str().unwrap().to_string()
    };
    let mut owners = std::collections::HashMap::new();
    for i in 0..20u8 {
        let src = format!("198.51.100.{}", 10 + i);
        let got = exchange(p.http, &[&[&v1(&src, 1000)[..], GET].concat()]).await;
        owners.insert(src, id(got));
    }
    // Every connection comes from 127.0.0.1: only the header's addresses can spread them.
    let used: std::collections::HashSet<_> = owners.values().collect();
    assert_eq!(used.len(), 2, "{owners:?}");
    // And each address sticks to its backend, whatever its port.
    for (src, owner) in &owners {
        let got = exchange(p.http, &[&[&v2(src, 2000)[..], GET].concat()]).await;
        assert_eq!(&id(got), owner, "{src}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxys_forwarded_for_is_believed_a_spoof_is_not() {
    let b = backend("b").await;
    let up = format!("[upstream.app]\n{}", backends_toml(&[(&b, 1)]));
    let req = |headers: &str| {
        format!("GET / HTTP/1.1\r\nHost: app\r\n{headers}Connection: close\r\n\r\n").into_bytes()
    };
    let xff = req("X-Forwarded-For: 203.0.113.9, 10.0.0.2\r\n");
    // The test's own address (127.0.0.1) is a trusted proxy.
    let trusted = proxy(
        "real_ip = { from = [\"127.0.0.0/8\", \"10.0.0.0/8\"], header = \"X-Forwarded-For\" }",
        &up,
    )
    .await;
    let got = exchange(trusted.http, &[&xff]).await;
    assert_eq!(
        seen(&got),
        pair("10.0.0.2", "203.0.113.9, 10.0.0.2, 10.0.0.2")
    );
    let recursive = proxy(
        "real_ip = { from = [\"127.0.0.0/8\", \"10.0.0.0/8\"], header = \"X-Forwarded-For\", recursive = true }",
        &up,
    )
    .await;
    let got = exchange(recursive.http, &[&xff]).await;
    assert_eq!(
        seen(&got),
        pair("203.0.113.9", "203.0.113.9, 10.0.0.2, 203.0.113.9")
    );
    // Not a trusted proxy: the spoof is only a prior hop; the socket's address is the client.
    let untrusted = proxy(
        "real_ip = { from = [\"10.0.0.0/8\"], header = \"X-Forwarded-For\" }",
        &up,
    )
    .await;
    let got = exchange(untrusted.http, &[&xff]).await;
    assert_eq!(
        seen(&got),
        pair("127.0.0.1", "203.0.113.9, 10.0.0.2, 127.0.0.1")
    );
    // X-Real-IP (the default header).
    let real = proxy("real_ip = { from = [\"127.0.0.1\"] }", &up).await;
    let got = exchange(real.http, &[&req("X-Real-IP: 192.0.2.44\r\n")]).await;
    assert_eq!(seen(&got), pair("192.0.2.44", "192.0.2.44"));

    // Behind a PROXY-speaking balancer: the header's address is what must be trusted.
    let behind = proxy(
        "proxy_protocol = true\nreal_ip = { from = [\"10.0.0.0/8\"], header = \"X-Forwarded-For\" }",
        &up,
    )
    .await;
    let spoof = req("X-Forwarded-For: 203.0.113.9\r\n");
    let got = exchange(behind.http, &[&v1("10.1.1.1", 1), &spoof]).await;
    assert_eq!(seen(&got), pair("203.0.113.9", "203.0.113.9, 203.0.113.9"));
    let got = exchange(behind.http, &[&v1("198.51.100.1", 1), &spoof]).await;
    assert_eq!(
        seen(&got),
        pair("198.51.100.1", "203.0.113.9, 198.51.100.1")
    );
    // `header = "proxy_protocol"`: the PROXY address only from a trusted balancer.
    for (from, client) in [("127.0.0.0/8", "198.51.100.1"), ("10.0.0.0/8", "127.0.0.1")] {
        let pp = proxy(
            &format!("proxy_protocol = true\nreal_ip = {{ from = [\"{from}\"], header = \"proxy_protocol\" }}"),
            &up,
        )
        .await;
        let got = exchange(pp.http, &[&v1("198.51.100.1", 1), GET]).await;
        assert_eq!(seen(&got), pair(client, client), "from {from}");
    }
}
