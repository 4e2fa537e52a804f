//! A real nginx in front of one backend, configured the way a Workerman deployment usually is:
//! HTTP/1.1 upstream with `keepalive 16`, `Upgrade` and `Connection` forwarded for WebSocket
//! through the usual `$connection_upgrade` map. It runs in a temp dir on a free port and is
//! stopped with SIGTERM when dropped (so the master takes its worker down with it).
//!
//! Imports only std, tokio and the shared test harness's `free_port`.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Nginx {
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// The config: everything nginx writes stays in `dir`.
pub fn config(dir: &std::path::Path, port: u16, backend: SocketAddr) -> String {
    format!(
        "worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    upstream app {{
        server {backend};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
        }}
    }}
}}
",
        d = dir.display()
    )
}

impl Nginx {
    /// Start nginx in front of `backend` and wait until it accepts connections.
    pub async fn start(backend: SocketAddr) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = super::common::free_port();
        let file = dir.path().join("nginx.conf");
        std::fs::write(&file, config(dir.path(), port, backend)).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&file)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx is installed (scripts/test.sh installs nginx-light)");
        let mut n = Nginx {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while tokio::net::TcpStream::connect(n.addr).await.is_err() {
            let exited = n.child.try_wait().unwrap().is_some();
            assert!(
                !exited && Instant::now() < deadline,
                "nginx did not start; error.log:\n{}",
                n.error_log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        n
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}
