//! Admin and registration tokens: from the environment, from a file, or generated into
//! `data_dir` (mode 0600) on first start. Tokens are compared in constant time and never logged.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

pub use crate::config::{ADMIN_TOKEN_ENV, REGISTER_TOKEN_ENV};

/// A secret that does not print itself.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

impl Token {
    /// Does `candidate` match, in constant time?
    pub fn matches(&self, candidate: &str) -> bool {
        self.0.as_bytes().ct_eq(candidate.as_bytes()).into()
    }

    /// The secret itself, for clients that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Why a token could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: the token file is empty", .0.display())]
    Empty(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TokenError + '_ {
    move |source| TokenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Resolve a token: env var, then `file`, then `data_dir/generated_name` (created if missing).
pub fn load(
    env: &str,
    file: Option<&Path>,
    data_dir: &Path,
    generated_name: &str,
) -> Result<Token, TokenError> {
    if let Ok(t) = std::env::var(env) {
        if !t.trim().is_empty() {
            return Ok(Token(t.trim().to_string()));
        }
    }
    if let Some(path) = file {
        let t = fs::read_to_string(path).map_err(io(path))?;
        let t = t.trim();
        if t.is_empty() {
            return Err(TokenError::Empty(path.to_path_buf()));
        }
        return Ok(Token(t.to_string()));
    }
    let path = data_dir.join(generated_name);
    if let Ok(t) = fs::read_to_string(&path) {
        if !t.trim().is_empty() {
            return Ok(Token(t.trim().to_string()));
        }
    }
    fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    let token: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(io(&path))?;
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io(&path))?;
    f.write_all(token.as_bytes()).map_err(io(&path))?;
    tracing::info!(path = %path.display(), "generated a token (set {env} to choose one)");
    Ok(Token(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_token_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = load("TIDEWAY_TEST_UNSET_TOKEN", None, dir.path(), "admin.token").unwrap();
        let b = load("TIDEWAY_TEST_UNSET_TOKEN", None, dir.path(), "admin.token").unwrap();
        assert!(a.matches(b.expose()));
        assert!(!a.matches("wrong"));
        let mode = fs::metadata(dir.path().join("admin.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(format!("{a:?}"), "Token(***)");
    }
}
