//! Wiring: config -> controller -> pingora server with one gateway service per listener, plus a
//! background service running the controller task and the admin API.
//!
//! Shutdown (and binary upgrade): pingora's shutdown signal cancels the process-wide close
//! token, which every tunnel's close signal descends from, so each WebSocket gets its 1001
//! close before pingora's grace period ends and the process exits. The closes are spread over
//! `[server] close_spread` (by default most of the grace, see [`crate::pool::spread`]). Then the background tasks, which the control plane
//! owns ([`crate::server::tasks`]), are stopped and joined; requests in flight finish on the
//! last snapshot.

use crate::admin::{self, token, AdminState};
use crate::config::{Config, Protocol};
use crate::discovery::fleet::Fleet;
use crate::pool::{Controller, ControllerTask};
use crate::proxy::tcp::TcpGateway;
use crate::registry::Registry;

use crate::net::accept::DataListener;
use crate::server::listeners::Listeners;
use crate::server::reload::{ConfigSource, Reloader};
use crate::server::tasks::{Tasks, DEFAULT_STOP_WAIT};
use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// The etcd endpoints given as ip:port, which no registration may name (the listeners and
/// the admin API are tideway's own addresses, kept by [`Listeners`]).
fn reserved_addrs(config: &Config) -> Vec<std::net::SocketAddr> {
    let mut out = Vec::new();
    for e in config.store.etcd.iter().flat_map(|e| &e.endpoints) {
        let hostport = e.rsplit("://").next().unwrap_or(e).trim_end_matches('/');
        if let Ok(a) = hostport.parse() {
            out.push(a);
        }
    }
    out
}

/// This instance's name in the fleet: host, admin port and process id.
fn instance_name(config: &Config) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!(
        "{host}-{}-{}",
        config.admin.listen.port(),
        std::process::id()
    )
}

/// The socket in data_dir through which a running tideway hands its listeners to a new one.
pub const UPGRADE_SOCK: &str = "upgrade.sock";

/// The admin listener. It has SO_REUSEPORT so that a new process taking over (binary
/// upgrade, `run --upgrade`) can listen on it while the old one finishes; that is the only
/// time two processes may hold it. Without `upgrade`, the address must be free: a socket
/// without SO_REUSEPORT is bound first, which fails if any process listens there (with
/// SO_REUSEPORT or not), and is closed before the real one binds. Two instances started in
/// the same instant could both pass that test; one started next to a running one cannot.
fn admin_socket(
    addr: std::net::SocketAddr,
    upgrade: bool,
) -> Result<std::net::TcpListener, StartError> {
    use socket2::{Domain, Socket, Type};
    let bind = |reuse_port: bool| -> std::io::Result<Socket> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(reuse_port)?;
        socket.bind(&addr.into())?;
        Ok(socket)
    };
    if !upgrade {
        match bind(false) {
            Ok(probe) => drop(probe),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(StartError::AdminTaken { addr })
            }
            Err(source) => return Err(StartError::AdminBind { addr, source }),
        }
    }
    let listen = || -> std::io::Result<std::net::TcpListener> {
        let socket = bind(true)?;
        socket.listen(1024)?;
        socket.set_nonblocking(true)?;
        Ok(socket.into())
    };
    listen().map_err(|source| StartError::AdminBind { addr, source })
}

/// Why tideway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("token: {0}")]
    Token(#[from] token::TokenError),
    #[error("tls: {0}")]
    Tls(#[from] crate::config::tls::TlsError),
    /// A listener's certificates or routes.
    #[error("{0}")]
    Listener(String),
    #[error("data_dir {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "admin listener {addr}: the address is in use (another tideway? only `tideway run --upgrade` \
         may take it over from a running one)"
    )]
    AdminTaken { addr: std::net::SocketAddr },
    #[error("access_log_file {path}: {source}")]
    AccessLog {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("admin listener {addr}: {source}")]
    AdminBind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the controller and the admin API on pingora's background runtime.
/// The admin listener and what serving it takes: its state, limits and TLS.
type AdminParts = (
    std::net::TcpListener,
    AdminState,
    admin::serve::ConnLimits,
    Option<Arc<rustls::ServerConfig>>,
);

