//! The TOML an nginx import writes: the listeners and upstreams [`super::convert`] read,
//! rendered in the order and shape `tideway import-nginx` prints them.

use super::{Listener, Upstream};
use std::collections::BTreeMap;
use std::fmt::Write;

pub(super) fn render(upstreams: &BTreeMap<String, Upstream>, listeners: &[Listener]) -> String {
    let mut out = String::from("# Converted from nginx by `tideway import-nginx`.\n");
    for l in listeners {
        let _ = write!(out, "\n# {}\n[[listener]]\nlisten = {:?}\n", l.at, l.listen);
        if l.protocol != "http" {
            let _ = writeln!(out, "protocol = {:?}", l.protocol);
        }
        if l.servers.is_empty() {
            let _ = writeln!(out, "upstream = {:?}", l.upstream);
        }
        if l.proxy_protocol {
            out.push_str("proxy_protocol = true\n");
        }
        if l.head.http2 {
            out.push_str("http2 = true\n");
        }
        out.push_str(&l.head.limits);
        if let Some(r) = &l.real_ip {
            let _ = writeln!(out, "real_ip = {r}");
        }
        out.push_str(&l.limits);
        for s in &l.servers {
            for loc in &s.locations {
                super::super::routes::render(&mut out, "listener.route", Some(s), loc);
            }
        }
    }
    for (name, u) in upstreams {
        let _ = write!(out, "\n# {}\n[upstream.{name}]\n", u.at);
        if let Some(b) = u.balance {
            let _ = writeln!(out, "balance = {b:?}");
        }
        if let Some(k) = &u.hash_key {
            let _ = writeln!(out, "hash_key = {k:?}");
        }
        if u.plain_hash {
            out.push_str("hash_consistent = false\n");
        }
        if let Some(r) = &u.retry {
            let _ = writeln!(out, "next_upstream = {:?}", r.conditions);
            let _ = writeln!(out, "next_upstream_tries = {}", r.tries);
            if let Some(t) = &r.timeout {
                let _ = writeln!(out, "next_upstream_timeout = {t:?}");
            }
        }
        if let Some(st) = &u.sticky {
            let _ = writeln!(out, "sticky = {}", st.toml);
        }
        if let Some(t) = &u.slow_start {
            let _ = writeln!(out, "slow_start = {t:?}");
        }
        if let Some(t) = &u.idle_timeout {
            let _ = writeln!(out, "idle_timeout = {t:?}");
        }
        if let Some(Some(tls)) = &u.tls {
            let _ = writeln!(out, "{tls}");
        }
        out.push_str("backends = [\n");
        // nginx takes a server listed twice as two peers; tideway ids must differ.
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &u.servers {
            let _ = write!(out, "  {{ addr = {:?}", s.addr);
            let n = seen.entry(&s.addr).or_default();
            *n += 1;
            if *n > 1 {
                let _ = write!(out, ", id = \"{}@{n}\"", s.addr);
            }
            if s.weight != 1 {
                let _ = write!(out, ", weight = {}", s.weight);
            }
            if s.max_conns != 0 {
                let _ = write!(out, ", max_conns = {}", s.max_conns);
            }
            if s.down {
                out.push_str(", state = \"disabled\"");
            }
            if s.backup {
                out.push_str(", backup = true");
            }
            if let Some(m) = s.max_fails {
                let _ = write!(out, ", max_fails = {m}");
            }
            if let Some(t) = &s.fail_timeout {
                let _ = write!(out, ", fail_timeout = {t:?}");
            }
            if s.resolve {
                out.push_str(", resolve = true");
            }
            out.push_str(" },\n");
        }
        out.push_str("]\n");
    }
    out
}
