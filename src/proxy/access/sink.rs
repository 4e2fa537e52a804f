//! Where access lines go: with `[server] access_log_file`, to that file as they are (one
//! `write` each, appended), reopened at the same path on SIGUSR1 (nginx's `-s reopen`) so
//! logrotate can move it; without, to stderr with the other logs (text lines as `tracing`
//! events, JSON lines as objects shaped like the JSON log's). `RUST_LOG` can silence the
//! `tideway::access` target either way.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The access-log file, when one is configured.
static FILE: Mutex<Option<(PathBuf, File)>> = Mutex::new(None);

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Write access lines to `path` from now on (created if missing, appended to).
pub fn open(path: &Path) -> std::io::Result<()> {
    let file = open_append(path)?;
    *FILE.lock().unwrap_or_else(|e| e.into_inner()) = Some((path.to_path_buf(), file));
    Ok(())
}

/// Open the file again at its path (SIGUSR1): after a rename, the next lines go to a new
/// file there. On an error the old file stays in use. Returns the path (None: no file).
pub fn reopen() -> std::io::Result<Option<PathBuf>> {
    let mut slot = FILE.lock().unwrap_or_else(|e| e.into_inner());
    let Some((path, file)) = slot.as_mut() else {
        return Ok(None);
    };
    *file = open_append(path)?;
    Ok(Some(path.clone()))
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
    if let Some((_, f)) = FILE.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        let _ = f.write_all(format!("{line}\n").as_bytes());
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
    if let Some((_, f)) = FILE.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        let _ = f.write_all(&bytes);
        return;
    }
    let _ = std::io::stderr().lock().write_all(&bytes);
}
