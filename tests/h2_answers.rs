//! tideway's own answers on HTTP/2 (errors, refusals, a route's `return`), as an `h2` client
//! sees them: a HEAD's answer carries no DATA, a 204 or 304 no content-length, and cookie
//! fields joined into one line too long for `max_header_line` get 431 as on HTTP/1.

mod common;
#[path = "support/h2_routes.rs"]
mod h2_routes;

use common::h2::{h2_client, h2_fetch, Recorder};
use h2_routes::proxy_with_returns as proxy;
use std::net::SocketAddr;

fn request(method: &str, path: &str, fields: &[(&str, &str)]) -> http::Request<()> {
    let mut r = http::Request::builder()
        .method(method)
        .uri(format!("https://a.test{path}"));
    for (n, v) in fields {
        r = r.header(*n, *v);
    }
    r.body(()).unwrap()
}

/// A port nothing listens on.
fn dead_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn error_answers_to_head_carry_no_body() {
    // The only backend is down: 502.
    let p = proxy(dead_port(), "").await;
    let (mut c, _conn) = h2_client(&p, "a.test").await;
    // The h2 client treats DATA on a HEAD's answer as a protocol error of the stream.
    let got = h2_fetch(&mut c, request("HEAD", "/x", &[]), None).await;
    assert_eq!(got.unwrap(), (502, Vec::new()));
    let got = h2_fetch(&mut c, request("GET", "/x", &[]), None).await;
    let (status, body) = got.unwrap();
    assert_eq!(status, 502);
    assert!(body.starts_with(b"{\"error\""), "a GET still gets the JSON");
    // A head the front door refuses (cookies too long once joined: 431).
    let cookie = "a".repeat(3000);
    let cookies = [("cookie", &cookie[..]), ("cookie", &cookie[..])];
    let limits = "limits = { max_header_line = 4096 }";
    let p = proxy(dead_port(), limits).await;
    let (mut c, _conn) = h2_client(&p, "a.test").await;
    let got = h2_fetch(&mut c, request("HEAD", "/x", &cookies), None).await;
    assert_eq!(got.unwrap(), (431, Vec::new()));
}

#[tokio::test]
async fn cookies_joined_past_max_header_line_get_431_as_on_http1() {
    let rec = Recorder::start().await;
    let p = proxy(rec.addr, "limits = { max_header_line = 4096 }").await;
    let (mut c, _conn) = h2_client(&p, "a.test").await;
    // Two fields of 3000 bytes each: each fits, joined with "; " they are one 6009-byte
    // `Cookie:` line for the backend.
    let (a, b) = (
        format!("a={}", "x".repeat(2998)),
        format!("b={}", "y".repeat(2998)),
    );
    let req = request("GET", "/two", &[("cookie", &a), ("cookie", &b)]);
    let (status, body) = h2_fetch(&mut c, req, None).await.unwrap();
    assert_eq!(status, 431, "{}", String::from_utf8_lossy(&body));
    assert!(rec.request_for("/two").is_none(), "the backend got nothing");
    // The same cookie line on HTTP/1.1 gets 431 too.
    let (tls, _) = common::h2::tls_connect(p.http, "a.test", &[b"http/1.1"])
        .await
        .unwrap();
    let mut tls = tls;
    let head = format!("GET /one HTTP/1.1\r\nHost: a.test\r\nCookie: {a}; {b}\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut tls, head.as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    // Joined cookies that fit still go through, as one line.
    let (a, b) = (
        format!("a={}", "x".repeat(1000)),
        format!("b={}", "y".repeat(1000)),
    );
    let req = request("GET", "/fits", &[("cookie", &a), ("cookie", &b)]);
    assert_eq!(h2_fetch(&mut c, req, None).await.unwrap().0, 200);
    let r = rec.request_for("/fits").expect("the backend got it");
    assert_eq!(r.fields("cookie"), [format!("{a}; {b}")]);
}

#[tokio::test]
async fn own_204_and_304_answers_carry_no_content_length() {
    let p = proxy(dead_port(), "").await;
    let (c, _conn) = h2_client(&p, "a.test").await;
    for (path, status) in [("/empty", 204), ("/same", 304)] {
        let mut c = c.clone().ready().await.unwrap();
        let (answer, _) = c.send_request(request("GET", path, &[]), true).unwrap();
        let res = answer.await.unwrap();
        assert_eq!(res.status(), status);
        assert!(
            !res.headers().contains_key("content-length"),
            "{path}: {:?}",
            res.headers()
        );
    }
    // A 502 of tideway's own still says its length.
    let mut c = c.clone().ready().await.unwrap();
    let (answer, _) = c.send_request(request("GET", "/x", &[]), true).unwrap();
    let res = answer.await.unwrap();
    assert_eq!(res.status(), 502);
    assert!(res.headers().contains_key("content-length"));
}
