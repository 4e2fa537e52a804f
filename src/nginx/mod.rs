//! Drop-in for nginx: read an existing nginx config (`upstream`, `server` with
//! `server_name`, `location` with every modifier and nested ones, `proxy_pass`, `return`,
//! `stream`, per-client `limit_req` / `limit_conn`, `allow` / `deny`; see [`routes`]; NGINX
//! Plus's `sticky cookie`, see [`sticky`]), convert what tideway understands, warn about the
//! rest with file:line, and render a live upstream back as an nginx `upstream` block.
//!
//! Imports: `config` (the converted TOML goes through the normal validation) and `pool`
//! (export). Never `proxy` or `admin`.

pub mod access;
pub mod content;
pub mod convert;
pub mod directives;
pub mod export;
pub mod http2;
pub mod limit;
pub mod listen;
pub mod maps;
pub mod parse;
pub mod proxy_ssl;
pub mod realip;
pub mod report;
pub mod resolver;
pub mod retry;
pub mod routes;
pub mod sticky;
pub mod stream;

use crate::config::{Config, ConfigError};
use std::path::Path;

pub use convert::Options;
pub use parse::NginxError;
pub use report::{Class, Report};

/// Why an nginx config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Nginx(#[from] NginxError),
    /// The converted config failed validation: at the nginx file:line it came from.
    #[error("{at}: {msg}")]
    Invalid { at: String, msg: String },
    #[error("the converted config is invalid: {0}")]
    Config(#[from] ConfigError),
}

/// Parse an nginx config file and convert it to tideway TOML plus warnings.
pub fn import(path: &Path) -> Result<convert::Converted, NginxError> {
    import_with(path, Options::default())
}

/// [`import`] with options (`--strict`, `--skip-unproxied`).
pub fn import_with(path: &Path, options: Options) -> Result<convert::Converted, NginxError> {
    let converted = convert_file(path, options)?;
    if !converted.errors.is_empty() {
        return Err(NginxError::Refused(converted.errors));
    }
    Ok(converted)
}

/// Parse and convert, errors in the report rather than returned (only an unreadable or
/// malformed file is an `Err`).
pub fn convert_file(path: &Path, options: Options) -> Result<convert::Converted, NginxError> {
    let top = parse::parse_file(path)?;
    let base = path.parent().unwrap_or(Path::new(""));
    Ok(convert::convert(&top, base, options))
}

/// Load an nginx config as a validated tideway [`Config`], with the conversion warnings.
pub fn load(path: &Path) -> Result<(Config, Vec<String>), ImportError> {
    load_with(path, Options::default())
}

/// [`load`] with options (`--strict`, `--skip-unproxied`).
pub fn load_with(path: &Path, options: Options) -> Result<(Config, Vec<String>), ImportError> {
    let converted = import_with(path, options)?;
    let config = validate(path, &converted.toml)?;
    Ok((config, converted.warnings))
}

/// `tideway check --nginx`: the report, with what validating the converted config found
/// added as errors at their nginx file:line; the config when there are no errors.
pub fn check(path: &Path, options: Options) -> Result<(Report, Option<Config>), NginxError> {
    let mut converted = convert_file(path, options)?;
    if !converted.errors.is_empty() {
        return Ok((converted.report, None));
    }
    match validate(path, &converted.toml) {
        Ok(config) => Ok((converted.report, Some(config))),
        Err(e) => {
            converted
                .report
                .note(report::Finding::from_message(&e.to_string(), Class::Error));
            Ok((converted.report, None))
        }
    }
}

/// Validate the converted TOML; an error names the nginx file:line its table came from
/// (each converted table carries it, as a `# FILE:LINE` comment or `origin`).
fn validate(path: &Path, toml: &str) -> Result<Config, ImportError> {
    let converted = path.with_extension("converted.toml");
    match crate::config::parse(toml, &converted) {
        Ok(c) => Ok(c),
        Err(ConfigError::Invalid {
            path: p, line, msg, ..
        }) if p != converted => Err(ImportError::Invalid {
            at: format!("{}:{line}", p.display()),
            msg,
        }),
        Err(ConfigError::Invalid { line, msg, .. }) => match origin(toml, line) {
            Some(at) => Err(ImportError::Invalid { at, msg }),
            None => Err(ImportError::Invalid {
                at: path.display().to_string(),
                msg,
            }),
        },
        Err(e) => Err(e.into()),
    }
}

/// The nginx file:line of the converted table holding `line` (1-based): its `origin` key, or
/// the `# FILE:LINE` comment above its header.
fn origin(toml: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = toml.lines().collect();
    let mut i = line.min(lines.len()).checked_sub(1)?;
    while !lines[i].starts_with('[') {
        i = i.checked_sub(1)?;
    }
    let table = lines[i + 1..].iter().take_while(|l| !l.starts_with('['));
    for t in table {
        if let Some(o) = t.strip_prefix("origin = ") {
            return Some(o.trim_matches('"').to_string());
        }
    }
    let above = lines[..i].iter().rev().find(|l| !l.trim().is_empty())?;
    above
        .strip_prefix("# ")
        .filter(|a| a.contains(':'))
        .map(str::to_string)
}
