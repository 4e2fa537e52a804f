//! The built-in config: what `tideway run` serves without `--config`, and what `tideway demo`
//! starts. One HTTP/WebSocket listener in front of one upstream, `app`, that starts empty and
//! is filled by backends registering themselves (`POST /v1/upstreams/app/backends`), sticky by
//! `?uid=` and rebalanced when backends join.

use std::net::SocketAddr;
use std::path::Path;

/// The name errors and logs give the built-in config.
pub const BUILT_IN: &str = "<built-in config>";
/// The built-in traffic listener.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The upstream of the built-in config.
pub const DEFAULT_UPSTREAM: &str = "app";

/// The built-in config as TOML, for these addresses and data directory.
pub fn default_toml(listen: SocketAddr, admin: SocketAddr, data_dir: &Path) -> String {
    format!(
        r#"# tideway's built-in config (`tideway run` without --config).
[admin]
listen = "{admin}"

[store]
data_dir = "{data_dir}"

[[listener]]
listen = "{listen}"
upstream = "{DEFAULT_UPSTREAM}"

# Empty at start: backends register (POST /v1/upstreams/{DEFAULT_UPSTREAM}/backends).
[upstream.{DEFAULT_UPSTREAM}]
balance = "hash"
hash_key = "query:uid"
drain_timeout = "10s"
rebalance = {{ per_second = 50 }}
scale = {{ target_per_backend = 1000, min = 1, max = 10 }}
"#,
        data_dir = data_dir
            .display()
            .to_string()
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_config_is_valid() {
        let text = default_toml(
            DEFAULT_LISTEN.parse().unwrap(),
            crate::config::DEFAULT_ADMIN_LISTEN.parse().unwrap(),
            Path::new("data"),
        );
        let cfg = crate::config::parse(&text, Path::new(BUILT_IN)).unwrap();
        assert_eq!(cfg.listeners.len(), 1);
        assert_eq!(cfg.upstreams[0].name, DEFAULT_UPSTREAM);
        assert!(cfg.upstreams[0].backends.is_empty());
    }
}
