//! Re-resolving backend names (`resolve`): one task per host name, shared by every upstream
//! that resolves it. Each asks the name again when its answer's TTL runs out (clamped, or
//! `valid`; see [`crate::config::names`]), and a changed answer becomes a
//! [`Diff::Resolved`] per upstream, which the pool controller applies like any other diff.
//!
//! A name that stops resolving (NXDOMAIN, no address, a timeout, a server error) keeps its
//! last addresses: a warning is logged, `tideway_name_failing{name}` is 1 until it resolves
//! again, and it is asked again after `DEFAULT_RETRY`. `tideway_name_addresses{name}` is the
//! number of addresses it has, `tideway_name_lookups_total{name,result}` counts lookups.
//!
//! [`Names::follow`] runs at start and after each reload with the config just applied: the
//! tasks of the previous config end and new ones start from the config's load-time answers.
//!
//! Imports: `config`, `pool`, `metrics`. Never `proxy` or `admin`.

use crate::config::dns::Resolver;
use crate::config::names::ResolverSettings;
use crate::config::Config;
use crate::pool::{Diff, PoolHandle};
use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The name metrics, registered on first use.
struct NameMetrics {
    failing: IntGaugeVec,
    addresses: IntGaugeVec,
    lookups: IntCounterVec,
}

fn metrics() -> &'static NameMetrics {
    static M: OnceLock<NameMetrics> = OnceLock::new();
    M.get_or_init(|| {
        let failing = IntGaugeVec::new(
            Opts::new(
                "tideway_name_failing",
                "1 while a resolve name's last lookup failed and it keeps its last addresses",
            ),
            &["name"],
        )
        .expect("valid metric");
        let addresses = IntGaugeVec::new(
            Opts::new(
                "tideway_name_addresses",
                "Addresses (backends per upstream entry) a resolve name has",
            ),
            &["name"],
        )
        .expect("valid metric");
        let lookups = IntCounterVec::new(
            Opts::new(
                "tideway_name_lookups_total",
                "Lookups of resolve names, by result (ok, failed)",
            ),
            &["name", "result"],
        )
        .expect("valid metric");
        let r = &crate::metrics::global().registry;
        let _ = r.register(Box::new(failing.clone()));
        let _ = r.register(Box::new(addresses.clone()));
        let _ = r.register(Box::new(lookups.clone()));
        NameMetrics {
            failing,
            addresses,
            lookups,
        }
    })
}

/// One name to follow: the upstreams that resolve it, and its load-time answer.
#[derive(Debug, Default, PartialEq)]
struct Followed {
    upstreams: Vec<String>,
    addrs: Vec<IpAddr>,
    ttl: Option<Duration>,
}

/// The `resolve` names of `config`, by host.
fn followed(config: &Config) -> BTreeMap<String, Followed> {
    let mut out: BTreeMap<String, Followed> = BTreeMap::new();
    for u in &config.upstreams {
        for n in u.names.iter().filter(|n| n.resolve) {
            let f = out.entry(n.host.clone()).or_default();
            if !f.upstreams.contains(&u.name) {
                f.upstreams.push(u.name.clone());
            }
            f.addrs = n.addrs.clone();
            f.ttl = n.ttl;
        }
    }
    out
}

/// The re-resolution tasks.
pub struct Names {
    pool: PoolHandle,
    running: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Names {
    pub fn new(pool: PoolHandle) -> Self {
        Names {
            pool,
            running: Mutex::new(Vec::new()),
        }
    }

    /// Follow the `resolve` names of `config` (just applied to the pool), ending the tasks
    /// of the config before. Must run on a tokio runtime.
    pub fn follow(&self, config: &Config) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        for t in running.drain(..) {
            t.abort();
        }
        let m = metrics();
        m.failing.reset();
        m.addresses.reset();
        let names = followed(config);
        if names.is_empty() {
            return;
        }
        let resolver = match Resolver::new(&config.resolver) {
            Ok(r) => Arc::new(r),
            Err(e) => {
                tracing::error!(error = %e, "no resolver: resolve names will not be looked up again");
                return;
            }
        };
        for (host, f) in names {
            tracing::info!(name = %host, upstreams = ?f.upstreams, addresses = f.addrs.len(), "following the name's DNS answers");
            running.push(tokio::spawn(follow(
                self.pool.clone(),
                resolver.clone(),
                config.resolver.clone(),
                host,
                f,
            )));
        }
    }
}

