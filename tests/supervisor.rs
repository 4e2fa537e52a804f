//! Autoscaling without Kubernetes, end to end: tideway's autoscale hook runs
//! `examples/supervisor/scale.sh`, which starts and stops the chat processes of
//! `examples/supervisor/chat.conf` under a real supervisord (Debian `supervisor`); the processes
//! are tideway demo backends that register themselves, and drain then deregister when stopped.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A supervisord in the foreground on a temp dir, killed (with its processes) on drop.
struct Supervisord {
    child: Child,
    conf: std::path::PathBuf,
}

impl Drop for Supervisord {
    fn drop(&mut self) {
        let _ = Command::new("supervisorctl")
            .arg("-c")
            .arg(&self.conf)
            .args(["stop", "all"])
            .output();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Four consecutive free loopback ports; the first.
fn free_run(n: u16) -> u16 {
    loop {
        let base = 20000 + rand::random_range(0..10000u16);
        if (base..base + n).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
}

fn supervisord(dir: &std::path::Path, admin: std::net::SocketAddr, first: u16) -> Supervisord {
    let root = env!("CARGO_MANIFEST_DIR");
    let program = std::fs::read_to_string(format!("{root}/examples/supervisor/chat.conf"))
        .unwrap()
        .replace("/usr/local/bin/tideway", env!("CARGO_BIN_EXE_tideway"))
        .replace("http://127.0.0.1:9090", &format!("http://{admin}"))
        .replace(
            "numprocs_start = 7001",
            &format!("numprocs_start = {first}"),
        )
        .replace("numprocs = 10", "numprocs = 4")
        .replace("change-me", REGISTER_TOKEN);
    std::fs::write(dir.join("chat.conf"), program).unwrap();
    let d = dir.display();
    let conf = dir.join("supervisord.conf");
    std::fs::write(
        &conf,
        format!(
            "[unix_http_server]\nfile = {d}/supervisor.sock\n\n[supervisord]\nlogfile = {d}/supervisord.log\npidfile = {d}/supervisord.pid\nchildlogdir = {d}\n\n\
             [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
             [supervisorctl]\nserverurl = unix://{d}/supervisor.sock\n\n[include]\nfiles = {d}/chat.conf\n"
        ),
    )
    .unwrap();
    let child = Command::new("supervisord")
        .arg("-n")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("supervisord installed (scripts/test.sh installs supervisor)");
    Supervisord { child, conf }
}

/// Active backends of upstream `app`, sorted.
async fn active(p: &Proxy) -> Vec<String> {
    p.backends()
        .await
        .into_iter()
        .filter(|b| b.2 == "active")
        .map(|b| b.0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_processes_follow_the_load() {
    let dir = tempfile::tempdir().unwrap();
    let first = free_run(4);
    let script = format!(
        "{}/examples/supervisor/scale.sh",
        env!("CARGO_MANIFEST_DIR")
    );
    let conf = dir.path().join("supervisord.conf");
    let p = start_proxy(&format!(
        "[upstream.app]\nbalance = \"least_conn\"\nscale = {{ target_per_backend = 2, min = 1, max = 4 }}\n\
         [upstream.app.autoscale]\nexec = \"CHAT_FIRST={first} CHAT_MAX=4 {script} -c {}\"\ncooldown = \"1s\"\ninterval = \"200ms\"\n",
        conf.display()
    ))
    .await;
    // The chat.conf registers in upstream "chat"; the test's upstream is "app".
    let _sup = {
        let s = supervisord(dir.path(), p.admin, first);
        let program = std::fs::read_to_string(dir.path().join("chat.conf"))
            .unwrap()
            .replace("--upstream chat", "--upstream app");
        std::fs::write(dir.path().join("chat.conf"), program).unwrap();
        s
    };
    let ctl = |args: &[&str]| {
        Command::new("supervisorctl")
            .arg("-c")
            .arg(&conf)
            .args(args)
            .output()
            .unwrap()
    };
    wait_until(Duration::from_secs(20), || async {
        ctl(&["status"]).status.code().is_some()
            && String::from_utf8_lossy(&ctl(&["status"]).stdout).contains("chat_")
    })
    .await;
    // Boot: one process, as an operator's unit would start it.
    let boot = Command::new(&script)
        .args(["-c", &conf.display().to_string()])
        .env("TIDEWAY_BACKENDS", "1")
        .env("CHAT_FIRST", first.to_string())
        .env("CHAT_MAX", "4")
        .output()
        .unwrap();
    assert!(boot.status.success(), "{boot:?}");
    wait_until(Duration::from_secs(30), || async {
        active(&p).await.len() == 1
    })
    .await;

    // 5 WebSockets at 2 per backend: the hook asks for 3, Supervisor starts 2 more, they register.
    let mut conns = Vec::new();
    for _ in 0..5 {
        let (ws, _) = tokio_tungstenite::connect_async(p.ws_url("/"))
            .await
            .unwrap();
        conns.push(ws);
    }
    wait_until(Duration::from_secs(30), || async {
        active(&p).await.len() == 3
    })
    .await;
    let up = active(&p).await;
    assert_eq!(
        up,
        vec![
            format!("chat-{first}"),
            format!("chat-{}", first + 1),
            format!("chat-{}", first + 2)
        ]
    );
    // Registered as soon as they listen; RUNNING for Supervisor after its startsecs.
    wait_until(Duration::from_secs(10), || async {
        let status = String::from_utf8_lossy(&ctl(&["status"]).stdout).to_string();
        status.matches("RUNNING").count() == 3 && status.matches("STOPPED").count() == 1
    })
    .await;

    // Load gone: back to 1; the stopped processes drain and deregister.
    drop(conns);
    wait_until(Duration::from_secs(40), || async {
        p.backends().await.len() == 1
            && String::from_utf8_lossy(&ctl(&["status"]).stdout)
                .matches("RUNNING")
                .count()
                == 1
    })
    .await;
    assert_eq!(active(&p).await, vec![format!("chat-{first}")]);
    let log = std::fs::read_to_string(p.dir.path().join("tideway.log")).unwrap();
    // The WebSockets open one at a time, so on a loaded machine the hook may see a count on
    // the way (2 before 3): the runs that settled are checked, not where each came from.
    assert!(
        log.contains("chat: 3 of 4 running (was "),
        "the hook's output is logged"
    );
    assert!(log.contains("chat: 1 of 4 running (was "));
}