struct ControlPlane {
    controller: Mutex<Option<ControllerTask>>,
    pool: crate::pool::PoolHandle,
    admin: Mutex<Option<AdminParts>>,
    close_all: CancellationToken,
    /// Over how long the shutdown's 1001 closes are spread (ends within the grace).
    close_spread: std::time::Duration,
    /// Re-reads the config (and TLS certificates) on SIGHUP and `POST /v1/reload`.
    reloader: Arc<Reloader>,
    etcd: Option<Arc<crate::store::Store>>,
    /// With etcd: this instance's view of the fleet's counts, published and read there.
    fleet: Option<Arc<Fleet>>,
    upstreams: Vec<String>,
    data_dir: std::path::PathBuf,
    /// Set once the pool is loaded (`/readyz`).
    ready: Arc<AtomicBool>,
    /// The config started with, whose `resolve` names are followed from the start.
    names: Config,
    /// The keep-alive sweepers of the listeners started with, run in the set.
    sweepers: Mutex<Vec<Sweeper>>,
}

#[async_trait]
impl BackgroundService for ControlPlane {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let tasks = self.spawn_tasks(shutdown.clone());
        let _ = shutdown.changed().await;
        tracing::info!(spread = ?self.close_spread, "shutting down: closing tunnels with 1001, spread");
        crate::pool::spread::begin_shutdown(self.close_spread);
        self.close_all.cancel();
        self.stop_tasks(tasks, DEFAULT_STOP_WAIT).await;
    }
}

impl ControlPlane {
    /// Start the long-lived tasks, owned by the returned set.
    fn spawn_tasks(&self, shutdown: ShutdownWatch) -> Tasks {
        let mut tasks = Tasks::default();
        if let Some(task) = self.controller.lock().expect("not poisoned").take() {
            tasks.spawn_stoppable("pool controller", |stop| task.run_until(stop));
        }
        for sweeper in std::mem::take(&mut *self.sweepers.lock().expect("not poisoned")) {
            tasks.spawn("keep-alive sweeper", sweeper);
        }
        tasks.spawn(
            "memory trimmer",
            crate::server::memory::trimmer(self.pool.clone()),
        );
        match self.etcd.clone() {
            Some(etcd) => {
                let (pool, upstreams) = (self.pool.clone(), self.upstreams.clone());
                let (data_dir, ready) = (self.data_dir.clone(), self.ready.clone());
                tasks.spawn_stoppable("etcd watch", |stop| {
                    crate::discovery::etcd::watch(pool, etcd, upstreams, data_dir, ready, stop)
                })
            }
            // Without etcd the pool is the config's, loaded before the controller started.
            None => self.ready.store(true, Ordering::Release),
        }
        if let (Some(fleet), Some(etcd)) = (&self.fleet, &self.etcd) {
            tasks.spawn(
                "fleet counts",
                crate::discovery::fleet::publisher(fleet.clone(), etcd.clone()),
            );
        }
        tasks.spawn(
            "rebalancer",
            crate::scale::rebalance::rebalancer(self.pool.clone(), self.fleet.clone()),
        );
        tasks.spawn(
            "autoscale hook",
            crate::scale::autoscale::autoscaler(self.pool.clone(), self.fleet.clone()),
        );
        self.reloader.checkers.ensure();
        self.reloader.names.follow(&self.names);
        if let Some((listener, state, limits, tls)) =
            self.admin.lock().expect("not poisoned").take()
        {
            tasks.spawn(
                "dashboard history",
                admin::history::sampler(state.history.clone(), self.pool.clone()),
            );
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => tasks.spawn(
                    "admin API",
                    admin::serve::serve(l, admin::router(state), limits, tls),
                ),
                Err(e) => tracing::error!(error = %e, "admin listener unusable"),
            }
        }
        self.reloader.listeners.set_shutdown(shutdown);
        tasks.spawn("SIGHUP reloads", reload_on_sighup(self.reloader.clone()));
        tasks.spawn("SIGUSR1 log reopen", reopen_on_sigusr1());
        tasks
    }

    /// Stop `tasks`, with the accept loops and sweepers of the listeners reloads added, and
    /// the health checks and name follows (which reloads restart, so their handles live with
    /// the reloader), joining them all within `wait`.
    async fn stop_tasks(&self, mut tasks: Tasks, wait: std::time::Duration) {
        for (name, task) in self.reloader.listeners.take_tasks() {
            tasks.adopt(name, task);
        }
        let (checkers, names) = (&self.reloader.checkers, &self.reloader.names);
        let others = async { tokio::join!(checkers.stop(), names.stop()) };
        let (stopped, others) = tokio::join!(tasks.stop(wait), tokio::time::timeout(wait, others));
        if others.is_err() {
            tracing::warn!(?wait, "health checks or name follows did not stop in time");
        }
        tracing::info!(
            ended = stopped.ended.len(),
            aborted = stopped.aborted.len(),
            "background tasks stopped"
        );
    }
}

