//! The validated, internal configuration. Nothing here is read by serde directly; the file
//! layer (`file.rs`) builds these after checking every value.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Default idle timeout of a WebSocket or TCP tunnel: one hour, like a patient HAProxy
/// `timeout tunnel`, not pingora's 60 s read timeout.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default time a draining backend's tunnels are left open before they get a 1001 close.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default timeout for connecting to a backend.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default admin listener: loopback only.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
/// Default data directory for the embedded store.
pub const DEFAULT_DATA_DIR: &str = "data";
/// Default number of retries on another backend when connecting fails.
pub const DEFAULT_CONNECT_RETRIES: u32 = 1;
/// Default weight of a backend.
pub const DEFAULT_WEIGHT: u32 = 1;
/// Largest weight accepted (bounds a `hash` backend at 160,000 ring points).
pub const MAX_WEIGHT: u32 = 1000;

/// The whole validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub server: ServerSettings,
    pub admin: AdminSettings,
    pub store: StoreSettings,
    pub listeners: Vec<Listener>,
    pub upstreams: Vec<UpstreamConfig>,
    /// `[resolver]`: how backend names are resolved ([`super::names`]).
    pub resolver: super::names::ResolverSettings,
}

/// `[server]`
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Data-plane worker threads.
    pub threads: usize,
    /// How long a graceful shutdown waits for tunnels to close after sending them 1001.
    pub shutdown_grace: Duration,
    /// One shared work-stealing runtime (true) or one single-threaded runtime per thread
    /// (default: true with more than one thread).
    pub work_stealing: bool,
    /// Log every HTTP request and tunnel end (target `tideway::access`).
    pub access_log: bool,
    /// Write the access log to this file instead of stderr (reopened on SIGUSR1); setting it
    /// turns the access log on.
    pub access_log_file: Option<std::path::PathBuf>,
    /// The access log's format (None: as `--log-format`, text being `combined`).
    pub access_log_format: Option<AccessLogFormat>,
    /// Process-wide cap on proxied client connections (None: `(open files - reserve) / 2`;
    /// 0: none).
    pub max_connections: Option<usize>,
    /// File descriptors the admin listener leaves to the data plane (None: a quarter of the
    /// open-files limit, see [`crate::net::fds::Budget`]).
    pub fd_reserve: Option<usize>,
    /// Over how long a shutdown or binary upgrade spreads its tunnels' 1001 closes (None:
    /// [`crate::pool::spread::DEFAULT_CLOSE_SPREAD_SHARE`] of `shutdown_grace`; always ending a
    /// margin before it, see [`crate::pool::spread::shutdown_length`]).
    pub close_spread: Option<Duration>,
}

/// `[admin]`
#[derive(Clone, Debug)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    pub token_file: Option<PathBuf>,
    pub register_token_file: Option<PathBuf>,
    /// Longest a request head may take from its first byte.
    pub header_timeout: Duration,
    /// Longest a connection may stay open with no request under way and no head begun.
    pub idle_timeout: Duration,
    /// Concurrent admin connections; more are closed at once.
    pub max_connections: usize,
    /// TLS (None: plain HTTP), optionally with client certificates.
    pub tls: Option<super::tls::AdminTls>,
}

/// Default `[admin] header_timeout`: a request head has this long from its first byte.
pub const DEFAULT_ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `[admin] idle_timeout`: a connection with no request under way closes after this.
pub const DEFAULT_ADMIN_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `[admin] max_connections`: concurrent admin connections.
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 128;

/// `[store]`
#[derive(Clone, Debug)]
pub struct StoreSettings {
    pub data_dir: PathBuf,
    /// etcd, when configured: registrations and toggles shared by every proxy instance.
    pub etcd: Option<EtcdSettings>,
}

