//! HTTP/2 next to nginx (issue 25, must-show 3): the same requests, over h2, to real nginx
//! (`listen ... ssl http2`, `proxy_pass` to a raw recording backend) and to tideway (`run
//! --nginx` on the same config: the nginx reader gives its TLS listener `http2 = true`) reach
//! the backend as the same HTTP/1.1 request: request line, framing (Content-Length,
//! Transfer-Encoding, the body) and forwarding headers (Host, X-Forwarded-For, X-Real-IP,
//! X-Forwarded-Proto, as `proxy_set_header` gives them to both). Every field the backend gets
//! is compared; the differences that remain are asserted exactly and explained in
//! [`explained`] and in docs/nginx.md ("HTTP/2 next to nginx").
//!
//! The client is the `h2` crate over rustls (ALPN `h2` checked); a field name with uppercase
//! letters, which the crate cannot send, goes through Python's `h2` package (the system
//! `/usr/bin/python3`, which scripts/test.sh provides).

mod common;
#[path = "support/recorder.rs"]
mod recorder;

use common::free_port;
use common::nginx::{nginx_main, run_tideway_nginx, start_nginx_checked, wait_port};
use recorder::read_more;
use rustls::pki_types::ServerName;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Longest one exchange may take before the test fails.
const EXCHANGE: Duration = Duration::from_secs(10);

/// The name the certificate covers and every request names.
const NAME: &str = "a.test";

/// One request as the backend read it: the head as sent, and the body (de-chunked).
#[derive(Clone, Debug)]
struct Seen {
    head: String,
    body: Vec<u8>,
}

impl Seen {
    fn line(&self) -> &str {
        self.head.lines().next().unwrap_or_default()
    }

    /// Every field, name lowercased, in order.
    fn fields(&self) -> Vec<(String, String)> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
            .collect()
    }

    fn field(&self, name: &str) -> Vec<String> {
        self.fields()
            .into_iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .collect()
    }
}

/// A raw HTTP/1.1 backend recording what it reads, framed by Content-Length or chunked
/// (nginx may send either), answering `200` with `ok` (no body to HEAD).
struct Backend {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    async fn start() -> Backend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((io, _)) = listener.accept().await {
                tokio::spawn(record(io, log.clone()));
            }
        });
        Backend { addr, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Read `buf` up to and including the next CRLF (more from `io` as needed).
async fn crlf_line(io: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..i]).into_owned();
            buf.drain(..i + 2);
            return Some(line);
        }
        if !read_more(io, buf).await {
            return None;
        }
    }
}

async fn record(mut io: TcpStream, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if !read_more(&mut io, &mut buf).await {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let mut got = Seen {
            head,
            body: Vec::new(),
        };
        let chunked = got
            .field("transfer-encoding")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("chunked"));
        if chunked {
            loop {
                let Some(size) = crlf_line(&mut io, &mut buf).await else {
                    return;
                };
                let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16)
                    .expect("a chunk size");
                if size == 0 {
                    // Trailers (none expected) up to the blank line.
                    while crlf_line(&mut io, &mut buf)
                        .await
                        .is_some_and(|l| !l.is_empty())
                    {}
                    break;
                }
                while buf.len() < size + 2 {
                    if !read_more(&mut io, &mut buf).await {
                        return;
                    }
                }
                got.body.extend(buf.drain(..size));
                buf.drain(..2);
            }
        } else {
            let len: usize = got
                .field("content-length")
                .first()
                .map_or(0, |v| v.parse().unwrap());
            while buf.len() < len {
                if !read_more(&mut io, &mut buf).await {
                    return;
                }
            }
            got.body = buf.drain(..len).collect();
        }
        let head_only = got.line().starts_with("HEAD ");
        seen.lock().unwrap().push(got);
        let answer: &[u8] = if head_only {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        };
        if io.write_all(answer).await.is_err() {
            return;
        }
    }
}

