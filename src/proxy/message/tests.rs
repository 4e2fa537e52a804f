use super::*;

fn request(raw: &str, hash: Option<&HashKey>) -> (Inspected, String) {
    let mut out = Vec::new();
    let ip: IpAddr = "10.0.0.9".parse().unwrap();
    let what = inspect_request(raw.as_bytes(), Some(ip), "http", hash, &mut out);
    (what, String::from_utf8(out).unwrap())
}

fn forwarded(raw: &str) -> (Request, String) {
    match request(raw, None) {
        (Inspected::Forward(r), out) => (r, out),
        (other, _) => panic!("{raw:?} -> {other:?}"),
    }
}

#[test]
fn rewrites_an_ordinary_request() {
    let (req, out) = forwarded(
        "POST /a?uid=7 HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\nX-Forwarded-For: 1.1.1.1\r\nX-Real-IP: 6.6.6.6\r\nContent-Length: 3\r\n\r\n",
    );
    assert_eq!(
        out,
        "POST /a?uid=7 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nx-forwarded-for: 1.1.1.1, 10.0.0.9\r\nx-real-ip: 10.0.0.9\r\nx-forwarded-proto: http\r\n\r\n"
    );
    assert_eq!(req.body_len, 3);
    assert!(!req.close && !req.head_method && !req.idempotent);
    let (req, _) = forwarded("HEAD / HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(req.close && req.head_method && req.idempotent);
    assert_eq!(req.body_len, 0);
}

#[test]
fn computes_the_sticky_key_only_when_asked() {
    let raw = "GET /chat?uid=42 HTTP/1.1\r\nHost: x\r\n\r\n";
    let key = HashKey::Query("uid".into());
    match request(raw, Some(&key)).0 {
        Inspected::Forward(r) => assert_eq!(r.key, crate::balance::key_hash(b"42")),
        other => panic!("{other:?}"),
    }
    let key = HashKey::Header("x-user".into());
    let raw = "GET / HTTP/1.1\r\nX-User: bob\r\n\r\n";
    match request(raw, Some(&key)).0 {
        Inspected::Forward(r) => assert_eq!(r.key, crate::balance::key_hash(b"bob")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        request(raw, None).0,
        Inspected::Forward(Request { key: 0, .. })
    ));
}

#[test]
fn leaves_unusual_requests_to_pingora() {
    for raw in [
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
        "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        "GARBAGE\r\n\r\n",
    ] {
        assert_eq!(request(raw, None).0, Inspected::Pingora, "{raw:?}");
    }
    let ws = "GET /ws HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
    assert_eq!(request(ws, None).0, Inspected::WebSocket);
}

fn response(raw: &str, head_method: bool, close: bool) -> Result<(Answer, String), BadResponse> {
    let mut out = Vec::new();
    let a = inspect_response(raw.as_bytes(), head_method, close, &mut out)?;
    Ok((a, String::from_utf8(out).unwrap()))
}

fn final_response(raw: &str, head_method: bool, close: bool) -> (Response, String) {
    match response(raw, head_method, close) {
        Ok((Answer::Final(r), out)) => (r, out),
        other => panic!("{raw:?} -> {other:?}"),
    }
}

#[test]
fn delimits_response_bodies() {
    let (r, out) = final_response(
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n",
        false,
        false,
    );
    assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
    assert_eq!(
        (r.status, r.framing, r.reusable, r.close),
        (200, Framing::Length(5), true, false)
    );

    // Chunked wins over Content-Length, which is dropped.
    let (r, out) = final_response(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n",
        false,
        false,
    );
    assert_eq!(r.framing, Framing::Chunked);
    assert!(!out.to_ascii_lowercase().contains("content-length"));

    // No length: the body ends at the backend's close and goes on to the client chunked, so
    // the client connection stays open.
    let (r, out) = final_response("HTTP/1.1 200 OK\r\n\r\n", false, false);
    assert_eq!(
        (r.framing, r.rechunk, r.reusable, r.close),
        (Framing::UntilClose, true, false, false)
    );
    assert!(out.ends_with("transfer-encoding: chunked\r\n\r\n"));
    // A coding other than chunked last: the client's body ends at close too.
    let (r, out) = final_response(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        false,
        false,
    );
    assert_eq!(
        (r.framing, r.rechunk, r.close),
        (Framing::UntilClose, false, true)
    );
    assert!(out.ends_with("connection: close\r\n\r\n"));

    // HEAD, 204 and 304 have no body whatever their headers say.
    let (r, _) = final_response("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", true, false);
    assert_eq!(r.framing, Framing::Empty);
    let (r, _) = final_response(
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n",
        false,
        false,
    );
    assert_eq!(r.framing, Framing::Empty);

    // The backend closes: not reusable; the client asked to close: told so.
    let (r, _) = final_response(
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        false,
        false,
    );
    assert!(!r.reusable && !r.close);
    let (r, out) = final_response("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false, true);
    assert!(!r.reusable && r.close);
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n") && out.ends_with("connection: close\r\n\r\n"));
}

#[test]
fn drops_interim_answers_and_refuses_bad_ones() {
    assert!(matches!(
        response(
            "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
            false,
            false
        ),
        Ok((Answer::Interim, _))
    ));
    assert_eq!(
        response("HTTP/1.1 101 Switching\r\n\r\n", false, false).unwrap_err(),
        BadResponse::Upgrade
    );
    assert_eq!(
        response(
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            false,
            false
        )
        .unwrap_err(),
        BadResponse::Length
    );
    assert_eq!(
        response("NOT HTTP\r\n\r\n", false, false).unwrap_err(),
        BadResponse::Malformed
    );
}

#[test]
fn connection_cannot_drop_the_headers_that_frame_a_message() {
    // Dropping Content-Length would let the body pass as a second request (smuggling).
    let (req, out) = forwarded(
        "POST /outer HTTP/1.1\r\nHost: x\r\nConnection: content-length, host, x-a\r\nX-A: 1\r\nContent-Length: 42\r\n\r\n",
    );
    assert_eq!(req.body_len, 42);
    assert!(
        out.contains("Content-Length: 42\r\n") && out.contains("Host: x\r\n"),
        "{out}"
    );
    assert!(!out.contains("X-A"), "{out}");
    let (r, out) = final_response(
        "HTTP/1.1 200 OK\r\nConnection: transfer-encoding, content-length\r\nTransfer-Encoding: chunked\r\n\r\n",
        false,
        false,
    );
    assert_eq!(r.framing, Framing::Chunked);
    assert!(out.contains("Transfer-Encoding: chunked\r\n"), "{out}");
    let (r, out) = final_response(
        "HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\n",
        false,
        false,
    );
    assert_eq!(r.framing, Framing::Length(5));
    assert!(out.contains("Content-Length: 5\r\n"), "{out}");
}

#[test]
fn a_head_must_end_where_the_reader_ended_it() {
    // httparse takes bare LF line ends; the head reader ends heads at CRLF CRLF. Bytes between
    // the two ends must not vanish: such heads go to pingora, such answers are refused.
    let raw = "GET /a HTTP/1.1\nHost: x\n\nGET /hidden HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(request(raw, None).0, Inspected::Pingora);
    let raw = "HTTP/1.1 200 OK\nContent-Length: 0\n\nHTTP/1.1 200 OK\r\n\r\n";
    assert_eq!(
        response(raw, false, false).unwrap_err(),
        BadResponse::Malformed
    );
}

#[test]
fn connect_goes_to_pingora_and_forwarded_for_chains_join() {
    assert_eq!(
        request("CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", None).0,
        Inspected::Pingora
    );
    let (_, out) = forwarded(
        "GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2, 3.3.3.3\r\n\r\n",
    );
    assert!(
        out.contains("x-forwarded-for: 1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.9\r\n"),
        "{out}"
    );
}
