//! The config file as written: serde structs with `deny_unknown_fields`, and the validation
//! that turns them into [`super::Config`]. Values that need checking keep their span, so an
//! error points at the exact line and column.

use super::duration::Dur;
use super::error::{line_col, ConfigError};
use super::real_ip::RealIp;
use super::types::*;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use toml::Spanned;

mod admission;
mod headers;
mod limits;
mod names;
mod next;
mod policy;
mod routes;
mod sticky;

use limits::{validate_limits, LimitsSection};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    admin: AdminSection,
    #[serde(default)]
    store: StoreSection,
    #[serde(default)]
    listener: Vec<ListenerSection>,
    #[serde(default)]
    upstream: BTreeMap<String, Spanned<UpstreamSection>>,
    #[serde(default)]
    limit_zone: BTreeMap<String, Spanned<super::limit::ZoneSection>>,
    resolver: Option<Spanned<names::ResolverSection>>,
    #[serde(default)]
    map: BTreeMap<String, Spanned<headers::MapSection>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    threads: Option<Spanned<usize>>,
    shutdown_grace: Option<Dur>,
    work_stealing: Option<bool>,
    access_log: Option<Spanned<bool>>,
    access_log_file: Option<std::path::PathBuf>,
    access_log_format: Option<Spanned<String>>,
    max_connections: Option<usize>,
    fd_reserve: Option<usize>,
    close_spread: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AdminSection {
    listen: Option<Spanned<String>>,
    token_file: Option<PathBuf>,
    register_token_file: Option<PathBuf>,
    header_timeout: Option<Spanned<Dur>>,
    idle_timeout: Option<Spanned<Dur>>,
    max_connections: Option<Spanned<usize>>,
    tls: Option<Spanned<AdminTlsSection>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminTlsSection {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StoreSection {
    data_dir: Option<PathBuf>,
    etcd: Option<Spanned<EtcdSection>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EtcdSection {
    endpoints: Vec<String>,
    prefix: Option<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    server_name: Option<String>,
    user: Option<String>,
    password_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerSection {
    listen: Spanned<String>,
    protocol: Option<Spanned<String>>,
    upstream: Option<Spanned<String>>,
    /// The routes form (`[[listener.route]]`); `upstream` is the one-route shorthand.
    #[serde(default)]
    route: Vec<Spanned<routes::RouteSection>>,
    tls: Option<Spanned<TlsSection>>,
    limits: Option<Spanned<LimitsSection>>,
    proxy_protocol: Option<bool>,
    /// Offer HTTP/2 by ALPN (`h2`, then `http/1.1`) on a TLS listener.
    http2: Option<Spanned<bool>>,
    real_ip: Option<Spanned<RealIpSection>>,
    client_limits: Option<Vec<Spanned<super::limit::UseSection>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RealIpSection {
    from: Vec<String>,
    header: Option<String>,
    recursive: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TlsSection {
    One(TlsFileSection),
    Many(Vec<TlsFileSection>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFileSection {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamSection {
    balance: Option<Spanned<String>>,
    hash_key: Option<Spanned<String>>,
    hash_balance_factor: Option<Spanned<u32>>,
    drain_timeout: Option<Dur>,
    close_spread: Option<Dur>,
    idle_timeout: Option<Dur>,
    connect_timeout: Option<Dur>,
    retries: Option<u32>,
    max_fails: Option<u32>,
    fail_timeout: Option<Dur>,
    fail_on_5xx: Option<bool>,
    max_ejection_percent: Option<Spanned<u32>>,
    slow_start: Option<Dur>,
    proxy_protocol: Option<Spanned<String>>,
    #[serde(default)]
    backends: Vec<Spanned<BackendSection>>,
    health: Option<Spanned<HealthSection>>,
    scale: Option<Spanned<ScaleSection>>,
    rebalance: Option<Spanned<RebalanceSection>>,
    autoscale: Option<Spanned<AutoscaleSection>>,
    registration: Option<Spanned<RegistrationSection>>,
    hash_consistent: Option<bool>,
    next_upstream: Option<Spanned<Vec<String>>>,
    next_upstream_tries: Option<Spanned<u32>>,
    next_upstream_timeout: Option<Dur>,
    sticky: Option<Spanned<sticky::StickySection>>,
    tls: Option<Spanned<policy::UpstreamTlsSection>>,
    ping_interval: Option<Dur>,
    pong_timeout: Option<Spanned<Dur>>,
    ping_backend: Option<Spanned<bool>>,
    send_timeout: Option<Dur>,
    admission: Option<Spanned<admission::AdmissionSection>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendSection {
    addr: Spanned<String>,
    weight: Option<Spanned<u32>>,
    max_conns: Option<u32>,
    id: Option<Spanned<String>>,
    state: Option<Spanned<String>>,
    backup: Option<Spanned<bool>>,
    max_fails: Option<u32>,
    fail_timeout: Option<Dur>,
    /// Resolve the name again on its TTL (nginx's `resolve`).
    resolve: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthSection {
    kind: Spanned<String>,
    path: Option<String>,
    expect: Option<Spanned<String>>,
    interval: Option<Dur>,
    timeout: Option<Dur>,
    rise: Option<u32>,
    fall: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistrationSection {
    allow: Option<Vec<String>>,
    max_backends: Option<usize>,
    max_weight: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleSection {
    target_per_backend: u32,
    min: Option<u32>,
    max: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RebalanceSection {
    per_second: u32,
    factor: Option<f64>,
    settle: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AutoscaleSection {
    exec: Option<String>,
    webhook: Option<String>,
    cooldown: Option<Dur>,
    hysteresis: Option<f64>,
    interval: Option<Dur>,
    timeout: Option<Dur>,
    env: Option<Spanned<Vec<Spanned<String>>>>,
}

/// Turns spans into located errors.
pub(super) struct Ctx<'a> {
    text: &'a str,
    path: &'a Path,
    /// The `[map.NAME]` variables header values may use.
    maps: super::headers::Maps,
}

impl Ctx<'_> {
    pub(super) fn err(&self, span: std::ops::Range<usize>, msg: impl Into<String>) -> ConfigError {
        let (line, col) = line_col(self.text, span.start);
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            col,
            msg: msg.into(),
        }
    }

    fn parse<T: FromStr<Err = String>>(&self, v: &Spanned<String>) -> Result<T, ConfigError> {
        v.get_ref().parse::<T>().map_err(|m| self.err(v.span(), m))
    }

    fn addr(&self, v: &Spanned<String>) -> Result<SocketAddr, ConfigError> {
        resolve_addr(v.get_ref()).map_err(|m| self.err(v.span(), m))
    }

    /// A duration that must be more than 0, or `default` when absent.
    fn positive_dur(
        &self,
        v: &Option<Spanned<Dur>>,
        name: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match v {
            Some(d) if d.get_ref().0.is_zero() => {
                Err(self.err(d.span(), format!("{name} must be more than 0")))
            }
            Some(d) => Ok(d.get_ref().0),
            None => Ok(default),
        }
    }
}

/// "200", "200-399" or "2xx".
fn parse_status_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || {
        format!("invalid expect {s:?}; expected a status (\"200\"), a range (\"200-399\") or a class (\"2xx\")")
    };
    let code = |t: &str| {
        t.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
    };
    let range = if let Some(class) = s.strip_suffix("xx") {
        let c = class
            .parse::<u16>()
            .ok()
            .filter(|c| (1..=5).contains(c))
            .ok_or_else(bad)?;
        (c * 100, c * 100 + 99)
    } else if let Some((a, b)) = s.split_once('-') {
        (code(a).ok_or_else(bad)?, code(b).ok_or_else(bad)?)
    } else {
        let c = code(s).ok_or_else(bad)?;
        (c, c)
    };
    if range.0 > range.1 {
        return Err(bad());
    }
    Ok(range)
}

/// Resolve a listen address `host:port` once, at load time, to its first address (backends
/// given by name are [`super::names`]).
pub fn resolve_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let expected = || format!("invalid address {s:?}; expected host:port, e.g. \"127.0.0.1:8080\"");
    let mut addrs = s.to_socket_addrs().map_err(|_| expected())?;
    addrs.next().ok_or_else(expected)
}

impl FileConfig {
    pub(super) fn validate(self, text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut cx = Ctx {
            text,
            path,
            maps: Default::default(),
        };
        cx.maps = headers::maps(&cx, &self.map)?;

        let threads = match &self.server.threads {
            Some(t) if *t.get_ref() == 0 || *t.get_ref() > 256 => {
                return Err(cx.err(t.span(), "threads must be between 1 and 256"))
            }
            Some(t) => *t.get_ref(),
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        if let (Some(on), Some(_)) = (&self.server.access_log, &self.server.access_log_file) {
            if !*on.get_ref() {
                return Err(cx.err(
                    on.span(),
                    "access_log = false with access_log_file: the file turns the access log on; \
                     drop one of the two",
                ));
            }
        }
        let server = ServerSettings {
            threads,
            shutdown_grace: self
                .server
                .shutdown_grace
                .map_or(Duration::from_secs(5), |d| d.0),
            // One thread has no other to steal from: its single-threaded runtime schedules for
            // less (measured in docs/benchmarks.md, "New WebSockets").
            work_stealing: self.server.work_stealing.unwrap_or(threads > 1),
            access_log: self
                .server
                .access_log
                .as_ref()
                .is_some_and(|a| *a.get_ref())
                || self.server.access_log_file.is_some(),
            access_log_file: self.server.access_log_file.clone(),
            access_log_format: match &self.server.access_log_format {
                Some(f) => Some(cx.parse::<crate::config::AccessLogFormat>(f)?),
                None => None,
            },
            max_connections: self.server.max_connections,
            fd_reserve: self.server.fd_reserve,
            close_spread: self.server.close_spread.map(|d| d.0),
        };

        let admin = AdminSettings {
            listen: match &self.admin.listen {
                Some(l) => cx.addr(l)?,
                None => DEFAULT_ADMIN_LISTEN.parse().expect("valid default"),
            },
            token_file: self.admin.token_file.clone(),
            register_token_file: self.admin.register_token_file.clone(),
            header_timeout: cx.positive_dur(
                &self.admin.header_timeout,
                "admin.header_timeout",
                DEFAULT_ADMIN_HEADER_TIMEOUT,
            )?,
            idle_timeout: cx.positive_dur(
                &self.admin.idle_timeout,
                "admin.idle_timeout",
                DEFAULT_ADMIN_IDLE_TIMEOUT,
            )?,
            max_connections: match &self.admin.max_connections {
                Some(m) if *m.get_ref() == 0 => {
                    return Err(cx.err(m.span(), "admin.max_connections must be at least 1"))
                }
                Some(m) => *m.get_ref(),
                None => DEFAULT_ADMIN_MAX_CONNECTIONS,
            },
            tls: match &self.admin.tls {
                None => None,
                Some(t) => {
                    let ts = t.get_ref();
                    let files = super::tls::TlsFiles {
                        cert: ts.cert.clone(),
                        key: ts.key.clone(),
                    };
                    let loaded = super::tls::admin_tls(files, ts.client_ca.clone());
                    Some(loaded.map_err(|e| cx.err(t.span(), format!("admin.tls: {e}")))?)
                }
            },
        };

        let etcd = match &self.store.etcd {
            None => None,
            Some(e) => {
                let es = e.get_ref();
                if es.endpoints.is_empty() {
                    return Err(cx.err(
                        e.span(),
                        "etcd needs at least one endpoint, e.g. \"http://127.0.0.1:2379\"",
                    ));
                }
                let prefix = es
                    .prefix
                    .clone()
                    .unwrap_or_else(|| DEFAULT_ETCD_PREFIX.into());
                if !prefix.starts_with('/') || prefix.ends_with('/') {
                    return Err(cx.err(
                        e.span(),
                        format!("etcd prefix {prefix:?} must start with '/' and not end with one"),
                    ));
                }
                let access = super::etcd::EtcdAccess {
                    endpoints: &es.endpoints,
                    ca: es.ca.as_deref(),
                    cert: es.cert.as_deref(),
                    key: es.key.as_deref(),
                    server_name: es.server_name.as_deref(),
                    user: es.user.as_deref(),
                    password_file: es.password_file.as_deref(),
                    password_env: std::env::var(super::etcd::ETCD_PASSWORD_ENV).ok(),
                };
                let (tls, auth) = access.load().map_err(|m| cx.err(e.span(), m))?;
                Some(EtcdSettings {
                    endpoints: es.endpoints.clone(),
                    prefix,
                    tls,
                    auth,
                })
            }
        };
        let store = StoreSettings {
            data_dir: self
                .store
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            etcd,
        };

        let resolver = names::resolver(&cx, &self.resolver)?;
        let answers = super::dns::resolve_at_load(&resolver, &names::hosts(&self.upstream));
        let mut upstreams = Vec::new();
        for (name, up) in &self.upstream {
            upstreams.push(validate_upstream(&cx, name, up, &answers)?);
        }

        let zones = super::limit::zones(&cx, &self.limit_zone)?;
        let mut listeners = Vec::new();
        let mut seen = HashSet::new();
        for l in &self.listener {
            let listen = cx.addr(&l.listen)?;
            if !seen.insert(listen) {
                return Err(cx.err(l.listen.span(), format!("{listen} is listed twice")));
            }
            listeners.push(validate_listener(&cx, l, listen, &self.upstream, &zones)?);
        }

        Ok(Config {
            server,
            admin,
            store,
            listeners,
            upstreams,
            resolver,
        })
    }
}

/// One `[[listener]]` at `listen` (checked not to be listed twice by the caller).
fn validate_listener(
    cx: &Ctx<'_>,
    l: &ListenerSection,
    listen: SocketAddr,
    upstreams: &BTreeMap<String, Spanned<UpstreamSection>>,
    zones: &BTreeMap<String, crate::config::LimitZone>,
) -> Result<Listener, ConfigError> {
    let protocol = match &l.protocol {
        Some(p) => cx.parse::<Protocol>(p)?,
        None => Protocol::Http,
    };
    let tls = match &l.tls {
        None => None,
        Some(t) if protocol == Protocol::Tcp => {
            return Err(cx.err(
                t.span(),
                "tls is for http listeners; a tcp listener passes bytes through",
            ))
        }
        Some(t) => {
            let files: Vec<super::tls::TlsFiles> = match t.get_ref() {
                TlsSection::One(f) => vec![f],
                TlsSection::Many(v) => v.iter().collect(),
            }
            .into_iter()
            .map(|f| super::tls::TlsFiles {
                cert: f.cert.clone(),
                key: f.key.clone(),
            })
            .collect();
            if files.is_empty() {
                return Err(cx.err(t.span(), "tls needs at least one { cert, key }"));
            }
            for f in &files {
                super::tls::load_cert(f).map_err(|e| cx.err(t.span(), e.to_string()))?;
            }
            Some(files)
        }
    };
    let (upstream, servers) = routes::of_listener(cx, l, protocol, upstreams, zones)?;
    let tls = routes::server_tls(cx, l, tls, &servers)?;
    let mut limits = match &l.limits {
        None => HttpLimits::default(),
        Some(sp) => validate_limits(cx, sp)?,
    };
    let proxy_protocol = l.proxy_protocol.unwrap_or(false);
    let http2 =
        match &l.http2 {
            Some(h) if *h.get_ref() && tls.is_none() => return Err(cx.err(
                h.span(),
                "http2 = true needs tls on the listener (HTTP/2 is offered by ALPN; h2c is not)",
            )),
            Some(h) => *h.get_ref(),
            None => false,
        };
    let real_ip = match &l.real_ip {
        None => None,
        Some(sp) => Some(validate_real_ip(cx, sp, protocol, proxy_protocol)?),
    };
    if let Some(uses) = &l.client_limits {
        let tcp = protocol == Protocol::Tcp;
        limits.per_client = super::limit::uses(cx, uses, zones, tcp)?;
    }
    Ok(Listener {
        listen,
        protocol,
        upstream,
        routes: servers,
        tls,
        limits,
        proxy_protocol,
        http2,
        real_ip,
    })
}

fn validate_real_ip(
    cx: &Ctx<'_>,
    sp: &Spanned<RealIpSection>,
    protocol: Protocol,
    proxy_protocol: bool,
) -> Result<RealIp, ConfigError> {
    let r = sp.get_ref();
    let tcp = protocol == Protocol::Tcp;
    super::real_ip::validate(
        &r.from,
        r.header.as_deref(),
        r.recursive,
        tcp,
        proxy_protocol,
    )
    .map_err(|e| cx.err(sp.span(), e))
}

fn autoscale(
    cx: &Ctx<'_>,
    a: &Spanned<AutoscaleSection>,
    has_scale: bool,
) -> Result<AutoscaleConfig, ConfigError> {
    let s = a.get_ref();
    let hook = match (&s.exec, &s.webhook) {
        (Some(cmd), None) if !cmd.trim().is_empty() => ScaleHook::Exec(cmd.clone()),
        (None, Some(url)) if url.starts_with("http://") => ScaleHook::Webhook(url.clone()),
        (None, Some(url)) if url.starts_with("https://") => {
            return Err(cx.err(
                a.span(),
                "autoscale.webhook must be an http:// URL (https webhooks are not supported: tideway trusts no CA for them); use exec with curl for https",
            ))
        }
        _ => {
            return Err(cx.err(
                a.span(),
                "autoscale needs exactly one of exec = \"command\" or webhook = \"http://...\"",
            ))
        }
    };
    if !has_scale {
        return Err(cx.err(
            a.span(),
            "autoscale needs a scale section (scale = { target_per_backend = N })",
        ));
    }
    let hysteresis = s.hysteresis.unwrap_or(DEFAULT_AUTOSCALE_HYSTERESIS);
    if !(0.0..1.0).contains(&hysteresis) {
        return Err(cx.err(a.span(), "autoscale.hysteresis must be in [0, 1)"));
    }
    let interval = s.interval.map_or(DEFAULT_AUTOSCALE_INTERVAL, |d| d.0);
    if interval.is_zero() {
        return Err(cx.err(a.span(), "autoscale.interval must be more than 0"));
    }
    let timeout = s.timeout.map_or(DEFAULT_AUTOSCALE_TIMEOUT, |d| d.0);
    if timeout.is_zero() {
        return Err(cx.err(a.span(), "autoscale.timeout must be more than 0"));
    }
    Ok(AutoscaleConfig {
        env: autoscale_env(cx, s.env.as_ref(), &hook)?,
        hook,
        cooldown: s.cooldown.map_or(DEFAULT_AUTOSCALE_COOLDOWN, |d| d.0),
        hysteresis,
        interval,
        timeout,
    })
}

/// `autoscale.env`: names of variables passed on to the command; never a token.
fn autoscale_env(
    cx: &Ctx<'_>,
    env: Option<&Spanned<Vec<Spanned<String>>>>,
    hook: &ScaleHook,
) -> Result<Vec<String>, ConfigError> {
    let Some(env) = env else {
        return Ok(Vec::new());
    };
    if matches!(hook, ScaleHook::Webhook(_)) {
        return Err(cx.err(
            env.span(),
            "autoscale.env applies to exec only (a webhook gets no environment)",
        ));
    }
    let mut names = Vec::new();
    for name in env.get_ref() {
        let n = name.get_ref();
        if SECRET_ENV.contains(&n.as_str()) {
            return Err(cx.err(
                name.span(),
                format!("autoscale.env may not list {n}: the tokens never reach the hook"),
            ));
        }
        if n.is_empty() || n.contains(['=', '\0']) {
            return Err(cx.err(
                name.span(),
                "autoscale.env expects variable names (not empty, without '=')",
            ));
        }
        names.push(n.clone());
    }
    Ok(names)
}

/// An upstream or zone name: letters, digits, `-`, `_` and `.`, at least one.
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn validate_upstream(
    cx: &Ctx<'_>,
    name: &str,
    up: &Spanned<UpstreamSection>,
    answers: &names::Answers,
) -> Result<UpstreamConfig, ConfigError> {
    let span = up.span();
    let up = up.get_ref();
    if !valid_name(name) {
        return Err(cx.err(
            span,
            format!("invalid upstream name {name:?}; expected letters, digits, '-', '_' or '.'"),
        ));
    }
    let mut policy = policy::base(cx, up)?;
    if let Some(h) = &up.health {
        policy.health = Some(policy::health(cx, h)?);
    }
    if let Some(s) = &up.scale {
        policy.scale = Some(policy::scale(cx, s)?);
    }
    if let Some(r) = &up.rebalance {
        policy.rebalance = Some(policy::rebalance(cx, r)?);
    }
    sticky::sticky(cx, &up.sticky, &mut policy)?;
    if let Some(a) = &up.admission {
        policy.admission = Some(admission::admission(cx, a)?);
    }
    if let Some(a) = &up.autoscale {
        policy.autoscale = Some(autoscale(cx, a, policy.scale.is_some())?);
    }

    if let Some(r) = &up.registration {
        policy.registration = policy::registration(cx, r)?;
    }

    let mut backends = Vec::new();
    let mut named = Vec::new();
    let mut ids = HashSet::new();
    for b in &up.backends {
        let bs = b.get_ref();
        let target =
            super::names::target(bs.addr.get_ref()).map_err(|m| cx.err(bs.addr.span(), m))?;
        let weight = match &bs.weight {
            Some(w) if *w.get_ref() == 0 || *w.get_ref() > MAX_WEIGHT => {
                return Err(cx.err(
                    w.span(),
                    format!("weight must be between 1 and {MAX_WEIGHT}"),
                ))
            }
            Some(w) => *w.get_ref(),
            None => DEFAULT_WEIGHT,
        };
        let id = match &bs.id {
            Some(id) => {
                crate::config::validate_id(id.get_ref()).map_err(|m| cx.err(id.span(), m))?;
                id.get_ref().clone()
            }
            None => match &target {
                super::names::Target::Name(host, port) => format!("{host}:{port}"),
                super::names::Target::Addr(_) => bs.addr.get_ref().clone(),
            },
        };
        let backend = StaticBackend {
            id,
            addr: SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0),
            weight,
            max_conns: bs.max_conns.unwrap_or(0),
            disabled: disabled(cx, bs)?,
            backup: next::backup(cx, &policy, &bs.backup)?,
            max_fails: bs.max_fails,
            fail_timeout: bs.fail_timeout.map(|d| d.0),
        };
        let into = (&mut backends, &mut named, &mut ids);
        names::place(cx, b, backend, target, answers, into)?;
    }
    Ok(UpstreamConfig {
        name: name.to_string(),
        policy,
        backends,
        names: named,
    })
}

/// A backend's `state`: disabled or not.
fn disabled(cx: &Ctx<'_>, bs: &BackendSection) -> Result<bool, ConfigError> {
    match &bs.state {
        None => Ok(false),
        Some(st) => match st.get_ref().as_str() {
            "active" => Ok(false),
            "disabled" => Ok(true),
            other => Err(cx.err(
                st.span(),
                format!("unknown state {other:?}; expected active or disabled"),
            )),
        },
    }
}
