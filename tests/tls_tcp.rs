//! wss:// with SNI, raw TCP listeners, and the PROXY protocol.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, ServerName};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

struct Cert {
    der: CertificateDer<'static>,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn make_cert(dir: &std::path::Path, name: &str) -> Cert {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    Cert {
        der: ck.cert.der().clone(),
        cert,
        key,
    }
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    name: &str,
    roots: &[&Cert],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    tls_over(TcpStream::connect(addr).await.unwrap(), name, roots).await
}

/// A TLS handshake with tideway over `tcp` (which may have carried bytes before it).
async fn tls_over(
    tcp: TcpStream,
    name: &str,
    roots: &[&Cert],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut store = rustls::RootCertStore::empty();
    for c in roots {
        store.add(c.der.clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    connector
        .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await
        .expect("TLS handshake with tideway")
}

#[tokio::test]
async fn wss_echo_with_a_certificate_per_sni_name() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        make_cert(dir.path(), "a.test"),
        make_cert(dir.path(), "b.test"),
    );
    let backend = backend("ws").await;
    let p = start_proxy_with(
        &format!(
            "tls = [{{ cert = \"{}\", key = \"{}\" }}, {{ cert = \"{}\", key = \"{}\" }}]",
            a.cert.display(),
            a.key.display(),
            b.cert.display(),
            b.key.display()
        ),
        &format!("[upstream.app]\n{}", backends_toml(&[(&backend, 1)])),
    )
    .await;
    for (name, cert) in [("a.test", &a), ("b.test", &b)] {
        // The certificate served is the one for the SNI name (verified against only it).
        let tls = tls_connect(p.http, name, &[cert]).await;
        let served = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        assert_eq!(served, cert.der, "{name} got the wrong certificate");
        let (mut ws, resp) = tokio_tungstenite::client_async(format!("wss://{name}/chat"), tls)
            .await
            .expect("wss upgrade through tideway");
        assert_eq!(resp.status(), 101);
        for i in 0..10 {
            let text = format!("{name} {i}");
            ws.send(Message::text(text.clone())).await.unwrap();
            assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(text));
        }
    }
    // Plain HTTPS through the same listener says the scheme was https.
    let mut tls = tls_connect(p.http, "a.test", &[&a]).await;
    tls.write_all(b"GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    tls.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("\"x_forwarded_proto\":\"https\""), "{body}");
    // Each certificate's notAfter is exported, by listener and file.
    for cert in [&a, &b] {
        let (_, x509) = x509_parser::parse_x509_certificate(cert.der.as_ref()).unwrap();
        let series = format!(
            "tideway_tls_certificate_expiry_timestamp_seconds{{cert=\"{}\",listener=\"{}\"}}",
            cert.cert.display(),
            p.http
        );
        assert_eq!(
            metric(&p, &series).await,
            x509.validity().not_after.timestamp() as f64,
            "{series}"
        );
    }
}

async fn tcp_backend(id: &str) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let id = id.to_string();
    let task = tokio::spawn(async move {
        let _ = tideway::cli::demo::serve_tcp(l, id).await;
    });
    (addr, task)
}

/// Connect from a chosen loopback address, read the greeting, check an echo.
async fn tcp_session(proxy: std::net::SocketAddr, from: [u8; 4]) -> (String, BufReader<TcpStream>) {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind((std::net::Ipv4Addr::from(from), 0).into())
        .unwrap();
    let s = sock.connect(proxy).await.unwrap();
    let mut r = BufReader::new(s);
    let mut id = String::new();
    r.read_line(&mut id).await.unwrap();
    r.get_mut().write_all(b"ping\n").await.unwrap();
    let mut echo = String::new();
    r.read_line(&mut echo).await.unwrap();
    assert_eq!(echo, "ping\n");
    (id.trim().to_string(), r)
}