/// `[store] etcd = { endpoints, prefix, ca, cert, key, server_name, user, password_file }`
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct EtcdSettings {
    pub endpoints: Vec<String>,
    /// Key prefix without a trailing slash, e.g. `/tideway`.
    pub prefix: String,
    /// TLS to etcd (https:// endpoints).
    pub tls: Option<super::etcd::EtcdTls>,
    /// etcd's authentication: a user and its password.
    pub auth: Option<super::etcd::EtcdAuth>,
}

/// Default etcd key prefix.
pub const DEFAULT_ETCD_PREFIX: &str = "/tideway";

/// `[[listener]]`
#[derive(Clone, Debug)]
pub struct Listener {
    pub listen: SocketAddr,
    pub protocol: Protocol,
    /// The upstream of a one-route listener; with routes, the first one they proxy to (for
    /// logs and the tcp path).
    pub upstream: String,
    /// Servers and their locations ([`super::routes`]); `upstream = "NAME"` is one server with
    /// one location `/`.
    pub routes: Vec<super::routes::ServerConfig>,
    /// Certificates for TLS termination (http listeners); the first is the default when no
    /// SNI name matches. Checked at load time.
    pub tls: Option<Vec<super::tls::TlsFiles>>,
    /// What the listener accepts from a client (http listeners; `max_connections` for both).
    pub limits: HttpLimits,
    /// Every connection starts with a PROXY protocol header (v1 or v2), whose source address is
    /// the client's; a connection without a valid one is closed.
    pub proxy_protocol: bool,
    /// HTTP/2 is offered by ALPN (`h2`, then `http/1.1`); TLS listeners only.
    pub http2: bool,
    /// Trusted proxies whose forwarding header names the client (nginx's realip module).
    pub real_ip: Option<super::real_ip::RealIp>,
}

/// Concurrent streams per HTTP/2 connection (nginx's `http2_max_concurrent_streams`, 128).
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 128;
/// Largest request line (nginx: one `large_client_header_buffers` buffer, 8k).
pub const DEFAULT_MAX_REQUEST_LINE: usize = 8 * 1024;
/// Largest header field line (nginx: 8k).
pub const DEFAULT_MAX_HEADER_LINE: usize = 8 * 1024;
/// Largest request head (nginx: 4 buffers of 8k).
pub const DEFAULT_MAX_HEAD: usize = 32 * 1024;
/// Most header fields in one request (nginx has no count limit; 100 is HAProxy's default).
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Longest a request head may take to arrive (nginx's `client_header_timeout`).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for the next bytes of a request body (nginx's `client_body_timeout`).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a keep-alive connection may idle between requests (pingora's and HAProxy's 60 s;
/// nginx's `keepalive_timeout` is 75 s).
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Requests served on one client connection before it is closed (nginx's `keepalive_requests`).
pub const DEFAULT_KEEPALIVE_REQUESTS: u32 = 1000;
/// Longest a whole chunked request body may take to arrive (it is held in memory meanwhile).
pub const DEFAULT_CHUNKED_BODY_TIME: Duration = Duration::from_secs(60);
/// Longest a client may take no bytes of what tideway sends it (nginx's `send_timeout`: the
/// wait between two successive writes, not the whole answer). Past it the answer is cut; an
/// HTTP/2 connection whose writes wait that long is closed.
pub const DEFAULT_CLIENT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest chunked request body; it is read whole and sent on with a Content-Length (nginx's
/// `client_max_body_size` default).
pub const DEFAULT_MAX_CHUNKED_BODY: u64 = 1024 * 1024;

/// `[[listener]] limits = { ... }`: what one listener accepts from its clients.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpLimits {
    pub max_request_line: usize,
    pub max_header_line: usize,
    pub max_head: usize,
    pub max_headers: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub keepalive_requests: u32,
    /// Concurrent client connections (0: no limit).
    pub max_connections: usize,
    pub max_chunked_body: u64,
    /// Deadline of a whole chunked body, from its first byte on.
    pub chunked_body_time: Duration,
    /// Concurrent streams one HTTP/2 connection may open (nginx's
    /// `http2_max_concurrent_streams`).
    pub max_concurrent_streams: u32,
    /// Longest wait for a client to take bytes (nginx's `send_timeout`).
    pub send_timeout: Duration,
    /// Per-client limits (`client_limits`), each with its zone; empty: none.
    pub per_client: Vec<super::limit::ClientLimit>,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_request_line: DEFAULT_MAX_REQUEST_LINE,
            max_header_line: DEFAULT_MAX_HEADER_LINE,
            max_head: DEFAULT_MAX_HEAD,
            max_headers: DEFAULT_MAX_HEADERS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            keepalive_requests: DEFAULT_KEEPALIVE_REQUESTS,
            max_connections: 0,
            max_chunked_body: DEFAULT_MAX_CHUNKED_BODY,
            chunked_body_time: DEFAULT_CHUNKED_BODY_TIME,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            send_timeout: DEFAULT_CLIENT_SEND_TIMEOUT,
            per_client: Vec::new(),
        }
    }
}

