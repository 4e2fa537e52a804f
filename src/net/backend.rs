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
    /// The TCP connection underneath (tests look at its socket).
    #[cfg(test)]
    pub fn tcp(&self) -> &TcpStream {
        match self {
            BackendIo::Plain(s) => s,
            BackendIo::Tls(s) => s.get_ref().0,
        }
    }

    /// Can an idle connection still carry a request? Not when the backend closed it or sent
    /// something unasked; such a connection is thrown away, so a byte this probe takes is
    /// never missed. On TLS the probe reads the TLS stream itself, not the socket: bytes the
    /// backend sent past its last answer (or a close_notify) are often already read from the
    /// socket and decrypted inside rustls, where the socket cannot show them. A record rustls
    /// handles on its own (a session ticket, a key update) leaves the connection usable.
    pub fn usable(&mut self) -> bool {
        let mut probe = [0u8; 1];
        match self {
            BackendIo::Plain(s) => {
                matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            BackendIo::Tls(s) => {
                // One poll, with a waker that does nothing: an idle connection has no task
                // to wake. Ready in any form (data, end of stream, an error) means unusable.
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let mut buf = ReadBuf::new(&mut probe);
                Pin::new(&mut **s).poll_read(&mut cx, &mut buf).is_pending()
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