/// One request of the differential.
struct Case {
    method: &'static str,
    path: &'static str,
    /// `:authority` with a port (`a.test:8443`, the same for both proxies) or without.
    port: bool,
    headers: &'static [(&'static str, &'static str)],
    /// DATA frames, the last with END_STREAM; none: END_STREAM on the HEADERS.
    body: &'static [&'static [u8]],
    /// The status nginx answers and the one tideway answers: a 200 is forwarded, anything
    /// else is not.
    answers: [u16; 2],
}

/// A GET with `headers` that both forward, its `:authority` with a port when `port`.
const fn get(
    path: &'static str,
    port: bool,
    headers: &'static [(&'static str, &'static str)],
) -> Case {
    Case {
        method: "GET",
        path,
        port,
        headers,
        body: &[],
        answers: [200, 200],
    }
}

/// `location /` sends `Host $host`, `location /raw/` sends `Host $http_host`.
const CASES: &[Case] = &[
    get("/search?q=a%20b&page=2", false, &[("accept", "*/*")]),
    Case {
        method: "POST",
        path: "/upload",
        headers: &[("content-type", "text/plain"), ("content-length", "11")],
        body: &[b"hello world"],
        ..get("", false, &[])
    },
    // No content-length: the body ends with END_STREAM, in two DATA frames.
    Case {
        method: "POST",
        path: "/stream",
        headers: &[("content-type", "text/plain")],
        body: &[b"part one, ", b"part two"],
        ..get("", false, &[])
    },
    Case {
        method: "HEAD",
        ..get("/head", false, &[])
    },
    // RFC 9113 8.2.3: cookie split into fields, joined with "; " for HTTP/1.1.
    get(
        "/cookies",
        false,
        &[("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")],
    ),
    get("/te", false, &[("te", "trailers")]),
    get("/xff", false, &[("x-forwarded-for", "203.0.113.7")]),
    get("/port", true, &[]),
    get("/raw/port", true, &[]),
    // A `host` field as well as `:authority`: nginx 1.22 takes `:authority` as a Host line and
    // refuses the second as a duplicate (400), even when they agree; RFC 9113 8.3.1 allows one
    // that agrees, so tideway forwards it (one Host), and refuses one that differs (400).
    Case {
        answers: [400, 200],
        ..get("/raw/host-same", false, &[("host", "a.test")])
    },
    Case {
        answers: [400, 400],
        ..get("/raw/host-other", false, &[("host", "b.test")])
    },
    get("/raw/", false, &[]),
];

/// The nginx config both run (the ports and the backend their own): `listen ... ssl http2`,
/// HTTP/1.1 to the backend (tideway's only way), the forwarding headers set explicitly.
fn config(dir: &Path, port: u16, backend: std::net::SocketAddr, cert: &Path, key: &Path) -> String {
    let location = |path: &str, host: &str| {
        format!(
            "        location {path} {{\n            proxy_pass http://app;\n            proxy_http_version 1.1;\n            proxy_set_header Host {host};\n            proxy_set_header X-Real-IP $remote_addr;\n            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n            proxy_set_header X-Forwarded-Proto $scheme;\n        }}\n"
        )
    };
    format!(
        "{main}http {{\n    access_log off;\n    client_body_temp_path {d};\n    proxy_temp_path {d};\n    upstream app {{ server {backend}; }}\n    server {{\n        listen 127.0.0.1:{port} ssl http2;\n        server_name {NAME};\n        ssl_certificate {cert};\n        ssl_certificate_key {key};\n{root}{raw}    }}\n}}\n",
        main = nginx_main(dir),
        d = dir.display(),
        cert = cert.display(),
        key = key.display(),
        root = location("/", "$host"),
        raw = location("/raw/", "$http_host"),
    )
}

