//! Idle upstream connections kept for reuse (nginx's `keepalive N` in an `upstream` block),
//! per backend address and TLS setup ([`PoolKey`]: a TLS connection is never handed to a
//! plain-TCP upstream, nor to one that trusts other CAs or names), newest first. A connection the backend closed while idle is noticed
//! when it is taken (its socket reads EOF) and thrown away; one idle too long is closed by a
//! sweep, run while connections are returned and by a background task when traffic stops
//! ([`Keepalive::sweeper`], run by the listener's owner).

use crate::net::backend::BackendIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Idle connections kept per backend (pingora's default pool size, twice nginx's usual 64).
pub const DEFAULT_IDLE_PER_BACKEND: usize = 128;

/// How often `put` sweeps every backend's list for expired connections.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// What idle connections are kept under: the backend's address, and the key of the
/// upstream's TLS setup (`UpstreamTls::key`; 0: plain TCP).
pub type PoolKey = (SocketAddr, u64);

/// The key of connections to `addr` for an upstream with `policy`.
pub fn pool_key(addr: SocketAddr, policy: &crate::config::UpstreamPolicy) -> PoolKey {
    (addr, policy.tls.as_ref().map_or(0, |t| t.key))
}

struct Idle {
    io: BackendIo,
    since: Instant,
}

struct Lists {
    by_addr: HashMap<PoolKey, Vec<Idle>>,
    swept: Instant,
}

/// The idle upstream connections of one listener.
pub struct Keepalive {
    lists: Mutex<Lists>,
    per_backend: usize,
    idle_timeout: Duration,
}

impl Keepalive {
    pub fn new(per_backend: usize, idle_timeout: Duration) -> Self {
        Keepalive {
            lists: Mutex::new(Lists {
                by_addr: HashMap::new(),
                swept: Instant::now(),
            }),
            per_backend,
            idle_timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lists> {
        self.lists.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest usable idle connection under `addr`, if any.
    pub fn take(&self, addr: PoolKey) -> Option<BackendIo> {
        let now = Instant::now();
        let mut lists = self.lock();
        let list = lists.by_addr.get_mut(&addr)?;
        while let Some(mut idle) = list.pop() {
            if now.duration_since(idle.since) < self.idle_timeout && idle.io.usable() {
                return Some(idle.io);
            }
        }
        None
    }

    /// Keep `io` for the next request to `addr` (closing the oldest one beyond the limit).
    pub fn put(&self, addr: PoolKey, io: BackendIo) {
        let now = Instant::now();
        let mut lists = self.lock();
        if now.duration_since(lists.swept) >= SWEEP_EVERY {
            self.sweep_locked(&mut lists, now);
        }
        let list = lists.by_addr.entry(addr).or_default();
        if list.len() >= self.per_backend {
            list.remove(0);
        }
        list.push(Idle { io, since: now });
    }

    fn sweep_locked(&self, lists: &mut Lists, now: Instant) {
        lists.swept = now;
        let timeout = self.idle_timeout;
        lists.by_addr.retain(|_, list| {
            list.retain_mut(|i| now.duration_since(i.since) < timeout && i.io.usable());
            !list.is_empty()
        });
    }

    /// Close the connections idle too long or closed by their backend.
    pub fn sweep(&self) {
        let mut lists = self.lock();
        self.sweep_locked(&mut lists, Instant::now());
    }

    /// Sweep `keepalive` every few seconds for as long as it exists: the task its owner runs
    /// (and stops at shutdown).
    pub fn sweeper(
        keepalive: &std::sync::Arc<Keepalive>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let weak = std::sync::Arc::downgrade(keepalive);
        async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                match weak.upgrade() {
                    Some(k) => k.sweep(),
                    None => return,
                }
            }
        }
    }

    /// Idle connections held, over all backends.
    pub fn idle(&self) -> usize {
        self.lock().by_addr.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    async fn pair(l: &TcpListener) -> (BackendIo, TcpStream) {
        let addr = l.local_addr().unwrap();
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        (BackendIo::Plain(c.unwrap()), s.unwrap().0)
    }

    #[tokio::test]
    async fn reuses_live_connections_and_drops_closed_ones() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = (l.local_addr().unwrap(), 0);
        let ka = Keepalive::new(2, Duration::from_secs(60));
        let (c1, _s1) = pair(&l).await;
        let (c2, s2) = pair(&l).await;
        ka.put(addr, c1);
        ka.put(addr, c2);
        assert_eq!(ka.idle(), 2);
        // The backend closes the newest one; taking skips it and returns the other.
        drop(s2);
        let mut s2_gone = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let lists = ka.lock();
            if let Some(last) = lists.by_addr[&addr].last() {
                let mut probe = [0u8; 1];
                if matches!(last.io.tcp().try_read(&mut probe), Ok(0)) {
                    s2_gone = true;
                    break;
                }
            }
        }
        assert!(s2_gone, "the closed connection reads EOF");
        assert!(ka.take(addr).is_some());
        assert_eq!(ka.idle(), 0);
        assert!(ka.take(addr).is_none());
    }

    #[tokio::test]
    async fn keeps_at_most_the_limit_and_expires_idle_ones() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = (l.local_addr().unwrap(), 0);
        let ka = Keepalive::new(2, Duration::from_secs(60));
        let mut servers = Vec::new();
        for _ in 0..3 {
            let (c, s) = pair(&l).await;
            servers.push(s);
            ka.put(addr, c);
        }
        assert_eq!(ka.idle(), 2);
        // The oldest was closed: its server side reads EOF.
        let mut buf = [0u8; 1];
        use tokio::io::AsyncReadExt;
        assert_eq!(servers[0].read(&mut buf).await.unwrap(), 0);

        let expired = Keepalive::new(2, Duration::ZERO);
        let (c, mut s) = pair(&l).await;
        expired.put(addr, c);
        assert_eq!(expired.idle(), 1);
        expired.sweep();
        assert_eq!(expired.idle(), 0, "idle past the timeout");
        assert_eq!(
            s.read(&mut buf).await.unwrap(),
            0,
            "swept connections are closed"
        );
        let (c, _s) = pair(&l).await;
        expired.put(addr, c);
        assert!(expired.take(addr).is_none(), "idle past the timeout");
    }

    #[tokio::test]
    async fn connections_are_kept_apart_by_tls_setup() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let ka = Keepalive::new(2, Duration::from_secs(60));
        let (c, _s) = pair(&l).await;
        ka.put((addr, 7), c);
        assert!(ka.take((addr, 0)).is_none(), "not for plain TCP");
        assert!(ka.take((addr, 8)).is_none(), "not for another TLS setup");
        assert!(ka.take((addr, 7)).is_some());
    }
}
