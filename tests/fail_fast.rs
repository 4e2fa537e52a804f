//! Fail fast and be exclusive (issue 23), with real processes:
//!
//! - a traffic listener whose port another socket holds ends the start: non-zero status and
//!   the address on stderr, within a bounded wait (a reload with a taken port is refused and
//!   changes nothing: `tests/reload_atomic.rs`);
//! - a second instance on the admin address of a running one is refused (a binary upgrade's
//!   `--upgrade` hand-over still takes it: `tests/upgrade.rs`);
//! - `tideway ctl list` piped into a reader that closes after one line ends quietly;
//! - a static backend that never passes its first health check is logged at warn level with
//!   the check's error, once over many failed checks.

mod common;

use common::*;
use std::io::{BufRead, Read};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A config with one listener on `listen` and its admin API on `admin`.
fn write_config(
    dir: &std::path::Path,
    listen: SocketAddr,
    admin: SocketAddr,
) -> std::path::PathBuf {
    let path = dir.join("tideway.toml");
    let text = format!(
        "[admin]\nlisten = \"{admin}\"\n\n[store]\ndata_dir = \"{}\"\n\n[[listener]]\nlisten = \"{listen}\"\nupstream = \"app\"\n\n[upstream.app]\nbackends = [{{ addr = \"127.0.0.1:9\" }}]\n",
        dir.join("data").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn local(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

#[tokio::test]
async fn a_taken_traffic_port_ends_the_start_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = local(free_port());
    let _holder = std::net::TcpListener::bind(taken).unwrap();
    let config = write_config(dir.path(), taken, local(free_port()));
    let mut child = spawn_tideway_with(&config, dir.path(), &[]);
    let status = exit_within(&mut child, Duration::from_secs(5))
        .await
        .expect("tideway still runs 5 s after its port was found taken");
    assert!(!status.success(), "{status:?}");
    let stderr = std::fs::read_to_string(dir.path().join("tideway.log")).unwrap();
    assert!(
        stderr.contains(&format!("listener {taken} cannot bind"))
            && stderr.contains("Address already in use"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_the_same_admin_address_is_refused() {
    let a = backend("a").await;
    let first = start_proxy(&format!("[upstream.app]\n{}", backends_toml(&[(&a, 1)]))).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), local(free_port()), first.admin);
    let mut second = spawn_tideway_with(&config, dir.path(), &[]);
    let status = exit_within(&mut second, Duration::from_secs(5))
        .await
        .expect("a second instance on a taken admin address still runs after 5 s");
    assert!(!status.success(), "{status:?}");
    let stderr = std::fs::read_to_string(dir.path().join("tideway.log")).unwrap();
    assert!(
        stderr.contains(&format!(
            "admin listener {}: the address is in use",
            first.admin
        )),
        "{stderr}"
    );
    // Every admin answer still comes from the first, with its token.
    for _ in 0..12 {
        let r = first
            .admin_req(reqwest::Method::GET, "/v1/upstreams", ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_list_into_a_reader_that_stops_after_one_line_ends_quietly() {
    // Enough backends that the answer is far larger than a pipe holds: the writes after the
    // reader has gone meet a broken pipe.
    let backends: Vec<String> = (0..1500)
        .map(|i| format!("{{ addr = \"127.0.0.1:{}\", id = \"b{i}\" }}", 20000 + i))
        .collect();
    let p = start_proxy(&format!(
        "[upstream.app]\nbackends = [\n{}\n]\n",
        backends.join(",\n")
    ))
    .await;
    let ctl = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tideway"));
        c.args([
            "ctl",
            "--admin",
            &p.admin_url(""),
            "--token",
            ADMIN_TOKEN,
            "list",
        ]);
        c
    };
    let whole = ctl().output().unwrap();
    assert!(whole.status.success(), "{whole:?}");
    // Four times what a Linux pipe holds by default (64 KiB).
    assert!(
        whole.stdout.len() > 256 << 10,
        "{} bytes",
        whole.stdout.len()
    );

    let mut child = ctl()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "{\n");
    drop(reader);
    let status = exit_within(&mut child, Duration::from_secs(30))
        .await
        .expect("ctl exits");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{status:?} {stderr}");
    assert_eq!(stderr, "", "nothing on stderr");
}

/// A backend that answers every request 503 and counts the connections (one per check).
async fn unhealthy_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let checks = Arc::new(AtomicUsize::new(0));
    let counted = checks.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                counted.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, checks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_never_healthy_is_logged_once_with_its_error() {
    let (addr, checks) = unhealthy_backend().await;
    let p = start_proxy(&format!(
        "[upstream.app]\nhealth = {{ kind = \"http\", path = \"/health\", interval = \"100ms\", timeout = \"500ms\", rise = 2, fall = 2 }}\nbackends = [{{ addr = \"{addr}\", id = \"sick\" }}]\n"
    ))
    .await;
    // Many failed checks: the warning came at the second, and never again.
    wait_until(Duration::from_secs(20), || async {
        checks.load(Ordering::SeqCst) >= 10
    })
    .await;
    assert_eq!(p.health().await.get("sick"), Some(&false));
    let log = std::fs::read_to_string(p.dir.path().join("tideway.log")).unwrap();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("never passed a health check"))
        .collect();
    assert_eq!(warned.len(), 1, "{log}");
    let line = warned[0];
    assert!(
        line.contains("WARN")
            && line.contains("backend=sick")
            && line.contains("status 503, expected 200-399"),
        "{line}"
    );
}
