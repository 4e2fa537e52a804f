//! A `stream` block's `server`: its `listen` lines (TCP only: a UDP listen never becomes a
//! TCP listener), `proxy_pass`, `proxy_timeout` and per-client limits, as a `tcp` listener.
//! `proxy_ssl on` (with `proxy_ssl_verify`, `proxy_ssl_trusted_certificate`,
//! `proxy_ssl_server_name` and `proxy_ssl_name`, from the server or the stream block, nginx's
//! defaults where unset) makes the upstream's `tls`, as `proxy_pass https://` does in http.
//!
//! Imports: what `convert` does.

use super::access::ACCESS;
use super::convert::{target, time, Cx, Listener};
use super::limit::Scope;
use super::parse::Directive;
use super::proxy_ssl::ProxySsl;
use super::realip::RealIpConf;
use super::report::Class;

/// A stream server's TLS to its backends: `proxy_ssl` and the settings it goes by.
#[derive(Debug, Clone, Default)]
pub(super) struct StreamSsl {
    /// `proxy_ssl on`.
    on: bool,
    ssl: ProxySsl,
}

impl StreamSsl {
    /// Whether `name` is a directive [`Self::take`] reads.
    pub(super) fn reads(name: &str) -> bool {
        matches!(
            name,
            "proxy_ssl"
                | "proxy_ssl_verify"
                | "proxy_ssl_trusted_certificate"
                | "proxy_ssl_server_name"
                | "proxy_ssl_name"
        )
    }

    /// Take `d` if it is one of them; returns whether it was.
    pub(super) fn take(&mut self, d: &Directive, warnings: &mut Vec<String>) -> bool {
        if d.name != "proxy_ssl" {
            return self.ssl.take(d, warnings);
        }
        if let Some(on) = super::proxy_ssl::flag(d, warnings) {
            self.on = on;
        }
        true
    }
}

/// One stream `server` block as a tcp listener per `listen`.
pub(super) fn server(cx: &mut Cx, d: &Directive, block_realip: &RealIpConf, block_ssl: &StreamSsl) {
    let mut ssl = block_ssl.clone();
    let mut realip = RealIpConf::default();
    let mut listens = Vec::new();
    let mut pass = None;
    let mut idle = None;
    let mut limits = Scope::default();
    for s in d.block.as_deref().unwrap_or_default() {
        if cx.limit(&mut limits, s) {
            continue;
        }
        match s.name.as_str() {
            "listen" => listens.extend(
                super::listen::read(s, true, cx.options.skip_unproxied, &mut cx.notes)
                    .map(|l| (l.addr, l.proxy_protocol, s.at())),
            ),
            _ if realip.take(s, true, &mut cx.warnings) => {}
            _ if ssl.take(s, &mut cx.warnings) => {}
            "proxy_pass" => pass = target(cx, s, false).map(|up| (up, s)),
            "proxy_timeout" => match s.args.first().and_then(|v| time(v)) {
                Some(t) => idle = Some(t),
                None => cx.note(s, Class::Error, "has an invalid time"),
            },
            "proxy_connect_timeout" => cx.note(
                s,
                Class::Ignored,
                "is not read in a stream server (tideway's default connect timeout holds)",
            ),
            name if ACCESS.contains(&name) => {}
            _ => cx.warn(s, "is not understood in a stream server block"),
        }
    }
    let Some((upstream, pass)) = pass else {
        return cx.warn(d, "has no proxy_pass");
    };
    let host = pass.args.first().map(String::as_str).unwrap_or_default();
    let tls = match ssl.on.then(|| ssl.ssl.render(host, &cx.base)).transpose() {
        Ok(tls) => tls,
        Err(e) => {
            cx.errors.push(format!("{}: {e}", pass.at()));
            None
        }
    };
    super::convert::upstream_tls(cx, &upstream, tls, &ssl.ssl, &pass.at());
    if let (Some(t), Some(u)) = (idle, cx.upstreams.get_mut(&upstream)) {
        u.idle_timeout = Some(t);
    }
    let limits = cx.client_limits(&limits, d, true);
    let realip = realip.over(block_realip);
    for (listen, proxy_protocol, at) in listens {
        let real_ip = realip.render(true, proxy_protocol, &d.at(), &mut cx.warnings);
        cx.listeners.push(Listener {
            at,
            listen,
            protocol: "tcp",
            upstream: upstream.clone(),
            servers: Vec::new(),
            proxy_protocol,
            trusts_proxy: false,
            real_ip,
            limits: limits.clone(),
            head: Default::default(),
        });
    }
}
