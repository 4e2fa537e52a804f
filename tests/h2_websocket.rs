//! WebSockets over HTTP/2 (RFC 8441, issue 25), end to end with the tideway binary, real
//! sockets and real clients: an `h2` crate client sends extended CONNECTs and speaks masked
//! WebSocket frames on the stream (tungstenite over it), headless Chromium opens its
//! WebSocket on the HTTP/2 connection its page came on. The backend is an HTTP/1.1 one that
//! records the handshakes it gets and the messages it reads: tideway's own key, checked
//! Accept, the echo, and a drain's 1001 to both sides.

#[path = "support/chromedriver.rs"]
mod chromedriver;
mod common;
#[path = "support/workerman.rs"]
mod workerman;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use workerman::{Mode, Options, Workerman};

/// The name the test certificate is for; clients resolve it to 127.0.0.1.
const NAME: &str = "a.test";

/// How a test backend answers a WebSocket handshake.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// 101 with the right Accept, then an echo of text and binary messages.
    Echo,
    /// 101 with an Accept for another key.
    WrongAccept,
    /// 200 with a page: no WebSocket here.
    NoSwitch,
}

/// The page Chromium loads: it opens a WebSocket to its own origin, sends one message, and
/// shows the echo in `#out` and the close code in `#closed`.
const PAGE: &str = r#"<!doctype html><title>ws over h2</title><p id=out>waiting</p><p id=closed></p>
<script>
const ws = new WebSocket('wss://' + location.host + '/ws');
ws.onopen = () => ws.send('hello over h2');
ws.onmessage = (e) => { document.getElementById('out').textContent = 'echo:' + e.data; };
ws.onerror = () => { document.getElementById('out').textContent = 'error'; };
ws.onclose = (e) => { document.getElementById('closed').textContent = String(e.code); };
</script>"#;

/// An HTTP/1.1 backend: the page at any path, a WebSocket (as `mode` says) for a handshake.
struct WsBackend {
    addr: SocketAddr,
    /// The heads of the handshakes it got.
    handshakes: Arc<Mutex<Vec<String>>>,
    /// Every WebSocket message it read (tungstenite answers close frames by itself).
    messages: Arc<Mutex<Vec<Message>>>,
}

impl WsBackend {
    async fn start(mode: Answer) -> WsBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes: Arc<Mutex<Vec<String>>> = Arc::default();
        let messages: Arc<Mutex<Vec<Message>>> = Arc::default();
        let (h, m) = (Arc::clone(&handshakes), Arc::clone(&messages));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve(tcp, mode, h.clone(), m.clone()));
            }
        });
        WsBackend {
            addr,
            handshakes,
            messages,
        }
    }

    fn handshakes(&self) -> Vec<String> {
        self.handshakes.lock().unwrap().clone()
    }

    fn got_going_away(&self) -> bool {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .any(|m| matches!(m, Message::Close(Some(f)) if f.code == CloseCode::Away))
    }
}

/// The value of field `name` in an HTTP/1 head (case-insensitive), if it has one.
fn field<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

async fn serve(
    mut tcp: TcpStream,
    mode: Answer,
    handshakes: Arc<Mutex<Vec<String>>>,
    messages: Arc<Mutex<Vec<Message>>>,
) {
    let mut buf = Vec::new();
    loop {
        let Some(head) = common::heads::next(&mut tcp, &mut buf).await else {
            return;
        };
        let key = field(&head, "sec-websocket-key").map(str::to_string);
        let Some(key) = key.filter(|_| field(&head, "upgrade") == Some("websocket")) else {
            let page = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\r\n{PAGE}",
                PAGE.len()
            );
            if tcp.write_all(page.as_bytes()).await.is_err() {
                return;
            }
            continue;
        };
        handshakes.lock().unwrap().push(head.clone());
        let derive = tokio_tungstenite::tungstenite::handshake::derive_accept_key;
        let accept = match mode {
            Answer::NoSwitch => {
                let body = "no WebSocket here";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(answer.as_bytes()).await;
                continue;
            }
            Answer::WrongAccept => derive(b"another key"),
            Answer::Echo => derive(key.as_bytes()),
        };
        let protocol = field(&head, "sec-websocket-protocol")
            .and_then(|p| p.split(',').next())
            .map(|p| format!("sec-websocket-protocol: {}\r\n", p.trim()))
            .unwrap_or_default();
        let switch = format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {accept}\r\n{protocol}x-backend: ws\r\n\r\n"
        );
        if tcp.write_all(switch.as_bytes()).await.is_err() {
            return;
        }
        let mut ws = WebSocketStream::from_raw_socket(tcp, Role::Server, None).await;
        while let Some(Ok(m)) = ws.next().await {
            messages.lock().unwrap().push(m.clone());
            if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                break;
            }
        }
        return;
    }
}

