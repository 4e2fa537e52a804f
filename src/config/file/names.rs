//! The file side of backends by name ([`crate::config::names`]): the `[resolver]` table, a
//! backend's `resolve` key, and a name made into one backend per address at load.
//!
//! A name without `resolve` that does not resolve at load is a config error (nginx: "host not
//! found in upstream"); a `resolve` name that does not is a warning, and it starts with no
//! backends until it does.

use super::{BackendSection, Ctx, UpstreamSection};
use crate::config::dns::{Answer, LookupError};
use crate::config::duration::Dur;
use crate::config::names::{NamedServer, ResolverSettings, Target};
use crate::config::{ConfigError, StaticBackend};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use toml::Spanned;

/// Port of a DNS server given without one.
pub const DEFAULT_DNS_PORT: u16 = 53;

/// The answers of the load-time lookups, by host.
pub(super) type Answers = BTreeMap<String, Result<Answer, LookupError>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResolverSection {
    #[serde(default)]
    servers: Vec<Spanned<String>>,
    valid: Option<Spanned<Dur>>,
}

/// `[resolver]` -> settings.
pub(super) fn resolver(
    cx: &Ctx<'_>,
    section: &Option<Spanned<ResolverSection>>,
) -> Result<ResolverSettings, ConfigError> {
    let Some(r) = section else {
        return Ok(ResolverSettings::default());
    };
    let mut servers = Vec::new();
    for s in &r.get_ref().servers {
        let text = s.get_ref();
        let addr = text
            .parse::<SocketAddr>()
            .or_else(|_| {
                text.parse::<IpAddr>()
                    .map(|ip| SocketAddr::new(ip, DEFAULT_DNS_PORT))
            })
            .map_err(|_| {
                cx.err(
                    s.span(),
                    format!("invalid DNS server {text:?}; expected an address, e.g. \"127.0.0.1\" or \"10.0.0.2:5353\""),
                )
            })?;
        servers.push(addr);
    }
    let valid = match &r.get_ref().valid {
        Some(v) if v.get_ref().0.is_zero() => {
            return Err(cx.err(v.span(), "resolver.valid must be more than 0"))
        }
        v => v.as_ref().map(|v| v.get_ref().0),
    };
    Ok(ResolverSettings { servers, valid })
}

/// Every backend host given by name, with whether that backend is resolved again.
pub(super) fn hosts(upstreams: &BTreeMap<String, Spanned<UpstreamSection>>) -> Vec<(String, bool)> {
    upstreams
        .values()
        .flat_map(|u| &u.get_ref().backends)
        .filter_map(|b| {
            let b = b.get_ref();
            match crate::config::names::target(b.addr.get_ref()) {
                Ok(Target::Name(host, _)) => {
                    Some((host, b.resolve.as_ref().is_some_and(|r| *r.get_ref())))
                }
                _ => None,
            }
        })
        .collect()
}

/// Where a backend's backends go: the upstream's list, its names, the ids taken so far.
pub(super) type Dest<'a> = (
    &'a mut Vec<StaticBackend>,
    &'a mut Vec<NamedServer>,
    &'a mut HashSet<String>,
);

/// Add backend `b` to the upstream: `backend` at its address, or, given by name, one per
/// address of the load-time answer (each `backend` with its id and address).
pub(super) fn place(
    cx: &Ctx<'_>,
    b: &Spanned<BackendSection>,
    mut backend: StaticBackend,
    target: Target,
    answers: &Answers,
    (backends, names, ids): Dest<'_>,
) -> Result<(), ConfigError> {
    let bs = b.get_ref();
    let (host, port) = match target {
        Target::Name(host, port) => (host, port),
        Target::Addr(addr) => {
            if let Some(r) = bs.resolve.as_ref().filter(|r| *r.get_ref()) {
                return Err(cx.err(
                    r.span(),
                    "resolve is for a backend given by name (host:port)",
                ));
            }
            if !ids.insert(backend.id.clone()) {
                return Err(cx.err(
                    b.span(),
                    format!(
                        "backend id {:?} is listed twice in this upstream",
                        backend.id
                    ),
                ));
            }
            backend.addr = addr;
            backends.push(backend);
            return Ok(());
        }
    };
    backend.addr.set_port(port);
    let template = backend;
    let resolve = bs.resolve.as_ref().is_some_and(|r| *r.get_ref());
    let answer = answers.get(&host).cloned().unwrap_or_else(|| {
        Err(LookupError::Failed {
            name: host.clone(),
            why: "not looked up".into(),
        })
    });
    let (addrs, ttl) = match answer {
        Ok(a) => {
            if a.left_out > 0 {
                tracing::warn!(name = %host, left_out = a.left_out, kept = a.addrs.len(), "some addresses of the name are not backends (unspecified, multicast or broadcast, or over the limit)");
            }
            (a.addrs, a.ttl)
        }
        Err(e) if resolve => {
            tracing::warn!(name = %host, error = %e, "name does not resolve at load; its backends come when it does");
            (Vec::new(), None)
        }
        Err(e) => {
            return Err(cx.err(
                bs.addr.span(),
                format!("{e} (a name without resolve = true must resolve at load)"),
            ))
        }
    };
    let id = template.id.clone();
    if !ids.insert(format!("{id}@")) {
        return Err(cx.err(
            b.span(),
            format!("backend {id:?} is listed twice in this upstream"),
        ));
    }
    let named = NamedServer {
        host,
        port,
        resolve,
        id,
        template,
        at: backends.len(),
        count: addrs.len(),
        ttl,
        addrs,
    };
    for nb in named.backends(&named.addrs) {
        if !ids.insert(nb.id.clone()) {
            return Err(cx.err(
                b.span(),
                format!("backend id {:?} is listed twice in this upstream", nb.id),
            ));
        }
        backends.push(nb);
    }
    names.push(named);
    Ok(())
}
