//! How the rest of tideway reaches the controller: a cloneable [`PoolHandle`] (read the
//! snapshot, apply diffs, report health verdicts) and the [`ControllerTask`] that runs it.
//!
//! The run loop wakes on a diff, a health verdict, a tick or the earliest deadline; after every
//! wake-up it applies the verdicts waiting in the [`Inbox`], serves the deadlines that are due,
//! and hands the apply steps' effects to their workers (toggles go to a writer task that does
//! the blocking file calls, latest contents first). It holds no sender of its own, so it ends
//! when the last handle is dropped.

use super::backend::BackendId;
use super::controller::{Controller, Effect, DEFAULT_TICK};
use super::diff::{Diff, PoolError};
use super::inbox::{Inbox, Verdict};
use super::snapshot::Snapshot;
use arc_swap::{ArcSwap, Guard};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

/// Depth of the diff queue; senders wait when it is full.
pub const DEFAULT_QUEUE_DEPTH: usize = 1024;

struct Command {
    diff: Diff,
    reply: oneshot::Sender<Result<bool, PoolError>>,
}

/// A cheap, cloneable handle on the pool: read the snapshot, send diffs and verdicts.
#[derive(Clone)]
pub struct PoolHandle {
    current: Arc<ArcSwap<Snapshot>>,
    tx: mpsc::Sender<Command>,
    inbox: Arc<Inbox>,
}

impl PoolHandle {
    /// The current snapshot (cheap; do not hold it across long waits).
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc`.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Report a health verdict without waiting (health checks, the data plane). Verdicts are
    /// coalesced per backend, latest first, and never dropped.
    pub fn report(&self, upstream: &str, id: BackendId, verdict: Verdict) {
        self.inbox.report(upstream, id, verdict);
    }

    /// Apply a diff and wait until it is published. `Ok(true)` means a new snapshot is live,
    /// `Ok(false)` that nothing changed.
    pub async fn apply(&self, diff: Diff) -> Result<bool, PoolError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command { diff, reply })
            .await
            .map_err(|_| PoolError::Stopped)?;
        rx.await.map_err(|_| PoolError::Stopped)?
    }
}

/// The controller's run loop, ready to be spawned.
pub struct ControllerTask {
    controller: Controller,
    rx: mpsc::Receiver<Command>,
    inbox: Arc<Inbox>,
}

impl Controller {
    /// Split into the handle everyone else uses and the task that must be run (on any tokio
    /// runtime) for diffs to be applied.
    pub fn into_task(self) -> (PoolHandle, ControllerTask) {
        let (tx, rx) = mpsc::channel(DEFAULT_QUEUE_DEPTH);
        let inbox = Arc::new(Inbox::default());
        let handle = PoolHandle {
            current: self.current().clone(),
            tx,
            inbox: inbox.clone(),
        };
        let task = ControllerTask {
            controller: self,
            rx,
            inbox,
        };
        (handle, task)
    }

    /// Start the controller on the current runtime; returns its handle.
    pub fn spawn(self) -> PoolHandle {
        let (handle, task) = self.into_task();
        tokio::spawn(task.run());
        handle
    }
}

impl ControllerTask {
    /// Apply diffs until every handle is gone.
    pub async fn run(self) {
        let ControllerTask {
            mut controller,
            mut rx,
            inbox,
        } = self;
        let (toggles_tx, toggles_rx) = watch::channel(None);
        let writer = tokio::spawn(write_toggles(toggles_rx));
        let mut ticker = tokio::time::interval(DEFAULT_TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = controller.next_deadline();
            let deadline = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(Command { diff, reply }) => {
                        let _ = reply.send(controller.apply(diff));
                    }
                    None => break,
                },
                () = inbox.wait() => {}
                _ = ticker.tick() => {
                    controller.tick();
                }
                () = deadline => {}
            }
            for ((upstream, id), verdict) in inbox.take() {
                controller.verdict(upstream, id, verdict);
            }
            controller.serve_deadlines(std::time::Instant::now());
            for effect in controller.take_effects() {
                match effect {
                    Effect::PersistToggles { path, json } => {
                        toggles_tx.send_replace(Some((path, json)));
                    }
                }
            }
        }
        // The last handle is gone: let the writer save what is pending, then stop.
        drop(toggles_tx);
        let _ = writer.await;
    }
}

/// Write the latest toggles each time they change, off the async workers.
async fn write_toggles(mut rx: watch::Receiver<Option<(std::path::PathBuf, Vec<u8>)>>) {
    while rx.changed().await.is_ok() {
        let Some((path, json)) = rx.borrow_and_update().clone() else {
            continue;
        };
        let _ = tokio::task::spawn_blocking(move || super::toggles::write(&path, &json)).await;
    }
}
