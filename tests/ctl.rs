//! `tideway ctl` with the register token and a registration's secret, as a Kubernetes preStop
//! hook runs it: a demo backend registers and keeps its secret in a file; ctl drains it
//! (waiting) and deregisters it with that secret, and without the secret it may not.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn ctl(p: &Proxy, secret: Option<&std::path::Path>, args: &[&str]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tideway"));
    c.args([
        "ctl",
        "--admin",
        &p.admin_url(""),
        "--token",
        REGISTER_TOKEN,
    ]);
    if let Some(f) = secret {
        c.arg("--secret-file").arg(f);
    }
    c.args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_drains_and_deregisters_itself_with_its_secret_file() {
    let p = start_proxy("[upstream.app]\nbalance = \"round_robin\"\n").await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    let port = free_port();
    // Killed when dropped, so a failed assertion does not leave it heartbeating.
    let _backend = Killed(
        Command::new(env!("CARGO_BIN_EXE_tideway"))
            .args([
                "demo-backend",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--id",
                "pod-1",
                "--register",
                &p.admin_url(""),
                "--upstream",
                "app",
                "--secret-file",
            ])
            .arg(&secret)
            .env("TIDEWAY_REGISTER_TOKEN", REGISTER_TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(20), || async {
        secret.exists() && p.backends().await.len() == 1
    })
    .await;
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Without the secret, the register token may not touch it.
    let refused = ctl(&p, None, &["drain", "app", "pod-1"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("403"));

    // A spread that is no duration is refused, and the backend stays as it was.
    let bad = ctl(
        &p,
        Some(&secret),
        &["drain", "app", "pod-1", "--spread", "soon"],
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("400"),
        "{bad:?}"
    );
    assert_eq!(p.backends().await[0].2, "active");

    let drained = ctl(
        &p,
        Some(&secret),
        &["drain", "app", "pod-1", "--wait", "5s", "--spread", "1s"],
    );
    assert!(drained.status.success(), "{drained:?}");
    let v: serde_json::Value = serde_json::from_slice(&drained.stdout).unwrap();
    assert_eq!(v["drained"], true, "{v}");
    assert_eq!(v["close_spread_ms"], 1000, "{v}");
    let gone = ctl(&p, Some(&secret), &["deregister", "app", "pod-1"]);
    assert!(gone.status.success(), "{gone:?}");
    wait_until(Duration::from_secs(10), || async {
        p.backends().await.is_empty()
    })
    .await;
}
