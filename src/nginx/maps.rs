//! nginx `map` blocks of the http block, read into [`crate::config::headers::MapDef`]s (so a
//! `proxy_set_header` using one is checked at its file:line) and rendered as `[map.NAME]`
//! tables; and a route's headers rendered as `set_header` / `add_header`.
//!
//! Read: exact keys (nginx compares them case-insensitively), `~` and `~*` regex keys (without
//! captures in values), `default`, `volatile` (changes nothing here). `hostnames` and
//! `include` inside a map fail the import with file:line.

use super::parse::Directive;
use super::routes::Notes;
use crate::config::headers::{self, Maps, RouteHeaders};
use std::fmt::Write;
use std::sync::Arc;

/// One map as written: its variable name, source, entries in order and default.
#[derive(Clone, Debug)]
struct Spec {
    name: String,
    source: String,
    entries: Vec<(String, String)>,
    default: Option<String>,
}

/// The maps read so far.
#[derive(Clone, Debug, Default)]
pub struct Read {
    /// Compiled, by variable name: what templates may use.
    pub defs: Maps,
    specs: Vec<Spec>,
}

impl Read {
    /// Read the `map` blocks of `block`.
    pub fn read(&mut self, block: &[Directive], notes: &mut Notes) {
        for d in block.iter().filter(|d| d.name == "map") {
            let (Some(source), Some(var), Some(body)) = (d.args.first(), d.args.get(1), &d.block)
            else {
                notes.errors.push(format!(
                    "{}: map takes a source, a $variable and a block",
                    d.at()
                ));
                continue;
            };
            let Some(name) = var.strip_prefix('$').filter(|_| d.args.len() == 2) else {
                notes
                    .errors
                    .push(format!("{}: map's second argument is a $variable", d.at()));
                continue;
            };
            let mut spec = Spec {
                name: name.to_ascii_lowercase(),
                source: source.clone(),
                entries: Vec::new(),
                default: None,
            };
            for e in body {
                match (e.name.as_str(), &e.args[..]) {
                    ("volatile", []) => {}
                    ("hostnames" | "include", _) => notes.errors.push(format!(
                        "{}: map: \"{}\" is not supported by tideway",
                        e.at(),
                        e.name
                    )),
                    ("default", [v]) => spec.default = Some(v.clone()),
                    (k, [v]) => spec.entries.push((k.to_string(), v.clone())),
                    _ => notes
                        .errors
                        .push(format!("{}: map: an entry is a key and one value", e.at())),
                }
            }
            match headers::map(
                &spec.name,
                &spec.source,
                &spec.entries,
                spec.default.as_deref(),
            ) {
                Ok(def) => {
                    self.defs.insert(def.name.clone(), Arc::new(def));
                    self.specs.push(spec);
                }
                Err(e) => notes.errors.push(format!("{}: map: {e}", d.at())),
            }
        }
    }

    /// The maps as `[map.NAME]` tables.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for s in &self.specs {
            let _ = write!(out, "\n[map.{}]\nsource = {:?}\n", s.name, s.source);
            if let Some(d) = &s.default {
                let _ = writeln!(out, "default = {d:?}");
            }
            let values: Vec<String> = s
                .entries
                .iter()
                .map(|(k, v)| format!("{k:?} = {v:?}"))
                .collect();
            let _ = writeln!(out, "values = {{ {} }}", values.join(", "));
        }
        out
    }
}

