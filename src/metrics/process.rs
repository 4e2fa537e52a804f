//! The process collector: the prometheus crate's, with `process_cpu_seconds_total` replaced.
//! Theirs reads `utime + stime` from `/proc/self/stat` in clock ticks and divides by the
//! ticks per second in integers into an `IntCounter`, so the value moves in whole seconds (a
//! proxy at 5% CPU shows 0 for 19 scrapes, then 1). Ours asks `getrusage(RUSAGE_SELF)`:
//! user and system time of every thread, in microseconds, as a float counter.
//!
//! Imports: nothing else in tideway.

use prometheus::core::{Collector, Desc};
use prometheus::process_collector::ProcessCollector;
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Opts};

/// The name both collectors give the CPU counter.
const CPU: &str = "process_cpu_seconds_total";

/// RSS, virtual memory, open fds and their limit, start time and threads (the crate's), and
/// CPU seconds with their fraction (ours: read anew on each collect, nothing stored, so
/// scrapes at once cannot add up).
pub struct Process {
    inner: ProcessCollector,
    descs: Vec<Desc>,
}

fn cpu_counter() -> Counter {
    Counter::with_opts(Opts::new(
        CPU,
        "Total user and system CPU time spent in seconds.",
    ))
    .expect("valid metric")
}

impl Process {
    pub fn new() -> Self {
        let inner = ProcessCollector::for_self();
        let cpu = cpu_counter();
        let descs = inner
            .desc()
            .into_iter()
            .filter(|d| d.fq_name != CPU)
            .chain(cpu.desc())
            .cloned()
            .collect();
        Process { inner, descs }
    }
}

impl Default for Process {
    fn default() -> Self {
        Self::new()
    }
}

/// User plus system CPU time of the whole process (every thread), in seconds.
#[allow(unsafe_code)]
pub fn cpu_seconds() -> Option<f64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole `rusage` into the pointer it is given, which points at
    // one; RUSAGE_SELF is a valid `who`.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return None;
        }
        usage.assume_init()
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(secs(usage.ru_utime) + secs(usage.ru_stime))
}

impl Collector for Process {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let cpu = cpu_counter();
        if let Some(now) = cpu_seconds() {
            cpu.inc_by(now);
        }
        let mut families: Vec<MetricFamily> = self
            .inner
            .collect()
            .into_iter()
            .filter(|f| f.name() != CPU)
            .collect();
        families.extend(cpu.collect());
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_seconds_have_a_fraction_and_only_one_family_is_named_so() {
        // Burn a little CPU so the value is above zero.
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let p = Process::new();
        let families = p.collect();
        let cpu: Vec<_> = families.iter().filter(|f| f.name() == CPU).collect();
        assert_eq!(cpu.len(), 1);
        let v = cpu[0].get_metric()[0].get_counter().get_value();
        assert!(v > 0.0, "{v}");
        assert_eq!(p.desc().iter().filter(|d| d.fq_name == CPU).count(), 1);
        assert!(families.iter().any(|f| f.name() == "process_open_fds"));
        // Microseconds, not whole seconds: within 10 ms of getrusage read right after.
        let again = cpu_seconds().unwrap();
        assert!(again >= v && again - v < 0.5, "{v} {again}");
    }

    #[test]
    fn scrapes_at_once_each_show_the_process_s_cpu_time_then() {
        let p = std::sync::Arc::new(Process::new());
        let value = |p: &Process| {
            let families = p.collect();
            let cpu = families.iter().find(|f| f.name() == CPU).unwrap();
            cpu.get_metric()[0].get_counter().get_value()
        };
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        let before = cpu_seconds().unwrap();
                        let v = value(&p);
                        let after = cpu_seconds().unwrap();
                        // Read-then-add from two scrapes at once would count a stretch twice.
                        assert!(before <= v && v <= after, "{before} {v} {after}");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