/// A TLS connection to `port` offering only `h2` by ALPN, trusting `ca`.
async fn tls(
    port: u16,
    ca: &rustls::pki_types::CertificateDer<'static>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let s = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(NAME).unwrap(), tcp)
        .await
        .expect("TLS handshake");
    assert_eq!(
        s.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "port {port} did not choose h2"
    );
    s
}

/// Send `case` on a fresh h2 connection; the answer's status and body.
async fn send(
    port: u16,
    ca: &rustls::pki_types::CertificateDer<'static>,
    case: &Case,
) -> (u16, Vec<u8>) {
    let io = tls(port, ca).await;
    let (mut client, conn) = h2::client::handshake(io).await.unwrap();
    let conn = tokio::spawn(conn);
    let authority = if case.port {
        format!("{NAME}:8443")
    } else {
        NAME.to_string()
    };
    let mut req = http::Request::builder()
        .method(case.method)
        .uri(format!("https://{authority}{}", case.path));
    for (n, v) in case.headers {
        req = req.header(*n, *v);
    }
    let req = req.body(()).unwrap();
    let exchange = async {
        let (answer, mut body) = client.send_request(req, case.body.is_empty()).unwrap();
        for (i, part) in case.body.iter().enumerate() {
            body.send_data(bytes::Bytes::from_static(part), i + 1 == case.body.len())
                .unwrap();
        }
        let answer = answer.await.unwrap();
        let status = answer.status().as_u16();
        let mut stream = answer.into_body();
        let mut got = Vec::new();
        while let Some(data) = stream.data().await {
            let data = data.unwrap();
            let _ = stream.flow_control().release_capacity(data.len());
            got.extend_from_slice(&data);
        }
        (status, got)
    };
    let out = tokio::time::timeout(EXCHANGE, exchange)
        .await
        .unwrap_or_else(|_| panic!("{} {} on port {port}: no answer", case.method, case.path));
    conn.abort();
    out
}

/// A request with a field name in uppercase (`X-Upper`), which RFC 9113 8.2.1 makes
/// malformed, sent by Python's h2 with validation off; what the proxy did: `status N`,
/// `reset CODE` (RST_STREAM) or `goaway CODE`.
fn send_uppercase(port: u16) -> String {
    const SCRIPT: &str = r#"
import socket, ssl, sys
import h2.config, h2.connection, h2.events
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["h2"])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1]))), server_hostname="a.test")
assert s.selected_alpn_protocol() == "h2"
s.settimeout(10)
c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False, validate_inbound_headers=False))
c.initiate_connection()
c.send_headers(1, [(":method", "GET"), (":scheme", "https"), (":authority", "a.test"), (":path", "/upper"), ("X-Upper", "1")], end_stream=True)
s.sendall(c.data_to_send())
out = None
while out is None:
    data = s.recv(65535)
    if not data:
        out = "closed"
        break
    for e in c.receive_data(data):
        if isinstance(e, h2.events.ResponseReceived):
            out = "status " + dict(e.headers)[b":status"].decode()
        elif isinstance(e, h2.events.StreamReset):
            out = out or "reset %d" % e.error_code
        elif isinstance(e, h2.events.ConnectionTerminated):
            out = out or "goaway %d" % e.error_code
    s.sendall(c.data_to_send())
