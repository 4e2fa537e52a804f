//! The process's long-lived background tasks, owned. The server wiring spawns each of them
//! into one [`Tasks`] set (the controller, the admin API, the etcd watch, the fleet counts,
//! the rebalancer, the autoscale hook, SIGHUP reloads, the memory trimmer, the keep-alive
//! sweepers of the listeners started with) and, at shutdown, adopts the accept loops and
//! sweepers of the listeners reloads added. Stopping the set ends every task at its next
//! await, except one spawned with [`Tasks::spawn_stoppable`], which ends itself (the
//! controller and the etcd watch close their saved files' writers, which write what is
//! pending and are joined), and joins them all within a bounded wait ([`DEFAULT_STOP_WAIT`]).
//! Health checks and name follows, which reloads restart, are owned by `health::Checkers` and
//! `discovery::names::Names` and stopped with the set. Still detached: the autoscale hook's
//! runs (left to finish), and per-connection and per-request tasks (they end with their
//! connection, under the shutdown rules of `server::signals`).
//!
//! Imports: nothing else in tideway.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;
use tokio::task::{Id, JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// How long shutdown waits for the background tasks to end once they are told to; a task
/// still running then is aborted and named in the log.
pub const DEFAULT_STOP_WAIT: Duration = Duration::from_secs(2);

/// A named set of background tasks that stop together.
#[derive(Default)]
pub struct Tasks {
    set: JoinSet<()>,
    names: HashMap<Id, &'static str>,
    stop: CancellationToken,
}

/// How a stop went.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stopped {
    /// Tasks that ended within the wait (told to stop, or ended before).
    pub ended: Vec<&'static str>,
    /// Tasks that panicked.
    pub panicked: Vec<&'static str>,
    /// Tasks still running at the end of the wait, aborted.
    pub aborted: Vec<&'static str>,
}

impl Tasks {
    /// Run `task` on the current runtime until it ends or the set is stopped.
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.clone();
        let handle = self.set.spawn(async move {
            tokio::select! {
                // A task that is ready to end ends (and a panic is its own) rather than be cut.
                biased;
                () = task => {}
                () = stop.cancelled() => {}
            }
        });
        self.names.insert(handle.id(), name);
    }

    /// Run a task that ends itself: `task` gets the set's stop signal and, once it is
    /// cancelled, finishes what must not be cut (a pending write) and returns. Stopping the
    /// set waits for it within its wait, then aborts it.
    pub fn spawn_stoppable<F>(
        &mut self,
        name: &'static str,
        task: impl FnOnce(CancellationToken) -> F,
    ) where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = self.set.spawn(task(self.stop.clone()));
        self.names.insert(handle.id(), name);
    }

    /// Own a task spawned elsewhere (by a module that keeps the handles of what it starts):
    /// stopping the set aborts it and waits for it to be gone.
    pub fn adopt(&mut self, name: &'static str, mut handle: JoinHandle<()>) {
        let stop = self.stop.clone();
        let wrapper = self.set.spawn(async move {
            tokio::select! {
                _ = &mut handle => {}
                () = stop.cancelled() => {
                    handle.abort();
                    let _ = handle.await;
                }
            }
        });
        self.names.insert(wrapper.id(), name);
    }

    /// How many tasks the set holds (ended ones too, until the set is stopped).
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Does the set hold no task?
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Tell every task to stop and join them, waiting at most `wait`; the ones still running
    /// then are aborted.
    pub async fn stop(mut self, wait: Duration) -> Stopped {
        self.stop.cancel();
        let mut out = Stopped::default();
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(joined)) =
            tokio::time::timeout_at(deadline, self.set.join_next_with_id()).await
        {
            let (id, panicked) = match joined {
                Ok((id, ())) => (id, false),
                Err(e) => (e.id(), e.is_panic()),
            };
            let name = self.names.remove(&id).unwrap_or("task");
            if panicked {
                tracing::error!(task = name, "background task panicked");
                out.panicked.push(name);
            } else {
                out.ended.push(name);
            }
        }
        if !self.set.is_empty() {
            out.aborted = self.names.values().copied().collect();
            out.aborted.sort_unstable();
            tracing::warn!(tasks = ?out.aborted, ?wait, "background tasks did not stop in time; aborted");
            self.set.shutdown().await;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// Sets its flag when dropped: the task that held it is gone.
    struct Gone(Arc<AtomicBool>);
    impl Drop for Gone {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn stop_ends_spawned_and_adopted_tasks_and_joins_them() {
        let mut tasks = Tasks::default();
        let (a, b) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let guard = Gone(a.clone());
        tasks.spawn("forever", async move {
            let _held = guard;
            std::future::pending::<()>().await
        });
        let guard = Gone(b.clone());
        tasks.adopt(
            "adopted",
            tokio::spawn(async move {
                let _held = guard;
                std::future::pending::<()>().await
            }),
        );
        tasks.spawn("done", async {});
        assert_eq!(tasks.len(), 3);
        let mut stopped = tasks.stop(Duration::from_secs(10)).await;
        stopped.ended.sort_unstable();
        assert_eq!(stopped.ended, ["adopted", "done", "forever"]);
        assert!(stopped.aborted.is_empty() && stopped.panicked.is_empty());
        // Joined: both tasks' state is already dropped when stop returns.
        assert!(a.load(Ordering::SeqCst) && b.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_task_that_panicked_is_named() {
        let mut tasks = Tasks::default();
        tasks.spawn("boom", async { panic!("boom") });
        tasks.spawn("quiet", std::future::pending());
        let stopped = tasks.stop(Duration::from_secs(10)).await;
        assert_eq!(stopped.panicked, ["boom"]);
        assert_eq!(stopped.ended, ["quiet"]);
    }

    #[tokio::test]
    async fn a_task_that_does_not_yield_in_time_is_aborted_and_named() {
        let mut tasks = Tasks::default();
        // Ignores the stop: it blocks its worker past the wait, then would go on forever.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = tokio::sync::oneshot::channel();
        tasks.adopt(
            "stuck",
            tokio::task::spawn_blocking(move || {
                let _ = started_tx.send(());
                let _ = rx.recv();
            }),
        );
        started.await.unwrap();
        let stopped = tasks.stop(Duration::from_millis(50)).await;
        drop(tx);
        assert_eq!(stopped.aborted, ["stuck"]);
    }
}
