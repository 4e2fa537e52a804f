//! The nginx directives the importer knows, and what becomes of each: one entry per
//! directive, so reading one more (ignored -> read) is a one-line change here (plus the code
//! that reads it). A directive not in the table is ignored as not understood.
//!
//! The class here is the directive's usual fate; the conversion overrides it where one use
//! differs (an invalid value, `proxy_pass` with a variable, a directive read in one block but not
//! in another), see [`super::report`].
//!
//! Imports: `nginx::parse` only.

use super::parse::Directive;

/// What becomes of a directive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// tideway does what nginx does.
    Read,
    /// tideway does something close; why it differs.
    Approximated(&'static str),
    /// Changes nothing a client or backend sees (process, logging, buffers).
    NoEffect(&'static str),
    /// Not applied; why.
    Ignored(&'static str),
    /// nginx serves content itself: the location holding it fails the import, or is
    /// skipped with `--skip-unproxied`.
    Content,
    /// The import fails: dropping it would expose what nginx protects.
    Refused(&'static str),
}

use Kind::*;

/// Why a content directive outside a location that serves content changes nothing.
pub const CONTENT_WHY: &str =
    "serves files or content only in a location that neither proxies nor returns; such a location fails the import (or is skipped with --skip-unproxied)";

const ACCESS: Kind =
    Refused("is access control, which tideway does not implement; remove it only if the backend enforces the same rule");
const PROCESS: Kind = NoEffect("is an nginx process setting");
const LOGS: Kind = NoEffect(
    "is logging; tideway writes its own access log ([server] access_log_file, nginx's combined format)",
);
const BUFFERS: Kind =
    NoEffect("sizes nginx's buffers; tideway streams bodies with its own bounded buffers");
const SOCKET: Kind = Ignored("tunes a socket or a cache tideway does not expose");
const TLS_PARAMS: Kind =
    Approximated("tideway uses rustls's protocol versions (TLS 1.2 and 1.3) and cipher suites");
/// nginx's client timeouts: tideway's are a listener's TOML `limits`.
const CLIENT_TIMEOUT: Kind =
    Ignored("a listener's TOML limits set tideway's client timeouts (header_timeout, body_timeout, send_timeout)");
const TLS_CLIENT_CERT: Kind = Ignored("tideway does not send client certificates to backends");

/// Every directive the importer knows by name.
pub const TABLE: &[(&str, Kind)] = &[
    // Blocks and routing.
    ("http", Read),
    ("stream", Read),
    ("server", Read),
    ("upstream", Read),
    ("location", Read),
    ("listen", Read),
    ("server_name", Read),
    ("return", Read),
    ("proxy_pass", Read),
    // Per-location settings.
    ("proxy_connect_timeout", Read),
    ("proxy_send_timeout", Read),
    ("proxy_read_timeout", Read),
    ("client_max_body_size", Read),
    ("proxy_timeout", Read),
    // Retries.
    ("proxy_next_upstream", Read),
    ("proxy_next_upstream_tries", Read),
    ("proxy_next_upstream_timeout", Read),
    // Upstream blocks.
    ("hash", Read),
    ("least_conn", Read),
    ("random", Read),
    ("ip_hash", Approximated("becomes a consistent hash of the client address; clients may land on other backends than with nginx")),
    ("keepalive", Approximated("tideway keeps its own pool of idle upstream connections")),
    ("keepalive_requests", Approximated("tideway keeps its own pool of idle upstream connections")),
    ("keepalive_time", Approximated("tideway keeps its own pool of idle upstream connections")),
    ("zone", NoEffect("shared memory for nginx's workers; tideway's threads share one pool")),
    ("sticky", Read),
    ("resolver", Read),
    // Headers: values compiled at load (one naming a variable tideway does not read is left out
    // and reported as ignored, with file:line).
    ("proxy_set_header", Read),
    ("add_header", Read),
    ("map", Read),
    // Per-client limits.
    ("limit_req_zone", Read),
    ("limit_conn_zone", Read),
    ("limit_req", Read),
    ("limit_conn", Read),
    ("limit_req_status", Read),
    ("limit_conn_status", Read),
    // Client address.
    ("set_real_ip_from", Read),
    ("real_ip_header", Read),
    ("real_ip_recursive", Read),
    // TLS.
    ("ssl_certificate", Read),
    ("ssl_certificate_key", Read),
    ("ssl_protocols", TLS_PARAMS),
    ("ssl_ciphers", TLS_PARAMS),
    ("ssl_prefer_server_ciphers", TLS_PARAMS),
    ("ssl_ecdh_curve", TLS_PARAMS),
    ("http2", Read),
    ("http2_max_concurrent_streams", Read),
    ("http2_push", Ignored("tideway pushes nothing (HTTP/2 server push is not supported)")),
    ("http2_push_preload", Ignored("tideway pushes nothing (HTTP/2 server push is not supported)")),
    ("http2_chunk_size", BUFFERS),
    ("http2_body_preread_size", BUFFERS),
    ("http2_recv_buffer_size", BUFFERS),
    ("http2_streams_index_size", NoEffect("sizes nginx's lookup tables")),
    ("ssl_session_cache", NoEffect("tideway keeps rustls's session cache")),
    ("ssl_session_timeout", NoEffect("tideway keeps rustls's session cache")),
    ("ssl_session_tickets", NoEffect("tideway keeps rustls's session cache")),
    ("proxy_ssl", Read),
    ("proxy_ssl_verify", Read),
    ("proxy_ssl_server_name", Read),
    ("proxy_ssl_name", Read),
    ("proxy_ssl_trusted_certificate", Read),
    ("proxy_ssl_certificate", TLS_CLIENT_CERT),
    ("proxy_ssl_certificate_key", TLS_CLIENT_CERT),
    // Access control: never dropped.
    ("allow", Read),
    ("deny", Read),
    ("satisfy", Read),
    ("auth_basic", ACCESS),
    ("auth_basic_user_file", ACCESS),
    ("auth_request", ACCESS),
    ("auth_request_set", ACCESS),
    ("auth_jwt", ACCESS),
    ("limit_except", ACCESS),
    // Content nginx serves itself.
    ("root", Content),
    ("alias", Content),
    ("index", Content),
    ("try_files", Content),
    ("autoindex", Content),
    ("fastcgi_pass", Content),
    ("uwsgi_pass", Content),
    ("scgi_pass", Content),
    ("grpc_pass", Content),
    ("memcached_pass", Content),
    ("empty_gif", Content),
    ("stub_status", Content),
    ("fastcgi_param", Content),
    ("fastcgi_index", Content),
    ("fastcgi_split_path_info", Content),
    ("uwsgi_param", Content),
    ("scgi_param", Content),
    // How tideway talks to backends.
    ("proxy_buffering", Approximated("tideway streams responses to the client as they come, as with proxy_buffering off")),
    ("proxy_request_buffering", Approximated("tideway streams request bodies to the backend, as with proxy_request_buffering off")),
    ("proxy_redirect", Ignored("tideway does not rewrite Location or Refresh headers")),
    ("if", Ignored("conditions are not evaluated; the directives inside are ignored")),
    ("error_page", Ignored("tideway answers its own errors and relays the backend's")),
    ("proxy_intercept_errors", Ignored("tideway relays the backend's error answers")),
    ("rewrite", Ignored("tideway does not rewrite request URIs (proxy_pass with a URI part does)")),
    ("gzip", Ignored("tideway does not compress responses")),
    ("server_tokens", Ignored("tideway sends no Server header of its own")),
    ("proxy_hide_header", Ignored("tideway relays the backend's response headers")),
    ("proxy_pass_header", Ignored("tideway relays the backend's response headers")),
    ("proxy_cache", Ignored("tideway caches nothing")),
    ("client_body_timeout", CLIENT_TIMEOUT),
    ("client_header_timeout", CLIENT_TIMEOUT),
    ("send_timeout", CLIENT_TIMEOUT),
    ("keepalive_timeout", Ignored("tideway has its own client idle timeout")),
    ("client_header_buffer_size", Ignored("tideway has its own head size limit")),
    ("large_client_header_buffers", Read),
    // Process, logging, buffers.
    ("user", PROCESS),
    ("worker_processes", NoEffect("is an nginx process setting; tideway's is [server] threads")),
    ("worker_rlimit_nofile", PROCESS),
    ("worker_shutdown_timeout", PROCESS),
    ("pid", PROCESS),
    ("daemon", PROCESS),
    ("master_process", PROCESS),
    ("events", PROCESS),
    ("load_module", PROCESS),
    ("env", PROCESS),
    ("thread_pool", PROCESS),
    ("error_log", LOGS),
    ("access_log", LOGS),
    ("log_format", LOGS),
    ("log_not_found", LOGS),
    ("types", NoEffect("maps file names to types for files nginx serves")),
    ("default_type", NoEffect("maps file names to types for files nginx serves")),
    ("charset", NoEffect("applies to files nginx serves")),
    ("sendfile", NoEffect("applies to files nginx serves")),
    ("tcp_nopush", NoEffect("applies to files nginx serves")),
    ("tcp_nodelay", SOCKET),
    ("open_file_cache", NoEffect("applies to files nginx serves")),
    ("server_names_hash_bucket_size", NoEffect("sizes nginx's lookup tables")),
    ("server_names_hash_max_size", NoEffect("sizes nginx's lookup tables")),
    ("types_hash_max_size", NoEffect("sizes nginx's lookup tables")),
    ("types_hash_bucket_size", NoEffect("sizes nginx's lookup tables")),
    ("map_hash_bucket_size", NoEffect("sizes nginx's lookup tables")),
    ("variables_hash_max_size", NoEffect("sizes nginx's lookup tables")),
    ("client_body_temp_path", BUFFERS),
    ("client_body_buffer_size", BUFFERS),
    ("proxy_temp_path", BUFFERS),
    ("fastcgi_temp_path", BUFFERS),
    ("uwsgi_temp_path", BUFFERS),
    ("scgi_temp_path", BUFFERS),
    ("proxy_buffer_size", BUFFERS),
    ("proxy_buffers", BUFFERS),
    ("proxy_busy_buffers_size", BUFFERS),
    ("proxy_max_temp_file_size", BUFFERS),
    ("proxy_temp_file_write_size", BUFFERS),
];

/// The table's kind for `name`; a name not in it is ignored as not understood.
pub fn kind(name: &str) -> Kind {
    TABLE
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(Ignored("is not understood"), |(_, k)| *k)
}

/// What becomes of this use of the directive: the table's kind, refined by its arguments
/// where they decide it.
pub fn classify(d: &Directive) -> Kind {
    let arg = |i: usize| d.args.get(i).map(String::as_str).unwrap_or_default();
    match d.name.as_str() {
        "return" if d.args.iter().any(|a| a.contains('$')) => Approximated(
            "variables in the text or URL are not expanded: tideway sends them as written",
        ),
        "proxy_http_version" if arg(0) == "1.1" => Read,
        "proxy_http_version" => Approximated("tideway always speaks HTTP/1.1 to backends"),
        "proxy_redirect" if arg(0) == "off" => Read,
        "proxy_buffering" | "proxy_request_buffering" if arg(0) == "off" => Read,
        "autoindex" if arg(0) == "off" => NoEffect("is off"),
        "sticky" if arg(0) != "cookie" => Ignored("is read only in its \"cookie\" form"),
        "random" if arg(0) != "two" => {
            Approximated("becomes p2c (two random choices, the less loaded wins)")
        }
        name => kind(name),
    }
}

/// Handlers that make nginx answer a location itself: a location holding one is not proxied.
pub fn serves_content(d: &Directive) -> bool {
    kind(&d.name) == Content
        && !matches!(
            d.name.as_str(),
            "root" | "index" | "fastcgi_param" | "fastcgi_index" | "uwsgi_param" | "scgi_param"
        )
        && classify(d) == Content
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_listed_once() {
        let mut names: Vec<&str> = TABLE.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
        assert_eq!(kind("no_such_directive"), Ignored("is not understood"));
    }

    #[test]
    fn return_with_variables_is_approximated() {
        let at = |args: &[&str]| Directive {
            name: "return".into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            block: None,
            file: std::sync::Arc::new(std::path::PathBuf::new()),
            line: 1,
        };
        assert_eq!(classify(&at(&["204"])), Read);
        assert_eq!(classify(&at(&["200", "ok"])), Read);
        assert!(matches!(
            classify(&at(&["200", "ims=$http_if_modified_since"])),
            Approximated(_)
        ));
        assert!(matches!(
            classify(&at(&["https://$host$request_uri"])),
            Approximated(_)
        ));
    }
}
