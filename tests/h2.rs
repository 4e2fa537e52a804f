//! HTTP/2 to clients on a TLS listener with `http2 = true`, through the one HTTP engine: real
//! clients (`curl --http2`, `nghttp`) and what the backend receives (the same HTTP/1.1
//! request an HTTP/1.1 client's would be: request line, one Host, one Content-Length,
//! X-Forwarded-*).

mod common;

use common::h2::{
    curl, h2_client, h2_fetch, make_cert, nghttp, start_h2_proxy, start_h2_proxy_with, tls_connect,
    Recorder,
};

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

/// The position in nghttp's verbose output where stream `id` got its status.
fn answered_at(verbose: &str, id: u32) -> usize {
    let mark = format!("recv (stream_id={id}) :status:");
    verbose.find(&mark).unwrap_or(usize::MAX)
}

#[tokio::test]
async fn long_polls_and_a_quick_request_share_one_connection() {
    let rec = Recorder::start().await;
    let p = start_h2_proxy(rec.addr, true, "", "").await;
    // nghttp opens streams 13, 15, 17 for these, all on one connection.
    let paths = ["/slow/1500/a", "/slow/1500/b", "/quick"];
    let got = nghttp(&p, "a.test", &paths, &[]).await;
    assert_eq!(got.statuses.len(), 3, "{}", got.verbose);
    assert!(got.statuses.iter().all(|&s| s == 200), "{}", got.verbose);
    // The quick answer did not wait for the long polls before it on the connection.
    let quick = answered_at(&got.verbose, 17);
    assert!(quick < answered_at(&got.verbose, 13), "{}", got.verbose);
    assert!(quick < answered_at(&got.verbose, 15), "{}", got.verbose);
    assert_eq!(got.verbose.matches("Connected").count(), 1);
    for path in paths {
        let r = rec
            .request_for(path)
            .expect("every stream reached the backend");
        assert_eq!(r.line(), format!("GET {path} HTTP/1.1"));
        assert_eq!(r.fields("host"), ["a.test"]);
    }
}

#[tokio::test]
async fn a_name_the_certificate_does_not_cover_gets_421() {
    let rec = Recorder::start().await;
    // Two servers, each with its own certificate: a connection made for a.test asking for
    // b.test is misdirected, as on HTTP/1.1.
    let p = common::start_written(&[], |http, admin, dir| {
        let a = make_cert(dir, "a", &["a.test"]);
        let b = make_cert(dir, "b", &["b.test"]);
        format!(
            "[admin]\nlisten = \"{admin}\"\n[store]\ndata_dir = \"{}\"\n\n[[listener]]\nlisten = \"{http}\"\nhttp2 = true\ntls = [{{ cert = {:?}, key = {:?} }}, {{ cert = {:?}, key = {:?} }}]\n[[listener.route]]\nhost = [\"a.test\"]\nupstream = \"app\"\n[[listener.route]]\nhost = [\"b.test\"]\nupstream = \"app\"\n\n[upstream.app]\nbackends = [{{ addr = \"{}\" }}]\n",
            dir.join("data").display(),
            a.cert,
            a.key,
            b.cert,
            b.key,
            rec.addr,
        )
    })
    .await;
    let (mut send, _conn) = h2_client(&p, "a.test").await;
    let req = http::Request::get("https://b.test/mis").body(()).unwrap();
    let (status, body) = h2_fetch(&mut send, req, None).await.unwrap();
    assert_eq!(status, 421, "{}", String::from_utf8_lossy(&body));
    assert!(
        rec.request_for("/mis").is_none(),
        "nothing reached the backend"
    );
    // The name it was made for, on another connection, goes through.
    let (mut send, _conn) = h2_client(&p, "a.test").await;
    let req = http::Request::get("https://a.test/ok").body(()).unwrap();
    assert_eq!(h2_fetch(&mut send, req, None).await.unwrap().0, 200);
}