/// A route's headers as `set_header = {...}` and `add_header = {...}` lines.
pub fn render_headers(h: &RouteHeaders) -> String {
    let mut out = String::new();
    if !h.set.is_empty() {
        let set: Vec<String> = h
            .set
            .iter()
            .map(|s| format!("{:?} = {:?}", s.name, s.value.to_string()))
            .collect();
        let _ = writeln!(out, "set_header = {{ {} }}", set.join(", "));
    }
    if !h.add.is_empty() {
        let add: Vec<String> = h
            .add
            .iter()
            .map(|a| match a.always {
                false => format!("{:?} = {:?}", a.name, a.value.to_string()),
                true => format!(
                    "{:?} = {{ value = {:?}, always = true }}",
                    a.name,
                    a.value.to_string()
                ),
            })
            .collect();
        let _ = writeln!(out, "add_header = {{ {} }}", add.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_websocket_idiom_and_maps_import() {
        let top = super::super::parse::parse_text(
            "http { map $http_upgrade $connection_upgrade { default upgrade; '' close; volatile; }\n\
             map $arg_v $ver { ~^v(1|2)$ old; V3 new; }\n\
             server { listen 127.0.0.1:8080; location / { proxy_pass http://127.0.0.1:2346;\n\
               proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection $connection_upgrade;\n\
               proxy_set_header X-Ver $ver; add_header X-Frame-Options DENY always; } } }",
            std::path::Path::new("t.conf"),
            std::path::Path::new("."),
            0,
        )
        .unwrap();
        let c = super::super::convert::convert(&top, std::path::Path::new("."), Default::default());
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        assert!(c.toml.contains("websocket = true"), "{}", c.toml);
        assert!(
            c.toml.contains("set_header = { \"X-Ver\" = \"${ver}\" }"),
            "{}",
            c.toml
        );
        assert!(
            !c.toml.to_ascii_lowercase().contains("\"connection\""),
            "{}",
            c.toml
        );
        let config = crate::config::parse(&c.toml, std::path::Path::new("t.toml")).unwrap();
        let s = &config.listeners[0].routes[0].locations[0].settings;
        assert_eq!(s.websocket, Some(true));
        let h = s.headers.as_ref().unwrap();
        assert_eq!(h.set.len(), 1);
        assert!(h.add[0].always);
    }

    #[test]
    fn unknown_variables_are_ignored_with_a_warning_and_framing_fails_the_import() {
        let convert = |conf: &str, strict: bool| {
            let text = format!(
                "http {{ server {{ listen 127.0.0.1:8080;\nlocation / {{ proxy_pass http://127.0.0.1:2346; {conf} }} }} }}"
            );
            let top = super::super::parse::parse_text(
                &text,
                std::path::Path::new("t.conf"),
                std::path::Path::new("."),
                0,
            )
            .unwrap();
            let options = super::super::convert::Options {
                strict,
                ..Default::default()
            };
            super::super::convert::convert(&top, std::path::Path::new("."), options)
        };
        for (conf, want) in [
            (
                "proxy_set_header X-A $nope;",
                "t.conf:2: proxy_set_header X-A: unknown variable \"$nope\"",
            ),
            (
                "add_header X-B $upstream_addr;",
                "t.conf:2: add_header X-B: unknown variable \"$upstream_addr\"",
            ),
            (
                "proxy_set_header X-A $1;",
                "t.conf:2: proxy_set_header X-A: unknown variable \"$1\"",
            ),
        ] {
            let c = convert(conf, false);
            assert!(c.errors.is_empty(), "{conf}: {:?}", c.errors);
            assert!(
                c.warnings
                    .iter()
                    .any(|w| w.starts_with(want) && w.contains("ignored")),
                "{conf}: {:?}",
                c.warnings
            );
            let c = convert(conf, true);
            assert!(
                c.errors.iter().any(|e| e.starts_with(want)),
                "--strict, {conf}: {:?}",
                c.errors
            );
        }
        for (conf, want) in [
            (
                "proxy_set_header Content-Length 5;",
                "t.conf:2: proxy_set_header: Content-Length",
            ),
            (
                "add_header Transfer-Encoding x;",
                "t.conf:2: add_header: Transfer-Encoding",
            ),
        ] {
            let c = convert(conf, false);
            assert!(
                c.errors.iter().any(|e| e.starts_with(want)),
                "{conf}: {:?}",
                c.errors
            );
        }
    }
}
