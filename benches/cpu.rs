//! tideway's CPU time as a bench measures it (shared by the benches that need it).

#![allow(dead_code)]

#[path = "compare/proc.rs"]
mod proc;

use std::time::Duration;

/// Tideway's CPU time, every thread counted, those that exit meanwhile too (a thread's
/// /proc schedstat goes with it: summing them undercounts whenever a pool thread retires).
/// Read from a cgroup v2 of its own when one can be made (exact, in microseconds), else from
/// /proc/PID/stat (the whole process, in clock ticks: coarse).
pub struct CpuMeter {
    pid: u32,
    cgroup: Option<std::path::PathBuf>,
}

impl CpuMeter {
    pub fn attach(pid: u32) -> CpuMeter {
        let cgroup = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .iter()
            .map(|root| std::path::Path::new(root).join(format!("tideway-bench-{pid}")))
            .find(|dir| {
                std::fs::create_dir_all(dir).is_ok()
                    && std::fs::write(dir.join("cgroup.procs"), pid.to_string()).is_ok()
                    && dir.join("cpu.stat").exists()
            });
        if cgroup.is_none() {
            eprintln!("no cgroup v2 to measure in; CPU from /proc/{pid}/stat (10 ms ticks)");
        }
        CpuMeter { pid, cgroup }
    }

    /// CPU time used so far.
    pub fn used(&self) -> Duration {
        match &self.cgroup {
            Some(dir) => {
                let stat = std::fs::read_to_string(dir.join("cpu.stat")).unwrap_or_default();
                let usec = stat
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                Duration::from_micros(usec)
            }
            None => Duration::from_secs_f64(proc::cpu_seconds(self.pid)),
        }
    }
}

impl Drop for CpuMeter {
    fn drop(&mut self) {
        if let Some(dir) = &self.cgroup {
            // Empty once tideway is gone; best effort (the proxy may outlive the meter).
            let _ = std::fs::remove_dir(dir);
        }
    }
}
