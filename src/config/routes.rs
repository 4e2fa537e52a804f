//! A listener's routes, nginx's model: servers chosen by Host, then locations by path. This
//! is the validated form (no serde); `[[listener.route]]` tables and the nginx reader both
//! build it. Matching itself lives in [`crate::routing`].
//!
//! Imports: nothing else in tideway (see [`super`]).

use std::time::Duration;

/// One server of a listener (nginx's `server` block): the names it answers and its locations.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    /// `server_name` values, lowercased: exact names, `*.example.com`, `www.example.*`,
    /// `.example.com` (both), `~regex`, and `""` (requests without Host).
    pub names: Vec<String>,
    /// nginx's `default_server`: it answers Hosts no server names.
    pub default: bool,
    pub locations: Vec<LocationConfig>,
    /// Its own certificate on a TLS listener (nginx's `ssl_certificate` in a `server` block):
    /// served when SNI names this server; without one, the listener's `tls` certificates.
    pub tls: Option<super::tls::TlsFiles>,
}

/// One location (nginx's `location` block, possibly nested).
#[derive(Clone, Debug, PartialEq)]
pub struct LocationConfig {
    pub rule: PathRule,
    pub action: RouteAction,
    pub settings: RouteSettings,
    /// Locations inside this one.
    pub nested: Vec<LocationConfig>,
    /// Where it was defined (`file:line`), for the admin API and errors.
    pub at: String,
}

/// How a location matches the request path (nginx's `location` modifiers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathRule {
    /// `location /p`: the longest prefix wins, unless a regex matches.
    Prefix(String),
    /// `location ^~ /p`: a prefix that, when longest, skips the regexes.
    NoRegex(String),
    /// `location = /p`: exactly this path.
    Exact(String),
    /// `location ~ re` (`~*`: case-insensitive): the first match in file order.
    Regex { pattern: String, caseless: bool },
}

impl PathRule {
    /// Read nginx's spelling: `/p`, `= /p`, `^~ /p`, `~ re`, `~* re` (modifier and value
    /// separated by spaces, or the modifier glued to the value as nginx also allows for `=`).
    pub fn parse(text: &str) -> Result<PathRule, String> {
        let text = text.trim();
        let (modifier, value) = match text.split_once(char::is_whitespace) {
            Some((m, v)) if ["=", "^~", "~", "~*"].contains(&m) => (m, v.trim()),
            // Glued to the value, as nginx also takes them (`~*\.sql$`, `^~/admin`, `=/x`):
            // the longest modifier first.
            _ => ["^~", "~*", "~", "="]
                .iter()
                .find_map(|m| text.strip_prefix(m).map(|v| (*m, v.trim())))
                .filter(|(_, v)| !v.is_empty())
                .unwrap_or(("", text)),
        };
        let rule = match modifier {
            "=" => PathRule::Exact(value.to_string()),
            "^~" => PathRule::NoRegex(value.to_string()),
            "~" | "~*" => {
                let caseless = modifier == "~*";
                regex::RegexBuilder::new(value)
                    .case_insensitive(caseless)
                    .build()
                    .map_err(|e| format!("invalid regex {value:?}: {e}"))?;
                return Ok(PathRule::Regex {
                    pattern: value.to_string(),
                    caseless,
                });
            }
            _ if value.starts_with('@') => {
                return Err(format!(
                    "named location {value:?} is not supported (tideway has no internal redirects)"
                ))
            }
            _ => PathRule::Prefix(value.to_string()),
        };
        if value.is_empty() {
            return Err("a location needs a path".into());
        }
        // A prefix or exact path that does not start with `/` never matches a request: say so
        // rather than leave a location (perhaps one that denies) dead.
        if !value.starts_with('/') {
            return Err(format!(
                "location path {value:?} does not start with \"/\" (a modifier is =, ^~, ~ or ~*)"
            ));
        }
        Ok(rule)
    }

    /// The path of a prefix or exact rule.
    pub fn path(&self) -> Option<&str> {
        match self {
            PathRule::Prefix(p) | PathRule::NoRegex(p) | PathRule::Exact(p) => Some(p),
            PathRule::Regex { .. } => None,
        }
    }
}

