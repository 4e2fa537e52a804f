//! HTTP/2 and the client head limits of an nginx config: `listen ... ssl http2` and `http2
//! on|off` (http and server levels, nginx 1.25.1+) become a TLS listener's `http2 = true`;
//! `http2_max_concurrent_streams N` becomes `limits.max_concurrent_streams`;
//! `large_client_header_buffers N SIZE` becomes `limits.max_request_line` and
//! `limits.max_header_line` (SIZE: nginx's request line and each header line must fit one
//! buffer) and `limits.max_head` (N * SIZE, all the buffers: an upper bound, as nginx moves a
//! line that does not fit the rest of a buffer whole to the next one). In HTTP/2 nginx uses the
//! same directive for each header name or value (SIZE) and the whole header list (N * SIZE).
//!
//! nginx decides `listen ... http2` per address: one server's parameter turns HTTP/2 on for
//! every server on that address. It takes `http2 on`, the stream cap and the header buffers
//! from the server a connection's SNI names (the default server without one). A tideway
//! listener has one setting for all its servers: HTTP/2 is on when any server on the address
//! turns it on, and each limit is the smallest of the servers'; where servers differ, the
//! directives involved are reported as approximated. A listener without TLS never gets HTTP/2:
//! nginx would take h2c clients with prior knowledge there, tideway does not (reported).
//!
//! Imports: `nginx::parse`, `nginx::report`, `nginx::convert` (the listeners it settles) and
//! `config` (the defaults).

use super::convert::Listener;
use super::parse::Directive;
use super::report::{Class, Finding};
use crate::config::{
    DEFAULT_MAX_CONCURRENT_STREAMS, DEFAULT_MAX_HEAD, DEFAULT_MAX_HEADER_LINE,
    DEFAULT_MAX_REQUEST_LINE,
};

/// Directives of nginx's HTTP/2 module that size its own buffers or push responses: taken
/// quietly here, the directive table says what becomes of them.
const OTHERS: [&str; 6] = [
    "http2_chunk_size",
    "http2_body_preread_size",
    "http2_recv_buffer_size",
    "http2_streams_index_size",
    "http2_push",
    "http2_push_preload",
];

/// One level's settings (http or server) as written, each with its nginx file:line.
#[derive(Clone, Debug, Default)]
pub struct HeadConf {
    on: Option<(bool, String)>,
    streams: Option<(u32, String)>,
    /// `large_client_header_buffers`: (number, size).
    buffers: Option<((usize, usize), String)>,
}

impl HeadConf {
    /// Is `name` read (or quietly known) here?
    pub fn reads(name: &str) -> bool {
        matches!(
            name,
            "http2" | "http2_max_concurrent_streams" | "large_client_header_buffers"
        ) || OTHERS.contains(&name)
    }

    /// Take `d` if it is one of these directives (true); a value nginx or tideway refuses is
    /// an error with its file:line in `errors`.
    pub fn take(&mut self, d: &Directive, errors: &mut Vec<String>) -> bool {
        if !Self::reads(&d.name) {
            return false;
        }
        let mut bad = |what: &str| {
            errors.push(format!(
                "{}: \"{}\" {what} (got {:?})",
                d.at(),
                d.name,
                d.args.join(" ")
            ))
        };
        match (d.name.as_str(), &d.args[..]) {
            ("http2", [v]) if v == "on" || v == "off" => self.on = Some((v == "on", d.at())),
            ("http2", _) => bad("takes on or off, as in nginx"),
            ("http2_max_concurrent_streams", [n]) => match n.parse::<u32>() {
                Ok(0) => bad("must be at least 1: tideway refuses a cap of 0 (nginx would refuse every stream)"),
                Ok(n) => self.streams = Some((n, d.at())),
                Err(_) => bad("takes a number of streams"),
            },
            ("http2_max_concurrent_streams", _) => bad("takes a number of streams"),
            ("large_client_header_buffers", [n, size]) => {
                let n = n.parse::<usize>().ok().filter(|&n| n > 0);
                let size = super::routes::size(size)
                    .and_then(|s| usize::try_from(s).ok())
                    .filter(|&s| s > 0);
                match (n, size) {
                    (Some(n), Some(s)) if n.checked_mul(s).is_some() => {
                        self.buffers = Some(((n, s), d.at()))
                    }
                    _ => bad("takes a number and a size, both more than 0 (nginx: \"invalid value\")"),
                }
            }
            ("large_client_header_buffers", _) => bad("takes a number and a size"),
            _ => {}
        }
        true
    }

