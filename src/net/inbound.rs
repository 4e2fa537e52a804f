//! A client's TCP connection as a data-plane listener accepted it ([`Inbound`]): the socket,
//! its addresses, and the bytes it must read again first (what came behind a PROXY header).
//!
//! tideway's gateways keep their own buffers and parse every byte themselves, so this is the
//! socket and little more: a read reads the socket, a write writes it, a drop closes it.
//! pingora's own TCP stream carries what pingora's HTTP engine wants and tideway does not use:
//! a buffering layer (empty here, but still passed through on every read and write), pending-
//! time records (clock reads on every read that waits), a receive-timestamp option, and a
//! `getsockopt` on drop to detect a double close; each costs CPU on every WebSocket message
//! and connection, and the stream's fields cost every open connection memory.
//!
//! Imports: nothing else in tideway.

use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::{GetSocketDigest, SocketDigest, UniqueID, UniqueIDType};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// An accepted client connection (plain TCP; TLS wraps it).
#[derive(Debug)]
pub struct Inbound {
    tcp: TcpStream,
    digest: Arc<SocketDigest>,
    /// Bytes to read before the socket's (None nearly always: one pointer).
    replay: Option<Box<Replay>>,
}

#[derive(Debug)]
struct Replay {
    bytes: Vec<u8>,
    pos: usize,
}

impl Inbound {
    /// The connection `tcp`, accepted from `peer` on `local` (the listener's address, when it
    /// is bound to one: known without asking the kernel).
    pub fn new(tcp: TcpStream, peer: SocketAddr, local: Option<SocketAddr>) -> Self {
        let digest = SocketDigest::from_raw_fd(tcp.as_raw_fd());
        let _ = digest.peer_addr.set(Some(PingoraAddr::Inet(peer)));
        if let Some(local) = local {
            let _ = digest.local_addr.set(Some(PingoraAddr::Inet(local)));
        }
        Inbound {
            tcp,
            digest: Arc::new(digest),
            replay: None,
        }
    }

    /// Make `bytes` the next bytes read, ahead of any not yet read again and of the socket's.
    pub fn replay(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut next = bytes.to_vec();
        if let Some(old) = self.replay.take() {
            next.extend_from_slice(&old.bytes[old.pos..]);
        }
        self.replay = Some(Box::new(Replay {
            bytes: next,
            pos: 0,
        }));
    }
}

impl AsyncRead for Inbound {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(r) = this.replay.as_mut() {
            let rest = &r.bytes[r.pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            r.pos += n;
            if r.pos == r.bytes.len() {
                this.replay = None;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Inbound {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    /// Nothing is buffered: a write is on the socket when it returns.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

impl AsRawFd for Inbound {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp.as_raw_fd()
    }
}

impl UniqueID for Inbound {
    fn id(&self) -> UniqueIDType {
        self.tcp.as_raw_fd() as UniqueIDType
    }
}

super::io_without_extras!(Inbound);

impl GetSocketDigest for Inbound {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        Some(self.digest.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (Inbound, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (tcp, peer) = l.accept().await.unwrap();
        (
            Inbound::new(tcp, peer, Some(l.local_addr().unwrap())),
            client,
        )
    }

    #[tokio::test]
    async fn replayed_bytes_come_first_in_order_then_the_socket_s() {
        let (mut inbound, mut client) = pair().await;
        client.write_all(b"socket").await.unwrap();
        inbound.replay(b"second ");
        inbound.replay(b"first ");
        // A small buffer: the replay comes out over several reads, never mixed with the socket.
        let mut got = Vec::new();
        let mut small = [0u8; 4];
        while got.len() < b"first second ".len() {
            let n = inbound.read(&mut small).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, b"first second ");
        assert!(inbound.replay.is_none(), "the replay is freed once read");
        let mut rest = [0u8; 16];
        let n = inbound.read(&mut rest).await.unwrap();
        assert_eq!(&rest[..n], b"socket");
    }

    #[tokio::test]
    async fn writes_reach_the_socket_and_shutdown_ends_it() {
        let (mut inbound, mut client) = pair().await;
        inbound.write_all(b"hello").await.unwrap();
        inbound.flush().await.unwrap();
        pingora::protocols::Shutdown::shutdown(&mut inbound).await;
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
    }

    #[tokio::test]
    async fn its_digest_has_the_addresses_it_was_accepted_with() {
        let (inbound, client) = pair().await;
        let d = inbound.get_socket_digest().unwrap();
        let peer = d.peer_addr().and_then(PingoraAddr::as_inet).copied();
        let local = d.local_addr().and_then(PingoraAddr::as_inet).copied();
        assert_eq!(peer, Some(client.local_addr().unwrap()));
        assert_eq!(local, Some(client.peer_addr().unwrap()));
    }
}
