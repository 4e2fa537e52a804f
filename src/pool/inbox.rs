//! Health verdicts on their way to the controller, coalesced per backend and kind (active
//! check, passive ejection): the latest verdict of each wins and none is ever dropped. The health checkers and the data plane's passive checks
//! report here without waiting; a full diff queue cannot lose a "down", because a verdict is
//! a slot per backend, not a message in a queue.

use super::backend::BackendId;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::Notify;

/// What a health source concluded about a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// An active check's transition.
    Health { healthy: bool, reason: String },
    /// Passive health: `max_fails` failures.
    Eject { reason: String },
}

/// Which slot a verdict takes: an active check's verdict and a passive ejection never
/// replace each other (an ejection lost to a later "healthy" would leave its failure streak
/// uncounted).
type Slot = (String, BackendId, bool);

/// The latest verdict per (upstream, backend, kind), and a wake-up for the controller.
#[derive(Debug, Default)]
pub struct Inbox {
    latest: Mutex<HashMap<Slot, Verdict>>,
    wake: Notify,
}

impl Inbox {
    /// Leave a verdict (replacing an older one not yet taken) and wake the controller.
    pub fn report(&self, upstream: &str, id: BackendId, verdict: Verdict) {
        let eject = matches!(verdict, Verdict::Eject { .. });
        self.lock()
            .insert((upstream.to_string(), id, eject), verdict);
        // A stored permit: a report made while the controller is busy still wakes it.
        self.wake.notify_one();
    }

    /// Every verdict left since the last call.
    pub fn take(&self) -> Vec<((String, BackendId), Verdict)> {
        self.lock()
            .drain()
            .map(|((upstream, id, _), v)| ((upstream, id), v))
            .collect()
    }

    /// Resolves once a verdict is waiting.
    pub async fn wait(&self) {
        self.wake.notified().await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Slot, Verdict>> {
        self.latest.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_verdict_wins_and_none_is_lost() {
        let inbox = Inbox::default();
        for i in 0..10_000 {
            inbox.report(
                "u",
                "b".into(),
                Verdict::Health {
                    healthy: i % 2 == 1,
                    reason: format!("check {i}"),
                },
            );
        }
        inbox.report(
            "u",
            "c".into(),
            Verdict::Eject {
                reason: "5 failures".into(),
            },
        );
        let mut taken = inbox.take();
        taken.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(taken.len(), 2);
        assert!(inbox.take().is_empty());
        // An ejection and a later check verdict of one backend are both kept.
        let eject = Verdict::Eject {
            reason: "3 failures".into(),
        };
        inbox.report("u", "b".into(), eject.clone());
        inbox.report(
            "u",
            "b".into(),
            Verdict::Health {
                healthy: true,
                reason: "check".into(),
            },
        );
        let both = inbox.take();
        assert_eq!(both.len(), 2);
        assert!(both.iter().any(|(_, v)| *v == eject));
        assert_eq!(
            taken[0].1,
            Verdict::Health {
                healthy: true,
                reason: "check 9999".into()
            }
        );
        assert!(matches!(taken[1].1, Verdict::Eject { .. }));
    }
}