/// Re-read the config and the certificates on SIGHUP; a bad file keeps the running config.
async fn reload_on_sighup(reloader: Arc<Reloader>) {
    use crate::config::reload::Reload;
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot listen for SIGHUP; the config will not be reloaded");
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the config");
        if let Err(e) = reloader.reload().await {
            tracing::error!(error = %e, "SIGHUP: config refused; keeping the running one");
        }
    }
}

/// Reopen the access-log file on SIGUSR1 (nginx's `-s reopen`): logrotate renames it, then
/// signals, and the next lines go to a new file at the configured path.
async fn reopen_on_sigusr1() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        tracing::error!("cannot listen for SIGUSR1; the access log will not be reopened");
        return;
    };
    // A SIGUSR1 that came before this listened was taken by the handler installed at start
    // and is gone (tokio keeps none for a listener that did not exist yet): reopen once now,
    // so a rotation during start (or while `run --upgrade` waited) is not missed. Reopening
    // a file that was not rotated opens the same file again.
    crate::proxy::access::sink::reopen();
    while usr1.recv().await.is_some() {
        // The writer thread opens the file and logs how it went.
        if crate::proxy::access::sink::reopen() {
            tracing::info!("SIGUSR1: reopening the access log");
        } else {
            tracing::info!("SIGUSR1: no access_log_file to reopen");
        }
    }
}

/// What [`add_listeners`] hands to the reloader: the TLS listeners' certificate resolvers
/// (re-read on reload), the listeners started with their turn-away switches, and each HTTP
/// listener's routes; and to the control plane: each HTTP listener's keep-alive sweeper.
type Started = (
    Vec<Arc<crate::proxy::tls::SniResolver>>,
    Vec<(crate::config::Listener, Arc<AtomicBool>)>,
    Vec<(std::net::SocketAddr, crate::proxy::dispatch::SharedRoutes)>,
    Vec<Sweeper>,
);

/// A listener's keep-alive sweeper, not yet running.
type Sweeper = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// One pingora service per listener of `config`, on tideway's accept path.
fn add_listeners(
    server: &mut Server,
    pool: &crate::pool::PoolHandle,
    config: &Config,
) -> Result<Started, StartError> {
    let mut resolvers = Vec::new();
    let mut started = Vec::new();
    let mut routes = Vec::new();
    let mut sweepers: Vec<Sweeper> = Vec::new();
    for l in &config.listeners {
        match l.protocol {
            Protocol::Http => {
                let turned_away = Arc::new(AtomicBool::new(false));
                let (gateway, resolver) =
                    crate::server::listeners::http_gateway(pool, l, turned_away.clone())
                        .map_err(StartError::Listener)?;
                routes.push((l.listen, gateway.routes().clone()));
                sweepers.push(Box::pin(gateway.sweeper()));
                resolvers.extend(resolver);
                started.push((l.clone(), turned_away));
                let svc = DataListener::new(format!("http {}", l.listen), l.listen, gateway);
                server.add_service(svc);
                tracing::info!(listen = %l.listen, upstream = %l.upstream, tls = l.tls.is_some(), "http listener");
            }
            Protocol::Tcp => {
                let turned_away = Arc::new(AtomicBool::new(false));
                let route = crate::server::listeners::route(pool, l, false);
                started.push((l.clone(), turned_away.clone()));
                let gateway = TcpGateway::new(route, turned_away)
                    .with_addressing(crate::proxy::client::Addressing::of(l))
                    .limited(&l.limits.per_client)
                    .counted(crate::server::listeners::counts(l));
                let svc = DataListener::new(format!("tcp {}", l.listen), l.listen, gateway);
                server.add_service(svc);
                tracing::info!(listen = %l.listen, upstream = %l.upstream, "tcp listener");
            }
        }
    }
    Ok((resolvers, started, routes, sweepers))
}