#[tokio::test]
async fn http11_is_served_beside_h2_and_a_listener_without_http2_offers_only_http11() {
    let rec = Recorder::start().await;
    let p = start_h2_proxy(rec.addr, true, "", "").await;
    let got = curl(&p, "a.test", "/one", &["--http1.1"]).await;
    assert_eq!((got.status, got.version.as_str()), (200, "1.1"));
    let (_, chosen) = tls_connect(p.http, "a.test", &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(chosen.as_deref(), Some(&b"h2"[..]), "h2 is preferred");

    let plain = start_h2_proxy(rec.addr, false, "", "").await;
    let got = curl(&plain, "a.test", "/two", &["--http2"]).await;
    assert_eq!((got.status, got.version.as_str()), (200, "1.1"));
    let (_, chosen) = tls_connect(plain.http, "a.test", &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(chosen.as_deref(), Some(&b"http/1.1"[..]));
    // A client that speaks only h2 finds no protocol in common.
    let only_h2 = tls_connect(plain.http, "a.test", &[b"h2"]).await;
    assert!(only_h2.is_err(), "no h2 without http2 = true");
}

#[tokio::test]
async fn the_access_log_and_the_metrics_carry_the_protocol() {
    let rec = Recorder::start().await;
    let p = start_h2_proxy(rec.addr, true, "access_log = true", "").await;
    assert_eq!(
        curl(&p, "a.test", "/logged", &["--http2"]).await.status,
        200
    );
    assert_eq!(curl(&p, "a.test", "/old", &["--http1.1"]).await.status, 200);
    // A stream the front door refuses before classifying it is logged too.
    let (mut send, _conn) = h2_client(&p, "a.test").await;
    let req = http::Request::get("https://a.test/mismatch")
        .header("host", "b.a.test")
        .body(())
        .unwrap();
    assert_eq!(h2_fetch(&mut send, req, None).await.unwrap().0, 400);
    let log = p.dir.path().join("tideway.log");
    common::wait_until(std::time::Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("\"GET /logged HTTP/2.0\" 200")
            && text.contains("\"GET /old HTTP/1.1\" 200")
            && text.contains("\"GET /mismatch HTTP/2.0\" 400")
    })
    .await;
    let h2 = r#"tideway_requests_by_protocol_total{protocol="h2",upstream="app"}"#;
    let h11 = r#"tideway_requests_by_protocol_total{protocol="http/1.1",upstream="app"}"#;
    assert_eq!(common::metric(&p, h2).await, 2.0);
    assert_eq!(common::metric(&p, h11).await, 1.0);
}

#[tokio::test]
async fn a_stream_head_is_checked_as_an_http11_head_is() {
    let rec = Recorder::start().await;
    let p = start_h2_proxy(rec.addr, true, "", "").await;
    let (mut send, _conn) = h2_client(&p, "a.test").await;
    // A Host that differs from :authority.
    let req = http::Request::get("https://a.test/two-hosts")
        .header("host", "b.a.test")
        .body(())
        .unwrap();
    let (status, body) = h2_fetch(&mut send, req, None).await.unwrap();
    assert_eq!(status, 400);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error"], "Host differs from :authority");
    // A GET with a body (no length): refused as on HTTP/1.1; an empty one is no body.
    let req = http::Request::get("https://a.test/get-body")
        .body(())
        .unwrap();
    let (status, _) = h2_fetch(&mut send, req, Some(b"data")).await.unwrap();
    assert_eq!(status, 400);
    let req = http::Request::get("https://a.test/get-empty")
        .body(())
        .unwrap();
    assert_eq!(h2_fetch(&mut send, req, Some(b"")).await.unwrap().0, 200);
    let r = rec.request_for("/get-empty").unwrap();
    assert!(r.fields("content-length").is_empty(), "{}", r.head);
    // A dot segment, as on HTTP/1.1.
    let req = http::Request::get("https://a.test/a/%2e%2e/b")
        .body(())
        .unwrap();
    assert_eq!(h2_fetch(&mut send, req, None).await.unwrap().0, 400);
    // Cookies HTTP/2 splits are joined for the backend; a name with `_` is dropped.
    let req = http::Request::get("https://a.test/cookies")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("x_real_ip", "6.6.6.6")
        .body(())
        .unwrap();
    assert_eq!(h2_fetch(&mut send, req, None).await.unwrap().0, 200);
    let r = rec.request_for("/cookies").unwrap();
    assert_eq!(r.fields("cookie"), ["a=1; b=2"]);
    assert!(r.fields("x_real_ip").is_empty(), "{}", r.head);
    assert_eq!(r.fields("x-real-ip"), ["127.0.0.1"]);
    // HEAD: tideway's own answer (a refusal) carries no DATA; the backend's neither.
    let req = http::Request::head("https://a.test/a/%2e%2e/h")
        .body(())
        .unwrap();
    assert_eq!(
        h2_fetch(&mut send, req, None).await.unwrap(),
        (400, Vec::new())
    );
    let req = http::Request::head("https://a.test/head").body(()).unwrap();
    assert_eq!(
        h2_fetch(&mut send, req, None).await.unwrap(),
        (200, Vec::new())
    );
    // None of the refused ones reached the backend.
    for path in ["/two-hosts", "/get-body", "/a/%2e%2e/b"] {
        assert!(
            rec.request_for(path).is_none(),
            "{path} reached the backend"
        );
    }
}

#[tokio::test]
async fn an_idle_connection_and_one_that_never_asks_get_goaway() {
    let rec = Recorder::start().await;
    let limits = "limits = { keepalive_timeout = \"1s\", header_timeout = \"1s\" }";
    let p = start_h2_proxy(rec.addr, true, "", limits).await;
    let (mut send, conn) = h2_client(&p, "a.test").await;
    let req = http::Request::get("https://a.test/once").body(()).unwrap();
    assert_eq!(h2_fetch(&mut send, req, None).await.unwrap().0, 200);
    let (_never, silent) = h2_client(&p, "a.test").await;
    for conn in [conn, silent] {
        let ended = tokio::time::timeout(std::time::Duration::from_secs(15), conn).await;
        assert!(ended.is_ok(), "the server closed the connection");
    }
}

#[tokio::test]
async fn limit_conn_counts_each_stream_as_a_connection() {
    let rec = Recorder::start().await;
    let p = start_h2_proxy_with(
        rec.addr,
        true,
        (
            "",
            "client_limits = [{ zone = \"addr\", conn = 2, status = 429 }]",
            "[limit_zone.addr]\nkind = \"conn\"\n",
        ),
    )
    .await;
    // Three long polls on one connection: two are served, one is over the client's limit.
    let paths = ["/slow/1500/a", "/slow/1500/b", "/slow/1500/c"];
    let got = nghttp(&p, "a.test", &paths, &[]).await;
    let mut statuses = got.statuses.clone();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 429], "{}", got.verbose);
    assert_eq!(
        rec.requests().len(),
        2,
        "the refused stream reached no backend"
    );
    // Their counts went back with them.
    let again = nghttp(&p, "a.test", &["/after"], &[]).await;
    assert_eq!(again.statuses, [200]);
}

