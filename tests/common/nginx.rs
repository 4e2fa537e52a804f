//! Real nginx next to tideway: a child process stopped with SIGTERM on drop, an nginx started
//! on a config file, and `tideway run --nginx` on the same file.

use super::free_port;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process stopped on drop: with SIGTERM, so an nginx master takes its workers
/// down with it (SIGKILL would leave them running). A tideway takes SIGTERM as a graceful
/// shutdown that lasts its whole `shutdown_grace` (5 s by default), which a test's teardown
/// need not wait for: what has not exited after [`STOP_WAIT`] gets SIGKILL, as `Proxy` does.
pub struct Running(pub Child);

/// How long a stopped child may take to exit after SIGTERM before it is killed.
const STOP_WAIT: Duration = Duration::from_secs(1);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_WAIT;
        while Instant::now() < deadline {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
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

/// `tideway run --nginx FILE` plus `extra` flags, with its own admin port and data dir in
/// `dir`; not waited for.
pub fn start_tideway_nginx(file: &Path, dir: &Path, extra: &[&str]) -> Running {
    Running(
        Command::new(env!("CARGO_BIN_EXE_tideway"))
            .arg("run")
            .args(extra)
            .arg("--nginx")
            .arg(file)
            .args(["--admin", &format!("127.0.0.1:{}", free_port())])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// `tideway run --nginx FILE` with its own admin port and data dir, once `port` opens.
pub async fn run_tideway_nginx(file: &Path, port: u16, dir: &Path) -> Running {
    let r = start_tideway_nginx(file, dir, &[]);
    wait_port(port).await;
    r
}

/// Real nginx on `file` (its prefix `dir`) after `nginx -t` accepted it; not waited for.
pub fn start_nginx_checked(dir: &Path, file: &Path) -> Running {
    assert!(
        Path::new("/usr/sbin/nginx").exists(),
        "nginx is not installed (scripts/test.sh installs nginx-light)"
    );
    let check = Command::new("/usr/sbin/nginx")
        .arg("-t")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(file)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    Running(
        Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(file)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
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

/// Read one request head (through its blank line) from `s`, for a test backend; None when
/// the connection ends first.
pub async fn read_head(s: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(i + 4);
            return Some(buf);
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
