use super::*;
use crate::proxy::request::RequestBody;

fn req(head_method: bool, http10: bool, websocket: bool) -> Request {
    Request {
        body: RequestBody::None,
        close: false,
        http10,
        version: crate::proxy::request::Version::Http11,
        head_method,
        idempotent: true,
        websocket,
        expect_continue: false,
        length_always: false,
        key: Default::default(),
        misreadable: false,
        client: None,
        sticky: None,
        added: None,
        accept: None,
    }
}

const GET: fn() -> Request = || req(false, false, false);

fn response(raw: &str, r: &Request, close: bool) -> Result<(Answer, String), BadResponse> {
    let mut out = Vec::new();
    let a = inspect_response(raw.as_bytes(), r, close, &mut out)?;
    Ok((a, String::from_utf8(out).unwrap()))
}

fn final_response(raw: &str, r: &Request, close: bool) -> (Response, String) {
    match response(raw, r, close) {
        Ok((Answer::Final(res), out)) => (res, out),
        other => panic!("{raw:?} -> {other:?}"),
    }
}

#[test]
fn delimits_response_bodies_canonically() {
    let (r, out) = final_response(
        "HTTP/1.1 200 OK\r\nContent-Length: 05\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n",
        &GET(),
        false,
    );
    assert_eq!(out, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n");
    assert_eq!(
        (r.status, r.framing, r.encoding, r.reusable, r.close),
        (200, Framing::Length(5), Encoding::Raw, true, false)
    );
    // Framed both ways (either order), or Content-Length twice even when equal: refused, as
    // current nginx answers 502 (nginx-tests proxy_duplicate_headers.t) and as tideway
    // refuses such a request.
    for raw in [
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        assert_eq!(
            response(raw, &GET(), false).unwrap_err(),
            BadResponse::Length,
            "{raw}"
        );
    }
    // No length: the body ends at the backend's close and goes on chunked.
    let (r, out) = final_response("HTTP/1.1 200 OK\r\n\r\n", &GET(), false);
    assert_eq!(
        (r.framing, r.encoding, r.reusable, r.close),
        (Framing::UntilClose, Encoding::Chunked, false, false)
    );
    assert!(out.ends_with("transfer-encoding: chunked\r\n\r\n"));
    // Any coding but chunked alone is refused, as nginx does: it cannot be re-framed.
    for te in ["gzip", "gzip, chunked", "chunked, identity"] {
        let raw = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {te}\r\n\r\n");
        assert_eq!(
            response(&raw, &GET(), false).unwrap_err(),
            BadResponse::Coding,
            "{te}"
        );
    }
    let twice =
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(
        response(twice, &GET(), false).unwrap_err(),
        BadResponse::Coding
    );
}

#[test]
fn an_http10_client_never_gets_chunks() {
    let old = req(false, true, false);
    let (r, out) = final_response(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        &old,
        false,
    );
    assert_eq!(
        (r.framing, r.encoding, r.close),
        (Framing::Chunked, Encoding::Raw, true)
    );
    assert!(
        !out.to_ascii_lowercase().contains("transfer-encoding"),
        "{out}"
    );
    assert!(out.ends_with("connection: close\r\n\r\n"));
    // A length keeps an HTTP/1.0 keep-alive connection open, and says so.
    let (r, out) = final_response("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", &old, false);
    assert!(!r.close);
    assert!(out.ends_with("connection: keep-alive\r\n\r\n"), "{out}");
}

#[test]
fn bodiless_answers() {
    // HEAD, 204 and 304 have no body whatever their headers say; HEAD keeps its length.
    let (r, out) = final_response(
        "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n",
        &req(true, false, false),
        false,
    );
    assert_eq!(r.framing, Framing::Empty);
    assert!(out.contains("content-length: 50\r\n"), "{out}");
    // Workerman sends a body after a HEAD answer anyway: the connection is never reused.
    assert!(!r.reusable);
    let (r, _) = final_response(
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n",
        &GET(),
        false,
    );
    assert_eq!(r.framing, Framing::Empty);
    assert!(!r.reusable, "a body of 50 may still come");
    let (r, _) = final_response("HTTP/1.1 204 No Content\r\n\r\n", &GET(), false);
    assert!(r.reusable);
    // The backend closes: not reusable; the client asked to close: told so.
    let (r, _) = final_response(
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        &GET(),
        false,
    );
    assert!(!r.reusable && !r.close);
    let (r, out) = final_response("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", &GET(), true);
    assert!(!r.reusable && r.close);
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n") && out.ends_with("connection: close\r\n\r\n"));
}

#[test]
fn interim_switched_and_bad_answers() {
    assert!(matches!(
        response(
            "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
            &GET(),
            false
        ),
        Ok((Answer::Interim, _))
    ));
    let switch = "HTTP/1.1 101 Switching\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    assert_eq!(
        response(switch, &GET(), false).unwrap_err(),
        BadResponse::Upgrade
    );
    assert!(matches!(
        response(switch, &req(false, false, true), false),
        Ok((Answer::Switched, out)) if out == switch
    ));
    // A bare-LF 101 reaches the client with CRLF line ends.
    assert!(matches!(
        response(&switch.replace("\r\n", "\n"), &req(false, false, true), false),
        Ok((Answer::Switched, out)) if out == switch
    ));
    assert_eq!(
        response(
            "HTTP/1.1 101 Switching\r\nUpgrade: h2c\r\n\r\n",
            &req(false, false, true),
            false
        )
        .unwrap_err(),
        BadResponse::Upgrade
    );
    assert_eq!(
        response(
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            &GET(),
            false
        )
        .unwrap_err(),
        BadResponse::Length
    );
    assert_eq!(
        response("NOT HTTP\r\n\r\n", &GET(), false).unwrap_err(),
        BadResponse::Malformed
    );
    // A head must end where the reader ended it: bare LF line ends are refused.
    let raw = "HTTP/1.1 200 OK\nContent-Length: 0\n\nHTTP/1.1 200 OK\r\n\r\n";
    assert_eq!(
        response(raw, &GET(), false).unwrap_err(),
        BadResponse::Malformed
    );
}