/// A CA of the test's own and a certificate it signed for [`NAME`], written into `dir`: the
/// leaf's PEM paths, and the CA for clients to trust.
fn certificates(
    dir: &std::path::Path,
) -> (String, String, rustls::pki_types::CertificateDer<'static>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![NAME.to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let (cert_path, key_path) = (dir.join("a.pem"), dir.join("a.key"));
    std::fs::write(&cert_path, leaf.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let show = |p: std::path::PathBuf| p.display().to_string();
    (show(cert_path), show(key_path), ca.der().clone())
}

/// tideway with one TLS listener with `http2 = true`, upstream `app` with a 1 s drain, no
/// close spread and `upstream_extra` (without backends, tests register theirs); the CA
/// clients trust.
async fn h2_proxy(upstream_extra: &str) -> (Proxy, rustls::pki_types::CertificateDer<'static>) {
    let mut ca = None;
    let p = start_written(&[], |http, admin, dir| {
        let (cert, key, root) = certificates(dir);
        ca = Some(root);
        format!(
            "[server]\nthreads = 2\nshutdown_grace = \"1s\"\naccess_log = true\n\n[admin]\nlisten = \"{admin}\"\n\n[store]\ndata_dir = \"{}\"\n\n[[listener]]\nlisten = \"{http}\"\nupstream = \"app\"\nhttp2 = true\ntls = {{ cert = {cert:?}, key = {key:?} }}\n\n[upstream.app]\ndrain_timeout = \"1s\"\nclose_spread = \"0s\"\n{upstream_extra}\n",
            dir.join("data").display(),
        )
    })
    .await;
    (p, ca.unwrap())
}

/// An HTTP/2 connection to the proxy (ALPN `h2`, the test CA trusted), once its SETTINGS
/// allow extended CONNECT.
async fn h2_client(
    p: &Proxy,
    ca: &rustls::pki_types::CertificateDer<'static>,
) -> ::h2::client::SendRequest<Bytes> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(p.http).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(NAME).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) = ::h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    common::h2::extended_connect_ready(send).await
}

type H2Ws = WebSocketStream<tokio::io::DuplexStream>;

/// What an extended CONNECT got: the stream's head, and a WebSocket on it when the answer
/// was 200 (else the body).
struct Opened {
    head: http::response::Parts,
    ws: Option<H2Ws>,
    body: String,
}

