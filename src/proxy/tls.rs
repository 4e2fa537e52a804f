//! TLS termination for http listeners: the certificate chosen by SNI with the listener's
//! server-name rules ([`crate::routing::host`]: the server SNI names serves its own
//! certificate; a server without one, and a client without SNI, the listener's, by their
//! names, the first by default), reloadable in place on SIGHUP; the [`Identity`] each
//! connection was made for, by which a request for another server's Host is misdirected
//! (421); and the [`TlsConn`] wrapper that lets a decrypted stream travel on through pingora
//! like any other.

use crate::config::tls::{covers, load_cert, LoadedCert, TlsError, TlsFiles};
use crate::config::Listener;
use crate::routing::host::Hosts;
use arc_swap::ArcSwap;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream, UniqueID, UniqueIDType};
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::timeout_at;
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

mod suites;
use suites::Suites;

/// How long a client may take to finish the TLS handshake.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a TLS listener serves: its certificates and the server names SNI picks them by.
#[derive(Debug)]
struct Served {
    hosts: Hosts,
    /// Each server's own certificate, by server index.
    own: Vec<Option<Arc<LoadedCert>>>,
    /// The listener's certificates, for servers without their own.
    shared: Vec<Arc<LoadedCert>>,
    /// Every certificate with its file, for the expiry metric.
    files: Vec<(PathBuf, i64)>,
}

impl Served {
    fn read(l: &Listener) -> Result<Served, TlsError> {
        let mut files = Vec::new();
        let mut load = |f: &TlsFiles| {
            let c = load_cert(f)?;
            files.push((f.cert.clone(), c.not_after));
            Ok::<_, TlsError>(Arc::new(c))
        };
        let shared = l
            .tls
            .iter()
            .flatten()
            .map(&mut load)
            .collect::<Result<_, _>>()?;
        let own = l
            .routes
            .iter()
            .map(|s| s.tls.as_ref().map(&mut load).transpose())
            .collect::<Result<_, _>>()?;
        let default = l.routes.iter().position(|s| s.default).unwrap_or(0);
        let hosts =
            Hosts::new(l.routes.iter().map(|s| s.names.as_slice()), default).map_err(|msg| {
                TlsError {
                    path: PathBuf::from(l.listen.to_string()),
                    msg,
                }
            })?;
        Ok(Served {
            hosts,
            own,
            shared,
            files,
        })
    }

    /// The certificate for a client hello naming `sni`: the own one of the server `sni`
    /// names (none: the default server), else the listener's that names `sni` exactly,
    /// then one whose wildcard covers it, then its first.
    fn pick(&self, sni: Option<&str>) -> Option<Arc<LoadedCert>> {
        let server = match sni {
            None => self.hosts.default_server(),
            Some(n) => self.hosts.find(Some(n.as_bytes())),
        };
        if let Some(Some(own)) = self.own.get(server) {
            return Some(own.clone());
        }
        sni.and_then(|n| {
            Hosts::name(n.as_bytes(), |n| {
                self.shared
                    .iter()
                    .find(|c| c.names.iter().any(|p| p == n))
                    .or_else(|| self.shared.iter().find(|c| covers(&c.names, n)))
                    .cloned()
            })
            .flatten()
        })
        .or_else(|| self.shared.first().cloned())
    }
}

/// A listener's certificates, read and not yet served ([`SniResolver::read`]).
pub struct Certs(Served);

/// Picks a certificate by SNI from the current set.
#[derive(Debug)]
pub struct SniResolver {
    served: ArcSwap<Served>,
    /// The listener's address, for the expiry metric.
    listener: String,
}

impl SniResolver {
    /// Load the certificates of the TLS listener `l`: its own and its servers'.
    pub fn load(l: &Listener) -> Result<Self, TlsError> {
        let r = SniResolver {
            served: ArcSwap::from_pointee(Served::read(l)?),
            listener: l.listen.to_string(),
        };
        r.export_expiry();
        Ok(r)
    }

    /// The address of the listener these certificates are for.
    pub fn listener(&self) -> &str {
        &self.listener
    }

    /// Read every file `l` (the listener's new config) names, changing nothing yet (a
    /// reload's preparation).
    pub fn read(&self, l: &Listener) -> Result<Certs, TlsError> {
        Served::read(l).map(Certs)
    }

    /// Serve `certs` from now on (a reload's switch).
    pub fn install(&self, certs: Certs) {
        self.served.store(Arc::new(certs.0));
        self.export_expiry();
    }

    /// Publish each certificate's notAfter (`tideway_tls_certificate_expiry_timestamp_seconds`).
    fn export_expiry(&self) {
        let gauge = &crate::metrics::global().cert_expiry;
        for (file, not_after) in &self.served.load().files {
            gauge
                .with_label_values(&[&self.listener, &file.display().to_string()])
                .set(*not_after as f64);
        }
    }

    /// The certificate a client hello naming `sni` is served.
    pub fn pick(&self, sni: Option<&str>) -> Option<Arc<LoadedCert>> {
        self.served.load().pick(sni)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name()).map(|c| c.key.clone())
    }
}