#[test]
fn a_switch_to_tideways_own_key_needs_its_accept() {
    // RFC 6455's example key and its Accept.
    let mut ws = req(false, false, true);
    ws.accept = Some(crate::proxy::h2::websocket::Accept::of(
        b"dGhlIHNhbXBsZSBub25jZQ==",
    ));
    let with = |accept: &str| {
        format!(
            "HTTP/1.1 101 Switching\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{accept}\r\n"
        )
    };
    let right = with("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n");
    assert!(matches!(
        response(&right, &ws, false),
        Ok((Answer::Switched, _))
    ));
    for wrong in [
        "",
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOA=\r\n",
        "Sec-WebSocket-Accept: x\r\n",
        // Twice, even the right one: which would a client believe?
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n",
    ] {
        assert_eq!(
            response(&with(wrong), &ws, false).unwrap_err(),
            BadResponse::Accept,
            "{wrong:?}"
        );
    }
    // Over HTTP/2 the switch is the stream's 200, with the end-to-end fields only; a 2xx
    // that did not switch cannot be forwarded (it would open the tunnel).
    let mut head = crate::proxy::h2::answer::H2Head::default();
    let switch = with("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\nContent-Length: 0\r\n");
    let answer = inspect_response(switch.as_bytes(), &ws, false, &mut head);
    assert_eq!(answer, Ok(Answer::Switched));
    let res = head.into_response();
    assert_eq!(res.status(), 200);
    let names: Vec<_> = res.headers().keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["sec-websocket-protocol"]);
    let plain = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";
    assert_eq!(
        response(plain, &ws, false).unwrap_err(),
        BadResponse::NoSwitch
    );
    let refused = "HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\n";
    assert!(matches!(
        response(refused, &ws, false),
        Ok((Answer::Final(_), _))
    ));
    // A client's own key is the client's to check.
    let theirs = req(false, false, true);
    assert!(matches!(
        response(&with(""), &theirs, false),
        Ok((Answer::Switched, _))
    ));
}

#[test]
fn connection_cannot_drop_framing_headers() {
    let (r, out) = final_response(
        "HTTP/1.1 200 OK\r\nConnection: transfer-encoding, content-length\r\nTransfer-Encoding: chunked\r\n\r\n",
        &GET(),
        false,
    );
    assert_eq!(r.framing, Framing::Chunked);
    assert!(out.contains("transfer-encoding: chunked\r\n"), "{out}");
    let (r, out) = final_response(
        "HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\n",
        &GET(),
        false,
    );
    assert_eq!(r.framing, Framing::Length(5));
    assert!(out.contains("content-length: 5\r\n"), "{out}");
}

#[test]
fn a_bare_lf_head_is_rebuilt_with_crlf() {
    let crlf = "HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 5\r\n\r\n";
    let want = final_response(crlf, &GET(), false);
    for raw in [
        "HTTP/1.1 200 OK\nX-A: 1\nContent-Length: 5\n\n",
        "HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 5\r\n\n",
    ] {
        assert_eq!(final_response(raw, &GET(), false), want, "{raw:?}");
    }
    assert!(!want.1.replace("\r\n", "").contains(['\r', '\n']));
    // obs-fold and a CR inside a value are refused with either line end.
    for bad in [
        "HTTP/1.1 200 OK\nX-A: 1\n 2\nContent-Length: 5\n\n",
        "HTTP/1.1 200 OK\nX-A: 1\r2\nContent-Length: 5\n\n",
    ] {
        assert_eq!(
            response(bad, &GET(), false).unwrap_err(),
            BadResponse::Malformed
        );
    }
}
