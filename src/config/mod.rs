//! Configuration: the TOML file as written by the operator, validated into the internal types
//! the rest of tideway uses.
//!
//! Pipeline: read file -> deserialize into `file::*` (serde, `deny_unknown_fields`) -> validate
//! and resolve -> [`Config`]. The internal types have no serde derives for reading, so nothing
//! downstream can see an unvalidated value. Every error names the file, the line and the column,
//! and what was expected.
//!
//! Imports: nothing else in tideway (config sits at the bottom of the module graph).

pub mod access;
pub mod admission;
pub mod date;
pub mod default;
pub mod dns;
mod duration;
mod error;
pub mod etcd;
mod file;
pub mod headers;
pub mod key_expr;
pub mod limit;
pub mod names;
pub mod real_ip;
pub mod reload;
pub mod routes;
pub mod scope;
pub mod sticky;
pub mod tls;
mod types;
pub mod upstream_tls;

pub use access::AccessList;
pub use admission::AdmissionConfig;
pub use duration::parse_duration;
pub use error::ConfigError;
pub use limit::{ClientLimit, LimitRule, LimitZone, ZoneKind};
pub use real_ip::{RealIp, RealIpHeader};
pub use routes::{LocationConfig, PathRule, RouteAction, RouteSettings, ServerConfig};
pub use scope::RegistrationScope;
pub use sticky::StickyCookie;
pub use types::*;

use std::path::Path;

/// Read and validate a TOML config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Validate TOML text; `path` is used for error messages and to resolve relative paths.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw: file::FileConfig = toml::from_str(text).map_err(|e| {
        let (line, col) = e
            .span()
            .map(|s| error::line_col(text, s.start))
            .unwrap_or((0, 0));
        ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            col,
            msg: e.message().trim().to_string(),
        }
    })?;
    raw.validate(text, path)
}

/// Would `id` hash on the ketama ring exactly like a shorter id? `NAME:` and `unix:NAME` split
/// into the same host and port as `NAME` (nginx's split).
pub fn hashes_like_another(id: &str) -> bool {
    id.ends_with(':') || id.starts_with("unix:")
}

/// Check a backend id: 1-128 characters of letters, digits and `-_.:@`, not ending in `:` and
/// not starting with `unix:`. The ketama ring hashes `NAME:` and `unix:NAME` exactly like
/// `NAME` (nginx's host and port split), so such an id could take over another's keys.
pub fn validate_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:@".contains(c));
    if !ok {
        return Err(format!(
            "invalid backend id {id:?}; expected 1-128 letters, digits or - _ . : @"
        ));
    }
    if hashes_like_another(id) {
        return Err(format!(
            "invalid backend id {id:?}: it may not end with ':' or start with 'unix:' (it would hash like another id)"
        ));
    }
    Ok(())
}

pub use file::resolve_addr;

#[cfg(test)]
mod id_tests {
    use super::validate_id;

    #[test]
    fn ids_that_hash_like_another_are_refused() {
        for ok in ["worker-7", "10.0.0.1:2346", "chat@host"] {
            assert!(validate_id(ok).is_ok(), "{ok}");
        }
        for bad in ["worker-7:", "unix:worker-7", "", "a b", "x/y"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn access_log_false_beside_access_log_file_is_refused_with_its_line() {
        let path = std::path::Path::new("t.toml");
        let text = "[server]\nthreads = 1\naccess_log = false\naccess_log_file = \"/tmp/a.log\"\n";
        match super::parse(text, path) {
            Err(super::ConfigError::Invalid { line, msg, .. }) => {
                assert_eq!(line, 3);
                assert!(
                    msg.contains("access_log = false with access_log_file"),
                    "{msg}"
                );
            }
            other => panic!("{other:?}"),
        }
        let on = super::parse(&text.replace("false", "true"), path).unwrap();
        assert!(on.server.access_log);
        let alone = super::parse("[server]\naccess_log_file = \"/tmp/a.log\"\n", path).unwrap();
        assert!(alone.server.access_log);
    }

    #[test]
    fn one_thread_runs_without_work_stealing_unless_asked() {
        let path = std::path::Path::new("t.toml");
        let stealing = |text: &str| super::parse(text, path).unwrap().server.work_stealing;
        assert!(!stealing("[server]\nthreads = 1\n"));
        assert!(stealing("[server]\nthreads = 2\n"));
        assert!(stealing("[server]\nthreads = 1\nwork_stealing = true\n"));
        assert!(!stealing("[server]\nthreads = 4\nwork_stealing = false\n"));
    }
}
