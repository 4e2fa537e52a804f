//! The `tideway` command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// mimalloc: less CPU per allocation than glibc's malloc on the request path, and it gives
/// freed memory back to the OS, so RSS falls again after a burst of connections closes.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        #[arg(long, default_value = "conf/tideway.toml")]
        config: PathBuf,
    },
    /// Validate a config file; exit 1 with the errors.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the demo backend (HTTP + WebSocket echo, /health, its id in every answer).
    DemoBackend {
        #[arg(long)]
        listen: String,
        /// Identity to report (default: the listen address).
        #[arg(long)]
        id: Option<String>,
    },
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
        Command::Run { config } => {
            let cfg = tideway::config::load(&config)?;
            let server = tideway::app::build(&cfg)?;
            tracing::info!(config = %config.display(), "tideway starting");
            server.run_forever();
        }
        Command::Check { config } => match tideway::config::load(&config) {
            Ok(cfg) => {
                println!(
                    "{}: ok ({} listeners, {} upstreams)",
                    config.display(),
                    cfg.listeners.len(),
                    cfg.upstreams.len()
                );
                Ok(())
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        },
        Command::DemoBackend { listen, id } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind(&listen)
                    .await
                    .with_context(|| format!("binding {listen}"))?;
                let addr = listener.local_addr()?;
                let id = id.unwrap_or_else(|| addr.to_string());
                tracing::info!(%addr, %id, "demo backend listening");
                tideway::demo::serve(listener, id).await?;
                Ok(())
            })
        }
    }
}