/// What a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 and WebSocket.
    Http,
    /// Raw TCP.
    Tcp,
}

/// `[upstream.NAME]`
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    pub name: String,
    pub policy: UpstreamPolicy,
    /// Every backend, those of names included (one per address, in the names' places).
    pub backends: Vec<StaticBackend>,
    /// The backends given by name, each with its place in `backends` ([`super::names`]).
    pub names: Vec<super::names::NamedServer>,
}

/// How an upstream picks and treats its backends.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamPolicy {
    pub balance: Balance,
    pub hash_key: HashKey,
    /// Bounded-load factor for `hash`, in percent (HAProxy's `hash-balance-factor`); 0 = off.
    pub hash_balance_factor: u32,
    /// `hash`: consistent (ketama, nginx's `hash KEY consistent`; the default) or nginx's
    /// plain `hash KEY` (CRC-32 of the key over the servers' weights, see
    /// [`crate::balance::modulo`]).
    pub hash_consistent: bool,
    pub drain_timeout: Duration,
    /// Over how long the end of a drain spreads its tunnels' 1001 closes, ending at
    /// `drain_timeout` (None: [`crate::pool::spread::DEFAULT_CLOSE_SPREAD_SHARE`] of it; never
    /// longer than it).
    pub close_spread: Option<Duration>,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    /// Attempts after the first one (`next_upstream_tries - 1`; `u32::MAX`: no limit but the
    /// upstream's backends).
    pub retries: u32,
    /// When a failed attempt goes on to the next backend (nginx's `proxy_next_upstream`).
    pub next_upstream: NextUpstream,
    /// No attempt starts this long after the first one did (nginx's
    /// `proxy_next_upstream_timeout`); None: no limit.
    pub next_upstream_timeout: Option<Duration>,
    pub health: Option<HealthConfig>,
    pub passive: PassiveConfig,
    /// Send a PROXY protocol header to backends (WebSocket and TCP paths).
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Ramp a joining or recovering backend's weight from 10% to 100% over this long.
    pub slow_start: Option<Duration>,
    pub scale: Option<ScaleConfig>,
    /// Close misplaced WebSockets after the pool changes, so clients reconnect where they belong.
    pub rebalance: Option<RebalanceConfig>,
    /// Run a command or call a webhook when the recommended backend count changes.
    pub autoscale: Option<AutoscaleConfig>,
    /// What the register token may do here.
    pub registration: super::scope::RegistrationScope,
    /// Cookie-insert stickiness (NGINX Plus's `sticky cookie`); HTTP listeners only.
    pub sticky: Option<super::sticky::StickyCookie>,
    /// TLS to the backends (None: plain TCP).
    pub tls: Option<std::sync::Arc<super::upstream_tls::UpstreamTls>>,
    /// Tunnels' keepalive pings and send timeout.
    pub liveness: Liveness,
    /// Upgrade admission per backend (None: off).
    pub admission: Option<super::admission::AdmissionConfig>,
}

