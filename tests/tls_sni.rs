//! TLS by server name: SNI picks each server's own certificate by the routes' Host rules
//! (exact, wildcard, default server), each request is routed by its own Host, and a Host the
//! connection's certificate does not cover, on another server than the SNI one, gets 421
//! without a byte reaching a backend. Also from an nginx config, next to real nginx.

mod common;

use common::nginx::{nginx_main, run_nginx, run_tideway_nginx};
use common::*;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

struct Cert {
    der: CertificateDer<'static>,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn make_cert(dir: &std::path::Path, file: &str, names: &[&str]) -> Cert {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names).unwrap();
    let cert = dir.join(format!("{file}.pem"));
    let key = dir.join(format!("{file}.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    Cert {
        der: ck.cert.der().clone(),
        cert,
        key,
    }
}

/// Accepts any certificate: the tests look at which one was served themselves.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS connection to `addr` sending `sni` (None: none, as for an IP address); the
/// connection and the leaf certificate it was served.
async fn connect(addr: SocketAddr, sni: Option<&str>) -> (TlsStream<TcpStream>, Vec<u8>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    let name = match sni {
        Some(n) => ServerName::try_from(n.to_string()).unwrap(),
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    (tls, leaf)
}

/// One keep-alive request with `host` on `tls`: the status and the body.
async fn request(tls: &mut TlsStream<TcpStream>, host: &str) -> (u16, String) {
    let head = format!("GET /x HTTP/1.1\r\nHost: {host}\r\n\r\n");
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = tls.read(&mut buf).await.unwrap_or(0);
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if body.len() >= len || n == 0 {
                    let status = head[9..12].parse().unwrap();
                    return (status, body.to_string());
                }
            }
            assert!(n > 0, "connection closed before an answer: {text:?}");
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer in time")
}

/// Whether the peer closed `tls` (EOF or reset) within a bounded wait.
async fn closed(tls: &mut TlsStream<TcpStream>) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// A backend that answers every request head with its name and records every byte it got.
struct Recorder {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<u8>>>,
}

impl Recorder {
    async fn start(name: &'static str) -> Recorder {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let all = got.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let all = all.clone();
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = s.read(&mut buf).await {
                        all.lock().unwrap().extend_from_slice(&buf[..n]);
                        mine.extend_from_slice(&buf[..n]);
                        while let Some(end) = mine.windows(4).position(|w| w == b"\r\n\r\n") {
                            mine.drain(..end + 4);
                            let answer = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}",
                                name.len()
                            );
                            if s.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Recorder { addr, got }
    }

    /// The request heads received so far (their first lines).
    fn requests(&self) -> Vec<String> {
        let got = self.got.lock().unwrap();
        String::from_utf8_lossy(&got)
            .split("\r\n\r\n")
            .filter(|h| !h.is_empty())
            .map(|h| h.lines().next().unwrap_or("").to_string())
            .collect()
    }

