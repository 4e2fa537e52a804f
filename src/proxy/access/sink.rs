//! Where access lines go: with `[server] access_log_file`, to that file as they are, appended
//! by a thread of its own that a bounded queue feeds, so a slow or full disk never holds a
//! request (a line that finds the queue full is dropped and counted in
//! `tideway_access_log_dropped_total`); reopened at the same path on SIGUSR1 (nginx's `-s
//! reopen`) so logrotate can move it. Without a file, to stderr with the other logs (text lines
//! as `tracing` events, JSON lines as objects shaped like the JSON log's). `RUST_LOG` can
//! silence the `tideway::access` target either way.
//!
//! The file is opened (at start and on each reopen) without following a symlink and without
//! waiting (a FIFO planted at the path cannot block the writer), and used only if it is a
//! regular file with no other hard link; a reopen that fails keeps the old file.

use arc_swap::ArcSwapOption;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lines the writer thread may have waiting; one more is dropped (and counted).
pub const DEFAULT_QUEUE: usize = 4096;

/// The mode of an access-log file tideway creates (before the umask).
const MODE: u32 = 0o640;

/// The access-log file's writer, when a file is configured.
static FILE: ArcSwapOption<Writer> = ArcSwapOption::const_empty();

/// What the writer thread is sent.
enum Msg {
    /// One line, with its newline.
    Line(Vec<u8>),
    /// Nothing but a wake-up: look at the reopen flag.
    Wake,
    /// Answer once everything sent before is written.
    Flush(SyncSender<()>),
}

/// An access-log file and the thread that writes to it. Dropping it lets the thread write
/// what is queued and end.
pub struct Writer {
    tx: SyncSender<Msg>,
    reopen: Arc<AtomicBool>,
}

impl Writer {
    /// Open `path` (see [`open_log`]) and start its writer thread with room for `queue` lines.
    pub fn start(path: &Path, queue: usize) -> io::Result<Writer> {
        let file = open_log(path)?;
        let (tx, rx) = sync_channel(queue);
        let reopen = Arc::new(AtomicBool::new(false));
        let thread = Thread {
            path: path.to_path_buf(),
            file,
            rx,
            reopen: reopen.clone(),
            partial: false,
            failing: false,
        };
        std::thread::Builder::new()
            .name("access log".into())
            .spawn(move || thread.run())?;
        Ok(Writer { tx, reopen })
    }

    /// Queue one line (with its newline); dropped and counted when the queue is full.
    pub fn line(&self, bytes: Vec<u8>) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.tx.try_send(Msg::Line(bytes))
        {
            crate::metrics::global().access_log_dropped.inc();
        }
    }

    /// Have the thread open the file again at its path before its next line.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
        // A full queue needs no wake-up: the thread looks at the flag after every message.
        let _ = self.tx.try_send(Msg::Wake);
    }

    /// Wait until every line queued before is written (or dropped), at most `wait`.
    pub fn flush(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let (ack, done) = sync_channel(1);
        let mut msg = Msg::Flush(ack);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return false,
            }
        }
        done.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

/// The writer thread's side.
struct Thread {
    path: PathBuf,
    file: File,
    rx: Receiver<Msg>,
    reopen: Arc<AtomicBool>,
    /// The last write stopped inside a line: the next starts on a new line.
    partial: bool,
    /// Writes are failing (logged once until one succeeds).
    failing: bool,
}

impl Thread {
    fn run(mut self) {
        while let Ok(msg) = self.rx.recv() {
            if self.reopen.swap(false, Ordering::AcqRel) {
                self.reopen_file();
            }
            match msg {
                Msg::Line(bytes) => self.write(&bytes),
                Msg::Wake => {}
                Msg::Flush(ack) => {
                    let _ = ack.try_send(());
                }
            }
        }
    }

    fn reopen_file(&mut self) {
        match open_log(&self.path) {
            Ok(file) => {
                self.file = file;
                self.partial = false;
                tracing::info!(path = %self.path.display(), "access log reopened");
            }
            Err(e) => tracing::error!(
                path = %self.path.display(),
                error = %e,
                "cannot reopen the access log; writing to the old file"
            ),
        }
    }

    fn write(&mut self, line: &[u8]) {
        match write_line(&mut self.file, line, &mut self.partial) {
            Ok(()) if self.failing => {
                self.failing = false;
                tracing::info!(path = %self.path.display(), "access log: writing again");
            }
            Ok(()) => {}
            Err(e) => {
                crate::metrics::global().access_log_dropped.inc();
                if !self.failing {
                    self.failing = true;
                    tracing::error!(
                        path = %self.path.display(),
                        error = %e,
                        "access log: cannot write; dropping lines until a write succeeds"
                    );
                }
            }
        }
    }
}

