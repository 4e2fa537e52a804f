//! Per-client limits on against off: the CPU tideway spends per HTTP keep-alive request with a
//! `limit_req` zone and a `limit_conn` zone that never refuse (a rate and a cap no client
//! reaches), and without. Two tideways (one worker each) run side by side; rounds alternate
//! which is measured first, so a noisy moment of this small machine falls on one round, and the
//! report gives the median and the range of the per-round ratios.
//!
//! `COMPARE_ONLY=limits cargo bench --bench compare`.

use crate::{free_port, interleave, launch, Proxy};
use std::path::Path;

/// Rounds, each measuring both tideways once.
const ROUNDS: usize = 5;

/// The per-client limits of the "on" tideway: nothing is ever refused or delayed.
const LIMITS: &str = "client_limits = [{ zone = \"perip\", burst = 1000000, nodelay = true }, { zone = \"addr\", conn = 100000 }]\n";
const ZONES: &str = "[limit_zone.perip]\nkind = \"rate\"\nrate = \"1000000r/s\"\n[limit_zone.addr]\nkind = \"conn\"\n";

fn start(dir: &Path, backend: u16, limited: bool) -> Proxy {
    let (port, admin) = (free_port(), free_port());
    let (limits, zones) = if limited { (LIMITS, ZONES) } else { ("", "") };
    let config = format!(
        "[server]\nthreads = 1\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[store]\ndata_dir = \"{}\"\n[[listener]]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"b\"\n{limits}[upstream.b]\nbackends = [{{ addr = \"127.0.0.1:{backend}\" }}]\n{zones}",
        dir.join("data").display()
    );
    let (name, file) = if limited {
        ("tideway, limits on", "tideway-limits-on.toml")
    } else {
        ("tideway, limits off", "tideway-limits-off.toml")
    };
    let bin = crate::tideway_bin();
    launch(name, port, dir, file, config, &bin, &["run", "--config"])
}

/// Measure, print and return the report.
pub fn run(dir: &Path, backend: u16) -> String {
    let (d_off, d_on) = (dir.join("limits-off"), dir.join("limits-on"));
    for d in [&d_off, &d_on] {
        std::fs::create_dir_all(d).unwrap();
    }
    let off = start(&d_off, backend, false);
    let on = start(&d_on, backend, true);
    interleave::rounds(
        &off,
        &on,
        interleave::ROOT,
        ROUNDS,
        ("off", "on"),
        "limits on / off",
    )
}
