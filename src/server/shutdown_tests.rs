//! Shutdown ends what the process started: the controller lets a queued toggle reach disk
//! before its task ends, and the tasks of listeners added by reloads are handed to the set
//! and joined.

use super::listeners::Listeners;
use super::tasks::Tasks;
use crate::pool::toggles::Toggles;
use crate::pool::{Controller, Diff};
use futures_util::FutureExt;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Far longer than the test needs: the tasks end when told, not at the end of the wait.
const WAIT: Duration = Duration::from_secs(10);

fn config(listen: &str) -> crate::config::Config {
    let text = format!(
        "[[listener]]\nlisten = \"{listen}\"\nupstream = \"u\"\n\n\
         [upstream.u]\nbackends = [{{ addr = \"127.0.0.1:1001\" }}]\n"
    );
    crate::config::parse(&text, std::path::Path::new("test.toml")).unwrap()
}

#[tokio::test]
async fn a_queued_toggle_is_on_disk_when_the_stopped_controller_has_ended() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::new(
        &config("127.0.0.1:0").upstreams,
        CancellationToken::new(),
        Toggles::load(dir.path()),
    );
    let (pool, task) = controller.into_task();
    let mut tasks = Tasks::default();
    tasks.spawn_stoppable("pool controller", |stop| task.run_until(stop));
    // Queued: one poll puts the diff in the controller's queue; it is not answered yet.
    let mut answer = Box::pin(pool.apply(Diff::SetWeight {
        upstream: "u".into(),
        id: "127.0.0.1:1001".into(),
        weight: 9,
    }));
    assert!((&mut answer).now_or_never().is_none());
    let stopped = tasks.stop(WAIT).await;
    assert_eq!(stopped.ended, ["pool controller"]);
    assert!(stopped.aborted.is_empty());
    // On disk when the task has ended, and acknowledged as such.
    let saved = Toggles::load(dir.path());
    assert_eq!(saved.get("u", "127.0.0.1:1001").unwrap().weight, Some(9));
    assert_eq!(answer.await, Ok(true));
    // The stopped controller takes no new diff.
    let late = pool.apply(Diff::SetWeight {
        upstream: "u".into(),
        id: "127.0.0.1:1001".into(),
        weight: 3,
    });
    assert_eq!(late.await, Err(crate::pool::PoolError::Stopped));
}

#[tokio::test]
async fn the_tasks_of_listeners_added_by_reloads_are_joined_by_the_set() {
    let config = config("127.0.0.1:0");
    let (pool, task) = Controller::new(
        &config.upstreams,
        CancellationToken::new(),
        Toggles::in_memory(),
    )
    .into_task();
    let mut tasks = Tasks::default();
    tasks.spawn_stoppable("pool controller", |stop| task.run_until(stop));
    let listeners = Listeners::new(pool, Vec::new(), "127.0.0.1:1".parse().unwrap());
    let (_shutdown, watch) = tokio::sync::watch::channel(false);
    listeners.set_shutdown(watch);
    let plan = listeners.prepare(&config.listeners).unwrap();
    listeners.commit(plan);
    for (name, task) in listeners.take_tasks() {
        tasks.adopt(name, task);
    }
    // Once they are taken, no reload changes the listeners.
    let refused = listeners.prepare(&config.listeners).err().unwrap();
    assert!(refused.contains("shutting down"), "{refused}");
    let mut stopped = tasks.stop(WAIT).await;
    stopped.ended.sort_unstable();
    assert_eq!(
        stopped.ended,
        [
            "pool controller",
            "reload listener",
            "reload listener sweeper"
        ]
    );
    assert!(stopped.aborted.is_empty() && stopped.panicked.is_empty());
}