print(out)
"#;
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT, &port.to_string()])
        .output()
        .expect("python3 runs (scripts/test.sh installs python3-h2)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The fields of `seen` without the ones whose difference is explained, for comparison:
/// names lowercased, sorted by name (the order of fields of different names means nothing in
/// HTTP/1.1; the order of one name's fields is kept).
fn compared(seen: &Seen) -> Vec<(String, String)> {
    let mut fields: Vec<_> = seen
        .fields()
        .into_iter()
        .filter(|(n, _)| !explained(n))
        .collect();
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    fields
}

/// Fields that differ between nginx and tideway by design, each asserted on its own in the
/// test: `connection` (nginx sends `close`, having no upstream `keepalive`; tideway sends
/// none, HTTP/1.1's default being a persistent connection, and keeps it in its pool).
fn explained(name: &str) -> bool {
    name == "connection"
}

#[tokio::test]
async fn h2_requests_reach_the_backend_as_nginx_sends_them() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec![NAME.to_string()]).unwrap();
    let (cert, key) = (dir.path().join("a.pem"), dir.path().join("a.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let ca = ck.cert.der().clone();

    let (nb, tb) = (Backend::start().await, Backend::start().await);
    let (np, tp) = (free_port(), free_port());
    let (ndir, tdir) = (dir.path().join("nginx"), dir.path().join("tideway"));
    std::fs::create_dir_all(&ndir).unwrap();
    std::fs::create_dir_all(&tdir).unwrap();
    let nfile = ndir.join("nginx.conf");
    std::fs::write(&nfile, config(&ndir, np, nb.addr, &cert, &key)).unwrap();
    let tfile = tdir.join("nginx.conf");
    std::fs::write(&tfile, config(&tdir, tp, tb.addr, &cert, &key)).unwrap();
    let _nginx = start_nginx_checked(&ndir, &nfile);
    wait_port(np).await;
    let _tideway = run_tideway_nginx(&tfile, tp, &tdir).await;

    for case in CASES {
        let what = format!("{} {}", case.method, case.path);
        let before = (nb.seen().len(), tb.seen().len());
        let n_answer = send(np, &ca, case).await;
        let t_answer = send(tp, &ca, case).await;
        let (n, t) = (nb.seen(), tb.seen());
        let forwarded = (n.len() - before.0, t.len() - before.1);
        println!(
            "{what}: nginx {} {:?}, tideway {} {:?}",
            n_answer.0,
            n.get(before.0)
                .map(|s| (&s.head, String::from_utf8_lossy(&s.body))),
            t_answer.0,
            t.get(before.1)
                .map(|s| (&s.head, String::from_utf8_lossy(&s.body)))
        );
        assert_eq!([n_answer.0, t_answer.0], case.answers, "{what}: statuses");
        let ok = |status| usize::from(status == 200);
        assert_eq!(
            forwarded,
            (ok(n_answer.0), ok(t_answer.0)),
            "{what}: forwarded"
        );
        if case.answers != [200, 200] {
            continue;
        }
        assert_eq!(t_answer.1, n_answer.1, "{what}: the client's body");
        let (n, t) = (&n[before.0], &t[before.1]);
        assert_eq!(t.line(), n.line(), "{what}: request line");
        assert_eq!(t.body, n.body, "{what}: body");
        assert_eq!(compared(t), compared(n), "{what}: fields");
        assert_eq!(n.field("connection"), ["close"], "{what}");
        assert!(t.field("connection").is_empty(), "{what}");
    }
    // The Host tideway forwards with a `host` field that agrees with `:authority`.
    let host_same = tb
        .seen()
        .into_iter()
        .find(|s| s.line().contains("/host-same"));
    assert_eq!(host_same.expect("forwarded").field("host"), ["a.test"]);

    // A field name in uppercase is malformed (RFC 9113 8.2.1): neither passes it on. nginx
    // resets the stream (RST_STREAM, PROTOCOL_ERROR = 1) and keeps the connection; tideway's
    // codec (the h2 crate) refuses the name while decoding the header block and ends the
    // whole connection: GOAWAY with PROTOCOL_ERROR.
    let n_upper = send_uppercase(np);
    let t_upper = send_uppercase(tp);
    println!("uppercase field name: nginx {n_upper}, tideway {t_upper}");
    assert_eq!(
        [n_upper.as_str(), t_upper.as_str()],
        ["reset 1", "goaway 1"]
    );
    let forwarded = |a: usize| CASES.iter().filter(|c| c.answers[a] == 200).count();
    assert_eq!(
        (nb.seen().len(), tb.seen().len()),
        (forwarded(0), forwarded(1))
    );
}
