//! Listeners a reload adds, changes or removes. The listeners of the config the process
//! started with are pingora services ([`crate::net::accept::DataListener`]), kept for the process's
//! life (they are what a binary upgrade hands over); a listener a reload adds is bound here and
//! served by the same gateways, on the same accept path ([`crate::net::accept::serve`]). A reload
//! that removes a listener stops it: an added one is closed
//! (its port is free again); a started one stays bound but turns every new connection away
//! until a reload brings it back or the process is restarted. Open connections are never
//! touched, and an unchanged listener keeps its socket (a changed added one too).
//!
//! Routes are applied on every reload, to started and added listeners alike: each HTTP
//! listener's routes sit in a [`SharedRoutes`] that the commit swaps whole (a request in
//! flight, or a WebSocket, keeps the route it started on).
//!
//! A reload comes in two steps, so that it is all or nothing: [`Listeners::prepare`] binds
//! and builds everything new and may fail; [`Listeners::commit`] cannot fail. The commit also
//! publishes tideway's own addresses (every listener and the admin API) to the pool's
//! [`crate::pool::own::OwnAddrs`].

use crate::config::{HttpLimits, Listener, Protocol};
use crate::pool::PoolHandle;
use crate::proxy::client::Addressing;
use crate::proxy::dispatch::{Routes, SharedRoutes};
use crate::proxy::listener::ListenerCount;
use crate::proxy::tcp::TcpGateway;
use crate::proxy::tls::{SniResolver, Terminator};
use crate::proxy::{Gateway, Route};
use pingora::server::ShutdownWatch;
use std::collections::HashMap;
use std::net::SocketAddr;
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

/// The routes of an HTTP listener.
pub fn routes(pool: &PoolHandle, l: &Listener) -> Result<Routes, String> {
    let proto = if l.tls.is_some() { "https" } else { "http" };
    Routes::build(pool, &l.routes, proto).map_err(|e| format!("listener {}: {e}", l.listen))
}

/// An HTTP listener's gateway (with its certificates, when it terminates TLS).
pub fn http_gateway(
    pool: &PoolHandle,
    l: &Listener,
    turned_away: Arc<AtomicBool>,
) -> Result<(Gateway, Option<Arc<SniResolver>>), String> {
    let resolver = match &l.tls {
        Some(_) => Some(Arc::new(SniResolver::load(l).map_err(|e| e.to_string())?)),
        None => None,
    };
    let tls = resolver.clone().map(|r| Terminator::new(r, l.http2));
    let limits: HttpLimits = l.limits.clone();
    let shared = routes(pool, l)?.shared();
    let gw = Gateway::new(
        route(pool, l, tls.is_some()),
        shared,
        tls,
        limits,
        turned_away,
    )
    .with_addressing(Addressing::of(l))
    .counted(counts(l));
    Ok((gw, resolver))
}

/// A listener's connection counts and series (`tideway_listener_*`).
pub fn counts(l: &Listener) -> ListenerCount {
    let tls = l.protocol == Protocol::Http && l.tls.is_some();
    ListenerCount::new(&l.listen.to_string(), l.limits.max_connections, tls)
}

/// The listeners of the running process, started and added.
pub struct Listeners {
    pool: PoolHandle,
    /// The listeners pingora started with, each with its "turned away" switch.
    started: Vec<(Listener, Arc<AtomicBool>)>,
    /// Listeners added by reloads, with their accept loops.
    added: Mutex<HashMap<SocketAddr, Added>>,
    /// The keep-alive sweepers of the HTTP listeners reloads added (a removed listener's runs
    /// on while its connections hold its gateway); the finished ones are dropped at each commit.
    sweepers: Mutex<Vec<JoinHandle<()>>>,
    /// Set (under the `added` lock) once shutdown took the tasks: a commit then starts none.
    stopped: AtomicBool,
    /// The admin API's address, one of tideway's own with the listeners'.
    admin: SocketAddr,
    /// pingora's shutdown signal, once the control plane runs.
    shutdown: OnceLock<ShutdownWatch>,
    /// The routes of every HTTP listener serving (started or added), by address.
    routes: Mutex<HashMap<SocketAddr, SharedRoutes>>,
}

/// A listener a reload added: its socket and its accept loop.
struct Added {
    listener: Listener,
    socket: Arc<tokio::net::TcpListener>,
    task: JoinHandle<()>,
}

/// What serves a listener.
enum App {
    Http(Arc<Gateway>),
    Tcp(Arc<TcpGateway>),
}

