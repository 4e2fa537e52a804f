//! Import faithfully or say so (issue 21): `tideway check --nginx` reports every directive as
//! read, approximated, of no effect, ignored, skipped or an error with its nginx file:line;
//! `--strict` refuses what would be ignored; content nginx serves itself fails the import
//! unless `--skip-unproxied` leaves it out (404); a UDP listen never becomes a TCP listener;
//! errors from validating the converted config name the nginx file:line.

mod common;

use common::nginx::{start_tideway_nginx, wait_port};
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Write `conf` as `site.conf` in a fresh directory.
fn site(conf: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.conf");
    std::fs::write(&path, conf).unwrap();
    (dir, path)
}

/// The 1-based line of `conf` that contains `text` (the first one).
fn line_of(conf: &str, text: &str) -> usize {
    conf.lines()
        .position(|l| l.contains(text))
        .unwrap_or_else(|| panic!("{text:?} not in the config"))
        + 1
}

fn tideway(args: &[&str], file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args(args)
        .arg(file)
        .output()
        .unwrap()
}

/// The lines of one group of `check`'s report.
fn group<'a>(report: &'a str, title: &str) -> Vec<&'a str> {
    report
        .lines()
        .skip_while(|l| !l.starts_with(&format!("{title} (")))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(str::trim)
        .collect()
}

const EVERY_CLASS: &str = "worker_processes 2;
http {
    upstream app {
        ip_hash;
        server 127.0.0.1:1 slow_start=10s;
    }
    server {
        listen 127.0.0.1:8443 ssl http2;
        ssl_certificate CONF/demo-cert.pem;
        ssl_certificate_key CONF/demo-key.pem;
        gzip on;
        location / {
            proxy_pass http://app;
            proxy_read_timeout 30s;
            proxy_set_header X-Custom yes;
            proxy_hide_header X-Secret;
        }
    }
}
";

/// Every class of the report, each line with its file:line; exit 0 with no errors.
#[test]
fn check_nginx_prints_every_directive_by_class_with_file_and_line() {
    let conf = EVERY_CLASS.replace("CONF", concat!(env!("CARGO_MANIFEST_DIR"), "/conf"));
    let (_dir, path) = site(&conf);
    let at = |text: &str| format!("{}:{}", path.display(), line_of(&conf, text));
    let out = tideway(&["check", "--nginx"], &path);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = group(&report, "read");
    for (text, name) in [
        ("proxy_pass", "proxy_pass"),
        ("proxy_read_timeout", "proxy_read_timeout"),
        ("listen", "listen"),
        ("ssl_certificate ", "ssl_certificate"),
        ("location /", "location"),
        ("X-Custom", "proxy_set_header"),
    ] {
        let want = format!("{}: \"{name}\"", at(text));
        assert!(
            read.contains(&want.as_str()),
            "{want} not read in:\n{report}"
        );
    }
    let approximated = group(&report, "approximated");
    // `listen ... ssl http2` is read: the listener offers HTTP/2.
    assert!(
        !approximated.iter().any(|l| l.contains("\"http2\"")),
        "{report}"
    );
    for (text, name) in [("ip_hash", "ip_hash"), ("slow_start", "slow_start")] {
        let want = format!("{}: \"{name}\"", at(text));
        assert!(
            approximated.iter().any(|l| l.starts_with(&want)),
            "{want} not approximated in:\n{report}"
        );
    }
    assert!(
        group(&report, "no effect on traffic")
            .iter()
            .any(|l| l.starts_with(&format!("{}: \"worker_processes\"", at("worker_processes")))),
        "{report}"
    );
    let ignored = group(&report, "ignored");
    for (text, name) in [("gzip", "gzip"), ("X-Secret", "proxy_hide_header")] {
        let want = format!("{}: \"{name}\"", at(text));
        assert!(
            ignored.iter().any(|l| l.starts_with(&want)),
            "{want} not ignored in:\n{report}"
        );
    }
    assert!(group(&report, "errors").is_empty(), "{report}");
    assert!(
        report.contains(": ok (1 listeners, 1 upstreams)"),
        "{report}"
    );

    // --strict: each ignored directive is an error, with its file:line; exit 1.
    let out = tideway(&["check", "--strict", "--nginx"], &path);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for (text, name) in [("gzip", "gzip"), ("X-Secret", "proxy_hide_header")] {
        assert!(
            err.contains(&format!("{}: \"{name}\"", at(text))) && err.contains("--strict"),
            "{err}"
        );
    }
    // What has no effect on traffic is not refused.
    assert!(!err.contains("worker_processes"), "{err}");
    let strict = tideway::nginx::Options {
        strict: true,
        ..Default::default()
    };
    assert!(tideway::nginx::import_with(&path, strict).is_err());
    // And `run --strict` refuses to start.
    let out = tideway(&["run", "--strict", "--nginx"], &path);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gzip"));
}

