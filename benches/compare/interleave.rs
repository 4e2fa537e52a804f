//! Two tideways measured in turn: the CPU each spends per HTTP keep-alive request under the
//! same wrk load, over rounds that alternate which goes first, so a noisy moment of this small
//! machine falls on one round. The report gives each round, then the median and the range of
//! the per-round ratios.

use crate::Proxy;

/// What wrk asks for: the Host header it sends (None: wrk's own, `127.0.0.1:PORT`) and the
/// target.
#[derive(Clone, Copy)]
pub struct Load<'a> {
    pub host: Option<&'a str>,
    pub target: &'a str,
}

/// wrk's plain load: `GET /` with its own Host.
pub const ROOT: Load<'static> = Load {
    host: None,
    target: "/",
};

/// CPU µs per request of `p` under wrk sending `load`.
fn us_per_request(p: &Proxy, load: Load<'_>) -> f64 {
    let (cpu, requests) = crate::wrk_load(p.child.id(), p.port, p.name, load);
    cpu / requests * 1e6
}

/// Measure `base` and `other` over `rounds` rounds; the ratio is other / base. `label` names
/// the ratio in the summary line, `columns` the two µs/req columns.
pub fn rounds(
    base: &Proxy,
    other: &Proxy,
    load: Load<'_>,
    rounds: usize,
    columns: (&str, &str),
    label: &str,
) -> String {
    let mut out = format!(
        "| round | {} µs/req | {} µs/req | ratio |\n|---|---|---|---|\n",
        columns.0, columns.1
    );
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let (a, b) = if round % 2 == 0 {
            let a = us_per_request(base, load);
            (a, us_per_request(other, load))
        } else {
            let b = us_per_request(other, load);
            (us_per_request(base, load), b)
        };
        eprintln!(
            "round {round}: {} {a:.2} µs/req, {} {b:.2} µs/req",
            columns.0, columns.1
        );
        out.push_str(&format!("| {round} | {a:.2} | {b:.2} | {:.3}x |\n", b / a));
        ratios.push(b / a);
    }
    ratios.sort_by(f64::total_cmp);
    out.push_str(&format!(
        "\n{label}, CPU per request: median {:.3}x, range {:.3}x - {:.3}x over {rounds} rounds\n",
        ratios[rounds / 2],
        ratios[0],
        ratios[rounds - 1]
    ));
    out
}
