//! nginx variable expressions as `hash` keys: `$request_uri`, `$arg_uid`, `$host$request_uri`,
//! `user-${cookie_sid}`. Parsed once at load; [`crate::proxy::key`] evaluates them per request.
//!
//! Variables read: `$remote_addr`, `$binary_remote_addr`, `$request_uri`, `$args` (and
//! `$query_string`), `$request_method`, `$host`, `$http_NAME`, `$cookie_NAME`, `$arg_NAME`.
//! Anything else is refused at load, naming the variable.
//!
//! Imports nothing else in tideway.

use std::fmt;
use std::str::FromStr;

/// One part of a key expression.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Part {
    /// Text as written.
    Lit(String),
    /// `$remote_addr`: the client address as text.
    RemoteAddr,
    /// `$binary_remote_addr`: the client address's bytes (4 for IPv4, 16 for IPv6).
    BinaryRemoteAddr,
    /// `$request_uri`: the target as the client sent it (path and query).
    RequestUri,
    /// `$args`: the query, without `?`.
    Args,
    /// `$request_method`.
    Method,
    /// `$host`: the Host header, lower-cased, without a port.
    Host,
    /// `$http_NAME`: a header (lower-case name, `_` read as `-`).
    Header(String),
    /// `$cookie_NAME`.
    Cookie(String),
    /// `$arg_NAME`: a query argument, raw.
    Arg(String),
}

/// A parsed key expression; displays as written.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyExpr {
    pub parts: Vec<Part>,
    source: String,
}

fn variable(name: &str) -> Result<Part, String> {
    let named = |prefix: &str| name.strip_prefix(prefix).filter(|n| !n.is_empty());
    Ok(match name {
        "remote_addr" => Part::RemoteAddr,
        "binary_remote_addr" => Part::BinaryRemoteAddr,
        "request_uri" => Part::RequestUri,
        "args" | "query_string" => Part::Args,
        "request_method" => Part::Method,
        "host" => Part::Host,
        _ => {
            if let Some(h) = named("http_") {
                Part::Header(h.to_ascii_lowercase().replace('_', "-"))
            } else if let Some(c) = named("cookie_") {
                Part::Cookie(c.to_string())
            } else if let Some(a) = named("arg_") {
                Part::Arg(a.to_string())
            } else {
                return Err(format!(
                    "hash key variable ${name} is not supported; expected $remote_addr, $binary_remote_addr, $request_uri, $args, $request_method, $host, $http_NAME, $cookie_NAME or $arg_NAME"
                ));
            }
        }
    })
}

impl FromStr for KeyExpr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = s;
        while let Some(at) = rest.find('$') {
            lit.push_str(&rest[..at]);
            rest = &rest[at + 1..];
            let (name, after) = if let Some(braced) = rest.strip_prefix('{') {
                let end = braced
                    .find('}')
                    .ok_or_else(|| format!("unclosed \"${{\" in hash key {s:?}"))?;
                (&braced[..end], &braced[end + 1..])
            } else {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                (&rest[..end], &rest[end..])
            };
            if name.is_empty() {
                return Err(format!("a \"$\" without a variable name in hash key {s:?}"));
            }
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            parts.push(variable(name)?);
            rest = after;
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(KeyExpr {
            parts,
            source: s.to_string(),
        })
    }
}

impl fmt::Display for KeyExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_variables_braces_and_text() {
        let e: KeyExpr = "u-${cookie_sid}$request_uri:$arg_x".parse().unwrap();
        assert_eq!(
            e.parts,
            vec![
                Part::Lit("u-".into()),
                Part::Cookie("sid".into()),
                Part::RequestUri,
                Part::Lit(":".into()),
                Part::Arg("x".into()),
            ]
        );
        assert_eq!(e.to_string(), "u-${cookie_sid}$request_uri:$arg_x");
        let h: KeyExpr = "$http_X_User".parse().unwrap();
        assert_eq!(h.parts, vec![Part::Header("x-user".into())]);
        assert!("$uri".parse::<KeyExpr>().unwrap_err().contains("$uri"));
        assert!("${arg_x".parse::<KeyExpr>().is_err());
        assert!("a$".parse::<KeyExpr>().is_err());
    }
}
