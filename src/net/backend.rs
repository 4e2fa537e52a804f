//! A connection to a backend: plain TCP, or TLS over it. The data plane (`proxy`) and the
//! active health checks (`health`) open both the same way ([`handshake`]); everything above
//! reads and writes a [`BackendIo`] without knowing which it is.
//!
//! Imports: nothing else in tideway.

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A backend connection. The TLS state is boxed so a plain connection (the common case, and
/// every idle WebSocket tunnel's) stays as small as a `TcpStream`.
pub enum BackendIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Run the TLS handshake on `tcp` as a client of `config`, under `name`. The error says what
/// went wrong (an untrusted certificate, a name it does not cover, a protocol failure).
pub async fn handshake(
    tcp: TcpStream,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> io::Result<BackendIo> {
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    Ok(BackendIo::Tls(Box::new(tls)))
}

impl BackendIo {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            BackendIo::Plain(s) => s,
            BackendIo::Tls(s) => s.get_ref().0,
        }
    }

    /// Can an idle connection still carry a request? Not when the backend closed it or sent
    /// something unasked (on TLS, any record: a close_notify, a key update); such a
    /// connection is thrown away, so a byte this probe takes is never missed.
    pub fn usable(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.tcp().try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, BackendIo::Tls(_))
    }

    /// A read half and a write half used at once (a request body streaming out while the
    /// answer is watched for). Plain TCP splits without a lock; TLS through tokio's split.
    pub fn split(
        &mut self,
    ) -> (
        Box<dyn AsyncRead + Send + Unpin + '_>,
        Box<dyn AsyncWrite + Send + Unpin + '_>,
    ) {
        match self {
            BackendIo::Plain(s) => {
                let (r, w) = s.split();
                (Box::new(r), Box::new(w))
            }
            BackendIo::Tls(s) => {
                let (r, w) = tokio::io::split(&mut **s);
                (Box::new(r), Box::new(w))
            }
        }
    }
}

impl AsyncRead for BackendIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            BackendIo::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            BackendIo::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            BackendIo::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            BackendIo::Plain(s) => s.is_write_vectored(),
            BackendIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendIo::Plain(s) => Pin::new(s).poll_flush(cx),
            BackendIo::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            BackendIo::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}