/// Send an extended CONNECT for `path` with `:protocol` `protocol` and the `fields`; on a
/// 200, speak WebSocket (as a client: masked frames) on the stream.
async fn connect(
    send: &mut ::h2::client::SendRequest<Bytes>,
    path: &str,
    protocol: &'static str,
    fields: &[(&str, &str)],
) -> Opened {
    let mut req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("https://{NAME}{path}"))
        .extension(::h2::ext::Protocol::from_static(protocol));
    for (n, v) in fields {
        req = req.header(*n, *v);
    }
    let (answer, mut up) = send.send_request(req.body(()).unwrap(), false).unwrap();
    let (head, mut down) = answer.await.unwrap().into_parts();
    if head.status != 200 {
        let mut body = Vec::new();
        while let Some(Ok(d)) = down.data().await {
            let _ = down.flow_control().release_capacity(d.len());
            body.extend_from_slice(&d);
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        return Opened {
            head,
            ws: None,
            body,
        };
    }
    // The stream's DATA both ways through an in-memory pipe, for tungstenite.
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (mut from_pipe, mut to_pipe) = tokio::io::split(theirs);
    tokio::spawn(async move {
        while let Some(Ok(d)) = down.data().await {
            let _ = down.flow_control().release_capacity(d.len());
            if to_pipe.write_all(&d).await.is_err() {
                return;
            }
        }
        let _ = to_pipe.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from_pipe.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = up.send_data(Bytes::new(), true);
                    return;
                }
                Ok(n) => {
                    if up
                        .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    let ws = WebSocketStream::from_raw_socket(ours, Role::Client, None).await;
    Opened {
        head,
        ws: Some(ws),
        body: String::new(),
    }
}

/// A sample of `/metrics`: `series` with its full label set, 0 when absent.
async fn series(p: &Proxy, series: &str) -> f64 {
    metric(p, &format!("{series} ")).await
}

fn opened(protocol: &str) -> String {
    format!("tideway_websocket_opened_total{{protocol=\"{protocol}\",upstream=\"app\"}}")
}

/// Drain backend `id` of `app` (1 s drain, no spread: its WebSockets get 1001 after it).
async fn drain(p: &Proxy, id: &str) {
    let r = p
        .admin_req(
            reqwest::Method::POST,
            &format!("/v1/upstreams/app/backends/{id}/drain"),
            ADMIN_TOKEN,
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

/// Must show 1, the `h2` crate half: an extended CONNECT becomes the backend's HTTP/1.1
/// handshake with tideway's own key, the stream gets 200, messages echo both ways, and a
/// drain closes both sides with 1001.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extended_connect_echoes_and_a_drain_delivers_1001() {
    let backend = WsBackend::start(Answer::Echo).await;
    let (p, ca) = h2_proxy("").await;
    p.register("b1", &backend.addr.to_string()).await;
    let mut send = h2_client(&p, &ca).await;
    let fields = [
        ("sec-websocket-version", "13"),
        ("sec-websocket-protocol", "chat, superchat"),
        ("origin", "https://a.test"),
    ];
    let opened_ws = connect(&mut send, "/ws?room=1", "websocket", &fields).await;
    assert_eq!(opened_ws.head.status, 200, "{}", opened_ws.body);
    let h = &opened_ws.head.headers;
    assert_eq!(h["sec-websocket-protocol"], "chat");
    assert_eq!(h["x-backend"], "ws");
    for hop in [
        "sec-websocket-accept",
        "upgrade",
        "connection",
        "content-length",
    ] {
        assert!(h.get(hop).is_none(), "{hop} in the 200: {h:?}");
    }
    let mut ws = opened_ws.ws.unwrap();
    ws.send(Message::text("hello over h2")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("hello over h2")
    );
    ws.send(Message::binary(vec![7u8; 70_000])).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![7u8; 70_000])
    );

    // The backend got an HTTP/1.1 handshake with a key of tideway's making.
    let handshakes = backend.handshakes();
    assert_eq!(handshakes.len(), 1);
    let head = &handshakes[0];
    assert!(head.starts_with("GET /ws?room=1 HTTP/1.1\r\n"), "{head}");
    let key = field(head, "sec-websocket-key").unwrap();
    assert_eq!(key.len(), 24, "{head}");
    for (name, value) in [
        ("host", NAME),
        ("upgrade", "websocket"),
        ("connection", "upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-protocol", "chat, superchat"),
        ("origin", "https://a.test"),
        ("x-forwarded-proto", "https"),
    ] {
        assert_eq!(field(head, name), Some(value), "{name} in {head}");
    }
    assert_eq!(series(&p, &opened("h2")).await, 1.0);
    assert_eq!(series(&p, &opened("http/1.1")).await, 0.0);

    // Two WebSockets with two handshakes: each gets its own key.
    let second = connect(&mut send, "/ws", "websocket", &fields[..1]).await;
    assert_eq!(second.head.status, 200);
    let handshakes = backend.handshakes();
    assert_ne!(field(&handshakes[1], "sec-websocket-key"), Some(key));

    // A drain: after its 1 s, both the client and the backend get 1001.
    drain(&p, "b1").await;
    expect_going_away(&mut ws, Duration::from_secs(10), "the drain, over h2").await;
    wait_until(Duration::from_secs(10), || async {
        backend.got_going_away()
    })
    .await;
}

/// A backend that answers tideway's key with another Accept is broken: the stream gets 502
/// and the backend is ejected (`max_fails = 1`). Unless the client wrote a second key into
/// the head (here in the target): Workerman (the emulator) answers the first key it finds,
/// so its wrong Accept is the client's doing and ejects nobody.
#[tokio::test]
async fn a_wrong_accept_ejects_the_backend_unless_the_client_wrote_a_second_key() {
    let w = Workerman::start(Options {
        mode: Mode::Lenient42,
        accept_ws: true,
        deal_handshake: true,
        max_package: None,
    })
    .await;
    let bad = WsBackend::start(Answer::WrongAccept).await;
    let backends = format!(
        "balance = \"round_robin\"\nmax_fails = 1\nfail_timeout = \"60s\"\nbackends = [{{ addr = \"{}\", id = \"w\" }}, {{ addr = \"{}\", id = \"bad\" }}]",
        w.addr(),
        bad.addr
    );
    let (p, ca) = h2_proxy(&backends).await;
    let mut send = h2_client(&p, &ca).await;
    let version = [("sec-websocket-version", "13")];
    for _ in 0..4 {
        let o = connect(
            &mut send,
            "/chat?Sec-WebSocket-Key:abc",
            "websocket",
            &version,
        )
        .await;
        assert_eq!(o.head.status, 502, "{}", o.body);
        assert!(o.body.contains("Sec-WebSocket-Accept"), "{}", o.body);
    }
    assert_eq!((w.upgrades().len(), bad.handshakes().len()), (2, 2));
    let all_healthy = [("bad".to_string(), true), ("w".to_string(), true)].into();
    assert_eq!(p.health().await, all_healthy, "a misread ejects nobody");

    // Without a second key, the wrong Accept is the backend's: it is ejected, and from then
    // on every WebSocket opens on the other one.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            connect(&mut send, "/chat", "websocket", &version)
                .await
                .head
                .status
                .as_u16(),
        );
    }
    wait_until(Duration::from_secs(5), || async {
        p.health().await.get("bad") == Some(&false)
    })
    .await;
    assert_eq!(p.health().await.get("w"), Some(&true));
    assert!(
        statuses.iter().all(|s| [200, 502].contains(s)),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().filter(|&&s| s == 502).count() <= 1,
        "{statuses:?}"
    );
    let o = connect(&mut send, "/chat", "websocket", &version).await;
    assert_eq!(o.head.status, 200, "{}", o.body);
    let switched = statuses.iter().filter(|&&s| s == 200).count() + 1;
    assert_eq!(series(&p, &opened("h2")).await, switched as f64);
}