#[tokio::test]
async fn shutdown_sends_goaway_and_lets_a_stream_in_flight_finish() {
    let rec = Recorder::start().await;
    let p = start_h2_proxy(rec.addr, true, "", "").await;
    let poll = nghttp(&p, "a.test", &["/slow/600/poll"], &[]);
    let term = async {
        common::wait_until(std::time::Duration::from_secs(10), || async {
            rec.request_for("/slow/600/poll").is_some()
        })
        .await;
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &p.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
    };
    let (got, ()) = tokio::join!(poll, term);
    assert_eq!(got.statuses, [200], "{}", got.verbose);
    let goaway = got.verbose.find("recv GOAWAY frame").expect(&got.verbose);
    let answered = got
        .verbose
        .find("recv (stream_id=13) :status: 200")
        .unwrap();
    assert!(
        goaway < answered,
        "GOAWAY came while the stream was in flight"
    );
}

#[tokio::test]
async fn a_reload_that_removes_the_listener_sends_its_connections_goaway() {
    let rec = Recorder::start().await;
    let p = start_h2_proxy(rec.addr, true, "", "").await;
    let (mut send, conn) = h2_client(&p, "a.test").await;
    let req = http::Request::get("https://a.test/before")
        .body(())
        .unwrap();
    assert_eq!(h2_fetch(&mut send, req, None).await.unwrap().0, 200);
    // The listener goes (another, plain one, takes its place in the config).
    let config = std::fs::read_to_string(&p.config_path).unwrap();
    let other = format!("127.0.0.1:{}", common::free_port());
    let rewritten: String = config
        .replace(&p.http.to_string(), &other)
        .lines()
        .filter(|l| !l.starts_with("http2") && !l.starts_with("tls"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&p.config_path, rewritten).unwrap();
    p.reload().await;
    // Well before keepalive_timeout (60 s): the connection was sent GOAWAY and closed.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(15), conn).await;
    assert!(
        ended.is_ok(),
        "the turned-away listener's connection closed"
    );
}