    /// The Host of every request received so far.
    fn hosts(&self) -> Vec<String> {
        let got = self.got.lock().unwrap();
        String::from_utf8_lossy(&got)
            .lines()
            .filter_map(|l| {
                l.strip_prefix("host: ")
                    .or_else(|| l.strip_prefix("Host: "))
            })
            .map(str::to_string)
            .collect()
    }
}

fn route(host: &str, default: bool, cert: &Cert, upstream: &str) -> String {
    format!(
        "[[listener.route]]\nhost = [{host:?}]\ndefault = {default}\ntls = {{ cert = {:?}, key = {:?} }}\nupstream = {upstream:?}\n",
        cert.cert, cert.key
    )
}

async fn start(routes: &str, upstreams: &[(&str, &Recorder)]) -> Proxy {
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = format!(
        "[admin]\nlisten = \"{admin}\"\n[store]\ndata_dir = \"{}\"\n\n[[listener]]\nlisten = \"{http}\"\n{routes}\n",
        dir.path().join("data").display()
    );
    for (name, r) in upstreams {
        config.push_str(&format!(
            "[upstream.{name}]\nbackends = [{{ addr = \"{}\" }}]\n",
            r.addr
        ));
    }
    let config_path = dir.path().join("tideway.toml");
    std::fs::write(&config_path, config).unwrap();
    let child = spawn_tideway_with(&config_path, dir.path(), &[]);
    let p = Proxy {
        child,
        http,
        admin,
        dir,
        config_path,
    };
    wait_ready(&p).await;
    p
}

/// The JSON access line names the TLS server name the client asked for, beside its Host.
#[tokio::test]
async fn the_access_log_shows_the_sni_and_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let a = make_cert(dir.path(), "a", &["a.test", "*.a.test"]);
    let ra = Recorder::start("a").await;
    let route =
        route("a.test", true, &a, "a").replace("[\"a.test\"]", "[\"a.test\", \"*.a.test\"]");
    let p = start_written(&[], |http, admin, d| {
        format!(
            "[server]\naccess_log = true\naccess_log_format = \"json\"\n[admin]\nlisten = \"{admin}\"\n[store]\ndata_dir = \"{}\"\n\n[[listener]]\nlisten = \"{http}\"\n{route}\n[upstream.a]\nbackends = [{{ addr = \"{}\" }}]\n",
            d.join("data").display(),
            ra.addr
        )
    })
    .await;
    let (mut tls, _) = connect(p.http, Some("www.a.test")).await;
    assert_eq!(request(&mut tls, "a.test").await, (200, "a".into()));
    let log = p.dir.path().join("tideway.log");
    wait_until(Duration::from_secs(10), || async {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("\"sni\"")
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let line: serde_json::Value =
        serde_json::from_str(text.lines().find(|l| l.contains("\"sni\"")).unwrap()).unwrap();
    assert_eq!(line["sni"], "www.a.test", "{line}");
    assert_eq!(line["host"], "a.test");
    assert_eq!(line["status"], 200);
}

#[tokio::test]
async fn sni_picks_each_servers_certificate_and_a_foreign_host_gets_421() {
    let dir = tempfile::tempdir().unwrap();
    let a = make_cert(dir.path(), "a", &["a.test"]);
    let b = make_cert(dir.path(), "b", &["b.test"]);
    let w = make_cert(dir.path(), "w", &["*.w.test"]);
    let (ra, rb, rw, rapi) = (
        Recorder::start("a").await,
        Recorder::start("b").await,
        Recorder::start("w").await,
        Recorder::start("api").await,
    );
    let routes = [
        route("a.test", true, &a, "a"),
        route("b.test", false, &b, "b"),
        route("*.w.test", false, &w, "w"),
        // Its own server, with the wildcard certificate too.
        route("api.w.test", false, &w, "api"),
    ]
    .concat();
    let p = start(
        &routes,
        &[("a", &ra), ("b", &rb), ("w", &rw), ("api", &rapi)],
    )
    .await;

    // SNI picks the certificate by the server names: exact, wildcard, unknown and none go to
    // the default server's.
    for (sni, cert) in [
        (Some("a.test"), &a),
        (Some("b.test"), &b),
        (Some("x.w.test"), &w),
        (Some("deep.x.w.test"), &w),
        (Some("c.test"), &a),
        (None, &a),
    ] {
        let (_, leaf) = connect(p.http, sni).await;
        assert_eq!(
            leaf,
            cert.der.to_vec(),
            "SNI {sni:?} got the wrong certificate"
        );
    }

    // Each request by its own Host; spelling (case, trailing dot, port) does not matter.
    let (mut tls, _) = connect(p.http, Some("a.test")).await;
    assert_eq!(request(&mut tls, "a.test").await, (200, "a".into()));
    assert_eq!(request(&mut tls, "A.Test.:443").await, (200, "a".into()));
    // Then another server's Host on the same connection, which its certificate does not
    // cover: 421, the connection closes, and no backend saw a byte of it.
    let (status, body) = request(&mut tls, "b.test").await;
    assert_eq!(status, 421, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    assert!(closed(&mut tls).await, "a 421 closes the connection");
    assert!(rb.requests().is_empty(), "b got {:?}", rb.requests());
    assert_eq!(ra.requests().len(), 2, "a got {:?}", ra.requests());
    // The same Host on a connection made for it is served.
    let (mut tls, _) = connect(p.http, Some("b.test")).await;
    assert_eq!(request(&mut tls, "b.test").await, (200, "b".into()));
    assert_eq!(rb.hosts(), ["b.test"]);
    // A request without Host (HTTP/1.0) is for the SNI name's server.
    let (mut tls, _) = connect(p.http, Some("b.test")).await;
    tls.write_all(b"GET /old HTTP/1.0\r\n\r\n").await.unwrap();
    let mut got = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_string(&mut got)).await;
    assert!(
        got.starts_with("HTTP/1.1 200") && got.ends_with("\r\n\r\nb"),
        "{got:?}"
    );
    assert_eq!(
        rb.requests().last().map(String::as_str),
        Some("GET /old HTTP/1.1")
    );

    // Without SNI, the default server's certificate: its Host is served, another is not.
    let (mut tls, _) = connect(p.http, None).await;
    assert_eq!(request(&mut tls, "a.test").await, (200, "a".into()));
    assert_eq!(request(&mut tls, "b.test").await.0, 421);
    // An unknown SNI name gets the default server's certificate, which does not cover it;
    // its Host goes to the default server as it would without TLS.
    let (mut tls, _) = connect(p.http, Some("c.test")).await;
    assert_eq!(request(&mut tls, "c.test").await, (200, "a".into()));

    // A wildcard certificate: another name under it is the same server; a name that is
    // another server but covered by the certificate is routed to that server (a client may
    // reuse a connection for every name its certificate is valid for, RFC 9110 4.3.3).
    let (mut tls, _) = connect(p.http, Some("x.w.test")).await;
    assert_eq!(request(&mut tls, "y.w.test").await, (200, "w".into()));
    assert_eq!(request(&mut tls, "API.w.test.").await, (200, "api".into()));
    // One label more than the certificate's `*` stands for is not covered, though the
    // server's `*.w.test` matches it: 421 only when the server differs, so this is served.
    assert_eq!(request(&mut tls, "deep.y.w.test").await, (200, "w".into()));
    // And a name the wildcard certificate does not cover on another server: 421.
    assert_eq!(request(&mut tls, "a.test").await.0, 421);
    assert_eq!(
        ra.hosts(),
        ["a.test", "A.Test.:443", "a.test", "c.test"],
        "only the requests routed to a.test's server reached it"
    );
    assert_eq!(rapi.hosts(), ["API.w.test."]);

    // A reload reads the certificates the new config names: b.test's server gets another.
    let b2 = make_cert(dir.path(), "b2", &["b.test"]);
    let config = std::fs::read_to_string(&p.config_path).unwrap();
    let moved = config.replace(&format!("{:?}", b.cert), &format!("{:?}", b2.cert));
    let moved = moved.replace(&format!("{:?}", b.key), &format!("{:?}", b2.key));
    assert_ne!(moved, config);
    std::fs::write(&p.config_path, moved).unwrap();
    p.reload().await;
    let (mut tls, leaf) = connect(p.http, Some("b.test")).await;
    assert_eq!(
        leaf,
        b2.der.to_vec(),
        "after the reload, b.test's new certificate"
    );
    assert_eq!(request(&mut tls, "b.test").await, (200, "b".into()));
}

/// Servers sharing a listen, one with `ssl` and one without: nginx would make both TLS;
/// the import fails, naming the second server's file:line.
#[test]
fn an_nginx_listen_ssl_for_some_servers_only_fails_the_import() {
    let dir = tempfile::tempdir().unwrap();
    let a = make_cert(dir.path(), "a", &["a.test"]);
    let file = dir.path().join("nginx.conf");
    std::fs::write(
        &file,
        format!(
            "http {{\n  upstream u {{ server 127.0.0.1:9; }}\n  server {{\n    listen 127.0.0.1:8443 ssl;\n    server_name a.test;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    location / {{ proxy_pass http://u; }}\n  }}\n  server {{\n    listen 127.0.0.1:8443;\n    server_name b.test;\n    location / {{ proxy_pass http://u; }}\n  }}\n}}\n",
            a.cert.display(),
            a.key.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args(["check", "--nginx"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:10: 127.0.0.1:8443 has ssl for some of its servers",
            file.display()
        )),
        "{stderr}"
    );
}

/// The same nginx config under real nginx and `tideway run --nginx`: two `ssl` servers with
/// their own certificates. Both serve each server's certificate by SNI and the default
/// server's without one. A Host of the other server on a connection made for one: nginx
/// routes it (it answers 421 only when the Host's server verifies client certificates);
/// tideway answers 421, no byte reaching either backend.
#[tokio::test]
async fn from_nginx_ssl_certificate_per_server_next_to_real_nginx() {
    let dir = tempfile::tempdir().unwrap();
    let a = make_cert(dir.path(), "a", &["a.test"]);
    let b = make_cert(dir.path(), "b", &["b.test"]);
    let (ra, rb) = (Recorder::start("a").await, Recorder::start("b").await);
    let conf = |port: u16, d: &std::path::Path| {
        let server = |name: &str, default: &str, cert: &Cert, up: &str| {
            format!(
                "    server {{\n        listen 127.0.0.1:{port} ssl{default};\n        server_name {name};\n        ssl_certificate {};\n        ssl_certificate_key {};\n        location / {{ proxy_pass http://{up}; proxy_http_version 1.1; }}\n    }}\n",
                cert.cert.display(),
                cert.key.display()
            )
        };
        format!(
            "{}http {{\n    access_log off;\n    client_body_temp_path {d};\n    proxy_temp_path {d};\n    upstream a {{ server {}; }}\n    upstream b {{ server {}; }}\n{}{}}}\n",
            nginx_main(d),
            ra.addr,
            rb.addr,
            server("a.test", " default_server", &a, "a"),
            server("b.test", "", &b, "b"),
            d = d.display()
        )
    };
    let (nd, td) = (dir.path().join("nginx"), dir.path().join("tideway"));
    std::fs::create_dir_all(&nd).unwrap();
    std::fs::create_dir_all(&td).unwrap();
    let (np, tp) = (free_port(), free_port());
    std::fs::write(nd.join("nginx.conf"), conf(np, &nd)).unwrap();
    std::fs::write(td.join("nginx.conf"), conf(tp, &td)).unwrap();
    let _nginx = run_nginx(&nd.join("nginx.conf"), np, &nd).await;
    let _tideway = run_tideway_nginx(&td.join("nginx.conf"), tp, &td).await;
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));

    for port in [np, tp] {
        for (sni, cert) in [
            (Some("a.test"), &a),
            (Some("b.test"), &b),
            (Some("c.test"), &a),
            (None, &a),
        ] {
            let (_, leaf) = connect(at(port), sni).await;
            assert_eq!(leaf, cert.der.to_vec(), "port {port}: SNI {sni:?}");
        }
        let (mut tls, _) = connect(at(port), Some("b.test")).await;
        assert_eq!(request(&mut tls, "b.test").await, (200, "b".into()));
    }
    assert_eq!((ra.requests().len(), rb.requests().len()), (0, 2));

    // Host b.test on a connection made for a.test.
    let (mut tls, _) = connect(at(np), Some("a.test")).await;
    assert_eq!(
        request(&mut tls, "b.test").await,
        (200, "b".into()),
        "nginx"
    );
    let (mut tls, _) = connect(at(tp), Some("a.test")).await;
    assert_eq!(request(&mut tls, "b.test").await.0, 421, "tideway");
    assert_eq!(
        (ra.requests().len(), rb.requests().len()),
        (0, 3),
        "only nginx's request reached b"
    );
}

/// A session ticket resumes the session even after hundreds of other clients' handshakes:
/// tickets are stateless, as nginx's (rustls' default session cache holds 256 sessions, and
/// a busy listener evicted a client's before it came back).
#[tokio::test]
async fn a_session_ticket_resumes_after_many_other_handshakes() {
    let dir = tempfile::tempdir().unwrap();
    let a = make_cert(dir.path(), "a", &["a.test"]);
    let ra = Recorder::start("a").await;
    let p = start(&route("a.test", true, &a, "a"), &[("a", &ra)]).await;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = || {
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCert(provider.clone())))
                .with_no_client_auth(),
        )
    };
    // One request on each connection, so the client has read the tickets sent after the
    // handshake.
    async fn once(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> rustls::HandshakeKind {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("a.test").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        assert_eq!(request(&mut tls, "a.test").await, (200, "a".to_string()));
        tls.get_ref().1.handshake_kind().unwrap()
    }
    let returning = config();
    assert_eq!(
        once(p.http, returning.clone()).await,
        rustls::HandshakeKind::Full
    );
    // 300 other clients, each handed two tickets.
    for _ in 0..300 {
        once(p.http, config()).await;
    }
    assert_eq!(
        once(p.http, returning).await,
        rustls::HandshakeKind::Resumed
    );
}