/// A reload's listener changes, prepared and not applied: new sockets bound, gateways built
/// (certificates read). [`Listeners::commit`] applies it; dropping it instead closes the new
/// sockets and changes nothing.
pub struct Plan {
    /// Whether each started listener turns new connections away, in `started` order.
    turned_away: Vec<bool>,
    /// Added listeners to stop (a changed one is stopped, then started again on its socket).
    remove: Vec<SocketAddr>,
    add: Vec<(Listener, Arc<tokio::net::TcpListener>, App)>,
    /// New routes for the HTTP listeners that stay.
    routes: Vec<(SharedRoutes, Routes)>,
    /// What the reload does not apply (started listeners changed in place).
    pub warnings: Vec<String>,
}

/// Would `b` be served as `a` is? Routes are not compared: a reload swaps them in place.
fn same(a: &Listener, b: &Listener) -> bool {
    a.listen == b.listen
        && a.protocol == b.protocol
        && (a.protocol == Protocol::Http || a.upstream == b.upstream)
        && a.tls.is_some() == b.tls.is_some()
        && a.limits == b.limits
        && a.proxy_protocol == b.proxy_protocol
        && a.real_ip == b.real_ip
}

impl Listeners {
    /// The listeners pingora started, and the admin API's address; publishes them as
    /// tideway's own ([`PoolHandle::own`]).
    pub fn new(
        pool: PoolHandle,
        started: Vec<(Listener, Arc<AtomicBool>)>,
        admin: SocketAddr,
    ) -> Self {
        let l = Listeners {
            pool,
            started,
            added: Mutex::new(HashMap::new()),
            sweepers: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
            admin,
            shutdown: OnceLock::new(),
            routes: Mutex::new(HashMap::new()),
        };
        l.publish_own(&l.lock());
        l
    }

    /// Register the routes of a listener pingora started (and publish the own addresses
    /// again: a listener whose routes only answer is not one of them).
    pub fn with_routes(self, routes: Vec<(SocketAddr, SharedRoutes)>) -> Self {
        self.routes_lock().extend(routes);
        self.publish_own(&self.lock());
        self
    }

    fn routes_lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, SharedRoutes>> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every serving HTTP listener's current routes, by address (for the admin API).
    pub fn current_routes(&self) -> Vec<(SocketAddr, Arc<Routes>)> {
        let away = |addr: &SocketAddr| {
            self.started
                .iter()
                .any(|(l, t)| l.listen == *addr && t.load(Ordering::Acquire))
        };
        let mut all: Vec<_> = self
            .routes_lock()
            .iter()
            .filter(|(a, _)| !away(a))
            .map(|(a, r)| (*a, r.load_full()))
            .collect();
        all.sort_by_key(|(a, _)| *a);
        all
    }

