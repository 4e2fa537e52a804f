//! proxy_set_header, add_header and map, differentially: one config setting every variable
//! tideway reads, served by real nginx and by tideway; the backend must get the same values
//! for the headers set, and the client the same added ones. Hostile values included.

use super::*;

/// A backend that answers every request with its whole head as the body (status from a
/// `status=N` in the target, else 200), and closes.
async fn head_echo() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let Some(buf) = read_head(&mut s).await else {
                    return;
                };
                let end = buf.len();
                let head = &buf[..end];
                let text = String::from_utf8_lossy(head);
                let status = text
                    .split_once("status=")
                    .and_then(|(_, r)| r.get(..3))
                    .unwrap_or("200");
                let mut resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    head.len()
                )
                .into_bytes();
                resp.extend_from_slice(head);
                let _ = s.write_all(&resp).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

/// What a client got through a proxy from [`head_echo`]: the status, the response's header
/// lines and the head the backend received (empty when the proxy answered itself).
struct Echoed {
    status: u16,
    response: Vec<(String, String)>,
    backend: Vec<(String, String)>,
    backend_head: String,
}

/// `name: value` lines of a head, after its first line; names lowercased.
fn fields(head: &str) -> Vec<(String, String)> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

/// Send `raw` and read one answer: to its Content-Length, or to the close.
async fn echo(port: u16, raw: &[u8]) -> Echoed {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut got = Vec::new();
    let whole = |got: &[u8]| {
        let text = String::from_utf8_lossy(got);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            return false;
        };
        fields(head)
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .is_some_and(|n| body.len() >= n)
    };
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 4096];
        while !whole(&got) {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no answer to {:?}",
        String::from_utf8_lossy(raw)
    );
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let backend_head = if body.starts_with("GET ") || body.starts_with("POST ") {
        body.to_string()
    } else {
        String::new()
    };
    Echoed {
        status: head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        response: fields(head),
        backend: fields(&backend_head),
        backend_head,
    }
}

/// The values of `name` in `fields`, with the proxy's own `port` made generic (0: as they
/// are).
fn values(fields: &[(String, String)], name: &str, port: u16) -> Vec<String> {
    fields
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| match port {
            0 => v.clone(),
            p => v.replace(&p.to_string(), "PORT"),
        })
        .collect()
}

/// The config of the header differential: every variable tideway reads in a
/// `proxy_set_header`, a map (the WebSocket idiom and one with a regex), a server-level set
/// inherited by one location and replaced in another, and `add_header` with and without
/// `always`.
const HEADERS_CONF: &str = "events { worker_connections 64; }
http {
    proxy_http_version 1.1;
    map $http_upgrade $connection_upgrade { default upgrade; '' close; }
    map $arg_v $ver { default none; v1 one; ~^v[23]$ many; }
    upstream echo { server 127.0.0.1:ECHO; }
    server {
        listen LISTEN;
        server_name example.com;
        proxy_set_header X-Static \"static text\";
        add_header X-Server-Added yes;
        location / {
            proxy_pass http://echo;
            proxy_set_header Host $host;
            proxy_set_header X-Host $host;
            proxy_set_header X-Http-Host $http_host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Scheme $scheme;
            proxy_set_header X-Request-Uri $request_uri;
            proxy_set_header X-Server-Port $server_port;
            proxy_set_header X-Agent $http_user_agent;
            proxy_set_header X-Sid $cookie_sid;
            proxy_set_header X-Arg \"a=${arg_a};\";
            proxy_set_header X-Ver $ver;
            proxy_set_header X-Empty $http_x_absent;
            proxy_set_header X-Method $request_method;
            proxy_set_header X-Args \"$is_args$args\";
            proxy_set_header X-Server-Name $server_name;
            proxy_set_header X-Proxy-Host $proxy_host;
            proxy_set_header X-Request-Id $request_id;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            add_header X-Added \"for $host\";
            add_header X-Always yes always;
        }
        location /inherit/ {
            proxy_pass http://echo;
        }
    }
}
";

/// Headers `location /` sets; `location /inherit/` sets only X-Static (inherited).
const SET_NAMES: [&str; 18] = [
    "host",
    "x-static",
    "x-host",
    "x-http-host",
    "x-real-ip",
    "x-forwarded-for",
    "x-scheme",
    "x-request-uri",
    "x-server-port",
    "x-agent",
    "x-sid",
    "x-arg",
    "x-ver",
    "x-empty",
    "x-method",
    "x-args",
    "x-server-name",
    "x-proxy-host",
];