/// Build the pingora server for `config`; with `upgrade`, it takes the listening sockets over
/// from the tideway running on the same data_dir (which gets SIGUSR2). Run it with
/// [`crate::server::signals::Signals`].
pub fn build(config: &Config, source: ConfigSource, upgrade: bool) -> Result<Server, StartError> {
    crate::proxy::access::enable(config.server.access_log);
    if let Some(f) = config.server.access_log_format {
        crate::proxy::access::set_json(f == crate::config::AccessLogFormat::Json);
    }
    if let Some(path) = &config.server.access_log_file {
        crate::proxy::access::sink::open(path).map_err(|source| StartError::AccessLog {
            path: path.clone(),
            source,
        })?;
    }
    crate::metrics::global()
        .last_reload
        .set(crate::server::reload::now_secs());
    let close_all = CancellationToken::new();
    crate::pool::spread::watch_shutdown(&close_all);
    // pingora's grace is whole seconds, at least one.
    let grace = std::time::Duration::from_secs(config.server.shutdown_grace.as_secs().max(1));
    let (close_spread, cut) =
        crate::pool::spread::shutdown_length(config.server.close_spread, grace);
    if cut {
        tracing::warn!(
            configured = ?config.server.close_spread,
            spread = ?close_spread,
            ?grace,
            "[server] close_spread is cut to end a margin before shutdown_grace"
        );
    }
    let toggles = crate::pool::toggles::Toggles::load(&config.store.data_dir);
    let controller = Controller::new(&config.upstreams, close_all.clone(), toggles);
    let (pool, task) = controller.into_task();

    let data_dir = &config.store.data_dir;
    // The upgrade socket lives there, so it must exist before anything else runs.
    std::fs::create_dir_all(data_dir).map_err(|source| StartError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let admin_token = token::load(
        token::ADMIN_TOKEN_ENV,
        config.admin.token_file.as_deref(),
        data_dir,
        "admin.token",
    )?;
    let register_token = token::load(
        token::REGISTER_TOKEN_ENV,
        config.admin.register_token_file.as_deref(),
        data_dir,
        "register.token",
    )?;
    let admin_listener = admin_socket(config.admin.listen, upgrade)?;
    tracing::info!(addr = %config.admin.listen, "admin API listening");
    let budget = crate::net::fds::Budget::of_process(config.server.fd_reserve);
    let cap = config
        .server
        .max_connections
        .unwrap_or_else(|| budget.default_connection_cap());
    crate::net::fds::proxied().set(cap);
    tracing::info!(
        open_files = ?budget.limit,
        reserve = budget.reserve,
        max_connections = cap,
        "descriptor budget"
    );

    let conf = ServerConf {
        threads: config.server.threads,
        work_stealing: config.server.work_stealing,
        grace_period_seconds: Some(config.server.shutdown_grace.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: data_dir.join(UPGRADE_SOCK).display().to_string(),
        ..ServerConf::default()
    };
    let opt = pingora::server::configuration::Opt {
        upgrade,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);

    let (resolvers, started, routes, sweepers) = add_listeners(&mut server, &pool, config)?;

    let reloader = Arc::new(Reloader {
        source,
        pool: pool.clone(),
        listeners: Arc::new(
            Listeners::new(pool.clone(), started, config.admin.listen).with_routes(routes),
        ),
        resolvers,
        checkers: Arc::new(crate::health::Checkers::new(pool.clone())),
        running: tokio::sync::Mutex::new(()),
        names: Arc::new(crate::discovery::names::Names::new(pool.clone())),
    });
    let ready = Arc::new(AtomicBool::new(false));
    // The one etcd store (and client) of the process.
    let store = config
        .store
        .etcd
        .clone()
        .map(|s| Arc::new(crate::store::Store::new(s)));
    let fleet = config
        .store
        .etcd
        .as_ref()
        .map(|_| Arc::new(Fleet::new(instance_name(config), pool.clone())));
    let control = ControlPlane {
        controller: Mutex::new(Some(task)),
        pool: pool.clone(),
        admin: Mutex::new(Some((
            admin_listener,
            AdminState {
                pool: pool.clone(),
                admin_token,
                register_token,
                registry: Arc::new(match (&store, &fleet) {
                    (Some(store), Some(fleet)) => Registry::etcd(
                        pool.clone(),
                        reserved_addrs(config),
                        store.clone(),
                        fleet.clone(),
                    ),
                    _ => Registry::local(pool.clone(), reserved_addrs(config)),
                }),
                ready: ready.clone(),
                fleet: fleet.clone(),
                reloader: Some(reloader.clone()),
                history: Default::default(),
            },
            admin::serve::ConnLimits::new(&config.admin, budget),
            config.admin.tls.as_ref().map(|t| t.server.clone()),
        ))),
        close_all,
        close_spread,
        reloader,
        etcd: store,
        fleet,
        upstreams: config.upstreams.iter().map(|u| u.name.clone()).collect(),
        data_dir: config.store.data_dir.clone(),
        ready,
        names: config.clone(),
        sweepers: Mutex::new(sweepers),
    };
    server.add_service(background_service("control plane", control));
    Ok(server)
}
