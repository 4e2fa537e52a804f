//! What `tideway --version` says besides the version: the git commit and the build date.
//!
//! - `TIDEWAY_COMMIT`: the `TIDEWAY_COMMIT` environment variable when set (a build from a
//!   source tarball names its commit so), else `git rev-parse --short=12 HEAD` when the crate
//!   is the top of a git checkout, else `unknown`.
//! - `TIDEWAY_BUILD_DATE`: the UTC date (YYYY-MM-DD) of `SOURCE_DATE_EPOCH` when set
//!   (reproducible builds), else of now.
//!
//! The script reruns when HEAD moves (a commit, a checkout) or either variable changes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// The crate's calendar code (it imports nothing), for the build date.
#[path = "src/config/date.rs"]
#[allow(dead_code)] // MONTHS is for the crate
mod date;

fn main() {
    println!("cargo:rerun-if-env-changed=TIDEWAY_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let commit = std::env::var("TIDEWAY_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            in_checkout()
                .then(|| git(&["rev-parse", "--short=12", "HEAD"]))
                .flatten()
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TIDEWAY_COMMIT={commit}");
    println!("cargo:rustc-env=TIDEWAY_BUILD_DATE={}", build_date());
    watch_head();
}

/// Whether the crate is the top of a git work tree (not a tarball unpacked inside another
/// repository, whose commit would be the wrong one).
fn in_checkout() -> bool {
    let (Some(top), Some(dir)) = (
        git(&["rev-parse", "--show-toplevel"]),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) else {
        return false;
    };
    match (
        Path::new(&top).canonicalize(),
        Path::new(&dir).canonicalize(),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Rerun when HEAD or the branch it names moves (works in worktrees too).
fn watch_head() {
    if !in_checkout() {
        return;
    }
    let (Some(git_dir), Some(common)) = (
        git(&["rev-parse", "--git-dir"]),
        git(&["rev-parse", "--git-common-dir"]),
    ) else {
        return;
    };
    // Relative to the crate's directory, where git ran.
    let here = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let (git_dir, common) = (here.join(git_dir), here.join(common));
    println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        let loose = common.join(&branch);
        if loose.exists() {
            println!("cargo:rerun-if-changed={}", loose.display());
        }
        // Only if it exists: cargo counts a missing watched file as changed, so every build
        // would rerun this script and rebuild the crate (a repository without packed refs).
        // Packing the refs deletes the loose one, which then reruns the script.
        let packed = common.join("packed-refs");
        if packed.exists() {
            println!("cargo:rerun-if-changed={}", packed.display());
        }
    }
}

/// A git command's trimmed output, run in the crate's directory; None if git is missing, this
/// is not a checkout, or the command fails.
fn git(args: &[&str]) -> Option<String> {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")?;
    let out = Command::new("git")
        .args(args)
        .current_dir(Path::new(&dir))
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// The build's date: `SOURCE_DATE_EPOCH` if set, else now, as a UTC YYYY-MM-DD.
fn build_date() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    let (y, m, d) = date::civil((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}