    /// This level's settings over its parent's (nginx's merge: the inner level's own win).
    pub fn over(&self, parent: &HeadConf) -> HeadConf {
        HeadConf {
            on: self.on.clone().or_else(|| parent.on.clone()),
            streams: self.streams.clone().or_else(|| parent.streams.clone()),
            buffers: self.buffers.clone().or_else(|| parent.buffers.clone()),
        }
    }
}

/// What the servers on one address ask of their listener, and what it gets ([`settle`]).
#[derive(Clone, Debug, Default)]
pub struct ListenerHead {
    /// Per server on the address: its `listen` has `http2`, and its merged settings.
    servers: Vec<(bool, HeadConf)>,
    /// The listener's `http2`.
    pub http2: bool,
    /// The listener's `limits = { ... }` line, or empty (tideway's defaults, nginx's too).
    pub limits: String,
}

impl ListenerHead {
    /// The first server on an address (see [`ListenerHead::add`]).
    pub fn of(listen_http2: bool, conf: HeadConf) -> ListenerHead {
        let mut h = ListenerHead::default();
        h.add(listen_http2, conf);
        h
    }

    /// One more server on the address: `listen_http2` its listen line's parameter, `conf`
    /// its settings merged over the http block's.
    pub fn add(&mut self, listen_http2: bool, conf: HeadConf) {
        self.servers.push((listen_http2, conf));
    }

    /// The listener's `http2` (on a TLS listener, `tls`), with what differs from nginx noted.
    fn http2(&self, listen: &str, tls: bool, notes: &mut Vec<Finding>) -> bool {
        let turned_on = |c: &HeadConf| c.on.clone().filter(|(on, _)| *on).map(|(_, at)| at);
        let by_listen = self.servers.iter().any(|(l, _)| *l);
        let on: Vec<String> = self
            .servers
            .iter()
            .filter_map(|(_, c)| turned_on(c))
            .collect();
        let note = |why: String, notes: &mut Vec<Finding>| {
            for at in &on {
                notes.push(Finding {
                    at: at.clone(),
                    name: "http2".into(),
                    class: Class::Approximated,
                    why: why.clone(),
                });
            }
        };
        if !tls {
            note(format!("on a listener without ssl ({listen}): tideway speaks no h2c (HTTP/2 in clear text); nginx would also take h2c clients with prior knowledge there, tideway serves HTTP/1.1 only"), notes);
            return false;
        }
        if !by_listen && on.len() < self.servers.len() {
            note(format!("is on for some servers on {listen} only: nginx offers HTTP/2 by ALPN to the servers SNI names with http2 on; tideway offers it to every server on the address"), notes);
        }
        by_listen || !on.is_empty()
    }

    /// The listener's `limits = { ... }` line: the smallest of each limit over its servers,
    /// only where it differs from the default; where servers differ, their directives are
    /// noted.
    fn limits<'a>(&'a self, listen: &str, notes: &mut Vec<Finding>) -> String {
        // Per server, the directive's (number, size) or stream cap, with where it was written.
        let given = |directive: &str| -> Vec<Option<((usize, usize), &'a String)>> {
            let of = |(_, c): &'a (bool, HeadConf)| match directive {
                "large_client_header_buffers" => c.buffers.as_ref().map(|(b, at)| (*b, at)),
                _ => c.streams.as_ref().map(|(n, at)| ((*n as usize, 0), at)),
            };
            self.servers.iter().map(of).collect()
        };
        // Per directive: its keys, each with the value it gives and tideway's default.
        type Key = (&'static str, fn(usize, usize) -> usize, usize);
        let line: Key = ("max_request_line", |_, s| s, DEFAULT_MAX_REQUEST_LINE);
        let field: Key = ("max_header_line", |_, s| s, DEFAULT_MAX_HEADER_LINE);
        let head: Key = ("max_head", |n, s| n * s, DEFAULT_MAX_HEAD);
        let streams = DEFAULT_MAX_CONCURRENT_STREAMS as usize;
        let cap: Key = ("max_concurrent_streams", |n, _| n, streams);
        let groups = [
            ("large_client_header_buffers", vec![line, field, head]),
            ("http2_max_concurrent_streams", vec![cap]),
        ];
        let mut keys = Vec::new();
        for (directive, group) in groups {
            let given = given(directive);
            let mut differ = Vec::new();
            for (key, value, default) in group {
                let values: Vec<usize> = given
                    .iter()
                    .map(|g| g.map_or(default, |((n, s), _)| value(n, s)))
                    .collect();
                let Some(&min) = values.iter().min() else {
                    continue;
                };
                if values.iter().any(|&v| v != min) {
                    differ.push(format!("{key} = {min}"));
                }
                if min != default {
                    keys.push(format!("{key} = {min}"));
                }
            }
            if differ.is_empty() {
                continue;
            }
            for at in given.iter().flatten().map(|(_, at)| *at) {
                notes.push(Finding {
                    at: at.clone(),
                    name: directive.into(),
                    class: Class::Approximated,
                    why: format!("differs between the servers on {listen}: tideway applies the smallest values to the whole listener ({}); nginx takes each server's own, by SNI (the default server's without it)", differ.join(", ")),
                });
            }
        }
        if keys.is_empty() {
            String::new()
        } else {
            format!("limits = {{ {} }}\n", keys.join(", "))
        }
    }
}

