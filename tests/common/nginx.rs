//! Real nginx next to tideway: a child process stopped with SIGTERM on drop, an nginx started
//! on a config file, and `tideway run --nginx` on the same file.

use super::free_port;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process stopped on drop: with SIGTERM, so an nginx master takes its workers
/// down with it (SIGKILL would leave them running).
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// Wait until something listens on loopback `port`.
pub async fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "port {port} never opened");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// `tideway run --nginx FILE` with its own admin port and data dir.
pub async fn run_tideway_nginx(file: &Path, port: u16, dir: &Path) -> Running {
    let child = Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args(["run", "--nginx"])
        .arg(file)
        .args(["--admin", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let r = Running(child);
    wait_port(port).await;
    r
}

/// Real nginx on `file` (its prefix `dir`), listening on `port`.
pub async fn run_nginx(file: &Path, port: u16, dir: &Path) -> Running {
    assert!(
        Command::new("nginx").arg("-v").output().is_ok(),
        "nginx is not installed (scripts/test.sh installs nginx-light)"
    );
    let r = Running(
        Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(file)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(port).await;
    r
}

/// The head of an nginx config for a test in `dir`: one worker, in the foreground, with its
/// files in `dir`; the `http` block is the caller's.
pub fn nginx_main(dir: &Path) -> String {
    format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 256; }}\n",
        d = dir.display()
    )
}
