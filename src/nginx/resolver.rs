//! nginx's `resolver ADDRESS ... [valid=TIME] [ipv6=on|off]` (in the http block or an
//! upstream block) -> tideway's `[resolver]`, which `server NAME resolve` lines use.
//!
//! tideway has one resolver for the process: the first `resolver` read is used, and a later
//! one that says otherwise is a warning. A server given by name (`resolver dns.local`) is
//! a warning and left out; `ipv6=off` is a warning (tideway asks for AAAA records too).

use super::convert::time;
use super::parse::Directive;
use std::net::{IpAddr, SocketAddr};

/// The `resolver` in force, where it was read.
#[derive(Debug, Default)]
pub struct ResolverConf {
    servers: Vec<String>,
    valid: Option<String>,
    at: Option<String>,
}

impl ResolverConf {
    /// Read a `resolver` directive.
    pub fn take(&mut self, d: &Directive, warnings: &mut Vec<String>) {
        let mut servers = Vec::new();
        let mut valid = None;
        for a in &d.args {
            if let Some(v) = a.strip_prefix("valid=") {
                match time(v) {
                    Some(t) => valid = Some(t),
                    None => warnings.push(format!("{}: resolver valid={v:?} is not a time; ignored", d.at())),
                }
            } else if a == "ipv6=off" {
                warnings.push(format!("{}: resolver ipv6=off is not honoured: tideway asks for AAAA records too", d.at()));
            } else if a == "ipv6=on" || a.starts_with("status_zone=") || a.starts_with("ipv4=") {
            } else if a.parse::<SocketAddr>().is_ok() || a.parse::<IpAddr>().is_ok() {
                servers.push(a.clone());
            } else if let Some(v6) = a.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                servers.push(v6.to_string());
            } else {
                warnings.push(format!("{}: resolver {a:?} is not an address (tideway takes DNS servers by address); left out", d.at()));
            }
        }
        match &self.at {
            None => {
                self.servers = servers;
                self.valid = valid;
                self.at = Some(d.at());
            }
            Some(first) if self.servers != servers || self.valid != valid => {
                warnings.push(format!(
                    "{}: tideway has one resolver for the process; the one at {first} is used",
                    d.at()
                ));
            }
            Some(_) => {}
        }
    }

    /// The `[resolver]` table, or nothing.
    pub fn render(&self) -> String {
        if self.at.is_none() || (self.servers.is_empty() && self.valid.is_none()) {
            return String::new();
        }
        let mut out = format!("\n[resolver]\nservers = {:?}\n", self.servers);
        if let Some(v) = &self.valid {
            out.push_str(&format!("valid = {v:?}\n"));
        }
        out
    }
}