#[tokio::test]
async fn proxy_set_header_and_add_header_match_nginx() {
    let conf = HEADERS_CONF.replace("ECHO", &head_echo().await.to_string());
    let both = serve_both(&conf).await;
    let base = "Host: Example.COM:8080\r\nUser-Agent: probe/1.0\r\nCookie: a=1; sid=s%20id; z=2\r\nX-Forwarded-For: 203.0.113.9\r\nconnection: close\r\n\r\n";
    let mut reqs: Vec<(String, &[&str])> = Vec::new();
    for target in [
        "/",
        "/p?a=1&v=v1",
        "/p?v=v3&A=two",
        "/p?v=x",
        "/p%20q?a=%41",
        "/p?status=404",
        "/p?status=302&a=redirect",
        "/p?status=500",
    ] {
        reqs.push((format!("GET {target} HTTP/1.1\r\n{base}"), &SET_NAMES));
    }
    reqs.push((
        "GET / HTTP/1.0\r\n\r\n".to_string(),
        &[
            "x-host",
            "x-http-host",
            "x-agent",
            "x-sid",
            "x-empty",
            "x-args",
        ],
    ));
    reqs.push((
        format!("GET /inherit/x HTTP/1.1\r\n{base}"),
        &["x-static", "x-host", "x-agent", "x-real-ip"][..2],
    ));
    // Hostile: CR LF percent-encoded in an argument stays raw text in the value (nginx does not
    // decode $arg_), so no header is split.
    reqs.push((
        format!("GET /?a=x%0d%0aInjected:%20yes HTTP/1.1\r\n{base}"),
        &SET_NAMES,
    ));
    let mut differ = Vec::new();
    // $request_id is random in both: the same form (32 hex digits), one per request, and new
    // for each request.
    let hex32 = |v: &[String]| {
        v.len() == 1
            && v[0].len() == 32
            && v[0]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    let mut ids = std::collections::HashSet::new();
    for (raw, names) in &reqs {
        let n = echo(both.nginx, raw.as_bytes()).await;
        let t = echo(both.tideway, raw.as_bytes()).await;
        assert_eq!(n.status, t.status, "{raw:?}");
        if names.len() == SET_NAMES.len() {
            let (nv, tv) = (
                values(&n.backend, "x-request-id", 0),
                values(&t.backend, "x-request-id", 0),
            );
            assert!(
                hex32(&nv) && hex32(&tv),
                "{raw:?} x-request-id: nginx {nv:?}, tideway {tv:?}"
            );
            assert!(ids.insert(tv[0].clone()), "a new id per request: {tv:?}");
        }
        for name in names.iter() {
            let (nv, tv) = (
                values(&n.backend, name, both.nginx),
                values(&t.backend, name, both.tideway),
            );
            if nv != tv {
                differ.push(format!("{raw:?} {name}: nginx {nv:?}, tideway {tv:?}"));
            }
        }
        for name in ["x-added", "x-always", "x-server-added"] {
            let (nv, tv) = (values(&n.response, name, 0), values(&t.response, name, 0));
            if nv != tv {
                differ.push(format!(
                    "{raw:?} response {name}: nginx {nv:?}, tideway {tv:?}"
                ));
            }
        }
        assert!(
            !t.backend.iter().any(|(n, _)| n == "injected"),
            "no header split: {}",
            t.backend_head
        );
        assert_eq!(values(&t.backend, "host", 0).len(), 1, "{}", t.backend_head);
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    // Not equal by being absent on both: what the backend got through tideway, spelled out.
    let raw = format!("GET /p?a=1&v=v1 HTTP/1.1\r\n{base}");
    let t = echo(both.tideway, raw.as_bytes()).await;
    for (name, want) in [
        ("host", "example.com"),
        ("x-http-host", "Example.COM:8080"),
        ("x-real-ip", "127.0.0.1"),
        ("x-forwarded-for", "203.0.113.9, 127.0.0.1"),
        ("x-scheme", "http"),
        ("x-request-uri", "/p?a=1&v=v1"),
        ("x-server-port", "PORT"),
        ("x-agent", "probe/1.0"),
        ("x-sid", "s%20id"),
        ("x-arg", "a=1;"),
        ("x-ver", "one"),
        ("x-method", "GET"),
        ("x-args", "?a=1&v=v1"),
        ("x-server-name", "example.com"),
    ] {
        assert_eq!(values(&t.backend, name, both.tideway), [want], "{name}");
    }
    assert!(values(&t.backend, "x-empty", 0).is_empty());
    // location / sets its own: the server's X-Static is not inherited there (nginx's rule),
    // only in /inherit/, which sets none.
    assert!(values(&t.backend, "x-static", 0).is_empty());
    let raw = format!("GET /inherit/x HTTP/1.1\r\n{base}");
    let i = echo(both.tideway, raw.as_bytes()).await;
    assert_eq!(values(&i.backend, "x-static", 0), ["static text"]);
    assert_eq!(values(&i.response, "x-server-added", 0), ["yes"]);
    assert_eq!(values(&t.response, "x-added", 0), ["for example.com"]);

    // The idiom's meaning: a WebSocket handshake is passed on as one (the engine writes
    // Connection and Upgrade), a plain request carries neither.
    let ws = echo(
        both.tideway,
        b"GET /chat HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert_eq!(
        values(&ws.backend, "upgrade", 0),
        ["websocket"],
        "{}",
        ws.backend_head
    );
    assert_eq!(values(&ws.backend, "connection", 0), ["upgrade"]);
    let plain = echo(both.tideway, format!("GET / HTTP/1.1\r\n{base}").as_bytes()).await;
    assert!(values(&plain.backend, "upgrade", 0).is_empty());
    assert!(values(&plain.backend, "connection", 0).is_empty());

    // Hostile: a bare CR inside a header value is refused by both before any backend.
    let raw = b"GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: a\rInjected: yes\r\nconnection: close\r\n\r\n";
    let (n, t) = (echo(both.nginx, raw).await, echo(both.tideway, raw).await);
    assert_eq!((n.status, t.status), (400, 400));
    assert!(n.backend_head.is_empty() && t.backend_head.is_empty());
}

/// The TOML form: `set_header` and `add_header` on a route, inherited by a nested one that
/// sets none, and config errors naming the line.
#[test]
fn header_tables_in_toml() {
    let text = "[[listener]]\nlisten = \"127.0.0.1:8080\"\n\n\
        [[listener.route]]\npath = \"/\"\nupstream = \"app\"\n\
        set_header = { \"X-Real-IP\" = \"$remote_addr\", \"X-Up\" = \"$connection_upgrade\" }\n\
        add_header = { \"X-A\" = \"a\", \"X-B\" = { value = \"b\", always = true } }\n\n\
        [[listener.route.route]]\npath = \"/x/\"\nupstream = \"app\"\n\n\
        [map.connection_upgrade]\nsource = \"$http_upgrade\"\ndefault = \"upgrade\"\nvalues = { \"\" = \"close\" }\n\n\
        [upstream.app]\nbackends = [{ addr = \"127.0.0.1:2346\" }]\n";
    let c = tideway::config::parse(text, Path::new("t.toml")).unwrap();
    let root = &c.listeners[0].routes[0].locations[0];
    let h = root.settings.headers.as_ref().unwrap();
    assert_eq!(h.set.len(), 2);
    assert_eq!(h.add.len(), 2);
    assert!(h.add[1].always);
    assert_eq!(root.nested[0].settings.headers, root.settings.headers);
    for (bad, want) in [
        ("\"X-A\" = \"$nope\"", "unknown variable \"$nope\""),
        ("\"Content-Length\" = \"1\"", "cannot be set"),
        ("\"Connection\" = \"close\"", "websocket = true"),
        ("\"X-A\" = \"a\\r\\nB: c\"", "control byte"),
    ] {
        let t = text.replace(
            "set_header = { \"X-Real-IP\" = \"$remote_addr\", \"X-Up\" = \"$connection_upgrade\" }",
            &format!("set_header = {{ {bad} }}"),
        );
        let e = tideway::config::parse(&t, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.toml:7") && e.contains(want), "{bad}: {e}");
    }
}

/// The TOML form end to end: a route's set_header overrides tideway's own X-Real-IP and the
/// client's header of the same name (one copy each), an empty value removes a header,
/// add_header follows the status list, and `GET /v1/routes` shows both.
#[tokio::test]
async fn toml_set_header_and_add_header_apply() {
    let port = head_echo().await;
    let routes = "[[listener.route]]\npath = \"/\"\nupstream = \"echo\"\n\
        set_header = { \"X-Real-IP\" = \"real=$remote_addr\", \"X-Forwarded-Proto\" = \"\", \"X-Tag\" = \"${arg_t}!\", \"Host\" = \"backend.internal\" }\n\
        add_header = { \"X-A\" = \"a\", \"X-B\" = { value = \"$request_method\", always = true } }\n";
    let upstreams = format!("[upstream.echo]\nbackends = [{{ addr = \"127.0.0.1:{port}\" }}]\n");
    let p = start_routes(routes, &upstreams).await;
    let port = p.http.port();
    let raw = "GET /x?t=1 HTTP/1.1\r\nHost: front.example\r\nX-Real-IP: 6.6.6.6\r\nX-Tag: client\r\nconnection: close\r\n\r\n";
    let e = echo(port, raw.as_bytes()).await;
    assert_eq!(e.status, 200);
    assert_eq!(values(&e.backend, "host", 0), ["backend.internal"]);
    assert_eq!(values(&e.backend, "x-real-ip", 0), ["real=127.0.0.1"]);
    assert_eq!(values(&e.backend, "x-tag", 0), ["1!"]);
    assert!(values(&e.backend, "x-forwarded-proto", 0).is_empty());
    assert_eq!(values(&e.backend, "x-forwarded-for", 0), ["127.0.0.1"]);
    assert_eq!(values(&e.response, "x-a", 0), ["a"]);
    assert_eq!(values(&e.response, "x-b", 0), ["GET"]);
    let raw = "GET /x?status=503 HTTP/1.1\r\nHost: h\r\nconnection: close\r\n\r\n";
    let e = echo(port, raw.as_bytes()).await;
    assert_eq!(e.status, 503);
    assert!(values(&e.response, "x-a", 0).is_empty(), "not on a 503");
    assert_eq!(values(&e.response, "x-b", 0), ["GET"], "always");

    let listed = p.admin_json("/v1/routes").await;
    let route = &listed["listeners"][0]["routes"][0];
    assert_eq!(route["set_header"]["X-Tag"], "${arg_t}!", "{listed}");
    assert_eq!(route["add_header"]["X-B"]["always"], true, "{listed}");
}