impl Default for UpstreamPolicy {
    fn default() -> Self {
        Self {
            balance: Balance::RoundRobin,
            hash_key: HashKey::Ip,
            hash_balance_factor: 0,
            hash_consistent: true,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            close_spread: None,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            retries: DEFAULT_CONNECT_RETRIES,
            next_upstream: NextUpstream::default(),
            next_upstream_timeout: None,
            health: None,
            passive: PassiveConfig::default(),
            proxy_protocol: None,
            slow_start: None,
            scale: None,
            rebalance: None,
            autoscale: None,
            registration: super::scope::RegistrationScope::default(),
            sticky: None,
            tls: None,
            admission: None,
            liveness: Liveness::default(),
        }
    }
}

/// How a tunnel finds dead peers: `ping_interval`, `pong_timeout`, `ping_backend` and
/// `send_timeout` of an upstream.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Liveness {
    /// Ping a WebSocket's client (and its backend with `ping_backend`) after this long without
    /// a byte from it; None: no pings (the default).
    pub ping_interval: Option<Duration>,
    /// A pinged peer that sends nothing for this long is closed.
    pub pong_timeout: Duration,
    /// Ping backends too, not only clients.
    pub ping_backend: bool,
    /// A tunnel whose peer takes none of the bytes waiting for it this long is cut (WebSocket
    /// and TCP); None: never.
    pub send_timeout: Option<Duration>,
}

/// Default `pong_timeout`: a pinged peer has this long to answer.
pub const DEFAULT_PONG_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `send_timeout` of a tunnel: nginx's `send_timeout` and `proxy_send_timeout`, which
/// also bound its WebSocket tunnels' writes.
pub const DEFAULT_TUNNEL_SEND_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            ping_interval: None,
            pong_timeout: DEFAULT_PONG_TIMEOUT,
            ping_backend: false,
            send_timeout: Some(DEFAULT_TUNNEL_SEND_TIMEOUT),
        }
    }
}

/// `rebalance = { per_second = N, factor = F, settle = "1s" }`: after the pool changes, close
/// (with 1001) the WebSockets that are no longer where the upstream would place them, at most
/// `per_second` a second across the fleet, so their clients reconnect there.
#[derive(Clone, Debug, PartialEq)]
pub struct RebalanceConfig {
    pub per_second: u32,
    /// Other than `hash`: shed from backends holding more than `factor` times the average.
    pub factor: f64,
    /// How long the pool must stay unchanged before misplaced sessions are closed, so a burst
    /// of registrations moves each session once.
    pub settle: Duration,
}

/// Default `rebalance.factor`.
pub const DEFAULT_REBALANCE_FACTOR: f64 = 1.25;
/// Default `rebalance.settle`.
pub const DEFAULT_REBALANCE_SETTLE: Duration = Duration::from_secs(1);

/// What an autoscale hook calls.
#[derive(Clone, Debug, PartialEq)]
pub enum ScaleHook {
    /// A shell command (`sh -c`), with the counts in its environment.
    Exec(String),
    /// An HTTP URL that gets a JSON POST.
    Webhook(String),
}

/// `[upstream.X.autoscale]`: act on the recommended backend count.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoscaleConfig {
    pub hook: ScaleHook,
    /// Least time between two runs of the hook.
    pub cooldown: Duration,
    /// Scale in only once the load fits the smaller count with this margin (0.1 = 10%).
    pub hysteresis: f64,
    /// How often the recommendation is read.
    pub interval: Duration,
    /// Longest a run may take; a command still running then is killed with its process group.
    pub timeout: Duration,
    /// Variables of tideway's environment passed on to the command (`env = [...]`), besides
    /// `PATH`, `HOME` and the `TIDEWAY_*` counts; never a token (refused at load).
    pub env: Vec<String>,
}

