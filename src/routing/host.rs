//! Which server of a listener answers a Host, in nginx's order: the exact name, the longest
//! leading wildcard (`*.example.com`), the longest trailing wildcard (`www.example.*`), the
//! first regex (`~...`) in the order the servers were defined, then the default server. A
//! Host is matched lowercased, without its port and without a trailing dot; a request
//! without one matches the name `""`.

use std::collections::HashMap;

/// Longest Host matched; a longer one goes to the default server.
const MAX_HOST: usize = 255;

/// The server names of one listener, each mapped to its server's index.
#[derive(Debug)]
pub struct Hosts {
    exact: HashMap<Box<str>, usize>,
    /// `*.example.com` as `.example.com`, longest first.
    leading: Vec<(Box<str>, usize)>,
    /// `www.example.*` as `www.example.`, longest first.
    trailing: Vec<(Box<str>, usize)>,
    regexes: Vec<(regex::Regex, usize)>,
    default: usize,
}

impl Hosts {
    /// Build from each server's names (checked by [`crate::config::routes::server_name`]);
    /// a name given twice belongs to its first server, as in nginx.
    pub fn new<'a>(
        servers: impl Iterator<Item = &'a [String]>,
        default: usize,
    ) -> Result<Hosts, String> {
        let mut h = Hosts {
            exact: HashMap::new(),
            leading: Vec::new(),
            trailing: Vec::new(),
            regexes: Vec::new(),
            default,
        };
        for (i, names) in servers.enumerate() {
            for name in names {
                if let Some(re) = name.strip_prefix('~') {
                    let re = regex::RegexBuilder::new(re)
                        .case_insensitive(true)
                        .build()
                        .map_err(|e| format!("server_name {name:?}: {e}"))?;
                    h.regexes.push((re, i));
                } else if let Some(suffix) = name.strip_prefix('*') {
                    push_new(&mut h.leading, suffix, i);
                } else if let Some(prefix) = name.strip_suffix('*') {
                    push_new(&mut h.trailing, prefix, i);
                } else if let Some(domain) = name.strip_prefix('.') {
                    // `.example.com`: example.com and *.example.com.
                    h.exact.entry(domain.into()).or_insert(i);
                    push_new(&mut h.leading, name, i);
                } else {
                    h.exact.entry(name.as_str().into()).or_insert(i);
                }
            }
        }
        h.leading.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        h.trailing.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        Ok(h)
    }

    /// The default server (what a TLS client without SNI is served).
    pub fn default_server(&self) -> usize {
        self.default
    }

    /// `f` of `raw` (a Host or an SNI name) as it is matched: lowercased, without port and
    /// trailing dot; None when it cannot be a name (not ASCII, too long).
    pub fn name<R>(raw: &[u8], f: impl FnOnce(&str) -> R) -> Option<R> {
        let mut buf = [0u8; MAX_HOST];
        normal(raw, &mut buf).map(f)
    }

    /// The server for `host` as the client sent it (None: no Host).
    pub fn find(&self, host: Option<&[u8]>) -> usize {
        let Some(raw) = host else {
            return self.exact.get("").copied().unwrap_or(self.default);
        };
        let mut buf = [0u8; MAX_HOST];
        let Some(name) = normal(raw, &mut buf) else {
            return self.default;
        };
        if let Some(&i) = self.exact.get(name) {
            return i;
        }
        if let Some(&(_, i)) = self.leading.iter().find(|(s, _)| name.ends_with(&**s)) {
            return i;
        }
        if let Some(&(_, i)) = self.trailing.iter().find(|(p, _)| name.starts_with(&**p)) {
            return i;
        }
        if let Some(&(_, i)) = self.regexes.iter().find(|(re, _)| re.is_match(name)) {
            return i;
        }
        self.default
    }
}

fn push_new(list: &mut Vec<(Box<str>, usize)>, s: &str, i: usize) {
    if !list.iter().any(|(x, _)| &**x == s) {
        list.push((s.into(), i));
    }
}

/// `raw` lowercased into `buf`, without port and trailing dot (nginx's
/// `ngx_http_validate_host`); None when it is not ASCII or too long.
fn normal<'b>(raw: &[u8], buf: &'b mut [u8; MAX_HOST]) -> Option<&'b str> {
    let raw = raw.trim_ascii();
    let end = if raw.starts_with(b"[") {
        raw.iter()
            .position(|&b| b == b']')
            .map_or(raw.len(), |i| i + 1)
    } else {
        raw.iter().position(|&b| b == b':').unwrap_or(raw.len())
    };
    let mut host = &raw[..end];
    if let Some(h) = host.strip_suffix(b".") {
        host = h;
    }
    if host.len() > MAX_HOST || !host.is_ascii() {
        return None;
    }
    let out = &mut buf[..host.len()];
    out.copy_from_slice(host);
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(servers: &[&[&str]]) -> Hosts {
        let owned: Vec<Vec<String>> = servers
            .iter()
            .map(|s| s.iter().map(|n| n.to_string()).collect())
            .collect();
        Hosts::new(owned.iter().map(Vec::as_slice), 0).unwrap()
    }

    #[test]
    fn nginx_order_of_choice() {
        let h = hosts(&[
            &["default.test"],
            &["api.example.com"],
            &["*.example.com"],
            &["*.api.example.com"],
            &["www.example.*"],
            &["~^www\\.", "~^w"],
            &[".site.org"],
            &[""],
        ]);
        assert_eq!(h.find(Some(b"api.example.com")), 1);
        assert_eq!(h.find(Some(b"API.Example.COM:8080")), 1);
        assert_eq!(h.find(Some(b"api.example.com.")), 1);
        assert_eq!(h.find(Some(b"x.example.com")), 2);
        assert_eq!(
            h.find(Some(b"v1.api.example.com")),
            3,
            "longest leading wildcard"
        );
        assert_eq!(
            h.find(Some(b"www.example.com")),
            2,
            "leading before trailing"
        );
        assert_eq!(h.find(Some(b"www.example.org")), 4);
        assert_eq!(h.find(Some(b"www.other.org")), 5);
        assert_eq!(h.find(Some(b"wx.other.org")), 5);
        assert_eq!(h.find(Some(b"site.org")), 6);
        assert_eq!(h.find(Some(b"a.site.org")), 6);
        assert_eq!(h.find(Some(b"unknown.test")), 0);
        assert_eq!(h.find(None), 7);
        assert_eq!(hosts(&[&["a"]]).find(None), 0);
        assert_eq!(h.find(Some(b"[::1]:80")), 0);
    }
}
