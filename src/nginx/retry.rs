//! nginx's `proxy_next_upstream`, `proxy_next_upstream_tries` and `proxy_next_upstream_timeout`
//! as they hold in one location, for the conversion to put on the upstream it proxies to; the
//! `proxy_ssl_*` settings ([`ProxySsl`]) go the same way.

use super::convert::time;
use super::parse::Directive;
use super::proxy_ssl::ProxySsl;

/// nginx's `proxy_next_upstream`, `proxy_next_upstream_tries` and
/// `proxy_next_upstream_timeout` as they hold in one location (inherited from its server and
/// the http block), nginx's defaults where unset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    pub conditions: Vec<String>,
    pub tries: u32,
    pub timeout: Option<String>,
    /// The `proxy_ssl_*` settings, for a `proxy_pass https://`.
    pub ssl: ProxySsl,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            conditions: vec!["error".into(), "timeout".into()],
            tries: 0,
            timeout: None,
            ssl: ProxySsl::default(),
        }
    }
}

impl Retry {
    /// Take `d` if it is one of the three directives; returns whether it was.
    pub fn take(&mut self, d: &Directive, warnings: &mut Vec<String>) -> bool {
        if self.ssl.take(d, warnings) {
            return true;
        }
        match d.name.as_str() {
            "proxy_next_upstream" => {
                match crate::config::NextUpstream::parse(d.args.iter().map(String::as_str)) {
                    Ok(_) => self.conditions = d.args.clone(),
                    Err(e) => warnings.push(format!("{}: {e}; ignored", d.at())),
                }
            }
            "proxy_next_upstream_tries" => match d.args.first().and_then(|v| v.parse().ok()) {
                Some(n) => self.tries = n,
                None => warnings.push(format!(
                    "{}: \"{}\" needs a number; ignored",
                    d.at(),
                    d.name
                )),
            },
            "proxy_next_upstream_timeout" => match d.args.first().and_then(|v| time(v)) {
                Some(t) => self.timeout = Some(t).filter(|t| t != "0s" && t != "0"),
                None => warnings.push(format!("{}: \"{}\" needs a time; ignored", d.at(), d.name)),
            },
            _ => return false,
        }
        true
    }

    /// The same `proxy_next_upstream*` settings (whatever the `proxy_ssl_*` ones).
    pub fn same_retries(&self, other: &Retry) -> bool {
        (&self.conditions, self.tries, &self.timeout)
            == (&other.conditions, other.tries, &other.timeout)
    }
}
