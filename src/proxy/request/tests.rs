use super::*;

const IP: &str = "10.0.0.9";

fn classified(raw: &str, hash: Option<&HashKey>) -> (Result<Request, Refusal>, String) {
    let mut out = Vec::new();
    let ip: IpAddr = IP.parse().unwrap();
    let conn = Some(SocketAddr::new(ip, 40000));
    let steer = |_: Option<&[u8]>, _: &str| Steer {
        hash_key: hash,
        default_host: "app",
        target: None,
        websocket: true,
        ..Steer::default()
    };
    let r = classify(raw.as_bytes(), (conn, None), "http", steer, &mut out);
    (r, String::from_utf8(out).unwrap())
}

/// The request and its whole backend head (framing written for `len` body bytes).
fn forwarded(raw: &str) -> (Request, String) {
    match classified(raw, None) {
        (Ok(r), mut out) => {
            let len = match r.body {
                RequestBody::Length(n) => n,
                _ => 0,
            };
            let mut bytes = std::mem::take(&mut out).into_bytes();
            finish_head(&mut bytes, &r, len);
            (r, String::from_utf8(bytes).unwrap())
        }
        (Err(e), _) => panic!("{raw:?} -> {e:?}"),
    }
}

fn refused(raw: &str) -> u16 {
    match classified(raw, None).0 {
        Err(r) => r.status,
        Ok(r) => panic!("{raw:?} was accepted: {r:?}"),
    }
}

