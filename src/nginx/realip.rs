//! nginx's realip directives (`set_real_ip_from`, `real_ip_header`, `real_ip_recursive`, in
//! the http or stream block and in a server, a server's own replacing the block's as nginx
//! merges them) and `listen ... proxy_protocol`, as a listener's `proxy_protocol` and
//! `real_ip` keys.
//!
//! Imports: `config` (to check ranges and header names as tideway will).

use super::parse::Directive;
use crate::config::real_ip::parse_range;
use crate::config::RealIpHeader;

/// The realip directives of one context, as written.
#[derive(Debug, Default, Clone)]
pub struct RealIpConf {
    from: Option<Vec<String>>,
    header: Option<String>,
    recursive: Option<bool>,
}

impl RealIpConf {
    /// Is `name` a realip directive of this context (http, or `stream`)?
    pub fn reads(name: &str, stream: bool) -> bool {
        name == "set_real_ip_from"
            || (!stream && (name == "real_ip_header" || name == "real_ip_recursive"))
    }

    /// Take `d` if it is a realip directive (true), warning into `warnings` about what
    /// tideway cannot take. `stream`: a stream context, which has only `set_real_ip_from`.
    pub fn take(&mut self, d: &Directive, stream: bool, warnings: &mut Vec<String>) -> bool {
        if !Self::reads(&d.name, stream) {
            return false;
        }
        let arg = d.args.first().map(String::as_str).unwrap_or_default();
        match d.name.as_str() {
            "set_real_ip_from" => match parse_range(arg) {
                Ok(_) => self.from.get_or_insert_with(Vec::new).push(arg.to_string()),
                Err(_) => warnings.push(format!(
                    "{}: \"set_real_ip_from {arg}\" is not an address or CIDR range (tideway resolves no names); ignored",
                    d.at()
                )),
            },
            "real_ip_header" => self.header = Some(arg.to_string()),
            _ => self.recursive = Some(arg == "on"),
        }
        true
    }

    /// Is the address of a PROXY header believed, and only from trusted balancers
    /// (`real_ip_header proxy_protocol` with `set_real_ip_from`)?
    pub fn trusts_proxy_protocol(&self) -> bool {
        self.header.as_deref() == Some("proxy_protocol")
            && self.from.as_ref().is_some_and(|f| !f.is_empty())
    }

    /// This context's settings over its parent's (nginx's merge).
    pub fn over(&self, parent: &RealIpConf) -> RealIpConf {
        RealIpConf {
            from: self.from.clone().or_else(|| parent.from.clone()),
            header: self.header.clone().or_else(|| parent.header.clone()),
            recursive: self.recursive.or(parent.recursive),
        }
    }

    /// The listener's `real_ip = { ... }` value (None when realip is off), for a listener
    /// with or without `proxy_protocol`. `at` names the server block for warnings.
    pub fn render(
        &self,
        stream: bool,
        proxy_protocol: bool,
        at: &str,
        warnings: &mut Vec<String>,
    ) -> Option<String> {
        let header = if stream {
            // The stream realip module believes only the PROXY header.
            RealIpHeader::ProxyProtocol
        } else {
            match self.header.as_deref().map(RealIpHeader::parse) {
                None => RealIpHeader::XRealIp,
                Some(Some(h)) => h,
                Some(None) => {
                    warnings.push(format!(
                        "{at}: real_ip_header {:?} is not one tideway reads (X-Real-IP, X-Forwarded-For, proxy_protocol); realip ignored",
                        self.header.as_deref().unwrap_or_default()
                    ));
                    return None;
                }
            }
        };
        let from = self.from.as_ref().filter(|f| !f.is_empty());
        if proxy_protocol && !(header == RealIpHeader::ProxyProtocol && from.is_some()) {
            warnings.push(format!(
                "{at}: listen ... proxy_protocol: nginx's $remote_addr stays the balancer's without set_real_ip_from and real_ip_header proxy_protocol; tideway takes the PROXY header's address as the client's (and checks real_ip.from against it)"
            ));
        }
        let from = from?;
        if header == RealIpHeader::ProxyProtocol && !proxy_protocol {
            // nginx has no PROXY address to take on such a connection: realip does nothing.
            return None;
        }
        let name = match header {
            RealIpHeader::XRealIp => "X-Real-IP",
            RealIpHeader::XForwardedFor => "X-Forwarded-For",
            RealIpHeader::ProxyProtocol => "proxy_protocol",
        };
        let from: Vec<String> = from.iter().map(|f| format!("{f:?}")).collect();
        let mut out = format!("{{ from = [{}], header = {name:?}", from.join(", "));
        if self.recursive == Some(true) && header != RealIpHeader::ProxyProtocol {
            out.push_str(", recursive = true");
        }
        out.push_str(" }");
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn d(name: &str, arg: &str) -> Directive {
        Directive {
            name: name.into(),
            args: vec![arg.into()],
            block: None,
            file: Arc::new("nginx.conf".into()),
            line: 1,
        }
    }

    #[test]
    fn server_settings_replace_the_blocks_and_render() {
        let mut w = Vec::new();
        let mut http = RealIpConf::default();
        assert!(http.take(&d("set_real_ip_from", "10.0.0.0/8"), false, &mut w));
        assert!(http.take(&d("real_ip_header", "X-Forwarded-For"), false, &mut w));
        assert!(!http.take(&d("proxy_pass", "http://x"), false, &mut w));
        let mut server = RealIpConf::default();
        server.take(&d("set_real_ip_from", "192.168.0.1"), false, &mut w);
        server.take(&d("set_real_ip_from", "not-an-ip.example"), false, &mut w);
        server.take(&d("real_ip_recursive", "on"), false, &mut w);
        assert_eq!(w.len(), 1, "{w:?}");
        let merged = server.over(&http);
        assert_eq!(
            merged.render(false, false, "s", &mut w).unwrap(),
            r#"{ from = ["192.168.0.1"], header = "X-Forwarded-For", recursive = true }"#
        );
        assert_eq!(
            http.over(&RealIpConf::default())
                .render(false, false, "s", &mut w)
                .unwrap(),
            r#"{ from = ["10.0.0.0/8"], header = "X-Forwarded-For" }"#
        );
        // No set_real_ip_from: realip is off.
        assert_eq!(
            RealIpConf::default().render(false, false, "s", &mut w),
            None
        );
    }

    #[test]
    fn proxy_protocol_and_stream() {
        let mut w = Vec::new();
        let mut c = RealIpConf::default();
        c.take(&d("set_real_ip_from", "10.0.0.0/8"), true, &mut w);
        assert!(!c.take(&d("real_ip_header", "X-Real-IP"), true, &mut w));
        assert_eq!(
            c.render(true, true, "s", &mut w).unwrap(),
            r#"{ from = ["10.0.0.0/8"], header = "proxy_protocol" }"#
        );
        // Without a PROXY header on the listener there is nothing to believe.
        assert_eq!(c.render(true, false, "s", &mut w), None);
        assert!(w.is_empty());
        // http, proxy_protocol, the X-Real-IP default: nginx would keep the balancer's address.
        c.render(false, true, "s", &mut w).unwrap();
        assert_eq!(w.len(), 1);
        c.header = Some("CF-Connecting-IP".into());
        assert_eq!(c.render(false, false, "s", &mut w), None);
        assert_eq!(w.len(), 2);
    }
}
