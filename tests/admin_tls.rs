//! The admin API over TLS with client certificates (`[admin] tls = { cert, key, client_ca }`),
//! and `tideway ctl` reaching it with `--ca`, `--cert` and `--key`: a real tideway process,
//! certificates from CAs of the test's own.

mod common;
#[path = "support/tls_backend.rs"]
mod tls_backend;

use common::nginx::wait_port;
use common::*;
use std::process::Command;
use tideway::cli::admin_tls::{client, AdminTlsArgs};
use tls_backend::TestCa;

/// `tideway ctl --admin URL ARGS list`: its exit status, stdout and stderr.
fn ctl(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args(["ctl", "--admin", url])
        .args(args)
        .arg("list")
        .env("TIDEWAY_ADMIN_TOKEN", ADMIN_TOKEN)
        .env_remove("TIDEWAY_ADMIN_CA")
        .env_remove("TIDEWAY_ADMIN_CERT")
        .env_remove("TIDEWAY_ADMIN_KEY")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A tideway in `d` whose admin API is on TLS with client certificates: the process, the
/// config file, the admin URL, and the `ctl` arguments of a client it accepts.
async fn start(d: &std::path::Path) -> (Killed, std::path::PathBuf, String, [String; 6]) {
    let ca = TestCa::new(d, "server-ca");
    let (cert, key) = ca.issue_files(d, "admin.test");
    let clients = TestCa::new(d, "client-ca");
    let (ccert, ckey) = clients.issue_files(d, "operator.test");
    let (admin, http) = (free_port(), free_port());
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\ntls = {{ cert = {:?}, key = {:?}, client_ca = {:?} }}\n\n[store]\ndata_dir = {:?}\n\n[[listener]]\nlisten = \"127.0.0.1:{http}\"\nupstream = \"app\"\n\n[upstream.app]\nbackends = []\n",
        cert.display().to_string(),
        key.display().to_string(),
        clients.pem.display().to_string(),
        d.join("data").display().to_string(),
    );
    let path = d.join("tideway.toml");
    std::fs::write(&path, config).unwrap();
    let process = Killed(spawn_tideway_with(&path, d, &[]));
    wait_port(admin).await;
    let url = format!("https://127.0.0.1:{admin}");
    let args = [
        "--ca",
        &p(&ca.pem),
        "--cert",
        &p(&ccert),
        "--key",
        &p(&ckey),
    ]
    .map(String::from);
    (process, path, url, args)
}

/// `args` as `&str`s.
fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[tokio::test]
async fn the_admin_api_over_tls_answers_only_clients_with_a_certificate_its_ca_signed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_p, _, url, args) = start(d).await;
    let stranger = TestCa::new(d, "stranger-ca");
    std::fs::create_dir(d.join("strangers")).unwrap();
    let (scert, skey) = stranger.issue_files(&d.join("strangers"), "operator.test");
    let (ca, ccert, ckey) = (args[1].as_str(), args[3].as_str(), args[5].as_str());

    // The right CA and a client certificate: the API answers.
    let (ok, out, err) = ctl(&url, &strs(&args));
    assert!(ok, "{err}");
    assert!(out.contains("\"app\""), "{out}");
    let with_cert = AdminTlsArgs {
        ca: Some(ca.into()),
        cert: Some(ccert.into()),
        key: Some(ckey.into()),
    };
    let r = client(&with_cert, &url)
        .unwrap()
        .get(format!("{url}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // No client certificate, one another CA signed, or a server the client cannot trust.
    let (scert, skey) = (p(&scert), p(&skey));
    for (args, why) in [
        (vec!["--ca", ca], "no client certificate"),
        (
            vec!["--ca", ca, "--cert", &scert, "--key", &skey],
            "a stranger's certificate",
        ),
        (
            vec!["--cert", ccert, "--key", ckey],
            "the system's CAs do not know the server",
        ),
    ] {
        let (ok, out, err) = ctl(&url, &args);
        assert!(!ok, "{why}: {out}");
        assert!(err.contains("cannot reach"), "{why}: {err}");
    }
    // Plain HTTP gets no answer.
    let plain = reqwest::get(url.replace("https://", "http://") + "/healthz").await;
    assert!(plain.is_err(), "{plain:?}");
    let log = std::fs::read_to_string(d.join("tideway.log")).unwrap();
    assert!(!log.contains(ADMIN_TOKEN));
}

/// A binary upgrade hands the admin listener over: the new process serves it over TLS with
/// the same client certificate check.
#[tokio::test]
async fn after_a_binary_upgrade_the_admin_api_is_still_on_tls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (mut old, path, url, args) = start(d).await;
    let new = Killed(spawn_tideway_with(&path, d, &["--upgrade"]));
    let sock = d.join("data").join("upgrade.sock");
    wait_until(std::time::Duration::from_secs(20), || async {
        sock.exists()
    })
    .await;
    Command::new("kill")
        .args(["-USR2", &old.0.id().to_string()])
        .status()
        .unwrap();
    let exited = exit_within(&mut old.0, std::time::Duration::from_secs(15)).await;
    assert!(exited.is_some(), "the old process exits");
    let (ok, out, err) = ctl(&url, &strs(&args));
    assert!(ok, "{err}");
    assert!(out.contains("\"app\""), "{out}");
    let (ok, _, _) = ctl(&url, &strs(&args[..2]));
    assert!(!ok, "still no answer without a client certificate");
    drop(new);
}

/// A key that does not match its certificate, or a client CA file with no certificate, is
/// a config error naming the file.
#[test]
fn bad_admin_tls_files_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = TestCa::new(d, "ca");
    let (cert, _) = ca.issue_files(d, "a.test");
    let (_, other_key) = ca.issue_files(d, "b.test");
    let empty = d.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let key = d.join("a.test.key");
    for (tls, expected) in [
        (
            format!("{{ cert = {:?}, key = {:?} }}", p(&cert), p(&other_key)),
            "does not match",
        ),
        (
            format!(
                "{{ cert = {:?}, key = {:?}, client_ca = {:?} }}",
                p(&cert),
                p(&key),
                p(&empty)
            ),
            "empty.pem",
        ),
    ] {
        let text = format!("[admin]\ntls = {tls}\n");
        let e = tideway::config::parse(&text, &d.join("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(expected) && e.contains(":2:"), "{e}");
    }
}

fn p(f: &std::path::Path) -> String {
    f.display().to_string()
}

/// `--ca`, `--cert` or `--key` with an http:// admin URL is refused before a byte is sent:
/// the listener at that URL (which would read a request and close) sees no connection.
#[test]
fn tls_options_with_an_http_admin_url_are_an_error_and_nothing_is_sent() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ca");
    let (cert, key) = ca.issue_files(dir.path(), "operator.test");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let recorded = seen.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            recorded.lock().unwrap().push(head);
        }
    });
    for args in [
        vec!["--ca".to_string(), p(&ca.pem)],
        vec!["--cert".to_string(), p(&cert), "--key".to_string(), p(&key)],
    ] {
        let (ok, _, err) = ctl(&url, &strs(&args));
        assert!(!ok);
        assert!(
            err.contains("not https://") && err.contains("in clear"),
            "{err}"
        );
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "{:?}",
        seen.lock().unwrap()
    );
}