const CONTENT: &str = "http {
    upstream app { server BACKEND; }
    server {
        listen 127.0.0.1:PORT;
        root /var/www;
        location / {
            try_files $uri /index.php;
        }
        location ~ \\.php$ {
            fastcgi_pass 127.0.0.1:9000;
        }
        location /api/ {
            proxy_pass http://app;
        }
        location /files/ {
        }
        location /dyn/ {
            proxy_pass http://$host;
        }
        location = /ping {
            return 200 pong;
        }
    }
}
";

/// Content nginx serves itself fails the import at the line that decides it; with
/// --skip-unproxied those locations stay in the route table answering 404, and everything else
/// is proxied as before.
#[tokio::test]
async fn unproxied_locations_fail_the_import_unless_skipped_then_answer_404() {
    let b = backend("api").await;
    let port = free_port();
    let conf = CONTENT
        .replace("BACKEND", &b.addr.to_string())
        .replace("PORT", &port.to_string());
    let (dir, path) = site(&conf);
    let at = |text: &str| format!("{}:{}", path.display(), line_of(&conf, text));
    let err = tideway::nginx::import(&path).unwrap_err().to_string();
    for (text, name) in [
        ("try_files", "try_files"),
        ("fastcgi_pass", "fastcgi_pass"),
        ("location /files/", "location"),
        ("$host", "proxy_pass"),
    ] {
        assert!(
            err.contains(&format!("{}: \"{name}\"", at(text))),
            "{name} at {}: {err}",
            at(text)
        );
    }
    assert!(!err.contains(&at("location /api/")), "{err}");
    // `root` at the server level changes nothing for the proxied locations.
    assert!(!err.contains(&at("root")), "{err}");

    let out = tideway(&["check", "--skip-unproxied", "--nginx"], &path);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let skipped = group(&report, "skipped");
    assert_eq!(skipped.len(), 4, "{report}");
    assert!(skipped.iter().all(|l| l.contains("404")), "{report}");

    let _t = start_tideway_nginx(&path, dir.path(), &["--skip-unproxied"]);
    wait_port(port).await;
    let client = reqwest::Client::new();
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    assert_eq!(backend_id(&client, &url("/api/x")).await, "api");
    for p in ["/", "/index.php", "/api/x.php", "/files/a", "/dyn/"] {
        let r = client.get(url(p)).send().await.unwrap();
        // `/api/x.php`: the regex location wins in nginx too, so it is not proxied.
        assert_eq!(r.status(), 404, "{p}");
    }
    let r = client.get(url("/ping")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "pong");
}

