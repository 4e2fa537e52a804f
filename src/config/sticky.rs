//! Cookie-insert stickiness, as NGINX Plus's `sticky cookie NAME [expires=TIME]
//! [domain=DOMAIN] [path=PATH] [httponly] [secure] [samesite=strict|lax|none]`: a request whose cookie NAME names an available backend goes
//! there; otherwise the balancer picks, and the answer sets the cookie to the backend picked.
//!
//! This module holds the validated setting and writes the `Set-Cookie` value; the cookie's
//! value itself (an opaque digest of the backend id) is [`crate::pool::sticky`]'s.
//!
//! Imports: nothing else in tideway.

use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `sticky = { cookie = "NAME", expires = "1h", domain = ".example.com", path = "/",
/// httponly = true, secure = true, samesite = "lax" }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StickyCookie {
    /// The cookie's name (an RFC 6265 token).
    pub name: String,
    /// None: a session cookie, gone when the browser closes.
    pub expires: Option<Expires>,
    pub domain: Option<String>,
    pub path: Option<String>,
    /// The cookie's `HttpOnly` and `Secure` flags.
    pub httponly: bool,
    pub secure: bool,
    /// The cookie's `SameSite`: `strict`, `lax` or `none`.
    pub samesite: Option<&'static str>,
}

/// How long the browser keeps the cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expires {
    After(Duration),
    /// nginx's `max`: until 31 Dec 2037 23:55:55 GMT.
    Max,
}

/// The date nginx writes for `expires=max`.
const MAX_DATE: &str = "Thu, 31 Dec 2037 23:55:55 GMT";
/// The `max-age` nginx writes for `max` (ten years).
const MAX_AGE: u64 = 315_360_000;

impl StickyCookie {
    /// Validate a setting as written (TOML, or nginx's parameters): the name must be a cookie
    /// token, the domain and path must not break out of the `Set-Cookie` header.
    pub fn new(
        name: &str,
        expires: Option<&str>,
        domain: Option<&str>,
        path: Option<&str>,
    ) -> Result<Self, String> {
        if name.is_empty() || !name.bytes().all(is_token) {
            return Err(format!(
                "sticky cookie name {name:?} is not a cookie name (letters, digits and !#$%&'*+-.^_`|~)"
            ));
        }
        let expires = match expires {
            None => None,
            Some("max") => Some(Expires::Max),
            Some(t) => {
                let d = super::parse_duration(t)
                    .map_err(|e| format!("sticky expires: {e}, or \"max\""))?;
                if d.as_secs() == 0 {
                    return Err(
                        "sticky expires must be at least 1s (leave it out for a session cookie)"
                            .into(),
                    );
                }
                Some(Expires::After(d))
            }
        };
        if let Some(d) = domain {
            let ok = !d.is_empty()
                && d.len() <= 253
                && d.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            if !ok {
                return Err(format!(
                    "sticky domain {d:?} is not a domain name (letters, digits, '.' and '-')"
                ));
            }
        }
        if let Some(p) = path {
            // RFC 6265's path-value: any CHAR but controls and ';' (and no space, so the value
            // reads the same to every cookie parser).
            if !p.starts_with('/') || !p.bytes().all(|b| b.is_ascii_graphic() && b != b';') {
                return Err(format!(
                    "sticky path {p:?} must start with '/' and hold no spaces, controls or ';'"
                ));
            }
        }
        Ok(StickyCookie {
            name: name.to_string(),
            expires,
            domain: domain.map(str::to_string),
            path: path.map(str::to_string),
            httponly: false,
            secure: false,
            samesite: None,
        })
    }

    /// Set `SameSite` from its value as written (`strict`, `lax` or `none`, any case).
    pub fn with_samesite(mut self, value: &str) -> Result<Self, String> {
        let known = ["strict", "lax", "none"];
        let v = known
            .into_iter()
            .find(|k| k.eq_ignore_ascii_case(value))
            .ok_or_else(|| format!("sticky samesite {value:?}: expected strict, lax or none"))?;
        self.samesite = Some(v);
        Ok(self)
    }

    /// The `Set-Cookie` value naming a backend by `value`, for an answer sent at `now`:
    /// `NAME=VALUE[; expires=DATE; max-age=SECS][; domain=D][; path=P]`, as NGINX Plus writes
    /// it (the date in RFC 9110's IMF-fixdate form).
    pub fn set_cookie(&self, value: &str, now: SystemTime) -> String {
        let mut out = format!("{}={value}", self.name);
        match self.expires {
            None => {}
            Some(Expires::Max) => {
                let _ = write!(out, "; expires={MAX_DATE}; max-age={MAX_AGE}");
            }
            Some(Expires::After(d)) => {
                let at = now.duration_since(UNIX_EPOCH).unwrap_or_default() + d;
                out.push_str("; expires=");
                http_date(&mut out, at.as_secs());
                let _ = write!(out, "; max-age={}", d.as_secs());
            }
        }
        if let Some(d) = &self.domain {
            let _ = write!(out, "; domain={d}");
        }
        if let Some(p) = &self.path {
            let _ = write!(out, "; path={p}");
        }
        if self.secure {
            out.push_str("; secure");
        }
        if self.httponly {
            out.push_str("; httponly");
        }
        if let Some(v) = self.samesite {
            let _ = write!(out, "; samesite={v}");
        }
        out
    }
}

