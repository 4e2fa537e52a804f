//! The `tideway` command line, as clap parses it. In the library so that tests can check the
//! command lines written in docs and deployment files.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// What `tideway --version` prints: the version, the git commit and the build date (set by
/// build.rs; the commit is `unknown` in a build from outside a git checkout).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("TIDEWAY_COMMIT"),
    ", built ",
    env!("TIDEWAY_BUILD_DATE"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "tideway",
    version = VERSION,
    about = "A load-balancing proxy for services that scale in and out all day"
)]
pub struct Cli {
    /// Log lines as text or as JSON objects (every line, the access log included).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the proxy.
    Run {
        /// TOML config file; without it (and without --nginx), the built-in config: a
        /// listener on 127.0.0.1:8080 in front of upstream `app`, hashed by `query:uid`, that
        /// backends fill by registering; admin on 127.0.0.1:9090.
        #[arg(long, conflicts_with = "nginx")]
        config: Option<PathBuf>,
        /// Run from an nginx config instead (upstream/server/location/stream are read as is).
        #[arg(long)]
        nginx: Option<PathBuf>,
        #[command(flatten)]
        import: NginxImport,
        /// Override the admin listen address.
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// Override the data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The built-in config's traffic listener (default 127.0.0.1:8080).
        #[arg(long, conflicts_with_all = ["config", "nginx"])]
        listen: Option<std::net::SocketAddr>,
        /// Take the listening sockets over from a running tideway on the same data_dir: start
        /// this, then send the old process SIGUSR2.
        #[arg(long)]
        upgrade: bool,
    },
    /// The one-command tour: the built-in config plus three in-process demo backends that
    /// register over HTTP; prints what to try.
    Demo {
        /// Traffic listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Admin listener (API, dashboard, metrics).
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: std::net::SocketAddr,
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Demo backends to start.
        #[arg(long, default_value_t = 3)]
        backends: usize,
    },
    /// Validate a config file; exit 1 with the errors.
    Check {
        #[arg(long, required_unless_present = "nginx", conflicts_with = "nginx")]
        config: Option<PathBuf>,
        /// Validate an nginx config and print what became of each directive (read,
        /// approximated, no effect, ignored, skipped, errors), each with its file:line.
        #[arg(long)]
        nginx: Option<PathBuf>,
        #[command(flatten)]
        import: NginxImport,
    },
    /// Print the tideway TOML equivalent of an nginx config (warnings go to stderr).
    ImportNginx { file: PathBuf },
    /// Run the demo backend (HTTP + WebSocket echo, /health, its id in every answer).
    DemoBackend {
        #[arg(long)]
        listen: String,
        /// Identity to report (default: the listen address).
        #[arg(long)]
        id: Option<String>,
        /// Raw TCP echo instead of HTTP/WebSocket: greets each connection with its id.
        #[arg(long)]
        tcp: bool,
        /// Register with this tideway admin URL, heartbeat, and deregister on SIGTERM.
        #[arg(long, requires = "upstream")]
        register: Option<String>,
        /// Upstream to register in.
        #[arg(long)]
        upstream: Option<String>,
        /// Address to register (HOST:PORT as tideway reaches this backend), when it differs
        /// from the listen address (0.0.0.0, containers, NAT).
        #[arg(long, requires = "register")]
        advertise: Option<String>,
        /// Write the registration's secret to this file (mode 0600), for `tideway ctl
        /// --secret-file` (a Kubernetes preStop hook, say).
        #[arg(long, requires = "register")]
        secret_file: Option<PathBuf>,
        /// Registration token (default: env TIDEWAY_REGISTER_TOKEN).
        #[arg(long, env = "TIDEWAY_REGISTER_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Operate a running tideway through its admin API.
    Ctl {
        /// Admin API URL.
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        admin: String,
        /// Admin token (default: env TIDEWAY_ADMIN_TOKEN, else data/admin.token).
        #[arg(long, env = "TIDEWAY_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// File holding a registration's secret (written by `demo-backend --secret-file`):
        /// with the register token, lets this backend drain and deregister itself.
        #[arg(long)]
        secret_file: Option<PathBuf>,
        #[command(flatten)]
        tls: admin_tls::AdminTlsArgs,
        #[command(subcommand)]
        cmd: CtlCmd,
    },
    /// Print a shell completion script (bash: save it as
    /// /usr/share/bash-completion/completions/tideway).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page tideway(1); with --out-dir, write it and one page per subcommand
    /// (tideway-run.1, ...) there.
    Man {
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

/// How `--nginx` configs are imported.
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub struct NginxImport {
    /// With --nginx: every directive tideway would ignore is an error.
    #[arg(long, requires = "nginx")]
    pub strict: bool,
    /// With --nginx: leave out locations nginx serves itself (root, try_files, fastcgi_pass
    /// and the like; tideway answers 404 there) and UDP listens, instead of failing.
    #[arg(long, requires = "nginx")]
    pub skip_unproxied: bool,
}

impl From<NginxImport> for crate::nginx::Options {
    fn from(i: NginxImport) -> Self {
        crate::nginx::Options {
            strict: i.strict,
            skip_unproxied: i.skip_unproxied,
        }
    }
}

#[derive(Subcommand)]
pub enum CtlCmd {
    /// All upstreams and their backends.
    List,
    /// One upstream.
    Show {
        upstream: String,
        /// Print it as an nginx `upstream` block.
        #[arg(long)]
        nginx: bool,
    },
    /// Let a backend take traffic again.
    Enable { upstream: String, id: String },
    /// Stop new traffic to a backend; leave its connections alone.
    Disable { upstream: String, id: String },
    /// Stop new traffic, wait for connections to end (drain_timeout closes tunnels with 1001).
    Drain {
        upstream: String,
        id: String,
        /// Wait up to this long (at most 1h, e.g. 30s) for the connections to end.
        #[arg(long)]
        wait: Option<String>,
        /// Spread this drain's 1001 closes over the last DURATION of drain_timeout (at most
        /// all of it); 0s closes them all at once at the deadline. Default: the upstream's
        /// close_spread.
        #[arg(long, value_name = "DURATION")]
        spread: Option<String>,
    },
    /// Change a backend's weight.
    Weight {
        upstream: String,
        id: String,
        weight: u32,
    },
    /// Drain, then remove a backend (DELETE).
    Deregister { upstream: String, id: String },
}

pub mod admin_tls;
pub mod ctl;
pub mod demo;
pub mod demo_client;
pub mod package;
pub mod tour;

/// Write `text` to stdout, all of it, now. A reader that went away (`tideway ctl list |
/// head -1`) ends the command quietly with status 0: it chose to stop reading, which is no
/// failure of the command (ripgrep does the same). The conventional death by SIGPIPE (141)
/// is not used: Rust ignores SIGPIPE so that a write to a closed socket is an error, and
/// restoring it would let a peer's reset on a network socket kill the command too.
pub fn out(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => other,
    }
}
