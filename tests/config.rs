//! Every example in conf/ loads, and `tideway check` reports bad configs with file:line.

use std::path::Path;
use std::process::Command;

#[test]
fn every_example_in_conf_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            tideway::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 2, "expected the conf/ examples, found {n}");
}

fn check(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path.display().to_string(),
    )
}

#[test]
fn check_names_file_line_and_what_was_expected() {
    let cases = [
        (
            "[upstream.app]\nbalance = \"fastest\"\n",
            ":2:11: unknown balance \"fastest\"; expected one of: round_robin, least_conn, p2c, hash",
        ),
        ("[upstream.app]\nbackends = [{ addr = \"nowhere\" }]\n", ":2:22: invalid address \"nowhere\""),
        ("[upstream.app]\ndrain_timeout = \"soon\"\n", ":2:17: invalid duration \"soon\""),
        ("[upstream.app]\ncolour = \"blue\"\n", ":2:1: unknown field `colour`"),
        (
            "[[listener]]\nlisten = \"127.0.0.1:1\"\nupstream = \"nope\"\n",
            ":3:12: unknown upstream \"nope\"",
        ),
        (
            "[upstream.app]\nbackends = [{ addr = \"127.0.0.1:1\", weight = 0 }]\n",
            ":2:46: weight must be between 1 and 1000",
        ),
        (
            "[upstream.app]\nscale = { target_per_backend = 1 }\n[upstream.app.autoscale]\nexec = \"true\"\nenv = [\"LANG\", \"TIDEWAY_ADMIN_TOKEN\"]\n",
            ":5:16: autoscale.env may not list TIDEWAY_ADMIN_TOKEN: the tokens never reach the hook",
        ),
        (
            "[upstream.app]\nscale = { target_per_backend = 1 }\n[upstream.app.autoscale]\nexec = \"true\"\nenv = [\"TIDEWAY_REGISTER_TOKEN\"]\n",
            ":5:8: autoscale.env may not list TIDEWAY_REGISTER_TOKEN",
        ),
        (
            "[upstream.app]\nscale = { target_per_backend = 1 }\n[upstream.app.autoscale]\nwebhook = \"http://127.0.0.1:1/\"\nenv = [\"LANG\"]\n",
            ":5:7: autoscale.env applies to exec only",
        ),
    ];
    for (text, expected) in cases {
        let (code, stderr, path) = check(text);
        assert_eq!(code, 1, "{text}");
        assert!(stderr.starts_with(&path), "{stderr}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr:?}"
        );
    }
}

#[test]
fn check_accepts_a_good_config() {
    let (code, stderr, _) = check("[upstream.app]\nbackends = [{ addr = \"127.0.0.1:2346\" }]\n");
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn tls_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let (code, stderr, _) = check(&format!(
        "[[listener]]\nlisten = \"127.0.0.1:1\"\nupstream = \"app\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n[upstream.app]\n",
        missing.display(),
        missing.display()
    ));
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!("{}: cannot read certificates", missing.display())),
        "{stderr}"
    );

    // A certificate with another certificate's key.
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let other = rcgen::generate_simple_self_signed(vec!["x.test".into()]).unwrap();
    let wrong_key = dir.path().join("wrong.key");
    std::fs::write(&wrong_key, other.key_pair.serialize_pem()).unwrap();
    let (code, stderr, _) = check(&format!(
        "[[listener]]\nlisten = \"127.0.0.1:1\"\nupstream = \"app\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n[upstream.app]\n",
        here.join("conf/demo-cert.pem").display(),
        wrong_key.display()
    ));
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!("{}: key does not match", wrong_key.display())),
        "{stderr}"
    );
}

/// A server's own certificate (a route's `tls`): every server of a TLS listener needs one
/// (its own or the listener's), a server names one, and a nested route none; each error
/// points at its line.
#[test]
fn route_tls_errors_point_at_the_route() {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let tls = format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}\n",
        here.join("conf/demo-cert.pem").display(),
        here.join("conf/demo-key.pem").display()
    );
    let other = rcgen::generate_simple_self_signed(vec!["x.test".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (oc, ok) = (dir.path().join("o.pem"), dir.path().join("o.key"));
    std::fs::write(&oc, other.cert.pem()).unwrap();
    std::fs::write(&ok, other.key_pair.serialize_pem()).unwrap();
    let other_tls = format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}\n",
        oc.display(),
        ok.display()
    );
    let head = "[upstream.app]\nbackends = [{ addr = \"127.0.0.1:2346\" }]\n[[listener]]\nlisten = \"127.0.0.1:1\"\n";
    let route = |host: &str, extra: &str| {
        format!("[[listener.route]]\nhost = [\"{host}\"]\nupstream = \"app\"\n{extra}")
    };
    // Two servers, one without a certificate: the listener (line 4) says which.
    let (code, stderr, _) = check(&format!(
        "{head}{}{}",
        route("a.test", &tls),
        route("b.test", "")
    ));
    assert_eq!(code, 1);
    assert!(
        stderr.contains(":4:10: the server with host [\"b.test\"] has no certificate"),
        "{stderr}"
    );
    // Both with one: valid; with the listener's tls, b takes it.
    let (code, stderr, _) = check(&format!(
        "{head}{}{}",
        route("a.test", &tls),
        route("b.test", &tls)
    ));
    assert_eq!(code, 0, "{stderr}");
    let (code, stderr, _) = check(&format!(
        "{head}{tls}{}{}",
        route("a.test", &other_tls),
        route("b.test", "")
    ));
    assert_eq!(code, 0, "{stderr}");
    // Two certificates for one server (line 12 is the second route's tls).
    let (code, stderr, _) = check(&format!(
        "{head}{}{}",
        route("a.test", &tls),
        route("a.test", &other_tls)
    ));
    assert_eq!(code, 1);
    assert!(
        stderr.contains(":12:7: another route of this server"),
        "{stderr}"
    );
    // A nested route's certificate.
    let nested = format!("[[listener.route.route]]\npath = \"/n/\"\nupstream = \"app\"\n{tls}");
    let (code, stderr, _) = check(&format!("{head}{}{nested}", route("a.test", &tls)));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("tls belongs to a top-level route"),
        "{stderr}"
    );
}