/// Env var holding the admin token.
pub const ADMIN_TOKEN_ENV: &str = "TIDEWAY_ADMIN_TOKEN";
/// Env var holding the registration token.
pub const REGISTER_TOKEN_ENV: &str = "TIDEWAY_REGISTER_TOKEN";
/// The variables of tideway's environment that hold secrets: never passed to a hook.
pub const SECRET_ENV: [&str; 2] = [ADMIN_TOKEN_ENV, REGISTER_TOKEN_ENV];

/// Default `autoscale.cooldown`.
pub const DEFAULT_AUTOSCALE_COOLDOWN: Duration = Duration::from_secs(60);
/// Default `autoscale.hysteresis`.
pub const DEFAULT_AUTOSCALE_HYSTERESIS: f64 = 0.1;
/// Default `autoscale.timeout`.
pub const DEFAULT_AUTOSCALE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `autoscale.interval`.
pub const DEFAULT_AUTOSCALE_INTERVAL: Duration = Duration::from_secs(2);

/// A backend given in the config file.
#[derive(Clone, Debug, PartialEq)]
pub struct StaticBackend {
    pub id: String,
    pub addr: SocketAddr,
    pub weight: u32,
    /// Most active connections at once (nginx `max_conns`); 0: no limit.
    pub max_conns: u32,
    /// Starts disabled (nginx's `down`), unless a persisted toggle says otherwise.
    pub disabled: bool,
    /// Gets requests only when no other backend can take them (nginx's `backup`).
    pub backup: bool,
    /// This backend's own `max_fails` and `fail_timeout` (nginx's per-server parameters);
    /// None: the upstream's.
    pub max_fails: Option<u32>,
    pub fail_timeout: Option<Duration>,
}

/// PROXY protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyProtocol {
    V1,
    V2,
}

/// Passive health: nginx's `max_fails` / `fail_timeout`.
#[derive(Clone, Debug, PartialEq)]
pub struct PassiveConfig {
    /// Failures that take a backend out (a success resets the count only once `fail_timeout`
    /// has passed since the last failure, as in nginx); 0 turns passive checks off.
    pub max_fails: u32,
    /// How long an ejected backend stays out before it is tried (or probed) again.
    pub fail_timeout: Duration,
    /// Count 5xx answers as failures (connect errors and resets always count).
    pub fail_on_5xx: bool,
    /// Most backends of the upstream passive health may hold out at once, in percent, rounded
    /// down (Envoy's `max_ejection_percent`): a one-backend upstream is never ejected.
    pub max_ejection_percent: u32,
}

/// nginx's defaults: one failure ejects for 10 s.
pub const DEFAULT_MAX_FAILS: u32 = 1;
/// nginx's default `fail_timeout`.
pub const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);
/// Passive health ejects at most half of an upstream's backends (rounded down).
pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 50;

impl Default for PassiveConfig {
    fn default() -> Self {
        Self {
            max_fails: DEFAULT_MAX_FAILS,
            fail_timeout: DEFAULT_FAIL_TIMEOUT,
            fail_on_5xx: false,
            max_ejection_percent: DEFAULT_MAX_EJECTION_PERCENT,
        }
    }
}

/// nginx's `proxy_next_upstream` conditions: which failures send a request on to the next
/// backend. Whatever is listed, only failures the backend caused go on, and a request the
/// backend may have acted on goes on only when it is idempotent or `non_idempotent` is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextUpstream(u32);

impl NextUpstream {
    /// Refused or reset connections, a failed send, no answer (nginx's `error`).
    pub const ERROR: u32 = 1;
    /// No answer in time (nginx's `timeout`, which also names connect timeouts).
    pub const TIMEOUT: u32 = 1 << 1;
    /// Connecting timed out.
    pub const CONNECT_TIMEOUT: u32 = 1 << 2;
    /// An answer that cannot be forwarded (nginx's `invalid_header`).
    pub const INVALID_HEADER: u32 = 1 << 3;
    /// POST, PATCH and unknown methods go on too (nginx's `non_idempotent`).
    pub const NON_IDEMPOTENT: u32 = 1 << 4;
    /// Statuses, each a bit above these (see [`Self::STATUSES`]).
    const STATUS_SHIFT: u32 = 8;
    /// The statuses nginx can retry on, in bit order.
    pub const STATUSES: [u16; 7] = [500, 502, 503, 504, 403, 404, 429];