impl std::fmt::Display for PathRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathRule::Prefix(p) => write!(f, "{p}"),
            PathRule::NoRegex(p) => write!(f, "^~ {p}"),
            PathRule::Exact(p) => write!(f, "= {p}"),
            PathRule::Regex { pattern, caseless } => {
                write!(f, "{} {pattern}", if *caseless { "~*" } else { "~" })
            }
        }
    }
}

/// What a matched location does.
#[derive(Clone, Debug, PartialEq)]
pub enum RouteAction {
    /// `proxy_pass`: send to an upstream; `uri` is proxy_pass's URI part, which replaces the
    /// location's prefix (nginx's rules).
    Proxy {
        upstream: String,
        uri: Option<String>,
    },
    /// `return CODE [text|URL]`: answer without a backend. For 301, 302, 303, 307 and 308
    /// `text` is the Location; for any other code, the body.
    Return { code: u16, text: String },
    /// No handler of its own (a location holding only nested ones): 404, as nginx's static
    /// handler answers for a file that is not there.
    None,
}

impl RouteAction {
    /// The upstream it proxies to, if it does.
    pub fn upstream(&self) -> Option<&str> {
        match self {
            RouteAction::Proxy { upstream, .. } => Some(upstream),
            _ => None,
        }
    }
}

/// Is `code` one whose `return` text is a URL (nginx sends it as Location)?
pub fn is_redirect(code: u16) -> bool {
    matches!(code, 301 | 302 | 303 | 307 | 308)
}

/// Per-route settings. `None` timeouts take the upstream's (`connect_timeout`,
/// `idle_timeout`) or tideway's send timeout.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RouteSettings {
    /// nginx's `proxy_connect_timeout`.
    pub connect_timeout: Option<Duration>,
    /// nginx's `proxy_send_timeout`.
    pub send_timeout: Option<Duration>,
    /// nginx's `proxy_read_timeout` (also a WebSocket's idle timeout, as in nginx).
    pub read_timeout: Option<Duration>,
    /// WebSocket handshakes are passed on (default); off, they are sent as plain requests.
    pub websocket: Option<bool>,
    /// nginx's `client_max_body_size`: a longer body gets 413 (None: no limit of its own).
    pub max_body: Option<u64>,
    /// nginx's `allow`/`deny`, in order (None: everyone may use the route).
    pub access: Option<super::AccessList>,
    /// nginx's `limit_req`/`limit_conn` of a location: these per-client limits instead of the
    /// listener's `client_limits` (None: the listener's).
    pub client_limits: Option<Vec<super::ClientLimit>>,
    /// nginx's `proxy_set_header` and `add_header` (None: the route sets none).
    pub headers: Option<std::sync::Arc<super::headers::RouteHeaders>>,
}

/// The route table of a listener that has only `upstream = "NAME"`: one server, one location
/// `/` to it.
pub fn single(upstream: &str, at: &str) -> Vec<ServerConfig> {
    vec![ServerConfig {
        names: Vec::new(),
        default: false,
        locations: vec![LocationConfig {
            rule: PathRule::Prefix("/".into()),
            action: RouteAction::Proxy {
                upstream: upstream.to_string(),
                uri: None,
            },
            settings: RouteSettings::default(),
            nested: Vec::new(),
            at: at.to_string(),
        }],
        tls: None,
    }]
}

/// Check a `server_name` value and return it in the form matched (lowercased, except a
/// regex).
pub fn server_name(name: &str) -> Result<String, String> {
    if let Some(re) = name.strip_prefix('~') {
        regex::RegexBuilder::new(re)
            .case_insensitive(true)
            .build()
            .map_err(|e| format!("invalid server_name regex {re:?}: {e}"))?;
        return Ok(name.to_string());
    }
    let lower = name.to_ascii_lowercase();
    let stars = lower.matches('*').count();
    let ok = match stars {
        0 => true,
        1 => {
            (lower.starts_with("*.") && lower.len() > 2)
                || (lower.ends_with(".*") && lower.len() > 2)
        }
        _ => false,
    };
    if !ok {
        return Err(format!(
            "invalid server_name {name:?}: a wildcard is \"*.\" at the start or \".*\" at the end"
        ));
    }
    Ok(lower)
}

