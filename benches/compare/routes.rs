//! 100 routes against one: the CPU tideway spends per HTTP keep-alive request when its
//! listener holds 100 `[[listener.route]]` tables, against the `upstream = "NAME"` shorthand
//! (one route). The 100 routes are spread over 10 server names, as in `benches/routing.rs`:
//! per server a catch-all `/` and, in turn, exact (`= /pN`), prefix (`/pN/`) and regex
//! (`~ ^/rN/.*\.json$`) routes. wrk asks both tideways for the same request: the last
//! server's last prefix route, after its 3 regexes were tried (nginx's order: the longest
//! prefix, then every regex, since none matches).
//!
//! `COMPARE_ONLY=routes cargo bench --bench compare`.

use crate::interleave::{self, Load};
use crate::{free_port, launch, Proxy};
use std::path::Path;

/// Rounds, each measuring both tideways once.
const ROUNDS: usize = 7;
/// Routes of the routed tideway, and the server names they are spread over.
const ROUTES: usize = 100;
const SERVERS: usize = 10;

/// The `[[listener.route]]` tables, all to upstream `b`.
fn route_tables() -> String {
    let mut out = String::new();
    for i in 0..ROUTES {
        let s = i % SERVERS;
        let path = match (i < SERVERS, i % 3) {
            (true, _) => "/".to_string(),
            (false, 0) => format!("= /p{i}"),
            (false, 1) => format!("/p{i}/"),
            _ => format!("~ ^/r{i}/.*\\.json$"),
        };
        out.push_str(&format!(
            "[[listener.route]]\nhost = [\"s{s}.example.com\"]\npath = '{path}'\nupstream = \"b\"\n"
        ));
    }
    out
}

fn start(dir: &Path, backend: u16, routed: bool) -> Proxy {
    let (port, admin) = (free_port(), free_port());
    let routes = if routed {
        route_tables()
    } else {
        "upstream = \"b\"\n".to_string()
    };
    let config = format!(
        "[server]\nthreads = 1\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[store]\ndata_dir = \"{}\"\n[[listener]]\nlisten = \"127.0.0.1:{port}\"\n{routes}[upstream.b]\nbackends = [{{ addr = \"127.0.0.1:{backend}\" }}]\n",
        dir.join("data").display()
    );
    let (name, file) = if routed {
        ("tideway, 100 routes", "tideway-routes-100.toml")
    } else {
        ("tideway, 1 route", "tideway-routes-1.toml")
    };
    let bin = crate::tideway_bin();
    launch(name, port, dir, file, config, &bin, &["run", "--config"])
}

/// The request: the last server's last prefix route (`/p79/` of `s9.example.com`).
fn load() -> (String, String) {
    let s = SERVERS - 1;
    let last_prefix = (s + SERVERS..ROUTES)
        .step_by(SERVERS)
        .rfind(|i| i % 3 == 1)
        .expect("the last server has a prefix route");
    (
        format!("s{s}.example.com"),
        format!("/p{last_prefix}/item?id=1"),
    )
}

/// Measure, print and return the report.
pub fn run(dir: &Path, backend: u16) -> String {
    let (d_one, d_many) = (dir.join("routes-1"), dir.join("routes-100"));
    for d in [&d_one, &d_many] {
        std::fs::create_dir_all(d).unwrap();
    }
    let one = start(&d_one, backend, false);
    let many = start(&d_many, backend, true);
    let (host, target) = load();
    let load = Load {
        host: Some(&host),
        target: &target,
    };
    let mut out = format!("request: Host {host}, GET {target}\n\n");
    out.push_str(&interleave::rounds(
        &one,
        &many,
        load,
        ROUNDS,
        ("1 route", "100 routes"),
        "100 routes / 1 route",
    ));
    out
}
