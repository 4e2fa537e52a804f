//! What a package installs besides the binary, generated from the clap definitions so they
//! never disagree with the command line: shell completions and man pages.

use clap::CommandFactory;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The binary's name in completions and man pages.
pub const BIN: &str = "tideway";

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut super::Cli::command(), BIN, out);
}

/// Writes tideway(1) to `out`: the page [`man_pages`] writes as tideway.1 (without the
/// `help` subcommand, which has no page).
pub fn man(out: &mut dyn Write) -> std::io::Result<()> {
    let cmd = super::Cli::command().disable_help_subcommand(true);
    clap_mangen::Man::new(cmd).render(out)
}

/// Writes tideway.1 and a page per subcommand (tideway-run.1, tideway-ctl-list.1, ...) into
/// `dir`; returns the files there, sorted.
pub fn man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(super::Cli::command(), dir)?;
    let mut pages = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(BIN) && name.ends_with(".1") {
            pages.push(path);
        }
    }
    pages.sort();
    Ok(pages)
}
