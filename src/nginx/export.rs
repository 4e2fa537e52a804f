//! A live upstream as an nginx `upstream` block.

use crate::config::sticky::Expires;
use crate::config::{Balance, HashKey};
use crate::pool::{State, Upstream};
use std::fmt::Write;

/// Render `up` as an nginx `upstream` block.
pub fn upstream_block(up: &Upstream) -> String {
    let mut out = format!("upstream {} {{\n", up.name);
    let p = &up.policy;
    match p.balance {
        Balance::RoundRobin => {}
        Balance::LeastConn => out.push_str("    least_conn;\n"),
        Balance::P2c => out.push_str("    random two least_conn;\n"),
        Balance::Hash => {
            let key = match &p.hash_key {
                HashKey::Ip => "$remote_addr".to_string(),
                HashKey::Header(h) => format!("$http_{}", h.replace('-', "_")),
                HashKey::Cookie(c) => format!("$cookie_{c}"),
                HashKey::Query(q) => format!("$arg_{q}"),
                HashKey::Expr(e) => e.to_string(),
            };
            let consistent = if p.hash_consistent { " consistent" } else { "" };
            let _ = writeln!(out, "    hash {key}{consistent};");
        }
    }
    if let Some(c) = &p.sticky {
        let _ = write!(out, "    sticky cookie {}", c.name);
        match c.expires {
            Some(Expires::Max) => out.push_str(" expires=max"),
            Some(Expires::After(d)) => {
                let _ = write!(out, " expires={}s", d.as_secs());
            }
            None => {}
        }
        for (k, v) in [("domain", &c.domain), ("path", &c.path)] {
            if let Some(v) = v {
                let _ = write!(out, " {k}={v}");
            }
        }
        for (k, on) in [("httponly", c.httponly), ("secure", c.secure)] {
            if on {
                let _ = write!(out, " {k}");
            }
        }
        if let Some(v) = c.samesite {
            let _ = write!(out, " samesite={v}");
        }
        out.push_str(";\n");
    }
    for b in &up.backends {
        let _ = write!(out, "    server {}", b.addr);
        if b.weight != 1 {
            let _ = write!(out, " weight={}", b.weight);
        }
        let max_fails = b.max_fails(p);
        if max_fails != crate::config::DEFAULT_MAX_FAILS {
            let _ = write!(out, " max_fails={max_fails}");
        }
        let fail_timeout = b.server.fail_timeout.unwrap_or(p.passive.fail_timeout);
        if fail_timeout != crate::config::DEFAULT_FAIL_TIMEOUT {
            let _ = write!(out, " fail_timeout={}s", fail_timeout.as_secs());
        }
        if b.server.backup {
            out.push_str(" backup");
        }
        if b.state != State::Active || !b.healthy {
            out.push_str(" down");
        }
        out.push(';');
        if *b.id != b.addr.to_string() {
            let _ = write!(out, "  # id {}", b.id);
        }
        out.push('\n');
    }
    out.push_str("}\n");
    out
}