/// `listen ... udp` fails the import with file:line, and with --skip-unproxied is left out:
/// nothing listens on that port over TCP, while the TCP server next to it runs.
#[tokio::test]
async fn a_udp_listen_never_becomes_a_tcp_listener() {
    let b = backend("tcp").await;
    let (udp, tcp) = (free_port(), free_port());
    let conf = format!(
        "stream {{\n    server {{\n        listen 127.0.0.1:{udp} udp;\n        proxy_pass 127.0.0.1:53;\n    }}\n    server {{\n        listen 127.0.0.1:{tcp};\n        proxy_pass {};\n    }}\n}}\n",
        b.addr
    );
    let (dir, path) = site(&conf);
    let err = tideway::nginx::import(&path).unwrap_err().to_string();
    assert!(
        err.contains(&format!("{}:3: \"udp\"", path.display())),
        "{err}"
    );
    let skip = tideway::nginx::Options {
        skip_unproxied: true,
        ..Default::default()
    };
    let got = tideway::nginx::import_with(&path, skip).unwrap();
    assert!(!got.toml.contains(&udp.to_string()), "{}", got.toml);
    assert!(
        got.warnings
            .iter()
            .any(|w| w.starts_with(&format!("{}:3: \"udp\"", path.display()))),
        "{:?}",
        got.warnings
    );
    let _t = start_tideway_nginx(&path, dir.path(), &["--skip-unproxied"]);
    wait_port(tcp).await;
    let e = tokio::net::TcpStream::connect(("127.0.0.1", udp))
        .await
        .expect_err("a TCP listener on the udp listen's port");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
}

/// A routing clash and a clash of listeners are reported at the nginx file:line, never at a
/// `*.converted.toml` that does not exist.
#[test]
fn validation_errors_name_the_nginx_file_and_line() {
    let clash = "http {
    upstream app { server 127.0.0.1:1; }
    server {
        listen 127.0.0.1:8080;
        location / { proxy_pass http://app; }
    }
    server {
        listen 127.0.0.1:8080;
        location / { proxy_pass http://app; }
    }
}
";
    let (_dir, path) = site(clash);
    let e = tideway::nginx::load(&path).unwrap_err().to_string();
    assert!(!e.contains("converted"), "{e}");
    let want = format!("{}:7: server_name \"\" is another server's", path.display());
    assert!(e.starts_with(&want), "{e}");
    let out = tideway(&["check", "--nginx"], &path);
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        group(&report, "errors")
            .iter()
            .any(|l| l.starts_with(&want)),
        "{report}"
    );
    // Names in another order are the same clash.
    let names = clash
        .replacen(
            "listen 127.0.0.1:8080;",
            "listen 127.0.0.1:8080; server_name a b;",
            1,
        )
        .replacen(
            "listen 127.0.0.1:8080;\n        location",
            "listen 127.0.0.1:8080; server_name c B;\n        location",
            1,
        );
    let (_dir, path) = site(&names);
    let e = tideway::nginx::load(&path).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}:7: server_name b is another", path.display())),
        "{e}"
    );

    let twice = "http {
    upstream app { server 127.0.0.1:1; }
    server {
        listen 127.0.0.1:8081;
        location / { proxy_pass http://app; }
    }
}
stream {
    server {
        listen 127.0.0.1:8081;
        proxy_pass 127.0.0.1:2;
    }
}
";
    let (_dir, path) = site(twice);
    let e = tideway::nginx::load(&path).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}:10: ", path.display())) && e.contains("listed twice"),
        "{e}"
    );
}

/// `listen ... ssl` in a stream server (TLS termination tideway's stream import does not do)
/// is an error.
#[test]
fn tls_tideway_cannot_do_is_an_error() {
    let conf = "stream {\n    server {\n        listen 127.0.0.1:9000 ssl;\n        proxy_pass 127.0.0.1:2;\n    }\n}\n";
    let (_dir, path) = site(conf);
    let e = tideway::nginx::import(&path).unwrap_err().to_string();
    assert!(e.contains(&format!("{}:3: \"ssl\"", path.display())), "{e}");
}

