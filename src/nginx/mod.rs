//! Drop-in for nginx: read an existing nginx config (`upstream`, `server` with
//! `server_name`, `location` with every modifier and nested ones, `proxy_pass`, `return`,
//! `stream`, per-client `limit_req` / `limit_conn`; see [`routes`]), convert what tideway understands, warn about the rest with
//! file:line, and render a live upstream back as an nginx `upstream` block.
//!
//! Imports: `config` (the converted TOML goes through the normal validation) and `pool`
//! (export). Never `proxy` or `admin`.

pub mod convert;
pub mod export;
pub mod limit;
pub mod maps;
pub mod parse;
pub mod realip;
pub mod retry;
pub mod routes;

use crate::config::{Config, ConfigError};
use std::path::Path;

pub use parse::NginxError;

/// Why an nginx config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Nginx(#[from] NginxError),
    #[error("the converted config is invalid: {0}")]
    Config(#[from] ConfigError),
}

/// Parse an nginx config file and convert it to tideway TOML plus warnings.
pub fn import(path: &Path) -> Result<convert::Converted, NginxError> {
    let top = parse::parse_file(path)?;
    let base = path.parent().unwrap_or(Path::new(""));
    let converted = convert::convert(&top, base);
    if !converted.errors.is_empty() {
        return Err(NginxError::Refused(converted.errors));
    }
    Ok(converted)
}

/// Load an nginx config as a validated tideway [`Config`], with the conversion warnings.
pub fn load(path: &Path) -> Result<(Config, Vec<String>), ImportError> {
    let converted = import(path)?;
    let config = crate::config::parse(&converted.toml, &path.with_extension("converted.toml"))?;
    Ok((config, converted.warnings))
}
