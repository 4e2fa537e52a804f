//! The location algorithm on nginx's documented examples and on nesting.

use super::*;
use crate::config::{LocationConfig, PathRule, RouteAction, RouteSettings, ServerConfig};

fn loc(rule: &str, proxy: bool, nested: Vec<LocationConfig>) -> LocationConfig {
    LocationConfig {
        rule: PathRule::parse(rule).unwrap(),
        action: if proxy {
            RouteAction::Proxy {
                upstream: "u".into(),
                uri: None,
            }
        } else {
            RouteAction::Return {
                code: 200,
                text: rule.into(),
            }
        },
        settings: RouteSettings::default(),
        nested,
        at: "test".into(),
    }
}

fn rule_of(t: &Table, p: Pick) -> String {
    match p {
        Pick::Route(i) => t.routes()[i].location.rule.to_string(),
        Pick::Redirect(i) => format!("301 {}", t.routes()[i].location.rule),
        other => format!("{other:?}"),
    }
}

fn table(locations: Vec<LocationConfig>) -> Table {
    Table::new(&[ServerConfig {
        names: vec![],
        default: false,
        locations,
        tls: None,
    }])
    .unwrap()
}

#[test]
fn nginx_documented_example() {
    // The example of nginx's `location` documentation, configurations A to E.
    let t = table(vec![
        loc("= /", false, vec![]),
        loc("/", false, vec![]),
        loc("/documents/", false, vec![]),
        loc("^~ /images/", false, vec![]),
        loc("~* \\.(gif|jpg|jpeg)$", false, vec![]),
    ]);
    let pick = |p: &str| rule_of(&t, t.select(None, p.as_bytes()));
    assert_eq!(pick("/"), "= /");
    assert_eq!(pick("/index.html"), "/");
    assert_eq!(pick("/documents/document.html"), "/documents/");
    assert_eq!(pick("/images/1.gif"), "^~ /images/");
    assert_eq!(pick("/documents/1.jpg"), "~* \\.(gif|jpg|jpeg)$");
    assert_eq!(pick("/documents/1.JPG?x=y"), "~* \\.(gif|jpg|jpeg)$");
}

#[test]
fn nested_regexes_come_first_and_slashes_redirect() {
    let t = table(vec![
        loc("/", true, vec![]),
        loc(
            "/api/",
            true,
            vec![
                loc("~ \\.json$", false, vec![]),
                loc("/api/v2/", true, vec![]),
            ],
        ),
        loc("~ \\.json$", true, vec![]),
        loc("~ ^/api/v2/x", false, vec![]),
        loc("= /exact", false, vec![]),
    ]);
    let pick = |p: &str| rule_of(&t, t.select(None, p.as_bytes()));
    assert_eq!(pick("/api/a.json"), "~ \\.json$");
    assert_eq!(t.select(None, b"/api/a.json"), Pick::Route(2));
    assert_eq!(t.select(None, b"/b.json"), Pick::Route(4));
    assert_eq!(
        pick("/api/v2/x"),
        "~ ^/api/v2/x",
        "outer regex after nested prefix"
    );
    assert_eq!(pick("/api/v2/y"), "/api/v2/");
    assert_eq!(pick("/api"), "301 /api/");
    assert_eq!(pick("/api/v2"), "301 /api/v2/");
    assert_eq!(pick("/exact"), "= /exact");
    assert_eq!(pick("/exact/"), "/");
    assert_eq!(pick("/%61pi/x"), "/api/");
    assert_eq!(t.select(None, b"/%zz"), Pick::BadPath);
}

#[test]
fn servers_by_host_and_a_single_route_needs_no_matching() {
    let servers = vec![
        ServerConfig {
            names: vec!["a.test".into()],
            default: false,
            locations: vec![loc("/", true, vec![])],
            tls: None,
        },
        ServerConfig {
            names: vec!["b.test".into()],
            default: true,
            locations: vec![loc("/b", true, vec![])],
            tls: None,
        },
    ];
    let t = Table::new(&servers).unwrap();
    assert_eq!(t.select(Some(b"a.test"), b"/x"), Pick::Route(0));
    assert_eq!(t.select(Some(b"B.test:81"), b"/b"), Pick::Route(1));
    assert_eq!(t.select(Some(b"other"), b"/b"), Pick::Route(1));
    assert_eq!(t.select(Some(b"other"), b"/x"), Pick::NotFound);
    let one = table(vec![loc("/", true, vec![])]);
    assert_eq!(one.select(Some(b"x"), b"/a%20b/../c"), Pick::Route(0));
    assert_eq!(one.select(Some(b"x"), b"/%zz"), Pick::BadPath);
}

#[test]
fn a_host_of_another_server_than_the_sni_one_is_misdirected_unless_covered() {
    let server = |names: &[&str], default| ServerConfig {
        names: names.iter().map(|n| n.to_string()).collect(),
        default,
        locations: vec![loc("/", true, vec![])],
        tls: None,
    };
    let t = Table::new(&[
        server(&["a.test"], false),
        server(&["b.test", "~^b\\d\\.test$"], true),
    ])
    .unwrap();
    let covered = |h: &str| h == "a.test";
    let never = |_: &str| false;
    // The same server as the SNI one, by any of its names: never misdirected.
    assert!(!t.misdirected(Some(b"B.test:443"), Some("b.test"), never));
    assert!(!t.misdirected(Some(b"b7.test"), Some("b.test"), never));
    // No SNI is the default server (b); an unknown SNI name too.
    assert!(!t.misdirected(Some(b"b.test"), None, never));
    assert!(!t.misdirected(Some(b"zz.test"), Some("unknown.test"), never));
    // Another server: misdirected unless the certificate covers the Host as matched.
    assert!(t.misdirected(Some(b"a.test"), Some("b.test"), never));
    assert!(!t.misdirected(Some(b"A.TEST.:8443"), Some("b.test"), covered));
    assert!(t.misdirected(Some(b"b.test"), Some("a.test"), covered));
    assert!(t.misdirected(Some(b"zz.test"), Some("a.test"), never));
    assert!(t.misdirected(None, Some("a.test"), never));
    // One server: never.
    let one = table(vec![loc("/", true, vec![])]);
    assert!(!one.misdirected(Some(b"x"), Some("y"), never));
}

#[test]
fn the_view_shows_a_routes_access_list() {
    let mut guarded = loc("/admin/", true, vec![]);
    guarded.settings.access = Some(crate::config::AccessList {
        rules: ["allow 10.0.0.0/8", "deny all"]
            .iter()
            .map(|r| crate::config::access::AccessRule::parse(r).unwrap())
            .collect(),
    });
    let t = table(vec![loc("/", true, vec![]), guarded]);
    let view = t.view();
    assert_eq!(view[0].get("access"), None, "no list: no key");
    assert_eq!(
        view[1]["access"],
        serde_json::json!(["allow 10.0.0.0/8", "deny all"])
    );
}