#[test]
fn rebuilds_an_ordinary_request() {
    let (req, out) = forwarded(
        "POST /a?uid=7 HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\nX-Forwarded-For: 1.1.1.1\r\nX-Real-IP: 6.6.6.6\r\nContent-Length: 0003\r\nX-Other: o\r\n\r\n",
    );
    assert_eq!(
        out,
        "POST /a?uid=7 HTTP/1.1\r\nhost: x\r\nX-Other: o\r\nx-forwarded-for: 1.1.1.1, 10.0.0.9\r\nx-real-ip: 10.0.0.9\r\nx-forwarded-proto: http\r\ncontent-length: 3\r\n\r\n"
    );
    assert_eq!(req.body, RequestBody::Length(3));
    assert!(!req.close && !req.head_method && !req.idempotent && !req.websocket);
    let (req, out) = forwarded("HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(req.close && req.head_method && req.idempotent);
    assert!(!out.contains("content-length"), "{out}");
    // A bodiless POST still says so, for backends that read a length on POST.
    let (_, out) = forwarded("POST / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(out.ends_with("content-length: 0\r\n\r\n"), "{out}");
}

#[test]
fn computes_the_sticky_key_only_when_asked() {
    let raw = "GET /chat?uid=42 HTTP/1.1\r\nHost: x\r\n\r\n";
    let key = HashKey::Query("uid".into());
    assert_eq!(
        classified(raw, Some(&key)).0.unwrap().key.hash,
        crate::balance::key_hash(b"42")
    );
    let key = HashKey::Header("x-user".into());
    let raw = "GET / HTTP/1.1\r\nHost: x\r\nX-User: bob\r\n\r\n";
    assert_eq!(
        classified(raw, Some(&key)).0.unwrap().key.hash,
        crate::balance::key_hash(b"bob")
    );
    assert_eq!(classified(raw, None).0.unwrap().key.hash, 0);
}

#[test]
fn refuses_ambiguous_framing() {
    for (raw, status) in [
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5 5\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1234567890123456789\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000005\r\n\r\n", 413),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 501),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        // obs-fold and a space before the colon are not header lines httparse takes.
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n", 400),
    ] {
        assert_eq!(refused(raw), status, "{raw:?}");
    }
    let (req, out) = forwarded("POST / HTTP/1.1\r\nHost: x\r\nTRANSFER-ENCODING: CHUNKED\r\n\r\n");
    assert_eq!(req.body, RequestBody::Chunked);
    assert!(
        !out.to_ascii_lowercase().contains("transfer-encoding"),
        "{out}"
    );
}

#[test]
fn refuses_bodies_where_lenient_backends_ignore_them() {
    for m in ["GET", "HEAD", "OPTIONS", "DELETE"] {
        let raw = format!("{m} /a HTTP/1.1\r\nHost: x\r\nContent-Length: 53\r\n\r\n");
        assert_eq!(refused(&raw), 400, "{m}");
        let raw = format!("{m} /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(refused(&raw), 400, "{m}");
        let raw = format!("{m} /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        let (req, out) = forwarded(&raw);
        assert_eq!(req.body, RequestBody::None);
        assert!(!out.contains("content-length"), "{out}");
    }
}

#[test]
fn host_and_target_rules() {
    assert_eq!(refused("GET / HTTP/1.1\r\n\r\n"), 400);
    assert_eq!(refused("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
    assert_eq!(refused("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), 400);
    assert_eq!(refused("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), 400);
    assert_eq!(
        refused("GET http://evil/x HTTP/1.1\r\nHost: good\r\n\r\n"),
        400
    );
    assert_eq!(refused("GET x HTTP/1.1\r\nHost: good\r\n\r\n"), 400);
    let (_, out) = forwarded("GET http://Good:80/x?q=1 HTTP/1.1\r\nHost: good:80\r\n\r\n");
    assert!(
        out.starts_with("GET /x?q=1 HTTP/1.1\r\nhost: Good:80\r\n"),
        "{out}"
    );
    let (_, out) = forwarded("GET http://good HTTP/1.1\r\nHost: good\r\n\r\n");
    assert!(out.starts_with("GET / HTTP/1.1\r\n"), "{out}");
    // HTTP/1.0 needs no Host.
    let (req, out) = forwarded("GET / HTTP/1.0\r\n\r\n");
    assert!(req.http10 && req.close);
    // Sent on as HTTP/1.1, so with a Host: the upstream's name, as nginx's $proxy_host.
    assert!(
        out.starts_with("GET / HTTP/1.1\r\nhost: app\r\nx-forwarded-for"),
        "{out}"
    );
    let (_, out) = forwarded("GET http://a?q HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(out.starts_with("GET /?q HTTP/1.1\r\nhost: a\r\n"), "{out}");
    // A target with a multi-byte character where a scheme would end is no panic.
    let (r, _) = classified("GET /abcdeé HTTP/1.1\r\nHost: a\r\n\r\n", None);
    assert!(r.is_ok());
    let (req, _) = forwarded("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert!(!req.close);
}

#[test]
fn methods_versions_and_expectations() {
    assert_eq!(
        refused("CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n"),
        501
    );
    assert_eq!(refused("TRACE / HTTP/1.1\r\nHost: x\r\n\r\n"), 405);
    assert_eq!(refused("GET / HTTP/2.0\r\nHost: x\r\n\r\n"), 505);
    assert_eq!(refused("GET / HTTP/1.2\r\nHost: x\r\n\r\n"), 505);
    assert_eq!(refused("GET / HTTP/x\r\nHost: x\r\n\r\n"), 400);
    assert_eq!(refused("GARBAGE\r\n\r\n"), 400);
    assert_eq!(refused("GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    assert_eq!(
        refused("GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n"),
        400
    );
    assert_eq!(
        refused("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nExpect: fly\r\n\r\n"),
        417
    );
    let (req, out) = forwarded(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nExpect: 100-Continue\r\n\r\n",
    );
    assert!(req.expect_continue);
    assert!(!out.to_ascii_lowercase().contains("expect"), "{out}");
}

#[test]
fn only_a_valid_handshake_is_a_websocket() {
    let ws = "GET /ws?uid=1 HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let (req, out) = forwarded(ws);
    assert!(req.websocket);
    assert!(
        out.contains("connection: upgrade\r\nupgrade: websocket\r\n"),
        "{out}"
    );
    assert!(
        out.contains("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
        "{out}"
    );
    for bad in [
        ws.replace("Version: 13", "Version: 8"),
        ws.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
        ws.replace("Upgrade: websocket", "Upgrade: h2c"),
        ws.replace("Upgrade: websocket", "Upgrade: websocket, h2c"),
        ws.replace("keep-alive, Upgrade", "keep-alive"),
        ws.replace("HTTP/1.1", "HTTP/1.0"),
    ] {
        let (req, out) = forwarded(&bad);
        assert!(!req.websocket, "{bad:?}");
        let lower = out.to_ascii_lowercase();
        assert!(!lower.contains("upgrade"), "{out}");
    }
}

#[test]
fn connection_cannot_drop_the_headers_that_frame_a_message() {
    // Dropping Content-Length would let the body pass as a second request (smuggling).
    let (req, out) = forwarded(
        "POST /outer HTTP/1.1\r\nHost: x\r\nConnection: content-length, host, x-a\r\nX-A: 1\r\nContent-Length: 42\r\n\r\n",
    );
    assert_eq!(req.body, RequestBody::Length(42));
    assert!(
        out.contains("content-length: 42\r\n") && out.contains("host: x\r\n"),
        "{out}"
    );
    assert!(!out.contains("X-A"), "{out}");
}

#[test]
fn forwarded_for_chains_join() {
    let (_, out) = forwarded(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2, 3.3.3.3\r\n\r\n",
    );
    assert!(
        out.contains("x-forwarded-for: 1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.9\r\n"),
        "{out}"
    );
}

#[test]
fn names_with_underscores_are_dropped_as_nginx_does() {
    let (_, out) = forwarded("GET / HTTP/1.1\r\nHost: x\r\nX_Real_IP: 6.6.6.6\r\nX-Ok: 1\r\n\r\n");
    assert!(
        !out.contains("6.6.6.6") && out.contains("X-Ok: 1\r\n"),
        "{out}"
    );
}

#[test]
fn a_forwarding_chain_past_twenty_hops_is_a_loop() {
    let chain = |n: usize| {
        let hops: Vec<String> = (0..n).map(|i| format!("10.0.0.{i}")).collect();
        format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {}\r\n\r\n",
            hops.join(", ")
        )
    };
    let (_, out) = forwarded(&chain(MAX_FORWARDED_HOPS));
    assert!(out.contains("10.0.0.19, 10.0.0.9\r\n"), "{out}");
    assert_eq!(refused(&chain(MAX_FORWARDED_HOPS + 1)), 508);
    // Split over several headers, the hops add up.
    let split = "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.1.1.1, 1.1.1.2, 1.1.1.3, 1.1.1.4, 1.1.1.5, 1.1.1.6, 1.1.1.7, 1.1.1.8, 1.1.1.9, 1.1.1.10, 1.1.1.11\r\nX-Forwarded-For: 2.2.2.1, 2.2.2.2, 2.2.2.3, 2.2.2.4, 2.2.2.5, 2.2.2.6, 2.2.2.7, 2.2.2.8, 2.2.2.9, 2.2.2.10\r\n\r\n";
    assert_eq!(refused(split), 508);
}

#[test]
fn websocket_fields_are_dropped_from_requests_that_are_not_handshakes() {
    let (req, out) = forwarded(
        "GET /chat HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\nSec-WebSocket-Extensions: x\r\n\r\n",
    );
    assert!(!req.websocket && !req.misreadable);
    assert!(!out.to_ascii_lowercase().contains("sec-websocket"), "{out}");
    let (req, _) = forwarded("GET /chat?Sec-WebSocket-Key:abc HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        req.misreadable,
        "a key in the target stays: the backend may misread it"
    );
    let (req, _) = forwarded("GET / HTTP/1.1\r\nHost: x\r\nX-Note: sec-websocket-KEY: a\r\n\r\n");
    assert!(req.misreadable);
    let (req, out) = forwarded(
        "GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert!(req.websocket && !req.misreadable);
    assert!(
        out.contains("Sec-WebSocket-Key: dGhl"),
        "a handshake keeps its fields"
    );
}

#[test]
fn a_bare_lf_head_is_rebuilt_with_crlf() {
    let crlf = forwarded("POST /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nContent-Length: 5\r\n\r\n");
    for raw in [
        "POST /a HTTP/1.1\nHost: x\nX-A: 1\nContent-Length: 5\n\n",
        "POST /a HTTP/1.1\r\nHost: x\nX-A: 1\r\nContent-Length: 5\n\r\n",
        "\n\r\nPOST /a HTTP/1.1\nHost: x\r\nX-A: 1   \nContent-Length: 5\r\n\n",
    ] {
        assert_eq!(forwarded(raw), crlf, "{raw:?}");
    }
    assert_eq!(refused("GET / HTTP/2.0\nHost: x\n\n"), 505);
    assert_eq!(refused("\r\nGET / HTTP/1.2\r\nHost: x\r\n\r\n"), 505);
    // obs-fold after a bare LF, and a CR inside a value, are refused as with CRLF.
    assert_eq!(refused("GET / HTTP/1.1\nHost: x\nX: a\n b\n\n"), 400);
    assert_eq!(refused("GET / HTTP/1.1\nHost: x\nX: a\rb\n\n"), 400);
    assert_eq!(refused("GET / HTTP/1.1\nHost: x\n\tX: a\n\n"), 400);
}

#[test]
fn targets_a_lenient_backend_would_read_otherwise_are_refused() {
    for t in [
        "/admin#/../x",
        "/admin#",
        "//x/admin",
        "/admin/../pub",
        "/admin/..%2Fpub",
        "/admin/%2e%2E/pub",
        "/a/./b",
        "/a/..",
        "/a\\..\\b",
        "/a%5c..%5cb",
    ] {
        let raw = format!("GET {t} HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(refused(&raw), 400, "{t}");
    }
    for t in [
        "/a..b/c",
        "/.well-known/x",
        "/a/...",
        "/a//b",
        "/x.css?y=../z",
        "/%2e%2ex",
    ] {
        let raw = format!("GET {t} HTTP/1.1\r\nHost: x\r\n\r\n");
        forwarded(&raw);
    }
}

/// A route's proxy_set_header: its values replace the client's and tideway's own of the same
/// name, once each; an empty value sends none; Host stays one.
#[test]
fn a_routes_set_headers_replace_the_defaults_once() {
    use crate::config::headers::{check_set, compile, Maps, RouteHeaders};
    let m = Maps::new();
    let set = |n: &str, v: &str| check_set(n, compile(v, &m).unwrap()).unwrap().unwrap();
    let headers = RouteHeaders {
        set: vec![
            set("Host", "$host"),
            set("X-Forwarded-For", "$proxy_add_x_forwarded_for"),
            set("X-Real-IP", "$http_x_nope"),
            set("X-Other", "$arg_a"),
            set("host", "second"),
        ],
        add: Vec::new(),
    };
    let steer = |_: Option<&[u8]>, _: &str| Steer {
        default_host: "app",
        websocket: true,
        headers: Some(&headers),
        port: 80,
        ..Steer::default()
    };
    let mut out = Vec::new();
    let conn = Some(SocketAddr::new(IP.parse().unwrap(), 40000));
    let raw = "GET /p?a=x%0d%0ay HTTP/1.1\r\nHost: A.example:81\r\nX-Other: client\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n";
    classify(raw.as_bytes(), (conn, None), "http", steer, &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "GET /p?a=x%0d%0ay HTTP/1.1\r\nhost: a.example\r\nx-forwarded-proto: http\r\n\
         X-Forwarded-For: 1.1.1.1, 10.0.0.9\r\nX-Other: x%0d%0ay\r\n"
    );
}

/// A set Host is held to a client's rules: one that comes out as no valid authority (here a
/// header value with a space and a comma) is not sent, and the client's Host goes instead.
#[test]
fn a_set_host_that_is_no_valid_authority_falls_back_to_the_clients() {
    use crate::config::headers::{check_set, compile, Maps, RouteHeaders};
    let m = Maps::new();
    let set = |n: &str, v: &str| check_set(n, compile(v, &m).unwrap()).unwrap().unwrap();
    let headers = RouteHeaders {
        set: vec![set("Host", "$http_x_h")],
        add: Vec::new(),
    };
    let steer = |_: Option<&[u8]>, _: &str| Steer {
        default_host: "app",
        websocket: true,
        headers: Some(&headers),
        port: 80,
        ..Steer::default()
    };
    let conn = Some(SocketAddr::new(IP.parse().unwrap(), 40000));
    for (x_h, host) in [
        ("evil.test, other", "a.example"),
        ("b.example", "b.example"),
    ] {
        let mut out = Vec::new();
        let raw = format!("GET / HTTP/1.1\r\nHost: a.example\r\nX-H: {x_h}\r\n\r\n");
        classify(raw.as_bytes(), (conn, None), "http", steer, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(&format!("\r\nhost: {host}\r\n")), "{text}");
        assert_eq!(text.matches("host:").count(), 1, "{text}");
    }
}

/// Classify typed parts as the HTTP/2 door gives them.
fn typed(
    method: &str,
    target: &str,
    fields: &[(&str, &str)],
    open: bool,
) -> Result<Request, Refusal> {
    let headers: Vec<httparse::Header<'_>> = fields
        .iter()
        .map(|(name, value)| httparse::Header {
            name,
            value: value.as_bytes(),
        })
        .collect();
    let parts = Parts {
        method,
        target,
        version: Version::H2,
        headers: &headers,
        open,
    };
    let steer = |_: Option<&[u8]>, _: &str| Steer {
        default_host: "app",
        websocket: true,
        ..Steer::default()
    };
    classify_parts(&parts, 64, (None, None), "https", steer, &mut Vec::new())
}

#[test]
fn typed_parts_take_the_same_rules_and_end_an_unsized_body_at_the_stream_end() {
    let host = [("host", "a.test")];
    let r = typed("POST", "/up", &host, true).unwrap();
    assert_eq!((r.body, r.version), (RequestBody::UntilEnd, Version::H2));
    // A stream ended with its head has no body; a length says how long one is.
    assert_eq!(
        typed("POST", "/up", &host, false).unwrap().body,
        RequestBody::None
    );
    let sized = [("host", "a.test"), ("content-length", "5")];
    assert_eq!(
        typed("POST", "/up", &sized, true).unwrap().body,
        RequestBody::Length(5)
    );
    // A GET may end with an empty DATA frame: read to its end (a body there is refused).
    assert_eq!(
        typed("GET", "/", &host, true).unwrap().body,
        RequestBody::UntilEnd
    );
    assert_eq!(typed("GET", "/", &sized, true).unwrap_err().status, 400);
    // What HTTP/1 refuses, so does HTTP/2.
    assert_eq!(typed("CONNECT", "/", &host, false).unwrap_err().status, 501);
    assert_eq!(typed("TRACE", "/", &host, false).unwrap_err().status, 405);
    assert_eq!(
        typed("GET", "/a/../b", &host, false).unwrap_err().status,
        400
    );
    assert_eq!(typed("GET", "/", &[], false).unwrap_err().status, 400);
    let two = [
        ("host", "a.test"),
        ("content-length", "1"),
        ("content-length", "1"),
    ];
    assert_eq!(typed("POST", "/", &two, true).unwrap_err().status, 400);
}
