//! Listeners a reload adds, changes or removes. pingora binds the listeners of the config the
//! process started with, and keeps them for the process's life (they are what a binary upgrade
//! hands over); a listener a reload adds is bound here and served by the same gateways, on an
//! accept loop of its own. A reload that removes a listener stops it: an added one is closed
//! (its port is free again); a started one stays bound but turns every new connection away
//! until a reload brings it back or the process is restarted. Open connections are never
//! touched, and an unchanged listener keeps its socket.

use crate::config::{HttpLimits, Listener, Protocol};
use crate::pool::PoolHandle;
use crate::proxy::tcp::TcpGateway;
use crate::proxy::tls::{SniResolver, Terminator};
use crate::proxy::{Gateway, Route};
use pingora::apps::ServerApp;
use pingora::protocols::{GetSocketDigest, SocketDigest};
use pingora::server::ShutdownWatch;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::task::JoinHandle;

/// The gateway serving one listener, as its config defines it.
pub fn route(pool: &PoolHandle, l: &Listener, tls: bool) -> Route {
    Route {
        pool: pool.clone(),
        upstream: l.upstream.as_str().into(),
        proto: match (l.protocol, tls) {
            (Protocol::Tcp, _) => "tcp",
            (Protocol::Http, true) => "https",
            (Protocol::Http, false) => "http",
        },
        metrics: crate::metrics::UpstreamMetrics::of(&l.upstream),
    }
}

/// An HTTP listener's gateway (with its certificates, when it terminates TLS).
pub fn http_gateway(
    pool: &PoolHandle,
    l: &Listener,
    turned_away: Arc<AtomicBool>,
) -> Result<(Gateway, Option<Arc<SniResolver>>), crate::config::tls::TlsError> {
    let resolver = match &l.tls {
        Some(files) => Some(Arc::new(SniResolver::load(
            files.clone(),
            l.listen.to_string(),
        )?)),
        None => None,
    };
    let tls = resolver.clone().map(Terminator::new);
    let limits: HttpLimits = l.limits.clone();
    let gw = Gateway::new(route(pool, l, tls.is_some()), tls, limits, turned_away);
    Ok((gw, resolver))
}

/// The listeners of the running process, started and added.
pub struct Listeners {
    pool: PoolHandle,
    /// The listeners pingora started with, each with its "turned away" switch.
    started: Vec<(Listener, Arc<AtomicBool>)>,
    /// Listeners added by reloads, with their accept loops.
    added: Mutex<HashMap<SocketAddr, (Listener, JoinHandle<()>)>>,
    /// pingora's shutdown signal, once the control plane runs.
    shutdown: OnceLock<ShutdownWatch>,
}

fn same(a: &Listener, b: &Listener) -> bool {
    a.listen == b.listen
        && a.protocol == b.protocol
        && a.upstream == b.upstream
        && a.tls.is_some() == b.tls.is_some()
        && a.limits == b.limits
}

impl Listeners {
    pub fn new(pool: PoolHandle, started: Vec<(Listener, Arc<AtomicBool>)>) -> Self {
        Listeners {
            pool,
            started,
            added: Mutex::new(HashMap::new()),
            shutdown: OnceLock::new(),
        }
    }

    /// Give the added listeners pingora's shutdown signal (from the control plane's start).
    pub fn set_shutdown(&self, shutdown: ShutdownWatch) {
        let _ = self.shutdown.set(shutdown);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, (Listener, JoinHandle<()>)>> {
        self.added.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Make the listeners `wanted`; returns warnings, or why a new listener could not start
    /// (the listeners already applied stay).
    pub fn apply(&self, wanted: &[Listener]) -> Result<Vec<String>, String> {
        let mut warnings = Vec::new();
        for (l, turned_away) in &self.started {
            match wanted.iter().find(|w| w.listen == l.listen) {
                Some(w) if same(w, l) => {
                    if turned_away.swap(false, Ordering::AcqRel) {
                        tracing::info!(listen = %l.listen, "reload: listener back");
                    }
                }
                Some(_) => warnings.push(format!(
                    "listener {} changed in place: its upstream, protocol, TLS and limits stay as \
                     started until a restart or a hand-over (SIGUSR2)",
                    l.listen
                )),
                None => {
                    if !turned_away.swap(true, Ordering::AcqRel) {
                        tracing::info!(listen = %l.listen, "reload: listener removed; new connections are turned away");
                    }
                }
            }
        }
        let mut added = self.lock();
        added.retain(|addr, (l, task)| {
            let keep = wanted.iter().any(|w| same(w, l));
            if !keep {
                tracing::info!(listen = %addr, "reload: listener removed");
                task.abort();
            }
            keep
        });
        for w in wanted {
            let started = self.started.iter().any(|(l, _)| l.listen == w.listen);
            if started || added.contains_key(&w.listen) {
                continue;
            }
            let task = self.start(w)?;
            tracing::info!(listen = %w.listen, upstream = %w.upstream, "reload: listener added");
            added.insert(w.listen, (w.clone(), task));
        }
        Ok(warnings)
    }

    /// Bind `l` and serve it on an accept loop of its own.
    fn start(&self, l: &Listener) -> Result<JoinHandle<()>, String> {
        let std = std::net::TcpListener::bind(l.listen)
            .and_then(|s| s.set_nonblocking(true).map(|_| s))
            .map_err(|e| format!("listener {}: {e}", l.listen))?;
        let socket = tokio::net::TcpListener::from_std(std)
            .map_err(|e| format!("listener {}: {e}", l.listen))?;
        let shutdown = self
            .shutdown
            .get()
            .cloned()
            .ok_or_else(|| "the control plane is not running yet".to_string())?;
        let never = Arc::new(AtomicBool::new(false));
        Ok(match l.protocol {
            Protocol::Http => {
                let (gw, _) = http_gateway(&self.pool, l, never).map_err(|e| e.to_string())?;
                tokio::spawn(accept(socket, Arc::new(gw), shutdown))
            }
            Protocol::Tcp => {
                let gw = TcpGateway::new(route(&self.pool, l, false), never)
                    .limited(&l.limits.per_client);
                tokio::spawn(accept(socket, Arc::new(gw), shutdown))
            }
        })
    }
}

/// Accept connections on `socket` and hand them to `app` as pingora would, until shutdown.
async fn accept<A: ServerApp + Send + Sync + 'static>(
    socket: tokio::net::TcpListener,
    app: Arc<A>,
    mut shutdown: ShutdownWatch,
) {
    loop {
        let io = tokio::select! {
            r = socket.accept() => match r {
                Ok((io, _)) => io,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = io.set_nodelay(true);
        let mut stream = pingora::protocols::l4::stream::Stream::from(io);
        let fd = stream.as_raw_fd();
        stream.set_socket_digest(SocketDigest::from_raw_fd(fd));
        let stream: pingora::protocols::Stream = Box::new(stream);
        app.process_new(stream, &shutdown).await;
    }
}