impl Names {
    /// End every follow (shutdown) and wait until they are gone.
    pub async fn stop(&self) {
        let running: Vec<_> =
            std::mem::take(&mut *self.running.lock().unwrap_or_else(|e| e.into_inner()));
        for task in running {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Ask `host` again and again; send each changed answer to the upstreams that resolve it.
async fn follow(
    pool: PoolHandle,
    resolver: Arc<Resolver>,
    settings: ResolverSettings,
    host: String,
    f: Followed,
) {
    let m = metrics();
    let mut last = f.addrs;
    let mut failing = last.is_empty();
    m.failing
        .with_label_values(&[&host])
        .set(i64::from(failing));
    m.addresses
        .with_label_values(&[&host])
        .set(last.len() as i64);
    let mut wait = if failing {
        settings.retry()
    } else {
        settings.next_lookup(f.ttl)
    };
    loop {
        tokio::time::sleep(wait).await;
        match resolver.lookup(&host).await {
            Ok(answer) => {
                m.lookups.with_label_values(&[&host, "ok"]).inc();
                if failing {
                    tracing::info!(name = %host, addresses = answer.addrs.len(), "name resolves again");
                    failing = false;
                    m.failing.with_label_values(&[&host]).set(0);
                }
                if answer.left_out > 0 {
                    tracing::warn!(name = %host, left_out = answer.left_out, kept = answer.addrs.len(), "some addresses of the name are not backends (unspecified, multicast or broadcast, or over the limit)");
                }
                if answer.addrs != last {
                    let added = answer.addrs.iter().filter(|a| !last.contains(a)).count();
                    let removed = last.iter().filter(|a| !answer.addrs.contains(a)).count();
                    tracing::info!(name = %host, added, removed, addresses = ?answer.addrs, "name's addresses changed");
                    for u in &f.upstreams {
                        let diff = Diff::Resolved {
                            upstream: u.clone(),
                            host: host.clone(),
                            addrs: answer.addrs.clone(),
                        };
                        if let Err(e) = pool.apply(diff).await {
                            tracing::warn!(name = %host, upstream = %u, error = %e, "name's new addresses not applied");
                        }
                    }
                    m.addresses
                        .with_label_values(&[&host])
                        .set(answer.addrs.len() as i64);
                    last = answer.addrs;
                }
                wait = settings.next_lookup(answer.ttl);
            }
            Err(e) => {
                m.lookups.with_label_values(&[&host, "failed"]).inc();
                m.failing.with_label_values(&[&host]).set(1);
                failing = true;
                tracing::warn!(name = %host, error = %e, kept = last.len(), "name does not resolve; keeping its last addresses");
                wait = settings.retry();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_followed_once_for_all_their_upstreams() {
        let text = "[upstream.a]\nbackends = [{ addr = \"localhost:1\", resolve = true }, { addr = \"localhost:2\" }]\n[upstream.b]\nbackends = [{ addr = \"localhost:3\", resolve = true }]\n[upstream.c]\nbackends = [{ addr = \"localhost:4\" }]\n";
        let cfg = crate::config::parse(text, std::path::Path::new("t.toml")).unwrap();
        let f = followed(&cfg);
        assert_eq!(f.keys().collect::<Vec<_>>(), ["localhost"]);
        assert_eq!(f["localhost"].upstreams, ["a", "b"]);
    }
}
