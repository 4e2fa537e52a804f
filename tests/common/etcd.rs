//! A real etcd (Debian `etcd-server`) on free loopback ports with a temp data dir, which a
//! test can stop and resume on the same data.

use super::free_port;
use etcd_client::Client;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One etcd member, killed when dropped.
pub struct Etcd {
    child: Option<Child>,
    pub client_url: String,
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Etcd {
    pub async fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let (cp, pp) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{cp}");
        let peer = format!("http://127.0.0.1:{pp}");
        let args: Vec<String> = [
            "--name",
            "n1",
            "--data-dir",
            &dir.path().join("etcd").display().to_string(),
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &format!("n1={peer}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut e = Etcd {
            child: None,
            client_url,
            args,
            _dir: dir,
        };
        e.resume().await;
        e
    }

    pub async fn resume(&mut self) {
        let child = Command::new("etcd")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd installed (scripts/test.sh installs etcd-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = Client::connect([&self.client_url], None).await {
                if c.get("probe", None).await.is_ok() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "etcd did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect([&self.client_url], None).await.unwrap()
    }

    pub fn store(&self) -> String {
        format!(
            "etcd = {{ endpoints = [\"{}\"], prefix = \"/tw\" }}",
            self.client_url
        )
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