/// Write `line` whole; after a write that stopped inside a line (`partial`), end that line
/// first, so a broken line never runs into the next.
fn write_line(f: &mut File, line: &[u8], partial: &mut bool) -> io::Result<()> {
    if *partial {
        f.write_all(b"\n")?;
        *partial = false;
    }
    let mut done = 0;
    while done < line.len() {
        match f.write(&line[done..]) {
            Ok(0) => {
                *partial = done > 0;
                return Err(io::ErrorKind::WriteZero.into());
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                *partial = done > 0;
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Open `path` to append (created with mode 0640 if missing): not through a symlink, without
/// waiting on a FIFO, and only if it is a regular file.
fn open_log(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    // O_NOFOLLOW guards the last name only: a hard link planted at the path would still lead
    // elsewhere. A log file has one name.
    if std::os::unix::fs::MetadataExt::nlink(&meta) != 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "has other hard links",
        ));
    }
    blocking(&file)?;
    Ok(file)
}

/// Clear `O_NONBLOCK`, which was only there for the open.
#[allow(unsafe_code)]
fn blocking(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl with F_GETFL/F_SETFL on a descriptor `file` owns and keeps open for the
    // call; no pointer is passed.
    let ok = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Write access lines to `path` from now on (created if missing, appended to).
pub fn open(path: &Path) -> io::Result<()> {
    FILE.store(Some(Arc::new(Writer::start(path, DEFAULT_QUEUE)?)));
    Ok(())
}

/// Have the file opened again at its path (SIGUSR1): after a rename, the next lines go to a
/// new file there. The writer thread logs how it went; on an error the old file stays in use.
/// False: no file is configured.
pub fn reopen() -> bool {
    match FILE.load().as_ref() {
        Some(w) => {
            w.reopen();
            true
        }
        None => false,
    }
}

/// Wait (at most `wait`) until the lines logged so far are in the file (at exit).
pub fn flush(wait: Duration) {
    if let Some(w) = FILE.load().as_ref() {
        w.flush(wait);
    }
}

/// Is the `tideway::access` target on (`RUST_LOG`)?
fn wanted() -> bool {
    tracing::enabled!(target: "tideway::access", tracing::Level::INFO)
}

/// One text line.
pub fn text(line: &str) {
    if !wanted() {
        return;
    }
    if let Some(w) = FILE.load().as_ref() {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        w.line(bytes);
        return;
    }
    tracing::info!(target: "tideway::access", "{line}");
}

/// One JSON line: `fields` after `timestamp`, `level`, `target` and `message`, the keys the
/// JSON log gives every event.
pub fn json(fields: serde_json::Map<String, serde_json::Value>) {
    if !wanted() {
        return;
    }
    let mut line = serde_json::Map::with_capacity(fields.len() + 4);
    let now = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    line.insert("timestamp".into(), now.into());
    line.insert("level".into(), "INFO".into());
    line.insert("target".into(), "tideway::access".into());
    line.insert("message".into(), "access".into());
    line.extend(fields);
    let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
    bytes.push(b'\n');
    if let Some(w) = FILE.load().as_ref() {
        w.line(bytes);
        return;
    }
    let _ = io::stderr().lock().write_all(&bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const WAIT: Duration = Duration::from_secs(10);

    fn lines(w: &Writer, from: std::ops::Range<usize>) {
        for i in from {
            w.line(format!("line {i}\n").into_bytes());
        }
        assert!(w.flush(WAIT));
    }

    fn expected(from: std::ops::Range<usize>) -> String {
        from.map(|i| format!("line {i}\n")).collect()
    }

    #[test]
    fn a_reopen_onto_a_fifo_or_a_symlink_is_refused_and_lines_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let w = Writer::start(&path, DEFAULT_QUEUE).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o007, 0, "not readable by others: {mode:o}");
        lines(&w, 0..10);
        let rotated = dir.path().join("access.log.1");
        std::fs::rename(&path, &rotated).unwrap();

        // A FIFO at the path, no reader: the open fails at once (it would block without
        // O_NONBLOCK) and the old file stays in use.
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
        w.reopen();
        lines(&w, 10..20);
        // With a reader the open succeeds: it is not a regular file, so refused all the same.
        let _reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        w.reopen();
        lines(&w, 20..30);
        std::fs::remove_file(&path).unwrap();
        // A symlink at the path is not followed.
        let target = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        w.reopen();
        lines(&w, 30..40);
        assert!(!target.exists());
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), expected(0..40));

        // A file again: the next lines go there, in order.
        std::fs::remove_file(&path).unwrap();
        w.reopen();
        lines(&w, 40..1000);
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), expected(0..40));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), expected(40..1000));
    }

    #[test]
    fn a_fifo_at_the_path_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
        assert!(Writer::start(&path, 4).is_err());
    }

    #[test]
    fn a_hard_link_at_the_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, b"").unwrap();
        let path = dir.path().join("access.log");
        std::fs::hard_link(&elsewhere, &path).unwrap();
        assert!(Writer::start(&path, 4).is_err());
        // With its one name, the same file is taken.
        std::fs::remove_file(&elsewhere).unwrap();
        assert!(Writer::start(&path, 4).is_ok());
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let w = Writer::start(&dir.path().join("access.log"), 1).unwrap();
        let dropped = || crate::metrics::global().access_log_dropped.get();
        let before = dropped();
        // 10,000 lines into a queue of one: some find it full, and none waits.
        for i in 0..10_000 {
            w.line(format!("line {i}\n").into_bytes());
        }
        assert!(w.flush(WAIT));
        let written = std::fs::read_to_string(dir.path().join("access.log"))
            .unwrap()
            .lines()
            .count() as u64;
        assert_eq!(dropped() - before, 10_000 - written);
        assert!(written < 10_000, "{written}");
    }

    #[test]
    fn a_line_cut_short_does_not_run_into_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        let mut f = File::create(&path).unwrap();
        let mut partial = true;
        write_line(&mut f, b"next\n", &mut partial).unwrap();
        assert!(!partial);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "\nnext\n");
    }
}