/// Check a location tree as nginx does at load: a nested prefix lies inside its parent's, an
/// exact location holds none, a proxy URI part is not used with a regex, and one server has
/// no location twice. `Err` is the offending location's `at` and what is wrong.
pub fn check_locations(
    locations: &[LocationConfig],
    parent: Option<&PathRule>,
) -> Result<(), (String, String)> {
    let mut seen: Vec<&PathRule> = Vec::new();
    for l in locations {
        if let (Some(PathRule::Exact(p)), _) = (parent, &l.rule) {
            return Err((
                l.at.clone(),
                format!("location {} is inside exact location {p:?}", l.rule),
            ));
        }
        if let (Some(outer), Some(inner)) = (parent.and_then(PathRule::path), l.rule.path()) {
            if !inner.starts_with(outer) {
                return Err((
                    l.at.clone(),
                    format!("location {inner:?} is outside location {outer:?}"),
                ));
            }
        }
        let static_path = |r: &PathRule| match r {
            PathRule::Prefix(p) | PathRule::NoRegex(p) => Some((false, p.clone())),
            PathRule::Exact(p) => Some((true, p.clone())),
            PathRule::Regex { .. } => None,
        };
        if seen
            .iter()
            .any(|s| match (static_path(s), static_path(&l.rule)) {
                (Some(a), Some(b)) => a == b,
                _ => **s == l.rule,
            })
        {
            return Err((l.at.clone(), format!("duplicate location {}", l.rule)));
        }
        seen.push(&l.rule);
        if let (RouteAction::Proxy { uri: Some(_), .. }, PathRule::Regex { .. }) =
            (&l.action, &l.rule)
        {
            return Err((
                l.at.clone(),
                "a proxy_pass URI part cannot be used in a regex location (nginx refuses it too)"
                    .into(),
            ));
        }
        if let RouteAction::Return { code, .. } = l.action {
            if code > 999 {
                return Err((l.at.clone(), format!("invalid return code {code}")));
            }
        }
        check_locations(&l.nested, Some(&l.rule))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nested_route_inherits_what_it_leaves_out() {
        let text = "[[listener]]\nlisten = \"127.0.0.1:8080\"\n\n\
            [[listener.route]]\npath = \"/upload/\"\nupstream = \"app\"\nmax_body = 1000\nwebsocket = false\n\n\
            [[listener.route.route]]\npath = \"~ \\\\.php$\"\nupstream = \"app\"\n\n\
            [[listener.route.route]]\npath = \"/upload/big/\"\nupstream = \"app\"\nmax_body = 5000\n\n\
            [upstream.app]\nbackends = [{ addr = \"127.0.0.1:2346\" }]\n";
        let c = crate::config::parse(text, std::path::Path::new("t.toml")).unwrap();
        let upload = &c.listeners[0].routes[0].locations[0];
        let [php, big] = &upload.nested[..] else {
            panic!("two nested routes: {:?}", upload.nested)
        };
        assert_eq!(php.settings.max_body, Some(1000));
        assert_eq!(php.settings.websocket, Some(false));
        assert_eq!(big.settings.max_body, Some(5000), "its own wins");
        assert_eq!(big.settings.websocket, Some(false));
    }

    #[test]
    fn a_route_has_an_ordered_access_list_and_limits_of_its_own() {
        let text = "[[listener]]\nlisten = \"127.0.0.1:8080\"\nclient_limits = [{ zone = \"c\", conn = 9 }]\n\n\
            [[listener.route]]\npath = \"/\"\nupstream = \"app\"\n\n\
            [[listener.route]]\npath = \"/admin/\"\nupstream = \"app\"\naccess = [\"deny 10.0.0.1\", \"allow 10.0.0.0/8\", \"deny all\"]\nclient_limits = [{ zone = \"r\", burst = 2, nodelay = true }]\n\n\
            [[listener.route.route]]\npath = \"/admin/in/\"\nupstream = \"app\"\n\n\
            [[listener.route.route]]\npath = \"/admin/open/\"\nupstream = \"app\"\naccess = []\nclient_limits = []\n\n\
            [upstream.app]\nbackends = [{ addr = \"127.0.0.1:2346\" }]\n\n\
            [limit_zone.r]\nkind = \"rate\"\nrate = \"1r/s\"\n\n[limit_zone.c]\nkind = \"conn\"\n";
        let c = crate::config::parse(text, std::path::Path::new("t.toml")).unwrap();
        let [root, admin] = &c.listeners[0].routes[0].locations[..] else {
            panic!("two routes")
        };
        assert_eq!(root.settings.access, None);
        assert_eq!(root.settings.client_limits, None, "the listener's hold");
        let list = admin.settings.access.as_ref().unwrap();
        assert_eq!(
            list.texts(),
            ["deny 10.0.0.1", "allow 10.0.0.0/8", "deny all"]
        );
        let ip = |s: &str| Some(s.parse().unwrap());
        assert!(!list.allows(ip("10.0.0.1")) && list.allows(ip("10.0.0.2")));
        assert!(!list.allows(ip("192.0.2.1")));
        let limits = admin.settings.client_limits.as_ref().unwrap();
        assert_eq!(limits.len(), 1);
        assert_eq!(limits[0].zone.name, "r");
        let [inner, open] = &admin.nested[..] else {
            panic!("two nested routes")
        };
        assert_eq!(inner.settings.access, admin.settings.access, "inherited");
        assert_eq!(inner.settings.client_limits, admin.settings.client_limits);
        assert_eq!(
            open.settings.access.as_ref().map(|a| a.rules.len()),
            Some(0)
        );
        assert_eq!(open.settings.client_limits, Some(Vec::new()));

        for (bad, line, want) in [
            ("access = [\"permit all\"]", 22, "starts with allow or deny"),
            ("access = [\"deny 10.0.0\"]", 22, "invalid address"),
            (
                "client_limits = [{ zone = \"nowhere\" }]",
                22,
                "unknown limit zone",
            ),
            ("allow = [\"10.0.0.0/8\"]", 22, "unknown field"),
        ] {
            let broken = text.replacen("access = []\nclient_limits = []", bad, 1);
            let err = crate::config::parse(&broken, std::path::Path::new("t.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("t.toml:{line}")) || err.contains(&format!("line {line}")),
                "{bad}: {err}"
            );
            assert!(err.contains(want), "{bad}: {err}");
        }
    }

    #[test]
    fn path_rules_read_as_nginx_writes_them() {
        assert_eq!(
            PathRule::parse("/api/").unwrap(),
            PathRule::Prefix("/api/".into())
        );
        assert_eq!(
            PathRule::parse("= /status").unwrap(),
            PathRule::Exact("/status".into())
        );
        assert_eq!(
            PathRule::parse("=/status").unwrap(),
            PathRule::Exact("/status".into())
        );
        assert_eq!(
            PathRule::parse("^~ /img").unwrap(),
            PathRule::NoRegex("/img".into())
        );
        assert_eq!(
            PathRule::parse("~* \\.PHP$").unwrap(),
            PathRule::Regex {
                pattern: "\\.PHP$".into(),
                caseless: true
            }
        );
        assert!(PathRule::parse("~ (").is_err());
        assert!(PathRule::parse("@fallback").is_err());
        // Modifiers glued to the value, as nginx takes them.
        assert_eq!(
            PathRule::parse("~\\.(env|git)").unwrap(),
            PathRule::Regex {
                pattern: "\\.(env|git)".into(),
                caseless: false
            }
        );
        assert_eq!(
            PathRule::parse("~*\\.sql$").unwrap(),
            PathRule::Regex {
                pattern: "\\.sql$".into(),
                caseless: true
            }
        );
        assert_eq!(
            PathRule::parse("^~/admin").unwrap(),
            PathRule::NoRegex("/admin".into())
        );
        assert!(
            PathRule::parse("admin").is_err(),
            "a path that never matches is refused"
        );
    }

    #[test]
    fn server_names_are_checked() {
        assert_eq!(server_name("API.Example.com").unwrap(), "api.example.com");
        assert!(server_name("*.example.com").is_ok());
        assert!(server_name("www.example.*").is_ok());
        assert!(server_name("w*w.example.com").is_err());
        assert!(server_name("~^(www|api)\\.").is_ok());
        assert!(server_name("~(").is_err());
    }
}
