//! Shared helpers for HTTP/2 tests: an rcgen certificate, tideway with a TLS listener that has
//! `http2 = true`, a backend that records the raw HTTP/1.1 requests it receives, and clients
//! (`curl --http2`, `nghttp`) run as real processes.

#![allow(dead_code)]

use super::{start_written, Proxy};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A self-signed certificate and its key, written as PEM files.
pub struct Cert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate for `names`, written into `dir` as `file.pem` and `file.key`.
pub fn make_cert(dir: &Path, file: &str, names: &[&str]) -> Cert {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names).unwrap();
    let cert = dir.join(format!("{file}.pem"));
    let key = dir.join(format!("{file}.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    Cert { cert, key }
}

/// Start tideway with one TLS listener (a certificate for `a.test` and `*.a.test`), `http2 =
/// true` unless `http2` is false, `listener_extra` keys, routing to the upstream `app` at
/// `backend`; `server_extra` goes in `[server]`.
pub async fn start_h2_proxy(
    backend: SocketAddr,
    http2: bool,
    server_extra: &str,
    listener_extra: &str,
) -> Proxy {
    start_h2_proxy_with(backend, http2, (server_extra, listener_extra, "")).await
}

/// [`start_h2_proxy`] with `tail` (more tables, such as `[limit_zone.X]`) at the end.
pub async fn start_h2_proxy_with(
    backend: SocketAddr,
    http2: bool,
    (server_extra, listener_extra, tail): (&str, &str, &str),
) -> Proxy {
    start_written(&[], |http, admin, dir| {
        let c = make_cert(dir, "a", &["a.test", "*.a.test"]);
        format!(
            "[server]\nthreads = 2\nshutdown_grace = \"1s\"\n{server_extra}\n\n[admin]\nlisten = \"{admin}\"\n\n[store]\ndata_dir = \"{}\"\n\n[[listener]]\nlisten = \"{http}\"\nupstream = \"app\"\nhttp2 = {http2}\ntls = {{ cert = {:?}, key = {:?} }}\n{listener_extra}\n\n[upstream.app]\nbackends = [{{ addr = \"{backend}\" }}]\n{tail}\n",
            dir.join("data").display(),
            c.cert,
            c.key,
        )
    })
    .await
}

/// One request as a backend received it: the head's bytes and the body's.
#[derive(Clone, Debug)]
pub struct Received {
    pub head: String,
    pub body: Vec<u8>,
}

impl Received {
    /// The request line.
    pub fn line(&self) -> &str {
        self.head.lines().next().unwrap_or_default()
    }

    /// Every value of field `name` (case-insensitive), in order.
    pub fn fields(&self, name: &str) -> Vec<String> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }
}

/// A raw HTTP/1.1 backend that records every request (framed by Content-Length only: tideway
/// never sends another framing) and answers `200` with the body `ok PATH` and keep-alive. A
/// path starting `/slow/MS` is answered after MS milliseconds (a long poll).
pub struct Recorder {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    pub async fn start() -> Recorder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(conn, s.clone()));
            }
        });
        Recorder { addr, seen, task }
    }

    /// What the backend received so far.
    pub fn requests(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    /// The request whose line holds `path`.
    pub fn request_for(&self, path: &str) -> Option<Received> {
        self.requests()
            .into_iter()
            .find(|r| r.line().split(' ').nth(1) == Some(path))
    }
}

