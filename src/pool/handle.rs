//! How the rest of tideway reaches the controller: a cloneable [`PoolHandle`] (read the
//! snapshot, apply diffs, report health verdicts) and the [`ControllerTask`] that runs it.
//!
//! The run loop wakes on a diff, a health verdict, a tick or the earliest deadline; after every
//! wake-up it applies the verdicts waiting in the [`Inbox`], serves the deadlines that are due,
//! and hands the apply steps' effects to their workers: toggles go to their file's writer
//! ([`super::saved`]: off the async workers, the latest contents of a batch), and a caller whose diff changed
//! toggles gets its answer from the writer once they are on disk, so an acknowledged toggle
//! survives a crash while the controller never waits for the disk. It holds no sender of its
//! own, so it ends when the last handle is dropped.

use super::backend::BackendId;
use super::controller::{Controller, Effect, DEFAULT_TICK};
use super::diff::{Diff, PoolError};
use super::inbox::{Inbox, Verdict};
use super::saved::SavedFile;
use super::snapshot::Snapshot;
use arc_swap::{ArcSwap, Guard};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Depth of the diff queue; senders wait when it is full.
pub const DEFAULT_QUEUE_DEPTH: usize = 1024;

/// Toggles are written as soon as they change (their writers wait for the disk); a burst
/// that comes while one is written is written once.
const TOGGLES_GAP: std::time::Duration = std::time::Duration::ZERO;

type Reply = oneshot::Sender<Result<bool, PoolError>>;

enum Command {
    Apply {
        diff: Diff,
        reply: Reply,
    },
    /// A reload: the config's upstreams.
    Configure {
        upstreams: Vec<crate::config::UpstreamConfig>,
        reply: oneshot::Sender<bool>,
    },
}

/// A cheap, cloneable handle on the pool: read the snapshot, send diffs and verdicts.
#[derive(Clone)]
pub struct PoolHandle {
    current: Arc<ArcSwap<Snapshot>>,
    tx: mpsc::Sender<Command>,
    inbox: Arc<Inbox>,
    sessions: Arc<super::sessions::Sessions>,
    own: Arc<super::own::OwnAddrs>,
    instances: Arc<super::admission::Instances>,
}

impl PoolHandle {
    /// The live WebSockets of rebalanced upstreams.
    pub fn sessions(&self) -> &Arc<super::sessions::Sessions> {
        &self.sessions
    }

    /// tideway's own listening addresses (set at start and by each reload).
    pub fn own(&self) -> &Arc<super::own::OwnAddrs> {
        &self.own
    }

    /// How many instances share upgrade admission limits (the fleet's reader sets it).
    pub fn instances(&self) -> &Arc<super::admission::Instances> {
        &self.instances
    }

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
            .send(Command::Apply { diff, reply })
            .await
            .map_err(|_| PoolError::Stopped)?;
        rx.await.map_err(|_| PoolError::Stopped)?
    }

    /// Take the upstreams of a re-read config (see [`Controller::configure`]); `Ok(true)` when
    /// anything changed.
    pub async fn reconfigure(
        &self,
        upstreams: Vec<crate::config::UpstreamConfig>,
    ) -> Result<bool, PoolError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Configure { upstreams, reply })
            .await
            .map_err(|_| PoolError::Stopped)?;
        rx.await.map_err(|_| PoolError::Stopped)
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
            sessions: Arc::default(),
            own: Arc::default(),
            instances: Arc::default(),
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
        self.run_until(tokio_util::sync::CancellationToken::new())
            .await
    }

    /// Apply diffs until every handle is gone or `stop` is cancelled; then apply the diffs
    /// already queued (new ones are refused: [`PoolError::Stopped`]) and let the toggles
    /// file's writer save what is pending before returning.
    pub async fn run_until(self, stop: tokio_util::sync::CancellationToken) {
        let ControllerTask {
            mut controller,
            mut rx,
            inbox,
        } = self;
        // The toggles file, started at its first change (its path comes with it).
        let mut toggles_file: Option<SavedFile> = None;
        let mut ticker = tokio::time::interval(DEFAULT_TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = false;
        loop {
            let next = controller.next_deadline();
            let deadline = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let mut answer = None;
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(Command::Apply { diff, reply }) => {
                        answer = Some((reply, controller.apply(diff)));
                    }
                    Some(Command::Configure { upstreams, reply }) => {
                        let _ = reply.send(controller.configure(&upstreams));
                    }
                    None => break,
                },
                () = inbox.wait() => {}
                _ = ticker.tick() => {
                    controller.tick();
                }
                () = deadline => {}
                // Told to stop: the queue is closed, and drained by the next turns.
                () = stop.cancelled(), if !stopping => {
                    stopping = true;
                    rx.close();
                }
            }
            for ((upstream, id), verdict) in inbox.take() {
                controller.verdict(upstream, id, verdict);
            }
            controller.serve_deadlines(tokio::time::Instant::now());
            for effect in controller.take_effects() {
                match effect {
                    Effect::PersistToggles { path, json } => {
                        let file =
                            toggles_file.get_or_insert_with(|| SavedFile::spawn(path, TOGGLES_GAP));
                        match answer.take() {
                            // Applied, but not on disk: the caller is told so.
                            Some((reply, result)) => file.save_then(
                                move || Ok(json),
                                move |written| {
                                    let _ = reply
                                        .send(written.map_err(PoolError::NotSaved).and(result));
                                },
                            ),
                            None => file.save(move || Ok(json)),
                        }
                    }
                }
            }
            if let Some((reply, result)) = answer {
                let _ = reply.send(result);
            }
        }
        // The last handle is gone, or the queue is drained after a stop: let the writer save
        // what is pending, then join it.
        if let Some(file) = toggles_file {
            file.close().await;
        }
    }
}
