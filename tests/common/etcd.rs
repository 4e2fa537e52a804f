//! A real etcd (Debian `etcd-server`) on free loopback ports with a temp data dir, which a
//! test can stop and resume on the same data. [`Etcd::start_secure`] starts one that speaks
//! only TLS, wants a client certificate, and has authentication on (user `root`).

use super::free_port;
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The password of `root` on a secure etcd.
pub const ROOT_PASSWORD: &str = "s3cret-etcd-Pa55";

/// The files of a secure etcd's clients: its CA, a client certificate and key it trusts,
/// and the root password in a file.
pub struct Secure {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub password_file: PathBuf,
}

impl Secure {
    fn options(&self) -> ConnectOptions {
        let pem = |p: &Path| std::fs::read(p).unwrap();
        let tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(pem(&self.ca)))
            .identity(Identity::from_pem(pem(&self.cert), pem(&self.key)));
        ConnectOptions::new().with_tls(tls)
    }
}

/// A CA in `dir`, and certificates it signs: etcd's server certificate (127.0.0.1) and a
/// client certificate whose name is no etcd user (so only the password authenticates).
fn certificates(dir: &Path) -> (Secure, PathBuf, PathBuf) {
    let write = |name: &str, pem: String| {
        let p = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        p
    };
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "etcd test CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let issue = |name: &str, cn: &str, sans: Vec<String>| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(sans).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        (
            write(&format!("{name}.pem"), cert.pem()),
            write(&format!("{name}.key"), key.serialize_pem()),
        )
    };
    let (server_cert, server_key) = issue("server", "etcd", vec!["127.0.0.1".into()]);
    let (cert, key) = issue("client", "tideway-client", vec![]);
    let secure = Secure {
        ca: write("ca.pem", ca.pem()),
        cert,
        key,
        password_file: write("password", format!("{ROOT_PASSWORD}\n")),
    };
    (secure, server_cert, server_key)
}

/// One etcd member, killed when dropped.
pub struct Etcd {
    child: Option<Child>,
    pub client_url: String,
    args: Vec<String>,
    /// TLS and auth, for one started by [`Etcd::start_secure`].
    pub secure: Option<Secure>,
    /// Authentication is on: clients log in as root.
    auth_on: bool,
    _dir: tempfile::TempDir,
}

impl Etcd {
    pub async fn start() -> Etcd {
        Etcd::start_with(false).await
    }

    /// An etcd that speaks only TLS on its client port (`--cert-file`, `--key-file`), trusts
    /// only client certificates its CA signed (`--client-cert-auth`, `--trusted-ca-file`),
    /// and has authentication on (`root` with [`ROOT_PASSWORD`]).
    pub async fn start_secure() -> Etcd {
        let mut e = Etcd::start_with(true).await;
        let mut c = e.client().await;
        c.role_add("root").await.unwrap();
        c.user_add("root", ROOT_PASSWORD, None).await.unwrap();
        c.user_grant_role("root", "root").await.unwrap();
        c.auth_enable().await.unwrap();
        e.auth_on = true;
        e
    }

    async fn start_with(secure: bool) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let (cp, pp) = (free_port(), free_port());
        let scheme = if secure { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{cp}");
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
        let mut args = args;
        let secure = secure.then(|| {
            let (files, cert, key) = certificates(dir.path());
            for (flag, value) in [
                ("--cert-file", &cert),
                ("--key-file", &key),
                ("--trusted-ca-file", &files.ca),
            ] {
                args.push(flag.into());
                args.push(value.display().to_string());
            }
            args.push("--client-cert-auth".into());
            files
        });
        let mut e = Etcd {
            child: None,
            client_url,
            args,
            secure,
            auth_on: false,
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
            if let Ok(mut c) = Client::connect([&self.client_url], self.options()).await {
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

    /// A client: on a secure etcd with TLS, and as `root` once authentication is on.
    pub async fn client(&self) -> Client {
        Client::connect([&self.client_url], self.options())
            .await
            .unwrap()
    }

    /// TLS for a secure etcd, and root's login once authentication is on.
    fn options(&self) -> Option<ConnectOptions> {
        self.secure.as_ref().map(|s| match self.auth_on {
            true => s.options().with_user("root", ROOT_PASSWORD),
            false => s.options(),
        })
    }

    /// The `[store]` line for tideway (with the TLS files and the password file of a secure
    /// one).
    pub fn store(&self) -> String {
        let secure = match &self.secure {
            None => String::new(),
            Some(s) => format!(
                ", ca = {:?}, cert = {:?}, key = {:?}, user = \"root\", password_file = {:?}",
                s.ca.display().to_string(),
                s.cert.display().to_string(),
                s.key.display().to_string(),
                s.password_file.display().to_string()
            ),
        };
        format!(
            "etcd = {{ endpoints = [\"{}\"], prefix = \"/tw\"{secure} }}",
            self.client_url
        )
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
