//! The sticky key of a request: a header, a cookie, a query argument or the client address,
//! hashed like nginx's `hash KEY` does (CRC-32 of the raw value). A missing `header:`,
//! `cookie:` or `query:` key falls back to the client address; an nginx expression
//! (`$host$request_uri`) is evaluated as nginx does, a missing variable being empty.

use crate::balance::Key;
use crate::config::key_expr::Part;
use crate::config::HashKey;
use std::io::Write;
use std::net::IpAddr;

/// The raw value of query argument `name` (not percent-decoded, as nginx's `$arg_NAME`).
pub fn query_arg<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
    })
}

/// Hash the client address as text, as nginx's `$remote_addr`.
pub fn ip_hash(ip: Option<IpAddr>) -> u32 {
    ip_key(ip).hash
}

/// The client address as text, as nginx's `$remote_addr`, as a key.
pub fn ip_key(ip: Option<IpAddr>) -> Key {
    let Some(ip) = ip else {
        return Key::default();
    };
    let mut buf = [0u8; 48];
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cur, "{ip}");
    let n = cur.position() as usize;
    Key::of(&buf[..n])
}

/// What a request's key is made of.
pub struct KeyParts<'a> {
    pub client_ip: Option<IpAddr>,
    pub method: &'a str,
    /// The target as sent: path and query.
    pub target: &'a str,
}

/// The key of a request. `header` looks a header up by lower-case name.
pub fn request_key<'h>(
    key: &HashKey,
    parts: &KeyParts<'_>,
    header: impl Fn(&str) -> Option<&'h [u8]>,
) -> Key {
    let query = parts.target.split_once('?').map(|(_, q)| q);
    let value: Option<&[u8]> = match key {
        HashKey::Ip => None,
        HashKey::Header(name) => header(name),
        HashKey::Cookie(name) => header("cookie").and_then(|c| cookie(c, name)),
        HashKey::Query(name) => query.and_then(|q| query_arg(q, name)).map(str::as_bytes),
        HashKey::Expr(e) => {
            let mut raw = Vec::with_capacity(64);
            for p in &e.parts {
                let v: &[u8] = match p {
                    Part::Lit(s) => s.as_bytes(),
                    Part::RemoteAddr => {
                        if let Some(ip) = parts.client_ip {
                            let _ = write!(raw, "{ip}");
                        }
                        continue;
                    }
                    Part::BinaryRemoteAddr => {
                        match parts.client_ip {
                            Some(IpAddr::V4(a)) => raw.extend_from_slice(&a.octets()),
                            Some(IpAddr::V6(a)) => raw.extend_from_slice(&a.octets()),
                            None => {}
                        }
                        continue;
                    }
                    Part::RequestUri => parts.target.as_bytes(),
                    Part::Args => query.unwrap_or("").as_bytes(),
                    Part::Method => parts.method.as_bytes(),
                    Part::Host => {
                        let h = header("host").unwrap_or_default();
                        let h = match h.iter().rposition(|&b| b == b':') {
                            Some(i) if !h.contains(&b']') || h[..i].ends_with(b"]") => &h[..i],
                            _ => h,
                        };
                        raw.extend(h.iter().map(u8::to_ascii_lowercase));
                        continue;
                    }
                    Part::Header(name) => header(name).unwrap_or_default(),
                    Part::Cookie(name) => header("cookie")
                        .and_then(|c| cookie(c, name))
                        .unwrap_or_default(),
                    Part::Arg(name) => query
                        .and_then(|q| query_arg(q, name))
                        .unwrap_or("")
                        .as_bytes(),
                };
                raw.extend_from_slice(v);
            }
            return Key::of(&raw);
        }
    };
    match value {
        Some(v) => Key::of(v),
        None => ip_key(parts.client_ip),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::key_hash;

    #[test]
    fn finds_query_args_and_cookies() {
        assert_eq!(query_arg("a=1&uid=42&b", "uid"), Some("42"));
        assert_eq!(query_arg("a=1&b", "b"), Some(""));
        assert_eq!(query_arg("a=1", "uid"), None);
        assert_eq!(cookie(b"x=1; sid=abc ;y=2", "sid"), Some(&b"abc"[..]));
        assert_eq!(cookie(b"x=1", "sid"), None);
    }

    #[test]
    fn missing_key_falls_back_to_ip() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let none = |_: &str| None;
        let k = HashKey::Query("uid".into());
        let at = |target| KeyParts {
            client_ip: Some(ip),
            method: "GET",
            target,
        };
        assert_eq!(request_key(&k, &at("/?x=1"), none), ip_key(Some(ip)));
        assert_eq!(ip_hash(Some(ip)), key_hash(b"10.1.2.3"));
        assert_eq!(request_key(&k, &at("/?uid=7"), none), Key::of(b"7"));
    }

    #[test]
    fn expressions_evaluate_as_nginx_variables() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let parts = KeyParts {
            client_ip: Some(ip),
            method: "POST",
            target: "/a/b?x=1&k=v",
        };
        let headers = |n: &str| match n {
            "host" => Some(&b"Example.COM:8080"[..]),
            "cookie" => Some(&b"sid=s1"[..]),
            "x-user" => Some(&b"u9"[..]),
            _ => None,
        };
        let key = |e: &str| request_key(&HashKey::Expr(e.parse().unwrap()), &parts, headers);
        assert_eq!(
            key("$host$request_uri"),
            Key::of(b"example.com/a/b?x=1&k=v")
        );
        assert_eq!(
            key("$remote_addr-$arg_k-$cookie_sid-$http_x_user-$request_method-$args"),
            Key::of(b"10.1.2.3-v-s1-u9-POST-x=1&k=v")
        );
        assert_eq!(key("$binary_remote_addr"), Key::of(&[10, 1, 2, 3]));
        // A missing variable is empty: no fallback to the client address.
        assert_eq!(key("$arg_missing"), Key::of(b""));
        assert_eq!(key("$arg_missing").len, 0);
    }
}