/// `proxy_ssl on` in a stream server makes its upstream's `tls`, nginx's defaults kept and
/// the stream block's settings inherited; one upstream reached with and without TLS is an
/// error.
#[test]
fn stream_proxy_ssl_becomes_the_upstreams_tls() {
    let conf = "stream {
    upstream app { server 127.0.0.1:9443; }
    proxy_ssl_trusted_certificate ca.pem;
    server {
        listen 127.0.0.1:9000;
        proxy_ssl on;
        proxy_ssl_verify on;
        proxy_pass app;
    }
    server {
        listen 127.0.0.1:9001;
        proxy_ssl on;
        proxy_pass 127.0.0.1:9444;
    }
}
";
    let (dir, path) = site(conf);
    let toml = tideway::nginx::import(&path).unwrap().toml;
    let ca = dir.path().join("ca.pem");
    assert!(
        toml.contains(&format!(
            "tls = {{ verify = true, ca = {:?}, server_name = \"app\", sni = false }}",
            ca.display().to_string()
        )),
        "{toml}"
    );
    assert!(
        toml.contains("tls = { verify = false, server_name = \"127.0.0.1\", sni = false }"),
        "{toml}"
    );

    let both = conf.replace(
        "proxy_pass 127.0.0.1:9444;",
        "proxy_ssl off;\n        proxy_pass app;",
    );
    let (_dir, path) = site(&both);
    let e = tideway::nginx::import(&path).unwrap_err().to_string();
    // At the second proxy_pass to it.
    let lines: Vec<&str> = both.lines().collect();
    let at = lines
        .iter()
        .rposition(|l| l.contains("proxy_pass app;"))
        .unwrap()
        + 1;
    assert!(
        e.contains(&format!("{}:{at}: ", path.display())) && e.contains("another scheme"),
        "{e}"
    );
}

/// `listen ... ssl http2` and `http2 on` turn on a TLS listener's HTTP/2, the stream cap and
/// the header buffers become its limits; on a plain listener `http2 on` is approximated (no
/// h2c); a value tideway cannot take fails the import at its file:line.
#[test]
fn http2_and_header_buffers_become_the_listeners() {
    let conf = "http {
    http2 on;
    upstream app { server 127.0.0.1:1; }
    server {
        listen 127.0.0.1:8443 ssl;
        ssl_certificate CONF/demo-cert.pem;
        ssl_certificate_key CONF/demo-key.pem;
        http2_max_concurrent_streams 16;
        large_client_header_buffers 2 4k;
        location / { proxy_pass http://app; }
    }
    server {
        listen 127.0.0.1:8080;
        location / { proxy_pass http://app; }
    }
}
"
    .replace("CONF", concat!(env!("CARGO_MANIFEST_DIR"), "/conf"));
    let (_dir, path) = site(&conf);
    let at = |text: &str| format!("{}:{}", path.display(), line_of(&conf, text));
    let (config, warnings) = tideway::nginx::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let tls = &config.listeners[0];
    assert_eq!(tls.listen.to_string(), "127.0.0.1:8443");
    assert!(tls.http2);
    let l = &tls.limits;
    assert_eq!(
        (
            l.max_concurrent_streams,
            l.max_request_line,
            l.max_header_line,
            l.max_head
        ),
        (16, 4096, 4096, 8192)
    );
    let plain = &config.listeners[1];
    assert!(!plain.http2);
    assert_eq!(plain.limits, tideway::config::HttpLimits::default());
    // The http-level `http2 on` also reaches the plain listener: approximated, with its line.
    let want = format!("{}: \"http2\" on a listener without ssl", at("http2 on"));
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with(&want) && w.contains("h2c")),
        "{warnings:?}"
    );
    let out = tideway(&["check", "--nginx"], &path);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}");
    for (text, name) in [
        ("http2_max", "http2_max_concurrent_streams"),
        ("large_client", "large_client_header_buffers"),
    ] {
        let want = format!("{}: \"{name}\"", at(text));
        assert!(group(&report, "read").contains(&want.as_str()), "{report}");
    }

    for (bad, why) in [
        ("http2_max_concurrent_streams 0;", "must be at least 1"),
        ("large_client_header_buffers 0 8k;", "invalid value"),
        ("http2 maybe;", "takes on or off"),
    ] {
        let conf = conf.replace("http2_max_concurrent_streams 16;", bad);
        let (_dir, path) = site(&conf);
        let e = tideway::nginx::load(&path).unwrap_err().to_string();
        let want = format!("{}:{}: \"", path.display(), line_of(&conf, bad));
        assert!(e.contains(&want) && e.contains(why), "{bad}: {e}");
    }
}
