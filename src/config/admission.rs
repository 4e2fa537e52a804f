//! An upstream's `admission = { ... }`: how many new WebSocket upgrades each of its backends
//! takes, per tideway instance. A token bucket bounds the rate (`per_second`, with `burst`),
//! `max_pending` bounds the handshakes forwarded and not yet answered, and clients over either
//! wait in a bounded FIFO (`queue`) up to `queue_timeout`, then get 503 with a jittered
//! `Retry-After`. Off unless configured; plain HTTP requests only with `all_requests`.
//!
//! Imports: nothing else in tideway.

use std::time::Duration;

/// Default `admission.queue`: clients one backend may have waiting.
pub const DEFAULT_ADMISSION_QUEUE: u32 = 1024;
/// Default `admission.queue_timeout`: longest a client waits in the queue.
pub const DEFAULT_ADMISSION_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `admission.retry_after`: a refused client is told to come back after between this
/// and twice this (whole seconds, at least 1).
pub const DEFAULT_ADMISSION_RETRY_AFTER: Duration = Duration::from_secs(2);
/// Default `admission.handshake_timeout`: longest an admitted request waits for the backend's
/// answer head while it holds a place under `max_pending`; missing it is the backend's failure.
pub const DEFAULT_ADMISSION_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `admission.burst` as a share of `per_second`: a tenth of a second's worth (at
/// least 1), so a storm is admitted at the rate from its first moment.
pub const DEFAULT_ADMISSION_BURST_SHARE: f64 = 0.1;

/// `admission = { per_second = N, burst = B, max_pending = M, queue = Q, queue_timeout = "5s",
/// retry_after = "2s", all_requests = false, handshake_timeout = "10s" }`.
#[derive(Clone, Debug, PartialEq)]
pub struct AdmissionConfig {
    /// New upgrades per second per backend, across the fleet (each instance takes its share);
    /// None: no rate limit.
    pub per_second: Option<u32>,
    /// The token bucket's size (across the fleet, shared as `per_second` is).
    pub burst: u32,
    /// Handshakes forwarded to one backend and not yet answered, per instance; None: no limit.
    pub max_pending: Option<u32>,
    /// Clients that may wait for one backend, per instance (0: none wait, all are refused).
    pub queue: u32,
    /// Longest wait in the queue.
    pub queue_timeout: Duration,
    /// The base of a refusal's `Retry-After` (see [`DEFAULT_ADMISSION_RETRY_AFTER`]).
    pub retry_after: Duration,
    /// Judge every request, not only WebSocket upgrades.
    pub all_requests: bool,
    /// Longest wait for the answer head of an admitted request (its pending place).
    pub handshake_timeout: Duration,
}

impl AdmissionConfig {
    /// The burst `per_second` gets when none is given.
    pub fn default_burst(per_second: u32) -> u32 {
        ((f64::from(per_second) * DEFAULT_ADMISSION_BURST_SHARE).ceil() as u32).max(1)
    }

    /// A refusal's `Retry-After`, in seconds, for `jitter` drawn from [0, 1]: between
    /// `retry_after` and twice it, at least 1.
    pub fn retry_after_secs(&self, jitter: f64) -> u64 {
        let base = self.retry_after.as_secs_f64().max(1.0);
        (base * (1.0 + jitter.clamp(0.0, 1.0))).round() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_spans_one_to_two_times_the_base() {
        let cfg = AdmissionConfig {
            per_second: Some(500),
            burst: AdmissionConfig::default_burst(500),
            max_pending: None,
            queue: DEFAULT_ADMISSION_QUEUE,
            queue_timeout: DEFAULT_ADMISSION_QUEUE_TIMEOUT,
            retry_after: Duration::from_secs(3),
            all_requests: false,
            handshake_timeout: DEFAULT_ADMISSION_HANDSHAKE_TIMEOUT,
        };
        assert_eq!(cfg.burst, 50);
        assert_eq!(AdmissionConfig::default_burst(1), 1);
        assert_eq!(cfg.retry_after_secs(0.0), 3);
        assert_eq!(cfg.retry_after_secs(1.0), 6);
        assert_eq!(cfg.retry_after_secs(7.0), 6, "clamped");
        let short = AdmissionConfig {
            retry_after: Duration::from_millis(100),
            ..cfg
        };
        assert_eq!(short.retry_after_secs(0.0), 1, "at least a second");
    }
}