/// Decide each http listener's `http2` and `limits` from the servers on its address.
pub(super) fn settle(listeners: &mut [Listener], notes: &mut Vec<Finding>) {
    for l in listeners.iter_mut().filter(|l| l.protocol == "http") {
        let tls = l.servers.iter().any(|s| s.tls.is_some());
        l.head.http2 = l.head.http2(&l.listen, tls, notes);
        l.head.limits = l.head.limits(&l.listen, notes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn d(name: &str, args: &[&str], line: usize) -> Directive {
        Directive {
            name: name.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            block: None,
            file: Arc::new("n.conf".into()),
            line,
        }
    }

    fn conf(ds: &[Directive]) -> (HeadConf, Vec<String>) {
        let mut c = HeadConf::default();
        let mut errors = Vec::new();
        for x in ds {
            assert!(c.take(x, &mut errors));
        }
        (c, errors)
    }

    #[test]
    fn values_nginx_or_tideway_refuse_are_errors_with_file_and_line() {
        for (name, args) in [
            ("http2", &["yes"][..]),
            ("http2_max_concurrent_streams", &["0"]),
            ("http2_max_concurrent_streams", &["many"]),
            ("large_client_header_buffers", &["0", "8k"]),
            ("large_client_header_buffers", &["4", "0"]),
            ("large_client_header_buffers", &["4"]),
        ] {
            let (_, errors) = conf(&[d(name, args, 7)]);
            assert_eq!(errors.len(), 1, "{name} {args:?}");
            assert!(errors[0].starts_with("n.conf:7: \""), "{}", errors[0]);
        }
        assert!(!HeadConf::default().take(&d("gzip", &["on"], 1), &mut Vec::new()));
    }

    #[test]
    fn servers_sharing_an_address_get_the_smallest_limits_and_any_http2() {
        let (http, _) = conf(&[d("http2_max_concurrent_streams", &["64"], 2)]);
        let (a, _) = conf(&[
            d("large_client_header_buffers", &["2", "16k"], 5),
            d("http2", &["on"], 6),
        ]);
        let (b, _) = conf(&[d("large_client_header_buffers", &["8", "4k"], 9)]);
        let mut h = ListenerHead::default();
        h.add(false, a.over(&http));
        h.add(false, b.over(&http));
        let mut notes = Vec::new();
        assert!(h.http2("0.0.0.0:443", true, &mut notes));
        assert_eq!(
            h.limits("0.0.0.0:443", &mut notes),
            "limits = { max_request_line = 4096, max_header_line = 4096, max_concurrent_streams = 64 }\n"
        );
        let noted: Vec<_> = notes
            .iter()
            .map(|f| (f.at.as_str(), f.name.as_str()))
            .collect();
        // http2 on in one server only; the buffers differ (line and head: one note each per
        // directive and key); the common stream cap is exact.
        assert!(noted.contains(&("n.conf:6", "http2")), "{noted:?}");
        assert!(noted.contains(&("n.conf:5", "large_client_header_buffers")));
        assert!(noted.contains(&("n.conf:9", "large_client_header_buffers")));
        assert!(!noted.iter().any(|(at, _)| *at == "n.conf:2"), "{noted:?}");

        // `listen ... http2` on one server turns the address on, as in nginx: nothing noted.
        let mut h = ListenerHead::default();
        h.add(true, HeadConf::default());
        h.add(false, HeadConf::default());
        let mut notes = Vec::new();
        assert!(h.http2("0.0.0.0:443", true, &mut notes));
        assert_eq!(h.limits("0.0.0.0:443", &mut notes), "");
        assert!(notes.is_empty(), "{notes:?}");

        // Without TLS: never HTTP/2, and `http2 on` is approximated.
        let mut h = ListenerHead::default();
        h.add(false, conf(&[d("http2", &["on"], 3)]).0);
        let mut notes = Vec::new();
        assert!(!h.http2("0.0.0.0:80", false, &mut notes));
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].class, Class::Approximated);
        assert!(notes[0].to_string().contains("h2c"), "{}", notes[0]);
    }
}