/// What a TLS connection was made for: the SNI name the client sent, and the certificate it
/// was served.
#[derive(Debug, Clone)]
pub struct Identity {
    pub sni: Option<Box<str>>,
    /// The client chose HTTP/2 by ALPN.
    pub h2: bool,
    cert: Option<Arc<LoadedCert>>,
}

impl Identity {
    /// Whether the connection's certificate is valid for `host` (as matched: lowercased,
    /// without port and trailing dot).
    pub fn covers(&self, host: &str) -> bool {
        self.cert.as_ref().is_some_and(|c| covers(&c.names, host))
    }
}

/// A listener's TLS acceptor.
#[derive(Clone)]
pub struct Terminator {
    pub resolver: Arc<SniResolver>,
    suites: Suites,
}

impl Terminator {
    /// A terminator serving `resolver`'s certificates; with `http2`, ALPN offers `h2` before
    /// `http/1.1`.
    pub fn new(resolver: Arc<SniResolver>, http2: bool) -> Self {
        // Stateless session tickets, as nginx and OpenSSL issue by default: any client that
        // kept one resumes. rustls' default, a 256-entry session cache, resumed about half of
        // the handshakes with 64 clients at a time (docs/benchmarks.md). The keys are this
        // listener's, random, and rotate every 6 hours (rustls' ticketer). Both suite orders
        // share them and the TLS 1.2 session cache; a session resumes only with the suite it
        // was made with, which the same client's hello picks again.
        let ticketer = rustls::crypto::ring::Ticketer::new().ok();
        let sessions = rustls::server::ServerSessionMemoryCache::new(256);
        let build = |provider| {
            let mut config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default versions")
                .with_no_client_auth()
                .with_cert_resolver(resolver.clone());
            config.alpn_protocols = if http2 {
                vec![b"h2".to_vec(), b"http/1.1".to_vec()]
            } else {
                vec![b"http/1.1".to_vec()]
            };
            if let Some(t) = &ticketer {
                config.ticketer = t.clone();
            }
            config.session_storage = sessions.clone();
            config
        };
        let suites = Suites::new(rustls::crypto::ring::default_provider(), build);
        Terminator { resolver, suites }
    }

    /// Run the server handshake; the connection and what it was made for. The client's hello
    /// is read first, to pick the suite order (module `suites`); the timeout covers the whole.
    pub async fn accept(&self, stream: Stream) -> std::io::Result<(TlsConn, Identity)> {
        let deadline = tokio::time::Instant::now() + DEFAULT_TLS_HANDSHAKE_TIMEOUT;
        let timed_out =
            |_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out");
        let hello = LazyConfigAcceptor::new(Acceptor::default(), stream);
        let start = timeout_at(deadline, hello).await.map_err(timed_out)??;
        let config = self.suites.pick(&start.client_hello());
        let tls = timeout_at(deadline, start.into_stream(config))
            .await
            .map_err(timed_out)??;
        let session = tls.get_ref().1;
        let h2 = session.alpn_protocol() == Some(b"h2");
        let sni = session.server_name();
        // The certificate the handshake chose, picked again (a reload in between is as
        // unlikely as it is harmless: a new connection would be served the new one).
        let identity = Identity {
            cert: self.resolver.pick(sni),
            sni: sni.map(|n| n.to_ascii_lowercase().into()),
            h2,
        };
        let conn = TlsConn { inner: tls };
        Ok((conn, identity))
    }
}

/// Why a server handshake failed, as `tideway_listener_tls_handshake_failures_total` counts it
/// (one of [`crate::metrics::TLS_FAILURES`]).
pub fn failure_reason(e: &std::io::Error) -> &'static str {
    use rustls::{Error as Tls, InvalidMessage};
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::TimedOut => return "timeout",
        ErrorKind::UnexpectedEof
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe => return "closed",
        _ => {}
    }
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<Tls>()) else {
        return "other";
    };
    match tls {
        // The first record's type or version is not TLS's: plain text, most often HTTP.
        Tls::InvalidMessage(
            InvalidMessage::InvalidContentType | InvalidMessage::UnknownProtocolVersion,
        ) => "not_tls",
        Tls::PeerIncompatible(_) | Tls::NoApplicationProtocol => "incompatible",
        Tls::AlertReceived(_) => "alert",
        Tls::InvalidMessage(_)
        | Tls::PeerMisbehaved(_)
        | Tls::InappropriateMessage { .. }
        | Tls::InappropriateHandshakeMessage { .. }
        | Tls::PeerSentOversizedRecord
        | Tls::DecryptError => "malformed",
        _ => "other",
    }
}

/// A terminated TLS connection, usable wherever pingora expects a [`Stream`].
pub struct TlsConn {
    inner: TlsStream<Stream>,
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn").finish_non_exhaustive()
    }
}

impl TlsConn {
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

impl UniqueID for TlsConn {
    fn id(&self) -> UniqueIDType {
        self.tcp().id()
    }
}

// The TCP connection under it is an accepted `net::inbound::Inbound`, which has no timing or
// proxy digest either.
crate::net::io_without_extras!(TlsConn);

impl GetSocketDigest for TlsConn {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.tcp().get_socket_digest()
    }
}

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