    /// Nothing goes on (nginx's `off`).
    pub const OFF: NextUpstream = NextUpstream(0);

    /// Parse nginx's condition names; `Err` names the one not understood.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut bits = 0;
        let mut off = false;
        for n in names {
            bits |= match n {
                "error" => Self::ERROR,
                "timeout" => Self::TIMEOUT | Self::CONNECT_TIMEOUT,
                "invalid_header" => Self::INVALID_HEADER,
                "non_idempotent" => Self::NON_IDEMPOTENT,
                "off" => {
                    off = true;
                    0
                }
                _ => match n
                    .strip_prefix("http_")
                    .and_then(|c| c.parse::<u16>().ok())
                    .and_then(|c| Self::STATUSES.iter().position(|&s| s == c))
                {
                    Some(i) => 1 << (Self::STATUS_SHIFT + i as u32),
                    None => return Err(format!(
                        "unknown next_upstream condition {n:?}; expected error, timeout, invalid_header, http_500, http_502, http_503, http_504, http_403, http_404, http_429, non_idempotent or off"
                    )),
                },
            };
        }
        if off && bits != 0 {
            return Err("next_upstream \"off\" cannot be combined with other conditions".into());
        }
        Ok(NextUpstream(bits))
    }

    /// Is every bit of `flag` set?
    pub fn has(self, flag: u32) -> bool {
        flag != 0 && self.0 & flag == flag
    }

    /// Does an answer with `status` go on to the next backend?
    pub fn on_status(self, status: u16) -> bool {
        Self::STATUSES
            .iter()
            .position(|&s| s == status)
            .is_some_and(|i| self.0 & (1 << (Self::STATUS_SHIFT + i as u32)) != 0)
    }

    /// The conditions by nginx's names, in nginx's order (`off` when none).
    pub fn names(self) -> Vec<String> {
        let mut out = Vec::new();
        for (flag, name) in [
            (Self::ERROR, "error"),
            (Self::TIMEOUT, "timeout"),
            (Self::INVALID_HEADER, "invalid_header"),
        ] {
            if self.has(flag) {
                out.push(name.to_string());
            }
        }
        for s in Self::STATUSES {
            if self.on_status(s) {
                out.push(format!("http_{s}"));
            }
        }
        if self.has(Self::NON_IDEMPOTENT) {
            out.push("non_idempotent".into());
        }
        if out.is_empty() {
            out.push("off".into());
        }
        out
    }
}

impl Default for NextUpstream {
    /// Without `next_upstream`: tideway's own default, connect failures (refused or timed out)
    /// and broken connections; a read timeout does not go on.
    fn default() -> Self {
        NextUpstream(Self::ERROR | Self::CONNECT_TIMEOUT)
    }
}

/// Does an answer with `status` that reached the client count as a failed attempt? Only with
/// `fail_on_5xx` (any 5xx). A status `next_upstream` lists counts when it sends the request on
/// (a 403 or 404 never does); the one passed to the client, when no backend is left to try,
/// does not, as with nginx (its `peer.free` sees a finished request).
pub fn status_fails(policy: &UpstreamPolicy, status: u16) -> bool {
    policy.passive.fail_on_5xx && status >= 500
}

/// Active health check settings.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthConfig {
    pub kind: HealthKind,
    pub path: String,
    /// Accepted HTTP statuses, inclusive (HTTP checks).
    pub expect: (u16, u16),
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

/// Kind of active health check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthKind {
    None,
    Tcp,
    Http,
    Websocket,
}

/// Autoscaling hints.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleConfig {
    pub target_per_backend: u32,
    pub min: u32,
    pub max: u32,
}

