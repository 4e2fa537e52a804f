//! TLS termination for http listeners: certificates chosen by SNI (exact names, then
//! `*.domain` wildcards, then the first certificate), reloadable in place on SIGHUP, and the
//! [`TlsConn`] wrapper that lets a decrypted stream travel on through pingora like any other.

use crate::config::tls::{load_all, LoadedCert, TlsError, TlsFiles};
use arc_swap::ArcSwap;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType,
};
use pingora::protocols::{SocketDigest, TimingDigest};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::server::TlsStream;

/// How long a client may take to finish the TLS handshake.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener's certificates, read and not yet served ([`SniResolver::read`]).
pub struct Certs(Vec<LoadedCert>);

/// Picks a certificate by SNI from the current set.
#[derive(Debug)]
pub struct SniResolver {
    files: Vec<TlsFiles>,
    certs: ArcSwap<Vec<LoadedCert>>,
    /// The listener's address, for the expiry metric.
    listener: String,
}

impl SniResolver {
    /// Load the certificates of the listener at `listener`.
    pub fn load(files: Vec<TlsFiles>, listener: String) -> Result<Self, TlsError> {
        let certs = load_all(&files)?;
        let r = SniResolver {
            files,
            certs: ArcSwap::from_pointee(certs),
            listener,
        };
        r.export_expiry();
        Ok(r)
    }

    /// The address of the listener these certificates are for.
    pub fn listener(&self) -> &str {
        &self.listener
    }

    /// Re-read every file, changing nothing yet (a reload's preparation).
    pub fn read(&self) -> Result<Certs, TlsError> {
        load_all(&self.files).map(Certs)
    }

    /// Serve `certs` from now on (a reload's switch).
    pub fn install(&self, certs: Certs) {
        self.certs.store(Arc::new(certs.0));
        self.export_expiry();
    }

    /// Publish each certificate's notAfter (`tideway_tls_certificate_expiry_timestamp_seconds`).
    fn export_expiry(&self) {
        let gauge = &crate::metrics::global().cert_expiry;
        for (f, c) in self.files.iter().zip(self.certs.load().iter()) {
            gauge
                .with_label_values(&[&self.listener, &f.cert.display().to_string()])
                .set(c.not_after as f64);
        }
    }

    fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.load();
        let name = sni.map(str::to_ascii_lowercase);
        let matches = |pattern: &str, name: &str| {
            pattern == name
                || pattern
                    .strip_prefix("*.")
                    .is_some_and(|d| name.split_once('.').is_some_and(|(_, rest)| rest == d))
        };
        name.as_deref()
            .and_then(|n| {
                certs
                    .iter()
                    .find(|c| c.names.iter().any(|p| p == n))
                    .or_else(|| certs.iter().find(|c| c.names.iter().any(|p| matches(p, n))))
            })
            .or_else(|| certs.first())
            .map(|c| c.key.clone())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

/// A listener's TLS acceptor.
#[derive(Clone)]
pub struct Terminator {
    pub resolver: Arc<SniResolver>,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl Terminator {
    pub fn new(resolver: Arc<SniResolver>) -> Self {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Terminator {
            resolver,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        }
    }

    /// Run the server handshake.
    pub async fn accept(&self, stream: Stream) -> std::io::Result<TlsConn> {
        let tls = tokio::time::timeout(DEFAULT_TLS_HANDSHAKE_TIMEOUT, self.acceptor.accept(stream))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
            })??;
        Ok(TlsConn {
            inner: tls,
            rewound: Vec::new(),
            pos: 0,
        })
    }
}

/// A terminated TLS connection, usable wherever pingora expects a [`Stream`]. Bytes can be
/// put back in front of it ([`TlsConn::rewind`]) after tideway has looked at a request head.
pub struct TlsConn {
    inner: TlsStream<Stream>,
    rewound: Vec<u8>,
    pos: usize,
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn").finish_non_exhaustive()
    }
}

impl TlsConn {
    /// Make `bytes` the next bytes read.
    pub fn rewind(&mut self, bytes: &[u8]) {
        let mut v = bytes.to_vec();
        v.extend_from_slice(&self.rewound[self.pos..]);
        self.rewound = v;
        self.pos = 0;
    }

    fn tcp(&self) -> &Stream {
        self.inner.get_ref().0
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos < self.rewound.len() {
            let n = buf.remaining().min(self.rewound.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.rewound[start..start + n]);
            self.pos += n;
            if self.pos == self.rewound.len() {
                self.rewound = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait::async_trait]
impl Shutdown for TlsConn {
    async fn shutdown(&mut self) {
        let _ = tokio::io::AsyncWriteExt::shutdown(self).await;
    }
}

impl UniqueID for TlsConn {
    fn id(&self) -> UniqueIDType {
        self.tcp().id()
    }
}

impl Ssl for TlsConn {}

impl GetTimingDigest for TlsConn {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.tcp().get_timing_digest()
    }
}

impl GetProxyDigest for TlsConn {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.tcp().get_proxy_digest()
    }
}

impl GetSocketDigest for TlsConn {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.tcp().get_socket_digest()
    }
}

impl Peek for TlsConn {}

/// The peer address of a pingora stream, if it is TCP.
pub fn peer(stream: &Stream) -> Option<std::net::SocketAddr> {
    stream
        .get_socket_digest()
        .and_then(|d| d.peer_addr().and_then(PingoraAddr::as_inet).copied())
}

/// The local address of a pingora stream, if it is TCP.
pub fn local(stream: &Stream) -> Option<std::net::SocketAddr> {
    stream
        .get_socket_digest()
        .and_then(|d| d.local_addr().and_then(PingoraAddr::as_inet).copied())
}
