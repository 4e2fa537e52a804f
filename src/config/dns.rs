//! Looking backend names up ([`super::names`]).
//!
//! - With `[resolver] servers` (nginx's `resolver`), every name is asked of those servers, with
//!   hickory-resolver; /etc/hosts is still read first.
//! - Without, a name without `resolve` is looked up once at load by the system resolver
//!   (getaddrinfo, as nginx does for its `server` lines), and a `resolve` name by
//!   hickory-resolver with the system's /etc/resolv.conf and /etc/hosts, since getaddrinfo
//!   tells no TTL.
//!
//! One lookup asks for A and AAAA records; it succeeds when both queries were answered (an
//! empty or NXDOMAIN answer to one of them is an answer) and together they give at least one
//! usable address. Anything else (NXDOMAIN for both, no address, a timeout, a server error)
//! is a failure, and a name that fails keeps the addresses it had. Answers are not cached
//! here: each lookup asks the servers.
//!
//! Config loading is synchronous, so [`resolve_at_load`] runs its lookups on a runtime of its
//! own, on a thread of its own (callable from anywhere, async code included).
//!
//! Imports: nothing else in tideway.

use super::names::{settle, ResolverSettings, DEFAULT_LOOKUP_TIMEOUT};
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RecordType;
use hickory_resolver::TokioResolver;
use std::collections::BTreeMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::time::Duration;

/// Why a name gave no addresses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("{0} does not exist (NXDOMAIN)")]
    NoSuchName(String),
    #[error("{0} has no usable address")]
    NoAddress(String),
    #[error("looking up {name} failed: {why}")]
    Failed { name: String, why: String },
}

/// What a successful lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Usable addresses, ascending, at most `DEFAULT_MAX_ADDRESSES`.
    pub addrs: Vec<IpAddr>,
    /// The smallest TTL of the answer's records (None: the system resolver tells none).
    pub ttl: Option<Duration>,
    /// Addresses of the answer left out (unusable, or over the cap).
    pub left_out: usize,
}

/// Asks DNS servers: the configured ones, or the system's.
pub struct Resolver {
    inner: TokioResolver,
}

impl Resolver {
    /// A resolver for `settings` (reads /etc/resolv.conf when no servers are given). Needs a
    /// tokio runtime to run its lookups on, not to be built.
    pub fn new(settings: &ResolverSettings) -> Result<Self, LookupError> {
        let failed = |why: String| LookupError::Failed {
            name: "the resolver".into(),
            why,
        };
        let mut builder = if settings.servers.is_empty() {
            TokioResolver::builder_tokio()
                .map_err(|e| failed(format!("reading /etc/resolv.conf: {e}")))?
        } else {
            let servers = settings
                .servers
                .iter()
                .map(|s| {
                    let mut ns = NameServerConfig::udp_and_tcp(s.ip());
                    for c in &mut ns.connections {
                        c.port = s.port();
                    }
                    ns
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
            .with_options(ResolverOpts::default())
        };
        let opts = builder.options_mut();
        // One attempt per server within the lookup's deadline; every lookup asks afresh.
        opts.timeout = DEFAULT_LOOKUP_TIMEOUT / 2;
        opts.attempts = 1;
        opts.cache_size = 0;
        let inner = builder.build().map_err(|e| failed(e.to_string()))?;
        Ok(Resolver { inner })
    }

    /// Look `host` up: A and AAAA, within [`DEFAULT_LOOKUP_TIMEOUT`].
    pub async fn lookup(&self, host: &str) -> Result<Answer, LookupError> {
        // As written, not as a FQDN: the system's search domains and ndots apply (a
        // Kubernetes service's short name).
        for t in [RecordType::A, RecordType::AAAA] {
            self.inner.clear_lookup_cache(host, t);
        }
        let both = futures_util::future::join(
            self.inner.lookup(host, RecordType::A),
            self.inner.lookup(host, RecordType::AAAA),
        );
        let (a, aaaa) = tokio::time::timeout(DEFAULT_LOOKUP_TIMEOUT, both)
            .await
            .map_err(|_| LookupError::Failed {
                name: host.into(),
                why: format!("no answer within {DEFAULT_LOOKUP_TIMEOUT:?}"),
            })?;
        let mut ips = Vec::new();
        let mut ttl: Option<u32> = None;
        let mut nx = 0;
        for r in [a, aaaa] {
            match r {
                Ok(lookup) => {
                    for rec in lookup.answers() {
                        ttl = Some(ttl.map_or(rec.ttl, |t| t.min(rec.ttl)));
                        ips.extend(rec.data.ip_addr());
                    }
                }
                Err(e) if e.is_nx_domain() => nx += 1,
                Err(e) if e.is_no_records_found() => {}
                Err(e) => {
                    return Err(LookupError::Failed {
                        name: host.into(),
                        why: e.to_string(),
                    })
                }
            }
        }
        if nx == 2 {
            return Err(LookupError::NoSuchName(host.into()));
        }
        answer(host, ips, ttl.map(|t| Duration::from_secs(u64::from(t))))
    }
}

fn answer(host: &str, ips: Vec<IpAddr>, ttl: Option<Duration>) -> Result<Answer, LookupError> {
    let (addrs, left_out) = settle(ips);
    if addrs.is_empty() {
        return Err(LookupError::NoAddress(host.into()));
    }
    Ok(Answer {
        addrs,
        ttl,
        left_out,
    })
}

/// The system resolver (getaddrinfo), which tells no TTL.
fn system_lookup(host: &str) -> Result<Answer, LookupError> {
    let ips = (host, 0u16)
        .to_socket_addrs()
        .map_err(|e| LookupError::Failed {
            name: host.into(),
            why: e.to_string(),
        })?
        .map(|a| a.ip());
    answer(host, ips.collect(), None)
}

/// Look up every host of `names` (host, resolve) once, all at once, for loading a config.
pub fn resolve_at_load(
    settings: &ResolverSettings,
    names: &[(String, bool)],
) -> BTreeMap<String, Result<Answer, LookupError>> {
    let mut out = BTreeMap::new();
    if names.is_empty() {
        return out;
    }
    // A host any entry resolves again is looked up by hickory for all its entries, so they
    // share one answer; with servers configured, every host is.
    let mut hosts: BTreeMap<&str, bool> = BTreeMap::new();
    for (host, resolve) in names {
        *hosts.entry(host.as_str()).or_default() |= *resolve;
    }
    let mut by_dns: Vec<String> = Vec::new();
    for (host, resolve) in hosts {
        if settings.servers.is_empty() && !resolve {
            out.insert(host.to_string(), system_lookup(host));
        } else {
            by_dns.push(host.to_string());
        }
    }
    if by_dns.is_empty() {
        return out;
    }
    let found = std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let resolver = Resolver::new(settings).map_err(|e| e.to_string())?;
                let all = by_dns.iter().map(|h| resolver.lookup(h));
                Ok::<_, String>(futures_util::future::join_all(all).await)
            })
        })
        .join()
        .unwrap_or_else(|_| Err("the lookup thread panicked".into()))
    });
    match found {
        Ok(answers) => out.extend(by_dns.into_iter().zip(answers)),
        Err(why) => out.extend(by_dns.into_iter().map(|h| {
            let e = LookupError::Failed {
                name: h.clone(),
                why: why.clone(),
            };
            (h, Err(e))
        })),
    }
    out
}