/// No 2xx ever answers an extended CONNECT that did not switch (a 2xx would open the tunnel),
/// and what is not a WebSocket handshake is refused before any backend sees it.
#[tokio::test]
async fn no_2xx_without_a_switch_and_malformed_connects_refused() {
    let backend = WsBackend::start(Answer::NoSwitch).await;
    let (p, ca) = h2_proxy("").await;
    p.register("b1", &backend.addr.to_string()).await;
    let mut send = h2_client(&p, &ca).await;
    let version = [("sec-websocket-version", "13")];
    let o = connect(&mut send, "/ws", "websocket", &version).await;
    assert_eq!(o.head.status, 502, "{}", o.body);
    assert_eq!(backend.handshakes().len(), 1);
    // Another protocol: 501; a WebSocket without version 13: 400. Neither reaches the backend.
    let o = connect(&mut send, "/ws", "connect-udp", &version).await;
    assert_eq!(o.head.status, 501, "{}", o.body);
    let o = connect(
        &mut send,
        "/ws",
        "websocket",
        &[("sec-websocket-version", "8")],
    )
    .await;
    assert_eq!(o.head.status, 400, "{}", o.body);
    assert_eq!(backend.handshakes().len(), 1);
    // The connection still serves.
    let o = connect(&mut send, "/ws", "websocket", &version).await;
    assert_eq!(o.head.status, 502);
}

/// Must show 1, Chromium's half: headless Chromium loads a page over HTTP/2 and its
/// JavaScript's `wss://` WebSocket goes on the same connection as an RFC 8441 stream (the
/// `h2` series of `tideway_websocket_opened_total`, none over HTTP/1.1); the echo works, and
/// a drain delivers 1001 to the page and the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_opens_its_websocket_as_an_rfc_8441_stream() {
    let backend = WsBackend::start(Answer::Echo).await;
    let (p, _ca) = h2_proxy("").await;
    p.register("b1", &backend.addr.to_string()).await;
    let map = format!("--host-resolver-rules=MAP {NAME} 127.0.0.1");
    let (_driver, wd) =
        chromedriver::Chromedriver::start_with(&["--ignore-certificate-errors", &map]).await;
    wd.goto(&format!("https://{NAME}:{}/", p.http.port())).await;
    wd.wait_text("#out", "echo:hello over h2").await;
    assert_eq!(series(&p, &opened("h2")).await, 1.0);
    assert_eq!(series(&p, &opened("http/1.1")).await, 0.0);
    let handshakes = backend.handshakes();
    assert_eq!(handshakes.len(), 1);
    assert_eq!(
        field(&handshakes[0], "sec-websocket-key").map(str::len),
        Some(24)
    );
    drain(&p, "b1").await;
    wd.wait_text("#closed", "1001").await;
    wait_until(Duration::from_secs(10), || async {
        backend.got_going_away()
    })
    .await;
    // The access log's line for the WebSocket, written when it ended: over HTTP/2.
    let log = p.dir.path().join("tideway.log");
    wait_until(Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("\"GET /ws HTTP/2.0\" 200")
    })
    .await;
}
