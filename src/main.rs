//! The `tideway` command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tideway::reload::ConfigSource;

#[derive(Parser)]
#[command(
    name = "tideway",
    version,
    about = "A load-balancing proxy for services that scale in and out all day"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// TOML config file.
        #[arg(long, default_value = "conf/tideway.toml", conflicts_with = "nginx")]
        config: PathBuf,
        /// Run from an nginx config instead (upstream/server/location/stream are read as is).
        #[arg(long)]
        nginx: Option<PathBuf>,
        /// Override the admin listen address.
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// Override the data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Take the listening sockets over from a running tideway on the same data_dir: start
        /// this, then send the old process SIGUSR2.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a config file; exit 1 with the errors.
    Check {
        #[arg(long, required_unless_present = "nginx", conflicts_with = "nginx")]
        config: Option<PathBuf>,
        /// Validate an nginx config (and list what tideway ignores in it).
        #[arg(long)]
        nginx: Option<PathBuf>,
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
        /// Registration token (default: env TIDEWAY_REGISTER_TOKEN).
        #[arg(long, env = "TIDEWAY_REGISTER_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// A WebSocket load client: N connections keyed by uid, messages at a set rate,
    /// reconnecting on 1001; prints progress and a final JSON report.
    DemoClient {
        /// WebSocket URL of the proxy; `?KEY=UID` is appended per connection.
        #[arg(long, default_value = "ws://127.0.0.1:8080/")]
        url: String,
        #[arg(long, default_value_t = 100)]
        connections: usize,
        /// Query argument that carries the uid.
        #[arg(long, default_value = "uid")]
        key: String,
        /// uid of the first connection.
        #[arg(long, default_value_t = 1)]
        first_uid: u64,
        /// Messages per second per connection.
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        /// How long to run (e.g. 30s, 5m); until Ctrl-C without it.
        #[arg(long)]
        duration: Option<String>,
        /// Seconds between progress lines.
        #[arg(long, default_value_t = 5)]
        every: u64,
    },
    /// Operate a running tideway through its admin API.
    Ctl {
        /// Admin API URL.
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        admin: String,
        /// Admin token (default: env TIDEWAY_ADMIN_TOKEN, else data/admin.token).
        #[arg(long, env = "TIDEWAY_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(subcommand)]
        cmd: CtlCmd,
    },
}

#[derive(Subcommand)]
enum CtlCmd {
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
        #[arg(long)]
        wait: Option<String>,
    },
    /// Change a backend's weight.
    Weight {
        upstream: String,
        id: String,
        weight: u32,
    },
}

