//! Reading a process tree's CPU time and resident memory from /proc. Shared by the `compare`
//! and `scale_events` benches, each of which uses part of it.

#![allow(dead_code)]

use std::fs;

/// Clock ticks per second for /proc/<pid>/stat times.
const TICKS: f64 = 100.0;

fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Some((ppid, _)) = stat(p) {
                if ppid == pid {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// (ppid, utime+stime ticks)
fn stat(pid: u32) -> Option<(u32, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // After the command: state(0) ppid(1) ... utime(11) stime(12)
    Some((
        f[1].parse().ok()?,
        f[11].parse::<u64>().ok()? + f[12].parse::<u64>().ok()?,
    ))
}

fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    all.extend(children(pid));
    all
}

/// Processes in the tree: `pid` and its children.
pub fn processes(pid: u32) -> usize {
    tree(pid).len()
}

/// CPU seconds used so far by `pid` and its children.
pub fn cpu_seconds(pid: u32) -> f64 {
    tree(pid)
        .into_iter()
        .filter_map(stat)
        .map(|s| s.1)
        .sum::<u64>() as f64
        / TICKS
}

/// Resident memory in KiB of `pid` and its children.
pub fn rss_kib(pid: u32) -> u64 {
    tree(pid)
        .into_iter()
        .filter_map(|p| {
            let s = fs::read_to_string(format!("/proc/{p}/status")).ok()?;
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

/// Context switches so far of every thread of `pid` and its children: (voluntary,
/// involuntary).
pub fn context_switches(pid: u32) -> (u64, u64) {
    let mut total = (0, 0);
    for p in tree(pid) {
        let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Ok(s) = fs::read_to_string(t.path().join("status")) else {
                continue;
            };
            let field = |name: &str| {
                s.lines()
                    .find(|l| l.starts_with(name))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            total.0 += field("voluntary_ctxt_switches:");
            total.1 += field("nonvoluntary_ctxt_switches:");
        }
    }
    total
}
