//! Giving memory back after a burst of connections closes.
//!
//! glibc's malloc keeps freed memory in per-thread arenas and only trims the top of each heap,
//! so after thousands of WebSockets close the process would stay at its peak RSS. When the
//! number of open connections has fallen noticeably since the last look, the trimmer asks
//! glibc to return free pages from every arena (`malloc_trim(0)`).

use crate::pool::PoolHandle;
use std::time::Duration;

/// How often the trimmer looks at the connection count.
pub const DEFAULT_TRIM_INTERVAL: Duration = Duration::from_secs(2);
/// Connections that must have closed since the last trim before trimming again.
pub const DEFAULT_TRIM_AFTER: u64 = 256;

fn open_connections(pool: &PoolHandle) -> u64 {
    pool.load()
        .upstreams
        .values()
        .flat_map(|u| u.backends.iter())
        .map(|b| b.live.active())
        .sum()
}

/// Return free heap pages to the OS.
#[allow(unsafe_code)]
pub fn trim() {
    // SAFETY: malloc_trim has no preconditions; it takes the arena locks itself and may be
    // called from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Run forever on the current runtime, trimming after connection counts fall.
pub async fn trimmer(pool: PoolHandle) {
    let mut high = 0u64;
    let mut tick = tokio::time::interval(DEFAULT_TRIM_INTERVAL);
    loop {
        tick.tick().await;
        let now = open_connections(&pool);
        high = high.max(now);
        if high - now >= DEFAULT_TRIM_AFTER {
            trim();
            tracing::debug!(
                from = high,
                to = now,
                "trimmed the heap after connections closed"
            );
            high = now;
        }
    }
}