#[tokio::test]
async fn tcp_echo_sticks_by_client_ip_and_drain_closes_tunnels() {
    let mut tasks = Vec::new();
    let mut items = Vec::new();
    for id in ["t1", "t2", "t3"] {
        let (addr, task) = tcp_backend(id).await;
        tasks.push(task);
        items.push(format!("{{ addr = \"{addr}\", id = \"{id}\" }}"));
    }
    let p = start_proxy_with(
        "protocol = \"tcp\"",
        &format!(
            "[upstream.app]\nbalance = \"hash\"\ndrain_timeout = \"1s\"\nclose_spread = \"0s\"\nbackends = [{}]",
            items.join(", ")
        ),
    )
    .await;
    let mut owner: HashMap<u8, String> = HashMap::new();
    for last in 2..40u8 {
        let from = [127, 0, 0, last];
        let (first, _s) = tcp_session(p.http, from).await;
        for _ in 0..3 {
            assert_eq!(
                tcp_session(p.http, from).await.0,
                first,
                "127.0.0.{last} moved"
            );
        }
        owner.insert(last, first);
    }
    let used: HashSet<&String> = owner.values().collect();
    assert_eq!(
        used.len(),
        3,
        "38 client addresses should use all 3 backends"
    );

    // Hold tunnels to t1, drain it: they close at the deadline, not before.
    let mut held = Vec::new();
    for (last, id) in &owner {
        if id == "t1" {
            held.push(tcp_session(p.http, [127, 0, 0, *last]).await.1);
        }
    }
    assert!(!held.is_empty());
    let r = p
        .admin_req(
            reqwest::Method::POST,
            "/v1/upstreams/app/backends/t1/state",
            ADMIN_TOKEN,
        )
        .json(&serde_json::json!({"state": "draining"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let drained = Instant::now();
    for r in held.iter_mut() {
        r.get_mut().write_all(b"still\n").await.unwrap();
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        assert_eq!(line, "still\n");
    }
    for r in held.iter_mut() {
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), r.read_to_end(&mut rest))
            .await
            .expect("closed by the drain deadline")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
    let took = drained.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
}

async fn proxy_header_seen(version: &str) -> (String, std::net::SocketAddr) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = l.local_addr().unwrap();
    let p = start_proxy_with(
        "protocol = \"tcp\"",
        &format!("[upstream.app]\nproxy_protocol = \"{version}\"\nbackends = [{{ addr = \"{backend_addr}\" }}]"),
    )
    .await;
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.7:0".parse().unwrap()).unwrap();
    let mut client = sock.connect(p.http).await.unwrap();
    let me = client.local_addr().unwrap();
    client.write_all(b"hello").await.unwrap();
    // The harness's readiness probe opened (and closed) a tunnel first; find ours.
    let mut buf = vec![0u8; 256];
    let got = loop {
        let (mut conn, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"hello") {
            match conn.read(&mut buf).await {
                Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        if got.ends_with(b"hello") {
            break got;
        }
    };
    let header = &got[..got.len() - 5];
    let parsed = if version == "v1" {
        let line = std::str::from_utf8(header).unwrap();
        let f: Vec<&str> = line.trim_end().split(' ').collect();
        assert_eq!(&f[..2], ["PROXY", "TCP4"], "{line}");
        assert_eq!(f[3], p.http.ip().to_string());
        assert_eq!(f[5], p.http.port().to_string());
        format!("{}:{}", f[2], f[4])
    } else {
        assert_eq!(&header[..12], b"\r\n\r\n\0\r\nQUIT\n");
        assert_eq!(header[12], 0x21);
        assert_eq!(header[13], 0x11);
        assert_eq!(u16::from_be_bytes([header[14], header[15]]), 12);
        let src = std::net::Ipv4Addr::new(header[16], header[17], header[18], header[19]);
        let port = u16::from_be_bytes([header[24], header[25]]);
        format!("{src}:{port}")
    };
    (parsed, me)
}

#[tokio::test]
async fn proxy_protocol_v1_and_v2_carry_the_client_address() {
    for v in ["v1", "v2"] {
        let (seen, me) = proxy_header_seen(v).await;
        assert_eq!(seen, me.to_string(), "{v}");
    }
}

#[tokio::test]
async fn sighup_reloads_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let first = make_cert(dir.path(), "reload.test");
    let backend = backend("r").await;
    let p = start_proxy_with(
        &format!(
            "tls = {{ cert = \"{}\", key = \"{}\" }}",
            first.cert.display(),
            first.key.display()
        ),
        &format!("[upstream.app]\n{}", backends_toml(&[(&backend, 1)])),
    )
    .await;
    let served = |tls: &tokio_rustls::client::TlsStream<TcpStream>| {
        tls.get_ref().1.peer_certificates().unwrap()[0].clone()
    };
    assert_eq!(
        served(&tls_connect(p.http, "reload.test", &[&first]).await),
        first.der
    );
    // Replace the files in place, then SIGHUP.
    let second_dir = tempfile::tempdir().unwrap();
    let second = make_cert(second_dir.path(), "reload.test");
    std::fs::copy(&second.cert, &first.cert).unwrap();
    std::fs::copy(&second.key, &first.key).unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &p.child.id().to_string()])
        .status()
        .unwrap();
    let start = Instant::now();
    loop {
        let tls = tls_connect(p.http, "reload.test", &[&first, &second]).await;
        if served(&tls) == second.der {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "certificate not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Still serving after the reload.
    let tls = tls_connect(p.http, "reload.test", &[&second]).await;
    let (mut ws, _) = tokio_tungstenite::client_async("wss://reload.test/chat", tls)
        .await
        .unwrap();
    ws.send(Message::text("after reload")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("after reload")
    );
}

#[tokio::test]
async fn tls_listener_reads_the_proxy_header_before_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert(dir.path(), "pp.test");
    let b = backend("b").await;
    let p = start_proxy_with(
        &format!(
            "proxy_protocol = true\ntls = {{ cert = \"{}\", key = \"{}\" }}",
            cert.cert.display(),
            cert.key.display()
        ),
        &format!("[upstream.app]\n{}", backends_toml(&[(&b, 1)])),
    )
    .await;
    for split in [false, true] {
        let mut tcp = TcpStream::connect(p.http).await.unwrap();
        let header = b"PROXY TCP4 203.0.113.70 10.0.0.1 40000 443\r\n";
        if split {
            // The header alone, then the handshake in later segments.
            tcp.write_all(&header[..10]).await.unwrap();
            tcp.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            tcp.write_all(&header[10..]).await.unwrap();
        } else {
            // The ClientHello will follow in the same burst as the header.
            tcp.write_all(header).await.unwrap();
        }
        let mut tls = tls_over(tcp, "pp.test", &[&cert]).await;
        tls.write_all(b"GET / HTTP/1.1\r\nHost: pp.test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut got))
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("\"x_real_ip\":\"203.0.113.70\""), "{text}");
        assert!(text.contains("\"x_forwarded_proto\":\"https\""), "{text}");
    }
    // A TLS handshake without the header is refused before any certificate is sent.
    let tcp = TcpStream::connect(p.http).await.unwrap();
    let mut store = rustls::RootCertStore::empty();
    store.add(cert.der.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    let name = ServerName::try_from("pp.test".to_string()).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let handshake = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp));
    assert!(handshake.await.unwrap().is_err());
}

