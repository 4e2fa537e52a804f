//! nginx's `resolver ADDRESS ... [valid=TIME] [ipv6=on|off]` (in the http block or an
//! upstream block) -> tideway's `[resolver]`, which `server NAME resolve` lines use.
//!
//! tideway has one resolver for the process: the first `resolver` read is used (those in
//! upstream blocks are read before the http block's), and one that says otherwise is a
//! warning. A server given by name (`resolver dns.local`) is
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
    /// Read a `resolver` directive. What is not taken from it is one warning for the
    /// directive (the import report keeps one finding per directive).
    pub fn take(&mut self, d: &Directive, warnings: &mut Vec<String>) {
        let mut servers = Vec::new();
        let mut valid = None;
        let mut issues = Vec::new();
        for a in &d.args {
            if let Some(v) = a.strip_prefix("valid=") {
                match time(v) {
                    Some(t) => valid = Some(t),
                    None => issues.push(format!("valid={v:?} is not a time")),
                }
            } else if a == "ipv6=off" {
                issues.push("ipv6=off is not honoured (tideway asks for AAAA records too)".into());
            } else if a == "ipv6=on" || a.starts_with("status_zone=") || a.starts_with("ipv4=") {
                // Defaults, or nothing that changes an answer.
            } else if a.parse::<SocketAddr>().is_ok() || a.parse::<IpAddr>().is_ok() {
                servers.push(a.clone());
            } else if let Some(v6) = a.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                servers.push(v6.to_string());
            } else {
                issues.push(format!(
                    "{a:?} is not an address (tideway takes DNS servers by address), left out"
                ));
            }
        }
        let mut used = !servers.is_empty() || valid.is_some();
        match &self.at {
            None => {
                self.servers = servers;
                self.valid = valid;
                self.at = Some(d.at());
            }
            Some(first) if self.servers != servers || self.valid != valid => {
                issues.push(format!(
                    "differs from the one at {first}, which tideway uses (one resolver for the process)"
                ));
                used = false;
            }
            Some(_) => {}
        }
        if !issues.is_empty() {
            let ignored = if used { "" } else { "; ignored" };
            warnings.push(format!(
                "{}: \"resolver\" {}{ignored}",
                d.at(),
                issues.join("; ")
            ));
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn convert(text: &str) -> super::super::convert::Converted {
        let top = super::super::parse::parse_text(text, Path::new("n.conf"), Path::new(""), 0)
            .expect("parses");
        super::super::convert::convert(&top, Path::new(""), Default::default())
    }

    #[test]
    fn resolver_and_resolve_become_the_resolver_table_and_the_key() {
        let c = convert(
            "http {\n resolver 127.0.0.1:5353 [::1] dns.local valid=30s ipv6=off;\n upstream u {\n  zone u 64k;\n  server chat.internal:2346 resolve weight=2;\n  server 10.0.0.1:80 resolve;\n }\n server { listen 8080; location / { proxy_pass http://u; } }\n}\n",
        );
        assert!(
            c.toml
                .contains("{ addr = \"chat.internal:2346\", weight = 2, resolve = true }"),
            "{}",
            c.toml
        );
        assert!(c.toml.contains("{ addr = \"10.0.0.1:80\" }"), "{}", c.toml);
        assert!(
            c.toml
                .contains("[resolver]\nservers = [\"127.0.0.1:5353\", \"::1\"]\nvalid = \"30s\"\n"),
            "{}",
            c.toml
        );
        let w = c.warnings.join("\n");
        for expected in [
            "n.conf:2: \"resolver\" \"dns.local\" is not an address (tideway takes DNS servers by address), left out; ipv6=off is not honoured",
            "n.conf:6: \"resolve\" (server parameter) on an address has nothing to resolve",
        ] {
            assert!(w.contains(expected), "{expected}\n{w}");
        }
        assert!(c.errors.is_empty(), "{:?}", c.errors);
    }

    #[test]
    fn one_resolver_for_the_process_upstream_blocks_first() {
        // Upstream blocks are read before the http block's directives: theirs is used.
        let c = convert(
            "http {\n resolver 10.0.0.53;\n upstream u {\n  resolver 10.9.9.9 valid=5s;\n  server chat.internal:2346 resolve;\n }\n}\n",
        );
        assert!(
            c.toml
                .contains("[resolver]\nservers = [\"10.9.9.9\"]\nvalid = \"5s\"\n"),
            "{}",
            c.toml
        );
        let w = c.warnings.join("\n");
        assert!(
            w.contains(
                "n.conf:2: \"resolver\" differs from the one at n.conf:4, which tideway uses (one resolver for the process); ignored"
            ),
            "{w}"
        );
    }
}