/// Each of `cases` (a line added to the config `base`, the message expected) is refused by
/// `tideway check` with the config's path first.
fn refused(base: &str, cases: &[(&str, &str)]) {
    for (extra, expected) in cases {
        let (code, stderr, path) = check(&format!("{base}{extra}\n"));
        assert_eq!(code, 1, "{extra}");
        assert!(stderr.starts_with(&path), "{stderr}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr:?}"
        );
    }
}

#[test]
fn real_ip_and_proxy_protocol_errors_say_what_was_expected() {
    let l = "[upstream.app]\nbackends = [{ addr = \"127.0.0.1:2346\" }]\n[[listener]]\nlisten = \"127.0.0.1:1\"\nupstream = \"app\"\n";
    let cases = [
        (
            "real_ip = { from = [\"10.0.0.0/33\"] }",
            ":6:11: real_ip.from: invalid address range \"10.0.0.0/33\"",
        ),
        (
            "real_ip = { from = [\"10.0.0.0/8\"], header = \"CF-Connecting-IP\" }",
            ":6:11: real_ip.header \"CF-Connecting-IP\": expected \"X-Real-IP\", \"X-Forwarded-For\" or \"proxy_protocol\"",
        ),
        (
            "real_ip = { from = [\"10.0.0.0/8\"], header = \"proxy_protocol\" }",
            ":6:11: real_ip.header = \"proxy_protocol\" needs proxy_protocol = true",
        ),
        (
            "protocol = \"tcp\"\nreal_ip = { from = [\"10.0.0.0/8\"], header = \"X-Forwarded-For\" }",
            ":7:11: a tcp listener has no headers",
        ),
        ("proxy_protocol = \"v1\"", ":6:18: invalid type: string \"v1\", expected a boolean"),
        ("real_ip = { from = [], hdr = \"X-Real-IP\" }", "unknown field `hdr`"),
    ];
    refused(l, &cases);
    let good = "proxy_protocol = true\nreal_ip = { from = [\"10.0.0.0/8\", \"192.168.1.7\"], header = \"proxy_protocol\" }";
    let (code, stderr, _) = check(&format!("{l}{good}\n"));
    assert_eq!(code, 0, "{stderr}");
}

/// `http2 = true` needs TLS on its listener, and `limits.max_concurrent_streams` must be at
/// least 1: each refused at its file:line; with TLS and a cap, both are taken.
#[test]
fn http2_needs_tls_and_a_stream_cap_of_at_least_one() {
    let l = "[upstream.app]\nbackends = [{ addr = \"127.0.0.1:2346\" }]\n[[listener]]\nlisten = \"127.0.0.1:1\"\nupstream = \"app\"\n";
    let cases = [
        (
            "http2 = true",
            ":6:9: http2 = true needs tls on the listener",
        ),
        (
            "limits = { max_concurrent_streams = 0 }",
            ":6:10: limits.max_concurrent_streams must be at least 1",
        ),
        (
            "http2 = \"h2\"",
            ":6:9: invalid type: string \"h2\", expected a boolean",
        ),
    ];
    refused(l, &cases);
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tls = format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}\nhttp2 = true\nlimits = {{ max_concurrent_streams = 16 }}\n",
        here.join("conf/demo-cert.pem").display(),
        here.join("conf/demo-key.pem").display()
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h2.toml");
    std::fs::write(&path, format!("{l}{tls}")).unwrap();
    let config = tideway::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let listener = &config.listeners[0];
    assert!(listener.http2);
    assert_eq!(listener.limits.max_concurrent_streams, 16);
    // Without the key: off, and nginx's cap of 128.
    std::fs::write(
        &path,
        format!(
            "{l}{}",
            tls.replace("http2 = true\n", "")
                .replace("limits = { max_concurrent_streams = 16 }\n", "")
        ),
    )
    .unwrap();
    let config = tideway::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(!config.listeners[0].http2);
    assert_eq!(
        config.listeners[0].limits.max_concurrent_streams,
        tideway::config::DEFAULT_MAX_CONCURRENT_STREAMS
    );
}

/// `limits.send_timeout` (nginx's `send_timeout`): a duration more than 0, 60 s when absent;
/// 0 or a word is refused at its file:line.
#[test]
fn send_timeout_is_a_positive_duration() {
    let l = "[upstream.app]\nbackends = [{ addr = \"127.0.0.1:2346\" }]\n[[listener]]\nlisten = \"127.0.0.1:1\"\nupstream = \"app\"\n";
    refused(
        l,
        &[
            (
                "limits = { send_timeout = \"0s\" }",
                ":6:10: limits.send_timeout must be more than 0",
            ),
            ("limits = { send_timeout = \"soon\" }", "invalid duration"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    for (keys, want) in [
        ("limits = { send_timeout = \"5s\" }\n", 5),
        ("", tideway::config::DEFAULT_CLIENT_SEND_TIMEOUT.as_secs()),
    ] {
        std::fs::write(&path, format!("{l}{keys}")).unwrap();
        let config = tideway::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.listeners[0].limits.send_timeout.as_secs(), want);
    }
}
