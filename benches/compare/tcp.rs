//! TCP tunnel throughput: tideway `protocol = "tcp"` vs HAProxy `mode tcp` vs nginx `stream`,
//! each with one worker, in front of the same echo backend (`tideway demo-backend --tcp`).

use crate::{free_port, launch, proc, Proxy};
use std::path::Path;
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Connections moving data at once.
const CONNS: usize = 4;
/// Bytes each connection sends (and gets echoed back).
const BYTES_PER_CONN: usize = 256 * 1024 * 1024;

pub fn start_tideway(dir: &Path, backend: u16) -> Proxy {
    crate::launch_tideway(dir, backend, "tcp")
}

pub fn start_nginx(dir: &Path, backend: u16) -> Proxy {
    let port = free_port();
    let module = [
        "/usr/lib/nginx/modules/ngx_stream_module.so",
        "/usr/share/nginx/modules/ngx_stream_module.so",
    ]
    .into_iter()
    .find(|m| Path::new(m).exists())
    .expect("nginx stream module (libnginx-mod-stream)");
    let config = format!(
            "load_module {module};\nworker_processes 1;\ndaemon off;\npid {d}/nginx-stream.pid;\nerror_log {d}/nginx-stream-error.log;\nevents {{ worker_connections 1024; }}\nstream {{\n  upstream b {{ server 127.0.0.1:{backend}; }}\n  server {{ listen 127.0.0.1:{port}; proxy_pass b; }}\n}}\n",
            d = dir.display()
        );
    let prefix = dir.display().to_string();
    launch(
        "nginx",
        port,
        dir,
        "nginx-stream.conf",
        config,
        "nginx",
        &["-p", &prefix, "-c"],
    )
}

pub fn start_haproxy(dir: &Path, backend: u16) -> Proxy {
    let port = free_port();
    let config = format!(
            "global\n  nbthread 1\n  maxconn 1000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\nfrontend f\n  bind 127.0.0.1:{port}\n  default_backend b\nbackend b\n  server s1 127.0.0.1:{backend}\n"
        );
    launch(
        "haproxy",
        port,
        dir,
        "haproxy-tcp.cfg",
        config,
        "haproxy",
        &["-db", "-f"],
    )
}

/// (MB/s through the proxy, proxy CPU ms per MB)
pub async fn throughput(p: &Proxy) -> (f64, f64) {
    let cpu0 = proc::cpu_seconds(p.child.id());
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONNS)
        .map(|_| {
            let port = p.port;
            tokio::spawn(async move {
                let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap();
                s.set_nodelay(true).unwrap();
                let mut r = BufReader::new(s);
                let mut greeting = String::new();
                r.read_line(&mut greeting).await.unwrap();
                let (mut rd, mut wr) = r.into_inner().into_split();
                let writer = tokio::spawn(async move {
                    let chunk = vec![7u8; 64 * 1024];
                    let mut sent = 0;
                    while sent < BYTES_PER_CONN {
                        wr.write_all(&chunk).await.unwrap();
                        sent += chunk.len();
                    }
                    wr
                });
                let mut buf = vec![0u8; 64 * 1024];
                let mut got = 0;
                while got < BYTES_PER_CONN {
                    let n = rd.read(&mut buf).await.unwrap();
                    assert!(n > 0, "tunnel closed early");
                    got += n;
                }
                drop(writer.await.unwrap());
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = proc::cpu_seconds(p.child.id()) - cpu0;
    // Bytes crossing the proxy: every byte goes up and comes back.
    let mb = (2 * CONNS * BYTES_PER_CONN) as f64 / 1e6;
    (mb / secs, cpu * 1000.0 / mb)
}
