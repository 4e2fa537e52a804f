//! nginx's `proxy_ssl_verify`, `proxy_ssl_trusted_certificate`, `proxy_ssl_server_name` and
//! `proxy_ssl_name` as they hold in one location (inherited from its server and the http
//! block), for a `proxy_pass https://` there to put on its upstream as `tls = { ... }`.
//!
//! nginx's defaults are kept, so an imported config behaves as it did under nginx: no
//! verification and no SNI unless the file turns them on. The name defaults to nginx's
//! `$proxy_host` without its port: the upstream's name, or the address proxied to.

use super::parse::Directive;
use std::fmt::Write;

/// The `proxy_ssl_*` settings of one location, nginx's defaults where unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySsl {
    pub verify: bool,
    /// `proxy_ssl_trusted_certificate`, as written (relative to the main file's directory).
    pub trusted: Option<String>,
    pub server_name: bool,
    /// `proxy_ssl_name`; None: the proxy_pass host.
    pub name: Option<String>,
}

/// nginx's `on`/`off`.
pub(super) fn flag(d: &Directive, warnings: &mut Vec<String>) -> Option<bool> {
    match d.args.first().map(String::as_str) {
        Some("on") => Some(true),
        Some("off") => Some(false),
        _ => {
            warnings.push(format!(
                "{}: \"{}\" needs on or off; ignored",
                d.at(),
                d.name
            ));
            None
        }
    }
}

impl ProxySsl {
    /// Take `d` if it is one of the four directives; returns whether it was.
    pub fn take(&mut self, d: &Directive, warnings: &mut Vec<String>) -> bool {
        match d.name.as_str() {
            "proxy_ssl_verify" => self.verify = flag(d, warnings).unwrap_or(self.verify),
            "proxy_ssl_server_name" => {
                self.server_name = flag(d, warnings).unwrap_or(self.server_name)
            }
            "proxy_ssl_trusted_certificate" => self.trusted = d.args.first().cloned(),
            "proxy_ssl_name" => self.name = d.args.first().cloned(),
            _ => return false,
        }
        true
    }

    /// The upstream's `tls = { ... }` line for a `proxy_pass https://HOST[:PORT]`, `host`
    /// being the HOST part; certificate paths resolve against `base`. An error says what
    /// tideway cannot honour.
    pub fn render(&self, host: &str, base: &std::path::Path) -> Result<String, String> {
        let name = self.name.as_deref().unwrap_or(host);
        if name.contains('$') {
            return Err(format!(
                "proxy_ssl_name {name:?} has a variable: tideway checks and sends one fixed name per upstream"
            ));
        }
        // nginx strips a port (`$proxy_host` carries one).
        let bare = match name.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6),
            None => name.split(':').next().unwrap_or(name),
        };
        let mut out = format!("tls = {{ verify = {}", self.verify);
        if self.verify {
            let ca = self.trusted.as_ref().map(|t| base.join(t));
            if let Some(ca) = ca {
                let _ = write!(out, ", ca = {:?}", ca.display().to_string());
            }
        }
        let _ = write!(
            out,
            ", server_name = {bare:?}, sni = {} }}",
            self.server_name
        );
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(name: &str, arg: &str) -> Directive {
        let text = format!("{name} {arg};");
        let p = std::path::Path::new("t.conf");
        super::super::parse::parse_text(&text, p, p, 0).unwrap()[0].clone()
    }

    #[test]
    fn nginx_defaults_and_the_directives_become_tls_settings() {
        let base = std::path::Path::new("/etc/nginx");
        let off = ProxySsl::default();
        assert_eq!(
            off.render("backend", base).unwrap(),
            "tls = { verify = false, server_name = \"backend\", sni = false }"
        );
        let mut on = ProxySsl::default();
        let mut w = Vec::new();
        for (n, a) in [
            ("proxy_ssl_verify", "on"),
            ("proxy_ssl_server_name", "on"),
            ("proxy_ssl_trusted_certificate", "ca.pem"),
            ("proxy_ssl_name", "app.test:8443"),
        ] {
            assert!(on.take(&d(n, a), &mut w));
        }
        assert!(w.is_empty());
        assert_eq!(
            on.render("10.0.0.1:8443", base).unwrap(),
            "tls = { verify = true, ca = \"/etc/nginx/ca.pem\", server_name = \"app.test\", sni = true }"
        );
        assert!(!on.take(&d("proxy_pass", "http://x"), &mut w));
        on.name = Some("$host".into());
        assert!(on.render("x", base).is_err());
    }
}
