//! HTTP/2 to clients on a TLS listener with `http2 = true`, through the one HTTP engine: real
//! clients (`curl --http2`, `nghttp`) and what the backend receives (the same HTTP/1.1
//! request an HTTP/1.1 client's would be: request line, one Host, one Content-Length,
//! X-Forwarded-*).

mod common;

use common::h2::{curl, nghttp, start_h2_proxy, Recorder};

#[tokio::test]
async fn curl_gets_and_posts_over_h2_and_the_backend_gets_http11() {
    let rec = Recorder::start().await;
    let p = start_h2_proxy(rec.addr, true, "", "").await;

    let got = curl(&p, "a.test", "/get?x=1", &["--http2"]).await;
    assert_eq!(
        (got.status, got.version.as_str()),
        (200, "2"),
        "{}",
        got.body
    );
    assert_eq!(got.body, "ok /get?x=1");
    let r = rec
        .request_for("/get?x=1")
        .expect("the backend got the GET");
    assert_eq!(r.line(), "GET /get?x=1 HTTP/1.1");
    // `:authority` as curl sends it (with the port), as the one Host.
    assert_eq!(r.fields("host"), [format!("a.test:{}", p.http.port())]);
    assert!(r.fields("content-length").is_empty(), "{}", r.head);
    assert_eq!(r.fields("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(r.fields("x-real-ip"), ["127.0.0.1"]);
    assert_eq!(r.fields("x-forwarded-proto"), ["https"]);

    // A body with its length.
    let got = curl(
        &p,
        "a.test",
        "/post",
        &["--http2", "--data-binary", "hello h2"],
    )
    .await;
    assert_eq!(
        (got.status, got.version.as_str()),
        (200, "2"),
        "{}",
        got.body
    );
    let r = rec.request_for("/post").expect("the backend got the POST");
    assert_eq!(r.line(), "POST /post HTTP/1.1");
    assert_eq!(r.fields("content-length"), ["8"]);
    assert_eq!(r.body, b"hello h2");

    // A body without a length (DATA frames ended by END_STREAM, no content-length): read
    // whole, sent with its length.
    let file = p.dir.path().join("upload.bin");
    std::fs::write(&file, b"no length here").unwrap();
    let file = file.to_str().unwrap();
    let got = nghttp(
        &p,
        "a.test",
        &["/unsized"],
        &["--no-content-length", "-d", file],
    )
    .await;
    let log = std::fs::read_to_string(p.dir.path().join("tideway.log")).unwrap_or_default();
    assert_eq!(got.statuses, [200], "{}\n{log}", got.verbose);
    let r = rec
        .request_for("/unsized")
        .expect("the backend got the upload");
    assert_eq!(r.line(), "POST /unsized HTTP/1.1");
    assert_eq!(r.fields("content-length"), ["14"], "{}", r.head);
    assert!(r.fields("transfer-encoding").is_empty(), "{}", r.head);
    assert_eq!(r.body, b"no length here");
}
