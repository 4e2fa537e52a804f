//! A `stream` block's `server`: its `listen` lines (TCP only: a UDP listen never becomes a
//! TCP listener), `proxy_pass`, `proxy_timeout` and per-client limits, as a `tcp` listener.
//!
//! Imports: what `convert` does.

use super::access::ACCESS;
use super::convert::{target, time, Cx, Listener};
use super::limit::Scope;
use super::parse::Directive;
use super::realip::RealIpConf;
use super::report::Class;

/// One stream `server` block as a tcp listener per `listen`.
pub(super) fn server(cx: &mut Cx, d: &Directive, block_realip: &RealIpConf) {
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
            "proxy_pass" => pass = target(cx, s, false),
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
    let Some(upstream) = pass else {
        return cx.warn(d, "has no proxy_pass");
    };
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
        });
    }
}
