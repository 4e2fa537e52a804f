//! CPU and context switches per WebSocket echo round trip (the main table's echo load: 64
//! WebSockets, 64-byte messages, 10 s) through nginx, HAProxy and tideway, side by side, in
//! interleaved rounds (each round starts with another proxy), so the ratio to nginx comes with
//! its median and range. Context switches are read from `/proc/PID/task/*/status` of the
//! proxy's process tree. The proxies' pids are printed, for `strace -c -f -p PID` or
//! `perf record -p PID` alongside.
//!
//! `COMPARE_ONLY=echo cargo bench --bench compare` (`NEWWS_ROUNDS` sets the rounds).

use crate::{proc, start_haproxy, start_nginx, start_tideway, ws_echoes, Proxy};
use std::path::Path;

/// Rounds, each measuring every proxy once.
const ROUNDS: usize = 5;

/// One proxy's figures in one round: CPU µs, voluntary and involuntary context switches, each
/// per echo.
#[derive(Clone, Copy, Default)]
struct Figures {
    us: f64,
    echoes: u64,
    voluntary: f64,
    involuntary: f64,
}

async fn measure(p: &Proxy) -> Figures {
    let pid = p.child.id();
    let (v0, i0) = proc::context_switches(pid);
    let (us, echoes) = ws_echoes(p).await;
    let (v1, i1) = proc::context_switches(pid);
    let n = echoes as f64;
    Figures {
        us,
        echoes,
        voluntary: (v1 - v0) as f64 / n,
        involuntary: (i1 - i0) as f64 / n,
    }
}

/// Measure, print and return the report.
pub async fn run(dir: &Path, backend: u16) -> String {
    let rounds = std::env::var("NEWWS_ROUNDS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(ROUNDS);
    let mut proxies = Vec::new();
    for (i, start) in [start_nginx, start_haproxy, start_tideway]
        .iter()
        .enumerate()
    {
        let sub = dir.join(format!("echo{i}"));
        std::fs::create_dir_all(&sub).unwrap();
        let p = start(&sub, backend);
        eprintln!("echo: {} pid {}", p.name, p.child.id());
        proxies.push(p);
    }
    let mut out = String::from(
        "| round | proxy | echoes | CPU µs/echo | voluntary cs/echo | involuntary cs/echo |\n|---|---|---|---|---|---|\n",
    );
    let mut by_round = vec![[Figures::default(); 3]; rounds];
    for (round, figures) in by_round.iter_mut().enumerate() {
        for k in 0..proxies.len() {
            let i = (round + k) % proxies.len();
            let f = measure(&proxies[i]).await;
            let line = format!(
                "| {round} | {} | {} | {:.2} | {:.3} | {:.3} |\n",
                proxies[i].name, f.echoes, f.us, f.voluntary, f.involuntary
            );
            eprint!("{line}");
            out.push_str(&line);
            figures[i] = f;
        }
    }
    let ratios = |of: usize, to: usize| {
        let mut v: Vec<f64> = by_round.iter().map(|f| f[of].us / f[to].us).collect();
        v.sort_by(f64::total_cmp);
        format!(
            "median {:.3}x, range {:.3}x - {:.3}x",
            v[v.len() / 2],
            v[0],
            v[v.len() - 1]
        )
    };
    out.push_str(&format!(
        "\nCPU per WebSocket echo over {rounds} interleaved rounds: tideway / nginx {}; tideway / HAProxy {}\n",
        ratios(2, 0),
        ratios(2, 1)
    ));
    out
}