fn rt() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?)
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            config,
            nginx,
            admin,
            data_dir,
            upgrade,
        } => {
            let (mut cfg, source) = match nginx {
                Some(file) => {
                    let (cfg, warnings) = tideway::nginx::load(&file)?;
                    for w in warnings {
                        tracing::warn!("{w}");
                    }
                    (cfg, ConfigSource::Nginx(file))
                }
                None => (tideway::config::load(&config)?, ConfigSource::Toml(config)),
            };
            if let Some(a) = admin {
                cfg.admin.listen = a;
            }
            if let Some(d) = data_dir {
                cfg.store.data_dir = d;
            }
            let shown = format!("{source:?}");
            let mut server = tideway::app::build(&cfg, source, upgrade)?;
            // With --upgrade, this waits for the running process's listening sockets.
            server.bootstrap();
            tracing::info!(config = %shown, upgrade, "tideway starting");
            server.run(pingora::server::RunArgs {
                shutdown_signal: Box::new(tideway::signals::Signals),
            });
            std::process::exit(0);
        }
        Command::Check { config, nginx } => {
            let (path, result) = match (nginx, config) {
                (Some(file), _) => {
                    let r = tideway::nginx::load(&file).map(|(cfg, warnings)| {
                        for w in &warnings {
                            eprintln!("warning: {w}");
                        }
                        cfg
                    });
                    (file, r.map_err(|e| e.to_string()))
                }
                (None, Some(file)) => {
                    let r = tideway::config::load(&file).map_err(|e| e.to_string());
                    (file, r)
                }
                (None, None) => unreachable!("clap requires one"),
            };
            match result {
                Ok(cfg) => {
                    println!(
                        "{}: ok ({} listeners, {} upstreams)",
                        path.display(),
                        cfg.listeners.len(),
                        cfg.upstreams.len()
                    );
                    Ok(())
                }
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1);
                }
            }
        }
        Command::ImportNginx { file } => match tideway::nginx::import(&file) {
            Ok(converted) => {
                for w in &converted.warnings {
                    eprintln!("warning: {w}");
                }
                print!("{}", converted.toml);
                Ok(())
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        },
        Command::DemoBackend {
            listen,
            id,
            tcp,
            register,
            upstream,
            advertise,
            token,
        } => rt()?.block_on(async {
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            let addr = listener.local_addr()?;
            let id = id
                .or_else(|| advertise.clone())
                .unwrap_or_else(|| addr.to_string());
            tracing::info!(%addr, %id, "demo backend listening");
            let server = if tcp {
                tokio::spawn(tideway::demo::serve_tcp(listener, id.clone()))
            } else {
                tokio::spawn(tideway::demo::serve(listener, id.clone()))
            };
            match (register, upstream) {
                (Some(admin), Some(upstream)) => {
                    let reg = tideway::demo::Registration {
                        admin,
                        upstream,
                        token: token.context(
                            "--register needs a token (--token or TIDEWAY_REGISTER_TOKEN)",
                        )?,
                        id,
                        addr: match advertise {
                            Some(a) => tokio::net::lookup_host(&a)
                                .await
                                .with_context(|| format!("--advertise {a}"))?
                                .next()
                                .with_context(|| format!("--advertise {a}: no address"))?,
                            None => addr,
                        },
                    };
                    reg.run_until_sigterm().await?;
                }
                _ => {
                    server.await??;
                }
            }
            Ok(())
        }),
        Command::DemoClient {
            url,
            connections,
            key,
            first_uid,
            rate,
            duration,
            every,
        } => {
            let duration = duration
                .map(|d| tideway::config::parse_duration(&d))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--duration: {e}"))?;
            let report = rt()?.block_on(async {
                let client = tideway::demo_client::Client::start(tideway::demo_client::Options {
                    url,
                    connections,
                    key,
                    first_uid,
                    rate,
                });
                let end = async {
                    match duration {
                        Some(d) => tokio::time::sleep(d).await,
                        None => {
                            let _ = tokio::signal::ctrl_c().await;
                        }
                    }
                };
                tokio::pin!(end);
                let mut progress = tokio::time::interval(std::time::Duration::from_secs(every.max(1)));
                progress.tick().await;
                loop {
                    tokio::select! {
                        () = &mut end => break,
                        _ = progress.tick() => {
                            let r = client.report();
                            eprintln!(
                                "open {} reconnects {} going_away {} abrupt {} sent {} echoed {} spread {:?}",
                                r.open, r.reconnects, r.going_away_closes, r.abrupt_closes, r.sent, r.echoed, r.spread
                            );
                        }
                    }
                }
                client.stop().await
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Ctl { admin, token, cmd } => {
            let token = match token {
                Some(t) => t,
                None => std::fs::read_to_string("data/admin.token")
                    .context("no token: pass --token, set TIDEWAY_ADMIN_TOKEN, or run where data/admin.token is")?
                    .trim()
                    .to_string(),
            };
            use tideway::ctl::CtlCommand as C;
            let cmd = match cmd {
                CtlCmd::List => C::List,
                CtlCmd::Show { upstream, nginx } => C::Show { upstream, nginx },
                CtlCmd::Enable { upstream, id } => C::SetState {
                    upstream,
                    id,
                    state: "active",
                },
                CtlCmd::Disable { upstream, id } => C::SetState {
                    upstream,
                    id,
                    state: "disabled",
                },
                CtlCmd::Drain { upstream, id, wait } => C::Drain { upstream, id, wait },
                CtlCmd::Weight {
                    upstream,
                    id,
                    weight,
                } => C::Weight {
                    upstream,
                    id,
                    weight,
                },
            };
            match rt()?.block_on(tideway::ctl::run(&admin, &token, &cmd)) {
                Ok(serde_json::Value::String(text)) => {
                    print!("{text}");
                    Ok(())
                }
                Ok(v) => {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    Ok(())
                }
                Err(e) => {
                    eprintln!("tideway ctl: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
}
