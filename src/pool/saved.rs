//! The files tideway saves in `data_dir` as its state changes (`toggles.json`,
//! `etcd-pool.json`), all written one way: by a writer task of their own, off the async
//! workers (the file calls, and the rendering of the contents, run under `spawn_blocking`),
//! through a temp file and a rename (a crash leaves the old file or the new one, never half of
//! one), and coalesced: of the versions that wait, only the latest is rendered and written.
//! A file may also be written at most once per `gap`, so a burst of changes costs one write.
//!
//! A version is handed over as a closure that renders the bytes: the caller passes what it
//! holds (a cheap clone of a persistent map, or bytes already made), and the O(contents)
//! work happens on the writer's blocking thread, for the versions that get written only.
//!
//! Imports nothing of tideway's.

use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// Renders one version of a file's contents.
pub type Render = Box<dyn FnOnce() -> Result<Vec<u8>, String> + Send>;
/// Told how the write of its version (or of a later one that replaced it) went.
pub type Tell = Box<dyn FnOnce(Result<(), String>) + Send>;

struct Version {
    render: Render,
    tell: Option<Tell>,
}

/// One saved file and its writer task, owned: [`SavedFile::close`] lets the task write what
/// is pending, then joins it. Dropping it without a close (its owner aborted past a shutdown's
/// wait) aborts the writer: the versions still waiting are not written, and a write under way
/// finishes on its blocking thread (the file is the old one or the new one).
pub struct SavedFile {
    tx: mpsc::UnboundedSender<Version>,
    task: Writer,
}

/// The writer task's handle, aborted when dropped.
struct Writer(tokio::task::JoinHandle<()>);

impl Drop for Writer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl SavedFile {
    /// Start the writer of `path` on the current runtime; it writes at most once per `gap`
    /// (the first change after a quiet `gap` is written at once).
    pub fn spawn(path: PathBuf, gap: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = Writer(tokio::spawn(writer(path, gap, rx)));
        SavedFile { tx, task }
    }

    /// Save a new version (never waits).
    pub fn save(&self, render: impl FnOnce() -> Result<Vec<u8>, String> + Send + 'static) {
        self.send(Box::new(render), None);
    }

    /// Save a new version; `tell` learns how its write went once it is on disk (or failed).
    pub fn save_then(
        &self,
        render: impl FnOnce() -> Result<Vec<u8>, String> + Send + 'static,
        tell: impl FnOnce(Result<(), String>) + Send + 'static,
    ) {
        self.send(Box::new(render), Some(Box::new(tell)));
    }

    fn send(&self, render: Render, tell: Option<Tell>) {
        if let Err(mpsc::error::SendError(v)) = self.tx.send(Version { render, tell }) {
            if let Some(tell) = v.tell {
                tell(Err("the file's writer has stopped".into()));
            }
        }
    }

    /// Write what is pending, then end the writer and join it.
    pub async fn close(self) {
        let SavedFile { tx, mut task } = self;
        drop(tx);
        let _ = (&mut task.0).await;
    }
}

async fn writer(path: PathBuf, gap: Duration, mut rx: mpsc::UnboundedReceiver<Version>) {
    let mut last: Option<tokio::time::Instant> = None;
    while let Some(first) = rx.recv().await {
        if let Some(at) = last.map(|l| l + gap) {
            tokio::time::sleep_until(at).await;
        }
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let latest = batch.pop().expect("one at least");
        let tells: Vec<Tell> = batch
            .into_iter()
            .filter_map(|v| v.tell)
            .chain(latest.tell)
            .collect();
        let render = latest.render;
        let file = path.clone();
        let written = tokio::task::spawn_blocking(move || {
            let bytes = render()?;
            write(&file, &bytes).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        if let Err(e) = &written {
            tracing::error!(path = %path.display(), error = %e, "could not save");
        }
        last = Some(tokio::time::Instant::now());
        for tell in tells {
            tell(written.clone());
        }
    }
}

/// Write `bytes` to `path` through a temp file next to it and a rename (blocking file calls).
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn a_burst_is_written_once_with_the_latest_contents_and_everyone_is_told() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        let file = SavedFile::spawn(path.clone(), Duration::from_secs(3600));
        let rendered = Arc::new(Mutex::new(Vec::new()));
        let told = Arc::new(Mutex::new(Vec::new()));
        // The first is written at once; the gap then holds the next ones back, and of those
        // only the latest is rendered.
        for i in 0..5 {
            let (rendered, told) = (rendered.clone(), told.clone());
            file.save_then(
                move || {
                    rendered.lock().unwrap().push(i);
                    Ok(format!("v{i}").into_bytes())
                },
                move |r| told.lock().unwrap().push((i, r)),
            );
        }
        file.close().await;
        let rendered = rendered.lock().unwrap().clone();
        assert!(
            rendered.len() <= 2 && rendered.last() == Some(&4),
            "{rendered:?}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "v4");
        let mut told = told.lock().unwrap().clone();
        told.sort_by_key(|t| t.0);
        assert_eq!(told, (0..5).map(|i| (i, Ok(()))).collect::<Vec<_>>());
        assert!(!dir.path().join("sub/state.json.tmp").exists());
    }

    #[tokio::test]
    async fn a_failed_write_is_told_and_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "old").unwrap();
        let file = SavedFile::spawn(path.clone(), Duration::ZERO);
        let (tx, rx) = tokio::sync::oneshot::channel();
        file.save_then(
            || Err("cannot render".into()),
            move |r| {
                let _ = tx.send(r);
            },
        );
        assert_eq!(rx.await.unwrap(), Err("cannot render".to_string()));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
    }
}
