//! nginx's `listen` line: the address, and each parameter read or reported. A UDP (or QUIC)
//! listen never becomes a TCP listener: it fails the import, or is skipped with
//! `--skip-unproxied`.
//!
//! Imports: `nginx::parse` and `nginx::report`.

use super::convert::param;
use super::parse::Directive;
use super::report::{Class, Finding};

/// One `listen` as tideway takes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Listen {
    /// host:port.
    pub addr: String,
    pub ssl: bool,
    pub proxy_protocol: bool,
    pub default: bool,
    /// `http2` on a TLS listen (on a plain one it is reported, and off).
    pub http2: bool,
}

/// nginx `listen` argument -> host:port.
pub fn addr(v: &str) -> String {
    if v.bytes().all(|b| b.is_ascii_digit()) {
        format!("0.0.0.0:{v}")
    } else if let Some(port) = v.strip_prefix("*:") {
        format!("0.0.0.0:{port}")
    } else if v.contains(':') {
        v.to_string()
    } else {
        format!("{v}:80")
    }
}

/// Socket tuning that changes nothing a client or backend sees.
const TUNING: [&str; 8] = [
    "reuseport",
    "deferred",
    "bind",
    "backlog",
    "rcvbuf",
    "sndbuf",
    "fastopen",
    "accept_filter",
];

/// Read `d` (a `listen` in an http server, or in a stream server when `stream`); each
/// parameter not read as nginx reads it becomes a finding in `notes`. None: the listen is
/// left out (UDP or QUIC with `skip`, or an address tideway cannot listen on).
pub fn read(d: &Directive, stream: bool, skip: bool, notes: &mut Vec<Finding>) -> Option<Listen> {
    let first = d.args.first()?;
    if first.starts_with("unix:") {
        notes.push(Finding::of(
            d,
            Class::Error,
            format!("{first}: tideway listens on TCP addresses only"),
        ));
        return None;
    }
    let mut l = Listen {
        addr: addr(first),
        ssl: false,
        proxy_protocol: false,
        default: false,
        http2: false,
    };
    let mut udp = None;
    for p in &d.args[1..] {
        let k = p.split_once('=').map_or(p.as_str(), |(k, _)| k);
        match (k, stream) {
            ("ssl", false) => l.ssl = true,
            ("ssl", true) => notes.push(param(
                d,
                k,
                Class::Error,
                "(listen parameter): tideway does not terminate TLS in a stream server",
            )),
            ("proxy_protocol", _) => l.proxy_protocol = true,
            ("default_server" | "default", false) => l.default = true,
            ("http2", false) => l.http2 = true,
            ("udp" | "quic", _) => udp = Some(k),
            _ if TUNING.contains(&k) => notes.push(param(
                d,
                k,
                Class::NoEffect,
                "(listen parameter) tunes the socket; tideway uses its defaults",
            )),
            _ => notes.push(param(
                d,
                k,
                Class::Ignored,
                "(listen parameter) is not understood",
            )),
        }
    }
    if l.http2 && !l.ssl {
        l.http2 = false;
        notes.push(param(d, "http2", Class::Approximated, "(listen parameter) without ssl: tideway speaks no h2c (HTTP/2 in clear text); nginx would take h2c clients with prior knowledge here, tideway serves HTTP/1.1 only"));
    }
    if let Some(k) = udp {
        let (class, what) = if skip {
            (Class::Skipped, "not listened on (--skip-unproxied)")
        } else {
            (Class::Error, "leave this server out with --skip-unproxied")
        };
        notes.push(param(
            d,
            k,
            class,
            &format!("(listen parameter): tideway proxies TCP only, never {k} as TCP; {what}"),
        ));
        return None;
    }
    Some(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn listen(args: &[&str], stream: bool, skip: bool) -> (Option<Listen>, Vec<Finding>) {
        let d = Directive {
            name: "listen".into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            block: None,
            file: Arc::new("n.conf".into()),
            line: 3,
        };
        let mut notes = Vec::new();
        (read(&d, stream, skip, &mut notes), notes)
    }

    #[test]
    fn udp_never_becomes_tcp_and_every_parameter_is_reported() {
        let (l, n) = listen(&["53", "udp"], true, false);
        assert_eq!(l, None);
        assert_eq!(n[0].class, Class::Error);
        assert!(
            n[0].to_string().starts_with("n.conf:3: \"udp\""),
            "{}",
            n[0]
        );
        let (l, n) = listen(&["53", "udp", "reuseport"], true, true);
        assert_eq!(l, None);
        assert_eq!(
            n.iter().map(|f| f.class).collect::<Vec<_>>(),
            [Class::NoEffect, Class::Skipped]
        );
        let (l, n) = listen(
            &["443", "ssl", "http2", "default_server", "ipv6only=on"],
            false,
            false,
        );
        let l = l.unwrap();
        assert_eq!(
            (l.addr.as_str(), l.ssl, l.default, l.http2),
            ("0.0.0.0:443", true, true, true)
        );
        assert_eq!(
            n.iter()
                .map(|f| (f.name.as_str(), f.class))
                .collect::<Vec<_>>(),
            [("ipv6only", Class::Ignored)]
        );
        // Without ssl, nginx would speak h2c with prior knowledge: tideway does not.
        let (l, n) = listen(&["8080", "http2"], false, false);
        assert!(!l.unwrap().http2);
        assert_eq!(
            n.iter()
                .map(|f| (f.name.as_str(), f.class))
                .collect::<Vec<_>>(),
            [("http2", Class::Approximated)]
        );
        assert!(n[0].why.contains("h2c"), "{}", n[0]);
    }
}
