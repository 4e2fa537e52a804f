//! Locations nginx answers itself (files, FastCGI, uWSGI, SCGI, gRPC, memcached, status
//! pages) or proxies where tideway cannot (a target with variables):
//! each fails the import with the file:line that decides it, unless `--skip-unproxied` leaves
//! it out.
//!
//! A location left out stays in the route table answering 404 (after its access list), so every other request is
//! routed exactly as nginx routes it: dropping it would hand its requests to the next
//! matching location (`location ~ \.php$` to `location /`), sending a backend requests nginx
//! never sent it.
//!
//! Imports: `config` (routes), `nginx::parse`, `nginx::directives`, `nginx::report`.

use super::directives::serves_content;
use super::parse::Directive;
use super::report::{Class, Finding};
use crate::config::{LocationConfig, RouteAction};

/// Why nginx would not proxy location `d` as tideway can: the directive that decides it.
pub fn unproxied(d: &Directive) -> Option<Finding> {
    let block = d.block.as_deref().unwrap_or_default();
    let place = d.args.join(" ");
    // `return` answers before nginx's content phase: nothing else here is ever used.
    if block.iter().any(|s| s.name == "return") {
        return None;
    }
    if let Some(s) = block.iter().find(|s| serves_content(s)) {
        return Some(Finding::of(
            s,
            Class::Error,
            format!("makes nginx serve location {place} itself; tideway only proxies"),
        ));
    }
    if let Some(p) = block.iter().find(|s| s.name == "proxy_pass") {
        let target = p.args.first().map(String::as_str).unwrap_or_default();
        let why = if target.contains('$') {
            "with variables is not supported: tideway proxies to a fixed upstream"
        } else if !target.starts_with("http://") && !target.starts_with("https://") {
            "has a target that is not http:// or https://"
        } else {
            return None;
        };
        return Some(Finding::of(p, Class::Error, format!("{target}: {why}")));
    }
    Some(Finding::of(
        d,
        Class::Error,
        format!("{place} neither proxies nor returns: nginx would serve files here; tideway only proxies"),
    ))
}

/// Check every location in `block` (nested ones too) against the routes built from it,
/// `locations`. An unproxied one is an error in `notes`, or with `skip` a finding of its
/// own and a 404 answer in its route.
pub fn check(
    block: &[Directive],
    locations: &mut [LocationConfig],
    skip: bool,
    notes: &mut Vec<Finding>,
) {
    for d in block.iter().filter(|d| d.name == "location") {
        let Some(route) = locations.iter_mut().find(|l| l.at == d.at()) else {
            continue;
        };
        if let Some(mut f) = unproxied(d) {
            if skip {
                f.class = Class::Skipped;
                f.why
                    .push_str("; left out (--skip-unproxied): tideway answers 404 there");
                // 404. One holding nested locations keeps them and becomes a location
                // without a handler, which answers after its access list (a denied client
                // gets 403, as from nginx); a leaf one answers 404 to everyone (nothing
                // is served either way).
                route.action = if route.nested.is_empty() {
                    RouteAction::Return {
                        code: 404,
                        text: String::new(),
                    }
                } else {
                    RouteAction::None
                };
            } else {
                f.why
                    .push_str(" (--skip-unproxied leaves such a location out)");
            }
            notes.push(f);
        }
        check(
            d.block.as_deref().unwrap_or_default(),
            &mut route.nested,
            skip,
            notes,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(body: &str) -> Directive {
        let text = format!("location / {{\n{body}\n}}\n");
        let p = std::path::Path::new("n.conf");
        super::super::parse::parse_text(&text, p, p, 0)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn the_directive_that_decides_is_named() {
        let f = unproxied(&location("root /srv;\ntry_files $uri =404;")).unwrap();
        assert_eq!((f.at.as_str(), f.name.as_str()), ("n.conf:3", "try_files"));
        let f = unproxied(&location("root /srv;")).unwrap();
        assert_eq!((f.at.as_str(), f.name.as_str()), ("n.conf:1", "location"));
        assert_eq!(unproxied(&location("proxy_pass https://app;")), None);
        // Proxied, `root` beside it is never used; `return` answers before any content.
        assert_eq!(
            unproxied(&location("root /srv;\nproxy_pass http://app;")),
            None
        );
        assert_eq!(
            unproxied(&location("try_files $uri =404;\nreturn 403;")),
            None
        );
    }
}
