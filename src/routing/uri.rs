//! The request path as nginx matches it (`$uri`): percent-decoded, `//` merged, `.` and `..`
//! segments resolved, the query cut off; and the target a backend gets when `proxy_pass` has
//! a URI part (the location's prefix replaced, the rest escaped again as nginx escapes it).

use std::borrow::Cow;

/// Why a path cannot be matched: nginx answers 400 to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPath;

/// The path of `target` (before `?`), normalized as nginx's `$uri`. Borrowed when nothing
/// changes (no `%`, no `//`, no dot segment), so the common request allocates nothing.
pub fn normalize(target: &[u8]) -> Result<Cow<'_, [u8]>, BadPath> {
    let path = match target.iter().position(|&b| b == b'?') {
        Some(i) => &target[..i],
        None => target,
    };
    let plain = !path.contains(&b'%')
        && !path.windows(2).any(|w| w == b"//" || w == b"/.")
        && !path.ends_with(b"/.");
    if plain {
        return Ok(Cow::Borrowed(path));
    }
    let mut decoded = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            match (
                path.get(i + 1).and_then(|&c| hex(c)),
                path.get(i + 2).and_then(|&c| hex(c)),
            ) {
                (Some(h), Some(l)) => {
                    let v = (h * 16 + l) as u8;
                    if v == 0 {
                        return Err(BadPath);
                    }
                    decoded.push(v);
                    i += 3;
                    continue;
                }
                _ => return Err(BadPath),
            }
        }
        decoded.push(b);
        i += 1;
    }
    // Segments: merge empty ones, drop `.`, pop on `..` (above the root is refused).
    let mut out: Vec<u8> = Vec::with_capacity(decoded.len());
    let segments: Vec<&[u8]> = decoded.split(|&b| b == b'/').collect();
    let last = segments.len() - 1;
    for (n, seg) in segments.iter().enumerate() {
        match *seg {
            b"" if n == 0 => {}
            b"" | b"." => {
                if n == last && !out.ends_with(b"/") {
                    out.push(b'/');
                }
            }
            b".." => {
                if out.is_empty() {
                    return Err(BadPath);
                }
                // Drop the last segment and the slash before it.
                let cut = out[..out.len() - 1].iter().rposition(|&b| b == b'/');
                match cut {
                    Some(c) => out.truncate(c + 1),
                    None => return Err(BadPath),
                }
                if n != last && out.is_empty() {
                    return Err(BadPath);
                }
            }
            s => {
                if !out.ends_with(b"/") {
                    out.push(b'/');
                }
                out.extend_from_slice(s);
                if n != last {
                    out.push(b'/');
                }
            }
        }
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Ok(Cow::Owned(out))
}

/// nginx's `NGX_ESCAPE_URI` set: what it escapes again in a decoded path.
fn escaped(b: u8) -> bool {
    b <= 0x20 || b >= 0x7f || matches!(b, b'"' | b'#' | b'%' | b'?')
}

/// The target for a backend when `proxy_pass` has the URI part `uri` and the location matched
/// with the prefix `prefix` (nginx: `uri` + the rest of `$uri` after the prefix, escaped
/// again, + `?args`). `target` is the request target as the client sent it.
pub fn replace_prefix(target: &[u8], prefix: &str, uri: &str) -> Result<Vec<u8>, BadPath> {
    let path = normalize(target)?;
    let args = target.iter().position(|&b| b == b'?').map(|i| &target[i..]);
    let rest = path.get(prefix.len()..).unwrap_or_default();
    let mut out = Vec::with_capacity(uri.len() + rest.len() + 16);
    out.extend_from_slice(uri.as_bytes());
    for &b in rest {
        if escaped(b) {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
    if let Some(args) = args {
        out.extend_from_slice(args);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, BadPath> {
        normalize(p.as_bytes()).map(|c| String::from_utf8_lossy(&c).into_owned())
    }

    #[test]
    fn paths_normalize_as_nginx_uri() {
        assert_eq!(n("/a/b?x=1").unwrap(), "/a/b");
        assert!(matches!(normalize(b"/a/b").unwrap(), Cow::Borrowed(_)));
        assert_eq!(n("/a//b").unwrap(), "/a/b");
        assert_eq!(n("/a/./b").unwrap(), "/a/b");
        assert_eq!(n("/a/../b").unwrap(), "/b");
        assert_eq!(n("/a/b/..").unwrap(), "/a/");
        assert_eq!(n("/a/.").unwrap(), "/a/");
        assert_eq!(n("/api%2Fv1").unwrap(), "/api/v1");
        assert_eq!(n("/%61pi/").unwrap(), "/api/");
        assert_eq!(n("/").unwrap(), "/");
        assert_eq!(n("//").unwrap(), "/");
        assert_eq!(n("/../a"), Err(BadPath));
        assert_eq!(n("/%zz"), Err(BadPath));
        assert_eq!(n("/a%00"), Err(BadPath));
    }

    #[test]
    fn the_prefix_is_replaced_and_the_rest_escaped_again() {
        let r = |t: &str, p: &str, u: &str| {
            String::from_utf8(replace_prefix(t.as_bytes(), p, u).unwrap()).unwrap()
        };
        assert_eq!(r("/api/users?id=1", "/api/", "/v1/"), "/v1/users?id=1");
        assert_eq!(r("/api/a%20b", "/api/", "/"), "/a%20b");
        assert_eq!(r("/api/a%2Fb", "/api/", "/x/"), "/x/a/b");
        assert_eq!(r("/api", "/api", "/v1"), "/v1");
    }
}