/// The first connection a raw backend accepts, and what it read on it until `end`.
async fn first_connection(l: &tokio::net::TcpListener, end: &[u8]) -> Vec<u8> {
    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(10), l.accept())
        .await
        .expect("a connection reached the backend")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.ends_with(end) {
        match tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    got
}

#[tokio::test]
async fn tcp_listener_takes_a_proxy_header_and_passes_the_client_on() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = l.local_addr().unwrap();
    let p = start_proxy_with(
        "protocol = \"tcp\"\nproxy_protocol = true",
        &format!(
            "[upstream.app]\nproxy_protocol = \"v1\"\nbackends = [{{ addr = \"{backend_addr}\" }}]"
        ),
    )
    .await;
    // Garbage, a bad header and a truncated one: closed, and no backend connection.
    for bad in [
        &b"hello"[..],
        b"PROXY TCP4 203.0.113.7 127.0.0.1 1 2 3\r\nhello",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x12\x00\x0c",
        b"PROXY TCP6 ::1",
    ] {
        let mut c = TcpStream::connect(p.http).await.unwrap();
        c.write_all(bad).await.unwrap();
        let _ = c.shutdown().await;
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got))
            .await
            .expect("closed");
        assert!(got.is_empty(), "{bad:?}: {got:?}");
    }
    // A v2 header from an IPv6 client, its first bytes in the same segment.
    let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24".to_vec();
    h.extend_from_slice(
        &"2001:db8::70"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    h.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    h.extend_from_slice(&4242u16.to_be_bytes());
    h.extend_from_slice(&443u16.to_be_bytes());
    h.extend_from_slice(b"hello");
    let mut c = TcpStream::connect(p.http).await.unwrap();
    c.write_all(&h).await.unwrap();
    // The first connection the backend ever gets is this client's, named by its header
    // (an IPv6 client behind an IPv4 listener: both written as IPv6).
    let got = first_connection(&l, b"hello").await;
    let text = String::from_utf8_lossy(&got);
    let want = format!(
        "PROXY TCP6 2001:db8::70 ::ffff:127.0.0.1 4242 {}\r\nhello",
        p.http.port()
    );
    assert_eq!(text, want);
}
