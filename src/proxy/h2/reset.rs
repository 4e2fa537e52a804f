//! Rapid reset (CVE-2023-44487): what a client's RST_STREAM may cost tideway.
//!
//! - The stream cap binds tideway's work, not only the codec's count. The codec frees a
//!   stream's place the moment the client resets it, while tideway may still be working on
//!   it; a stream that comes while the connection has `max_concurrent_streams` streams at
//!   work gets RST_STREAM(REFUSED_STREAM) and no task ([`Strikes::admitted`]).
//! - A stream's work races the client's reset ([`unless_reset`], as hyper's server does with
//!   `poll_reset`): a reset stream stops at once, wherever it is (before its backend is
//!   chosen, while it connects, waits in a queue, waits for the answer or relays its body).
//!   The work is dropped: its backend connection closes, its places (queue, `limit_conn`,
//!   connection counts) are given back, and nothing is counted against the backend.
//! - Strikes: each refused stream and each stream reset while at work is one. A connection
//!   with more than [`STRIKES_PER_STREAM`] × `max_concurrent_streams` strikes that are also
//!   more than half of the streams it opened is sent GOAWAY(ENHANCE_YOUR_CALM) and closed at
//!   its next stream. The share keeps a long-lived connection of a browser (or of a balancer
//!   in front, carrying many users' cancelled downloads and aborted long polls) from ever
//!   adding up to the bound; a rapid-reset client resets nearly every stream it opens.
//!
//! Imports only the `h2` codec and tokio.

use bytes::Bytes;
use h2::server::{Connection, SendResponse};
use h2::Reason;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncRead, AsyncWrite};

/// Strikes a connection may take per place under its stream cap before GOAWAY: 2, so 256 at
/// nginx's 128 streams. A client that keeps to the cap is never refused (a reset stream's
/// work stops at once, giving its place back), and a browser cancels a few streams per page
/// it leaves; a rapid-reset client reaches it after about 2 × the cap streams, each of which
/// cost at most a request a backend saw and dropped.
pub const STRIKES_PER_STREAM: usize = 2;

/// A connection's strikes: streams refused at the cap, and streams reset while at work.
#[derive(Debug, Default)]
pub struct Strikes(AtomicUsize);

impl Strikes {
    /// One more strike.
    pub fn strike(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Strikes so far.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Past the bound: more than [`STRIKES_PER_STREAM`] × `cap` strikes, and more than half
    /// of the `opened` streams.
    fn exceeded(&self, cap: usize, opened: u64) -> bool {
        let count = self.count();
        count > STRIKES_PER_STREAM.saturating_mul(cap) && (count as u64).saturating_mul(2) > opened
    }

    /// Is a new stream to be served, `live` streams being at work under the cap `cap`? A
    /// refused one is reset through `respond` (REFUSED_STREAM, safe for the client to retry);
    /// past the strikes, `conn` is sent GOAWAY(ENHANCE_YOUR_CALM) and closes.
    pub fn admitted<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        (live, cap, opened): (usize, u32, u64),
        respond: &mut SendResponse<Bytes>,
        conn: &mut Connection<T, Bytes>,
    ) -> bool {
        let cap = cap as usize;
        if self.exceeded(cap, opened) {
            tracing::debug!(
                strikes = self.count(),
                "HTTP/2 client sent GOAWAY(ENHANCE_YOUR_CALM)"
            );
            conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
        } else if live >= cap {
            self.strike();
        } else {
            return true;
        }
        respond.send_reset(Reason::REFUSED_STREAM);
        false
    }
}

/// Run `work` (one stream's) until it ends or `reset` resolves (the client reset the stream),
/// whichever comes first: the work's result, or None when a reset dropped the work where it
/// was (a strike).
pub async fn unless_reset<T>(
    reset: impl Future<Output = ()>,
    strikes: &Strikes,
    work: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        // The reset first: a stream reset before its task ran does no work at all.
        biased;
        () = reset => {
            strikes.strike();
            tracing::debug!("the client reset an HTTP/2 stream at work");
            None
        }
        done = work => Some(done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reset_first_means_no_work_and_a_strike() {
        let strikes = Strikes::default();
        assert_eq!(unless_reset(async {}, &strikes, async { 1 }).await, None);
        assert_eq!(strikes.count(), 1);
        let work = unless_reset(std::future::pending(), &strikes, async { 2 });
        assert_eq!(work.await, Some(2));
        assert_eq!(strikes.count(), 1);
    }

    #[test]
    fn the_bound_needs_many_strikes_and_most_streams_struck() {
        let strikes = Strikes::default();
        for _ in 0..21 {
            strikes.strike();
        }
        // 21 strikes at a cap of 10: past 2 x 10, and all of 21 streams opened.
        assert!(strikes.exceeded(10, 21));
        // The same strikes among 1,000 streams a browser opened over hours: no GOAWAY.
        assert!(!strikes.exceeded(10, 1_000));
        // Under 2 x the cap, whatever the share.
        let few = Strikes::default();
        few.strike();
        assert!(!few.exceeded(10, 1));
    }
}