async fn serve(mut conn: tokio::net::TcpStream, seen: Arc<Mutex<Vec<Received>>>) {
    let mut buf = Vec::new();
    loop {
        let Some(head) = super::heads::next(&mut conn, &mut buf).await else {
            return;
        };
        let got = Received {
            head,
            body: Vec::new(),
        };
        let len: usize = got
            .fields("content-length")
            .first()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < len {
            let mut chunk = [0u8; 16384];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..len).collect();
        let path = got.line().split(' ').nth(1).unwrap_or("/").to_string();
        seen.lock().unwrap().push(Received { body, ..got });
        if let Some(ms) = path
            .strip_prefix("/slow/")
            .and_then(|r| r.split(['/', '?']).next()?.parse::<u64>().ok())
        {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let answer = format!("ok {path}");
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nx-backend: recorder\r\n\r\n{answer}",
            answer.len()
        );
        if conn.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// What a curl run wrote: the body, then `\n` and the `-w` format's output.
pub struct CurlOut {
    pub body: String,
    pub status: u16,
    pub version: String,
    /// curl's own messages (with `-v`, the exchange).
    pub stderr: String,
}

/// Run `curl` for `url` on the proxy's listener (its name resolved to `p.http`), with
/// `args` before the URL; `-w` reports the status and HTTP version.
pub async fn curl(p: &Proxy, host: &str, path: &str, args: &[&str]) -> CurlOut {
    let url = format!("https://{host}:{}{path}", p.http.port());
    let resolve = format!("{host}:{}:127.0.0.1", p.http.port());
    let out = tokio::process::Command::new("curl")
        .args(["-sk", "--max-time", "20", "--resolve", &resolve])
        .args(args)
        .args(["-w", "\n%{http_code} %{http_version}", &url])
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (status, version) = tail.split_once(' ').unwrap_or(("0", ""));
    CurlOut {
        body: body.to_string(),
        status: status.parse().unwrap_or(0),
        version: version.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// What an nghttp run showed: the statuses of its streams (in the order they answered), the
/// bodies it wrote, and everything it printed.
pub struct NghttpOut {
    pub statuses: Vec<u16>,
    pub body: String,
    pub verbose: String,
}

/// Run `nghttp -v` against the proxy's listener for `paths` (all on one connection) with
/// `:authority` `host`, and `args` before the URLs.
pub async fn nghttp(p: &Proxy, host: &str, paths: &[&str], args: &[&str]) -> NghttpOut {
    let authority = format!(":authority: {host}");
    let urls: Vec<String> = paths
        .iter()
        .map(|path| format!("https://127.0.0.1:{}{path}", p.http.port()))
        .collect();
    let out = tokio::process::Command::new("nghttp")
        .args(["-v", "-t", "20", "-H", &authority])
        .args(args)
        .args(&urls)
        .output()
        .await
        .expect("nghttp runs");
    let verbose = String::from_utf8_lossy(&out.stdout).into_owned();
    let statuses = verbose
        .lines()
        .filter_map(|l| l.split_once(":status: "))
        .filter(|(before, _)| before.contains("recv"))
        .filter_map(|(_, s)| s.trim().parse().ok())
        .collect();
    let body = verbose
        .lines()
        .filter(|l| !l.starts_with('[') && !l.starts_with("          "))
        .collect::<Vec<_>>()
        .join("\n");
    NghttpOut {
        statuses,
        body,
        verbose,
    }
}

/// Accepts any certificate (the tests make their own).
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS connection to `addr` with SNI `sni`, offering the ALPN protocols `alpn`: the
/// stream, and the protocol the server chose.
pub async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    alpn: &[&[u8]],
) -> std::io::Result<(
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    Option<Vec<u8>>,
)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let chosen = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    Ok((tls, chosen))
}

/// An HTTP/2 client (the `h2` crate) on a new connection to the proxy with SNI `sni`: the
/// handle to send requests, and the connection's task (it ends when the server closes).
pub async fn h2_client(
    p: &Proxy,
    sni: &str,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let (tls, chosen) = tls_connect(p.http, sni, &[b"h2"]).await.unwrap();
    assert_eq!(chosen.as_deref(), Some(&b"h2"[..]), "the server chose h2");
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    (send, tokio::spawn(conn))
}

/// Send `req` (with `body`, or none) and read the whole answer: its status and body.
pub async fn h2_fetch(
    send: &mut h2::client::SendRequest<bytes::Bytes>,
    req: http::Request<()>,
    body: Option<&[u8]>,
) -> Result<(u16, Vec<u8>), h2::Error> {
    let mut send = send.clone().ready().await?;
    let (answer, mut stream) = send.send_request(req, body.is_none())?;
    if let Some(b) = body {
        stream.send_data(bytes::Bytes::copy_from_slice(b), true)?;
    }
    let res = answer.await?;
    let status = res.status().as_u16();
    let mut body = res.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    Ok((status, got))
}

/// `send`, ready for a request once the server's SETTINGS allowed extended CONNECT (RFC
/// 8441). The h2 crate reads SETTINGS in the connection's task and signals nothing, so the
/// flag is polled (bounded: 5 s, [`super::wait_until`]).
pub async fn extended_connect_ready(
    send: ::h2::client::SendRequest<bytes::Bytes>,
) -> ::h2::client::SendRequest<bytes::Bytes> {
    let mut send = send.ready().await.unwrap();
    super::wait_until(Duration::from_secs(5), || {
        let enabled = send.is_extended_connect_protocol_enabled();
        async move { enabled }
    })
    .await;
    send = send.ready().await.unwrap();
    send
}