/// The suite agreed on: AES-128-GCM whatever the client's order among AES-GCM suites (its TLS
/// 1.3 suite hashes with SHA-256, which x86 has instructions for); a client that puts
/// ChaCha20 first keeps it; a client offering only AES-256-GCM gets it. Each over a real
/// handshake, and each connection serves its request.
#[tokio::test]
async fn aes_128_is_chosen_unless_the_client_puts_chacha_first() {
    use rustls::CipherSuite as C;
    let dir = tempfile::tempdir().unwrap();
    let a = make_cert(dir.path(), "a", &["a.test"]);
    let ra = Recorder::start("a").await;
    let p = start(&route("a.test", true, &a, "a"), &[("a", &ra)]).await;
    let agreed = |order: &'static [C], tls12: bool| async move {
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites = order
            .iter()
            .map(|want| {
                *provider
                    .cipher_suites
                    .iter()
                    .find(|s| s.suite() == *want)
                    .unwrap()
            })
            .collect();
        let provider = Arc::new(provider);
        let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13]
        };
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth();
        let tcp = TcpStream::connect(p.http).await.unwrap();
        let name = ServerName::try_from("a.test").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        assert_eq!(request(&mut tls, "a.test").await, (200, "a".to_string()));
        tls.get_ref().1.negotiated_cipher_suite().unwrap().suite()
    };
    // rustls' and OpenSSL's own order: AES-256 first.
    let aes256_first: &[C] = &[
        C::TLS13_AES_256_GCM_SHA384,
        C::TLS13_AES_128_GCM_SHA256,
        C::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    assert_eq!(
        agreed(aes256_first, false).await,
        C::TLS13_AES_128_GCM_SHA256
    );
    let chacha_first: &[C] = &[
        C::TLS13_CHACHA20_POLY1305_SHA256,
        C::TLS13_AES_256_GCM_SHA384,
        C::TLS13_AES_128_GCM_SHA256,
    ];
    assert_eq!(
        agreed(chacha_first, false).await,
        C::TLS13_CHACHA20_POLY1305_SHA256
    );
    assert_eq!(
        agreed(&[C::TLS13_AES_256_GCM_SHA384], false).await,
        C::TLS13_AES_256_GCM_SHA384
    );
    // TLS 1.2 alike.
    let tls12: &[C] = &[
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ];
    assert_eq!(
        agreed(tls12, true).await,
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    );
    let tls12_chacha: &[C] = &[
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ];
    assert_eq!(
        agreed(tls12_chacha, true).await,
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
    );
}
