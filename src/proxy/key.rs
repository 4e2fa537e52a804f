//! The sticky key of a request: a header, a cookie, a query argument or the client address,
//! hashed like nginx's `hash KEY consistent` does (CRC-32 of the raw value).
//! A missing key falls back to the client address.

use crate::balance::key_hash;
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
    let Some(ip) = ip else { return 0 };
    let mut buf = [0u8; 48];
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cur, "{ip}");
    let n = cur.position() as usize;
    key_hash(&buf[..n])
}

/// The key hash of a request. `header` looks a header up by lower-case name.
pub fn request_hash<'h>(
    key: &HashKey,
    client_ip: Option<IpAddr>,
    query: Option<&str>,
    header: impl Fn(&str) -> Option<&'h [u8]>,
) -> u32 {
    let value: Option<&[u8]> = match key {
        HashKey::Ip => None,
        HashKey::Header(name) => header(name),
        HashKey::Cookie(name) => header("cookie").and_then(|c| cookie(c, name)),
        HashKey::Query(name) => query.and_then(|q| query_arg(q, name)).map(str::as_bytes),
    };
    match value {
        Some(v) => key_hash(v),
        None => ip_hash(client_ip),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            request_hash(&k, Some(ip), Some("x=1"), none),
            ip_hash(Some(ip))
        );
        assert_eq!(ip_hash(Some(ip)), key_hash(b"10.1.2.3"));
        assert_eq!(
            request_hash(&k, Some(ip), Some("uid=7"), none),
            key_hash(b"7")
        );
    }
}