/// An RFC 9110 token character (what a cookie name is made of).
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Append `secs` since the Unix epoch as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_date(out: &mut String, secs: u64) {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = super::date::civil(days as i64);
    let _ = write!(
        out,
        "{}, {day:02} {} {year:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        super::date::MONTHS[(month - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(secs: u64) -> String {
        let mut s = String::new();
        http_date(&mut s, secs);
        s
    }

    #[test]
    fn dates_are_imf_fixdates() {
        assert_eq!(date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(date(2_145_916_555), MAX_DATE);
        assert_eq!(date(4_107_542_400), "Mon, 01 Mar 2100 00:00:00 GMT");
    }

    #[test]
    fn set_cookie_carries_the_attributes_as_nginx_plus() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
        let c = StickyCookie::new("srv_id", Some("1h"), Some(".example.com"), Some("/")).unwrap();
        assert_eq!(
            c.set_cookie("abc", now),
            "srv_id=abc; expires=Sun, 06 Nov 1994 09:49:37 GMT; max-age=3600; domain=.example.com; path=/"
        );
        let flags = StickyCookie {
            httponly: true,
            secure: true,
            ..StickyCookie::new("s", None, None, Some("/app")).unwrap()
        }
        .with_samesite("Lax")
        .unwrap();
        assert_eq!(
            flags.set_cookie("v", now),
            "s=v; path=/app; secure; httponly; samesite=lax"
        );
        assert!(flags.with_samesite("$var").is_err());
        let session = StickyCookie::new("s", None, None, None).unwrap();
        assert_eq!(session.set_cookie("v", now), "s=v");
        let max = StickyCookie::new("s", Some("max"), None, None).unwrap();
        assert_eq!(
            max.set_cookie("v", now),
            format!("s=v; expires={MAX_DATE}; max-age={MAX_AGE}")
        );
    }

    #[test]
    fn settings_that_would_break_the_header_are_refused() {
        for (name, expires, domain, path) in [
            ("", None, None, None),
            ("a b", None, None, None),
            ("a;b", None, None, None),
            ("a=b", None, None, None),
            ("s", Some("soon"), None, None),
            ("s", Some("0s"), None, None),
            ("s", None, Some("x.com; secure"), None),
            ("s", None, Some(""), None),
            ("s", None, None, Some("/a;b")),
            ("s", None, None, Some("/a b")),
            ("s", None, None, Some("a")),
            ("s", None, None, Some("/\r\nx: y")),
        ] {
            assert!(
                StickyCookie::new(name, expires, domain, path).is_err(),
                "{name:?} {expires:?} {domain:?} {path:?}"
            );
        }
    }
}