    /// Give the added listeners pingora's shutdown signal (from the control plane's start).
    pub fn set_shutdown(&self, shutdown: ShutdownWatch) {
        let _ = self.shutdown.set(shutdown);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Added>> {
        self.added.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sweepers(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.sweepers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// At shutdown: hand over the tasks of the listeners reloads added (accept loops and
    /// keep-alive sweepers), for the control plane's set to stop and join. No reload changes
    /// the listeners after this (a plan prepared before is dropped at its commit).
    pub fn take_tasks(&self) -> Vec<(&'static str, JoinHandle<()>)> {
        let mut added = self.lock();
        self.stopped.store(true, Ordering::Release);
        let mut out: Vec<_> = added
            .drain()
            .map(|(_, a)| ("reload listener", a.task))
            .collect();
        out.extend(
            self.sweepers()
                .drain(..)
                .map(|t| ("reload listener sweeper", t)),
        );
        out
    }

    /// Every address tideway listens on that could forward a request: started listeners (a
    /// turned-away one is still bound), added ones and the admin API; an HTTP listener whose
    /// routes all answer themselves (`return`) is left out, as nginx configs proxy to such
    /// servers of the same instance and no request through them can come back.
    fn publish_own(&self, added: &HashMap<SocketAddr, Added>) {
        let routes = self.routes_lock();
        let forwards = |a: &SocketAddr| routes.get(a).is_none_or(|r| r.load().forwards());
        let mut own: Vec<SocketAddr> = self
            .started
            .iter()
            .map(|(l, _)| l.listen)
            .filter(forwards)
            .collect();
        own.extend(added.keys().filter(|a| forwards(a)));
        own.push(self.admin);
        self.pool.own().set(own);
    }

    /// Prepare the listeners `wanted`: bind the new ones and build their gateways, changing
    /// nothing that serves. `Err` says why a listener cannot start (its port is taken, its
    /// certificates unreadable).
    pub fn prepare(&self, wanted: &[Listener]) -> Result<Plan, String> {
        if self.shutdown.get().is_none() {
            return Err("the control plane is not running yet".into());
        }
        if self.stopped.load(Ordering::Acquire) {
            return Err("tideway is shutting down".into());
        }
        let mut plan = Plan {
            turned_away: Vec::new(),
            remove: Vec::new(),
            add: Vec::new(),
            routes: Vec::new(),
            warnings: Vec::new(),
        };
        for (l, _) in &self.started {
            let w = wanted.iter().find(|w| w.listen == l.listen);
            if w.is_some_and(|w| !same(w, l)) {
                plan.warnings.push(format!(
                    "listener {} changed in place: its protocol, TLS, limits, proxy_protocol and real_ip (and a tcp \
                     listener's upstream) stay as started until a restart or a hand-over (SIGUSR2); routes are applied",
                    l.listen
                ));
            }
            plan.turned_away.push(w.is_none());
        }
        // The routes of HTTP listeners that stay serving: built now, swapped at the commit.
        {
            let current = self.routes_lock();
            for w in wanted.iter().filter(|w| w.protocol == Protocol::Http) {
                if let Some(shared) = current.get(&w.listen) {
                    plan.routes.push((shared.clone(), routes(&self.pool, w)?));
                }
            }
        }
        let added = self.lock();
        plan.remove = added
            .iter()
            .filter(|(_, a)| !wanted.iter().any(|w| same(w, &a.listener)))
            .map(|(addr, _)| *addr)
            .collect();
        for w in wanted {
            if self.started.iter().any(|(l, _)| l.listen == w.listen) {
                continue;
            }
            let socket = match added.get(&w.listen) {
                Some(a) if same(w, &a.listener) => continue,
                // Changed: served anew on the socket it has.
                Some(a) => a.socket.clone(),
                None => Arc::new(bind(w.listen)?),
            };
            let app = self.app(w)?;
            plan.add.push((w.clone(), socket, app));
        }
        Ok(plan)
    }

    /// Apply a prepared plan: nothing in it can fail.
    pub fn commit(&self, plan: Plan) {
        for ((l, turned_away), away) in self.started.iter().zip(plan.turned_away) {
            if turned_away.swap(away, Ordering::AcqRel) != away {
                if away {
                    tracing::info!(listen = %l.listen, "reload: listener removed; new connections are turned away");
                } else {
                    tracing::info!(listen = %l.listen, "reload: listener back");
                }
            }
        }
        for (shared, routes) in plan.routes {
            shared.store(Arc::new(routes));
        }
        let mut added = self.lock();
        if self.stopped.load(Ordering::Acquire) {
            tracing::info!("reload: shutting down; listeners left as they are");
            return;
        }
        for addr in plan.remove {
            if let Some(a) = added.remove(&addr) {
                self.routes_lock().remove(&addr);
                tracing::info!(listen = %addr, "reload: listener removed");
                a.task.abort();
                // A changed listener is served anew at once: its new gateway holds its series.
                if !plan.add.iter().any(|(l, _, _)| l.listen == addr) {
                    crate::metrics::forget_listener(&addr.to_string());
                }
            }
        }
        let shutdown = self.shutdown.get().cloned().expect("checked by prepare");
        let mut sweepers = self.sweepers();
        sweepers.retain(|t| !t.is_finished());
        for (l, socket, app) in plan.add {
            let task = match app {
                App::Http(gw) => {
                    self.routes_lock().insert(l.listen, gw.routes().clone());
                    sweepers.push(tokio::spawn(gw.sweeper()));
                    tokio::spawn(crate::net::accept::serve(
                        socket.clone(),
                        gw,
                        shutdown.clone(),
                    ))
                }
                App::Tcp(gw) => tokio::spawn(crate::net::accept::serve(
                    socket.clone(),
                    gw,
                    shutdown.clone(),
                )),
            };
            tracing::info!(listen = %l.listen, upstream = %l.upstream, "reload: listener added");
            added.insert(
                l.listen,
                Added {
                    listener: l,
                    socket,
                    task,
                },
            );
        }
        drop(sweepers);
        self.publish_own(&added);
    }

    /// The gateway that serves `l` (reading its certificates).
    fn app(&self, l: &Listener) -> Result<App, String> {
        let never = Arc::new(AtomicBool::new(false));
        Ok(match l.protocol {
            Protocol::Http => {
                let (gw, _) = http_gateway(&self.pool, l, never)
                    .map_err(|e| format!("listener {}: {e}", l.listen))?;
                App::Http(Arc::new(gw))
            }
            Protocol::Tcp => App::Tcp(Arc::new(
                TcpGateway::new(route(&self.pool, l, false), never)
                    .with_addressing(Addressing::of(l))
                    .limited(&l.limits.per_client)
                    .counted(counts(l)),
            )),
        })
    }
}

/// Bind a listener's socket, ready for the accept path.
fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    let std = crate::net::accept::bind(addr).map_err(|e| format!("listener {addr}: {e}"))?;
    tokio::net::TcpListener::from_std(std).map_err(|e| format!("listener {addr}: {e}"))
}