/// Selection algorithm of an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Balance {
    /// Smooth weighted round robin (nginx's algorithm).
    RoundRobin,
    /// Fewest active connections relative to weight.
    LeastConn,
    /// Power of two random choices, the less loaded one wins.
    P2c,
    /// Consistent hashing (ketama) on [`HashKey`].
    Hash,
}

/// What `hash` hashes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HashKey {
    Ip,
    Header(String),
    Cookie(String),
    Query(String),
    /// An nginx variable expression (`$host$request_uri`), hashed as nginx hashes it: no
    /// fallback to the client address; an empty value is an empty key.
    Expr(super::key_expr::KeyExpr),
}

macro_rules! string_enum {
    ($ty:ty, $what:literal, { $($s:literal => $v:expr),+ $(,)? }) => {
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok($v),)+
                    other => Err(format!(
                        concat!("unknown ", $what, " {:?}; expected one of: {}"),
                        other,
                        [$($s),+].join(", ")
                    )),
                }
            }
        }
    };
}

string_enum!(Balance, "balance", {
    "round_robin" => Balance::RoundRobin,
    "least_conn" => Balance::LeastConn,
    "p2c" => Balance::P2c,
    "hash" => Balance::Hash,
});
string_enum!(Protocol, "protocol", { "http" => Protocol::Http, "tcp" => Protocol::Tcp });
string_enum!(ProxyProtocol, "proxy_protocol", { "v1" => ProxyProtocol::V1, "v2" => ProxyProtocol::V2 });
string_enum!(HealthKind, "health kind", {
    "none" => HealthKind::None,
    "tcp" => HealthKind::Tcp,
    "http" => HealthKind::Http,
    "websocket" => HealthKind::Websocket,
});

impl FromStr for HashKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let named = |prefix: &str| {
            s.strip_prefix(prefix)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
        };
        if s == "ip" {
            Ok(HashKey::Ip)
        } else if let Some(n) = named("header:") {
            Ok(HashKey::Header(n.to_ascii_lowercase()))
        } else if let Some(n) = named("cookie:") {
            Ok(HashKey::Cookie(n))
        } else if let Some(n) = named("query:") {
            Ok(HashKey::Query(n))
        } else if s.contains('$') {
            s.parse().map(HashKey::Expr)
        } else {
            Err(format!(
                "unknown hash_key {s:?}; expected ip, header:NAME, cookie:NAME, query:NAME or an nginx expression such as \"$request_uri\""
            ))
        }
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashKey::Ip => f.write_str("ip"),
            HashKey::Header(n) => write!(f, "header:{n}"),
            HashKey::Cookie(n) => write!(f, "cookie:{n}"),
            HashKey::Query(n) => write!(f, "query:{n}"),
            HashKey::Expr(e) => write!(f, "{e}"),
        }
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastConn => "least_conn",
            Balance::P2c => "p2c",
            Balance::Hash => "hash",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_keys_parse() {
        assert_eq!("ip".parse::<HashKey>(), Ok(HashKey::Ip));
        assert_eq!(
            "header:X-User".parse::<HashKey>(),
            Ok(HashKey::Header("x-user".into()))
        );
        assert_eq!(
            "query:uid".parse::<HashKey>(),
            Ok(HashKey::Query("uid".into()))
        );
        assert!("query:".parse::<HashKey>().is_err());
        assert!("uid".parse::<HashKey>().is_err());
    }

    #[test]
    fn balance_names_round_trip() {
        for b in ["round_robin", "least_conn", "p2c", "hash"] {
            assert_eq!(b.parse::<Balance>().unwrap().to_string(), b);
        }
        assert!("random".parse::<Balance>().is_err());
    }
}

/// How access lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// nginx's `combined`.
    Combined,
    /// One JSON object a line.
    Json,
}

impl std::str::FromStr for AccessLogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "combined" => Ok(AccessLogFormat::Combined),
            "json" => Ok(AccessLogFormat::Json),
            _ => Err(format!(
                "unknown access_log_format {s:?}; expected combined or json"
            )),
        }
    }
}
