//! The one accept path of every data-plane listener, whether the process started with it or a
//! reload added it.
//!
//! [`serve`] accepts connections and hands each to its gateway as pingora would. When the
//! process is out of descriptors (EMFILE, ENFILE) or kernel memory (ENOBUFS, ENOMEM), accept
//! fails at once for as long as that lasts: the loop sleeps a short, growing interval
//! ([`Backoff`]) and logs once per burst, never spinning. Connections already accepted go on.
//!
//! [`DataListener`] is the pingora service of a listener the process starts with: it takes its
//! socket from the descriptors a binary upgrade handed over (or binds it and adds it to them,
//! for the next upgrade) and runs [`serve`] on it. Imports nothing of tideway's outside `net`.

use super::inbound::Inbound;
use pingora::apps::ServerApp;
use pingora::server::{ListenFds, ShutdownWatch};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

/// First pause after accept fails for lack of resources.
pub const DEFAULT_ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest pause between two accepts while resources lack.
pub const DEFAULT_ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Listen backlog of a data-plane listener (pingora's).
const BACKLOG: i32 = 65535;

/// Pauses between failed accepts: doubling from a minimum to a maximum, reset by a success.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    /// Failures in the current burst.
    failures: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(DEFAULT_ACCEPT_BACKOFF_MIN, DEFAULT_ACCEPT_BACKOFF_MAX)
    }
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
            failures: 0,
        }
    }

    /// A failure: how long to pause, and whether it starts a burst (the one to log).
    pub fn failed(&mut self) -> (Duration, bool) {
        self.failures += 1;
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        (pause, self.failures == 1)
    }

    /// A success: the failures of the burst it ends (0: there was none).
    pub fn succeeded(&mut self) -> u64 {
        self.next = self.min;
        std::mem::take(&mut self.failures)
    }
}

/// Whether an accept error means the process (or the host) lacks resources: accept would
/// fail again at once.
pub fn out_of_resources(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Accept connections on `socket` and hand them to `app`, until shutdown.
pub async fn serve<A: ServerApp + Send + Sync + 'static>(
    socket: Arc<tokio::net::TcpListener>,
    app: Arc<A>,
    mut shutdown: ShutdownWatch,
) {
    let listen = socket.local_addr().ok();
    // Every connection's local address, when the listener is bound to one address (not a
    // wildcard): known here, so no connection asks the kernel for it (getsockname).
    let local = listen.filter(|a| !a.ip().is_unspecified());
    let mut backoff = Backoff::default();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let io = tokio::select! {
            r = socket.accept() => r,
            r = shutdown.changed() => match r {
                Ok(()) => continue,
                Err(_) => return,
            },
        };
        let (io, peer) = match io {
            Ok(accepted) => {
                let failed = backoff.succeeded();
                if failed > 0 {
                    tracing::info!(?listen, failed, "accepting again");
                }
                accepted
            }
            Err(e) if out_of_resources(&e) => {
                let (pause, first) = backoff.failed();
                if first {
                    tracing::warn!(?listen, error = %e, "accept failed: backing off until descriptors are free");
                }
                tokio::time::sleep(pause).await;
                continue;
            }
            // Another connection's trouble (aborted before accept): the next one is fine.
            Err(e) => {
                tracing::debug!(?listen, error = %e, "accept failed");
                continue;
            }
        };
        let _ = io.set_nodelay(true);
        // The peer as accept returned it, and the listener's address: two system calls
        // (getpeername, getsockname) fewer per connection than asking the socket later.
        let stream: pingora::protocols::Stream = Box::new(Inbound::new(io, peer, local));
        app.process_new(stream, &shutdown).await;
    }
}

/// Bind a data-plane listener: SO_REUSEADDR, pingora's backlog, non-blocking.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The socket for `addr`: the one a binary upgrade handed over, or a new one, added to the
/// table for the next upgrade.
fn take_or_bind(
    addr: SocketAddr,
    fds: Option<ListenFds>,
) -> std::io::Result<std::net::TcpListener> {
    let key = addr.to_string();
    let Some(table) = fds else {
        return bind(addr);
    };
    let mut table = table.lock();
    if let Some(&fd) = table.get(&key) {
        // SAFETY: the table holds descriptors the previous process handed over; nothing else
        // in this process owns them, and each address is taken once (one service per
        // listener). The table keeps the number only, to hand it on at the next upgrade, and
        // the listener stays open until this process shuts down, after that hand-over.
        #[allow(unsafe_code)]
        let listener =
            unsafe { <std::net::TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        listener.set_nonblocking(true)?;
        return Ok(listener);
    }
    let listener = bind(addr)?;
    table.add(key, listener.as_raw_fd());
    Ok(listener)
}

/// The pingora service of a data-plane listener the process starts with.
pub struct DataListener<A> {
    name: String,
    addr: SocketAddr,
    app: Option<Arc<A>>,
}

impl<A> DataListener<A> {
    pub fn new(name: String, addr: SocketAddr, app: A) -> Self {
        DataListener {
            name,
            addr,
            app: Some(Arc::new(app)),
        }
    }
}

#[async_trait::async_trait]
impl<A: ServerApp + Send + Sync + 'static> pingora::services::Service for DataListener<A> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        let Some(app) = self.app.take() else {
            return;
        };
        let socket = take_or_bind(self.addr, fds).and_then(tokio::net::TcpListener::from_std);
        match socket {
            Ok(socket) => serve(Arc::new(socket), app, shutdown).await,
            Err(e) => {
                // As nginx: a listener that cannot bind stops the start, at once and with
                // a non-zero status (the admin API must not go on answering ready).
                tracing::error!(listen = %self.addr, error = %e, "listener cannot bind; exiting");
                eprintln!("tideway: listener {} cannot bind: {e}", self.addr);
                std::process::exit(1);
            }
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_maximum_and_logs_once_per_burst() {
        let mut b = Backoff::new(Duration::from_millis(5), Duration::from_millis(20));
        assert_eq!(b.failed(), (Duration::from_millis(5), true));
        assert_eq!(b.failed(), (Duration::from_millis(10), false));
        assert_eq!(b.failed(), (Duration::from_millis(20), false));
        assert_eq!(b.failed(), (Duration::from_millis(20), false));
        assert_eq!(b.succeeded(), 4);
        assert_eq!(b.succeeded(), 0);
        assert_eq!(b.failed(), (Duration::from_millis(5), true));
    }

    #[test]
    fn only_resource_errors_back_off() {
        let e = |n| std::io::Error::from_raw_os_error(n);
        assert!(out_of_resources(&e(libc::EMFILE)));
        assert!(out_of_resources(&e(libc::ENFILE)));
        assert!(!out_of_resources(&e(libc::ECONNABORTED)));
    }
}
