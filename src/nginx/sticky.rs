//! NGINX Plus's `sticky cookie NAME [expires=TIME] [domain=DOMAIN] [path=PATH] [httponly]
//! [secure] [samesite=strict|lax|none]` in an
//! `upstream` block, as the TOML `sticky = { cookie = ..., ... }`. Checked here with
//! [`crate::config::StickyCookie::new`], so a bad parameter fails the import at the
//! directive's file:line. `sticky route` and `sticky learn` (the other NGINX Plus forms) are
//! not read: a warning, as any directive tideway does not understand.
//!
//! Like nginx, stickiness is a balancing method of its own: an upstream with both `sticky`
//! and `hash` or `ip_hash` fails the import (see [`conflict`]).

use super::parse::Directive;
use crate::config::StickyCookie;

/// What an upstream's `sticky` directive said.
#[derive(Debug, Clone)]
pub struct Sticky {
    /// The TOML value: `{ cookie = "NAME", ... }`.
    pub toml: String,
    /// The directive's file:line.
    pub at: String,
}

/// Read `sticky ...`: `Ok(None)` for a form tideway does not read (the caller warns),
/// `Err` with file:line for a `sticky cookie` it cannot honour.
pub fn read(d: &Directive) -> Result<Option<Sticky>, String> {
    let Some(("cookie", rest)) = d.args.split_first().map(|(m, r)| (m.as_str(), r)) else {
        return Ok(None);
    };
    let fail = |why: String| format!("{}: \"sticky\" {why}", d.at());
    let Some((name, params)) = rest.split_first() else {
        return Err(fail("cookie needs a cookie name".into()));
    };
    let (mut expires, mut domain, mut path, mut samesite) = (None, None, None, None);
    let (mut httponly, mut secure) = (None, None);
    for p in params {
        let (slot, v) = match (p.as_str(), p.split_once('=')) {
            (_, Some(("expires", v))) => (&mut expires, v),
            (_, Some(("domain", v))) => (&mut domain, v),
            (_, Some(("path", v))) => (&mut path, v),
            (_, Some(("samesite", v))) => (&mut samesite, v),
            ("httponly", _) => (&mut httponly, ""),
            ("secure", _) => (&mut secure, ""),
            _ => return Err(fail(format!(
                "has a parameter tideway does not read: {p:?} (expires=, domain=, path=, httponly, secure and samesite= are read)"
            ))),
        };
        if slot.replace(v).is_some() {
            return Err(fail(format!("repeats {p:?}")));
        }
    }
    // nginx time ("1h", "30", "max") as a TOML duration.
    let expires = match expires {
        None | Some("max") => expires.map(str::to_string),
        Some(t) => Some(
            super::convert::time(t).ok_or_else(|| fail(format!("has an invalid expires {t:?}")))?,
        ),
    };
    let cookie = StickyCookie::new(name, expires.as_deref(), domain, path).map_err(&fail)?;
    if let Some(v) = samesite {
        cookie.with_samesite(v).map_err(&fail)?;
    }
    let mut toml = format!("{{ cookie = {name:?}");
    for (k, v) in [
        ("expires", expires.as_deref()),
        ("domain", domain),
        ("path", path),
        ("samesite", samesite),
    ] {
        if let Some(v) = v {
            toml.push_str(&format!(", {k} = {v:?}"));
        }
    }
    for (k, v) in [("httponly", httponly), ("secure", secure)] {
        if v.is_some() {
            toml.push_str(&format!(", {k} = true"));
        }
    }
    toml.push_str(" }");
    Ok(Some(Sticky { toml, at: d.at() }))
}

/// The error for an upstream with `sticky` and a hash method (`balance`, as converted).
pub fn conflict(sticky: &Sticky, balance: Option<&str>) -> Option<String> {
    (balance == Some("hash")).then(|| {
        format!(
            "{}: \"sticky\" cannot be combined with \"hash\" or \"ip_hash\" in one upstream (sticky is a balancing method of its own)",
            sticky.at
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::Arc;

    fn directive(args: &[&str]) -> Directive {
        Directive {
            name: "sticky".into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            block: None,
            file: Arc::new(PathBuf::from("site.conf")),
            line: 7,
        }
    }

    #[test]
    fn reads_nginx_plus_cookie_form() {
        let d = directive(&[
            "cookie",
            "srv_id",
            "expires=1h",
            "domain=.example.com",
            "path=/",
        ]);
        let s = read(&d).unwrap().unwrap();
        assert_eq!(
            s.toml,
            r#"{ cookie = "srv_id", expires = "1h", domain = ".example.com", path = "/" }"#
        );
        assert_eq!(s.at, "site.conf:7");
        let plain = read(&directive(&["cookie", "s", "expires=30"]))
            .unwrap()
            .unwrap();
        assert_eq!(plain.toml, r#"{ cookie = "s", expires = "30s" }"#);
        let flags = read(&directive(&[
            "cookie",
            "s",
            "secure",
            "samesite=lax",
            "httponly",
        ]));
        assert_eq!(
            flags.unwrap().unwrap().toml,
            r#"{ cookie = "s", samesite = "lax", httponly = true, secure = true }"#
        );
        assert_eq!(
            conflict(&s, Some("hash")).unwrap().split(':').next(),
            Some("site.conf")
        );
        assert!(conflict(&s, Some("least_conn")).is_none());
    }

    #[test]
    fn other_forms_are_left_to_a_warning_and_bad_parameters_fail_at_the_line() {
        assert!(read(&directive(&["route", "$route_cookie"]))
            .unwrap()
            .is_none());
        assert!(read(&directive(&["learn", "create=$x"])).unwrap().is_none());
        for bad in [
            &["cookie"][..],
            &["cookie", "s", "expires=soon"],
            &["cookie", "s", "max_age=1"],
            &["cookie", "s", "samesite=$v"],
            &["cookie", "s", "secure", "secure"],
            &["cookie", "s", "path=/a;b"],
            &["cookie", "s", "domain=a", "domain=b"],
            &["cookie", "a b"],
        ] {
            let e = read(&directive(bad)).unwrap_err();
            assert!(e.starts_with("site.conf:7: \"sticky\""), "{bad:?}: {e}");
        }
    }
}
