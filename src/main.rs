//! The `tideway` command line.

use anyhow::Context;
use clap::Parser;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tideway::cli::{Cli, Command, CtlCmd, LogFormat, NginxImport};
use tideway::config::Config;
use tideway::server::reload::ConfigSource;

fn rt() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    match cli.command {
        Command::Run {
            config,
            nginx,
            import,
            admin,
            data_dir,
            listen,
            upgrade,
        } => {
            tideway::server::signals::hold_sigusr1()?;
            let (mut cfg, source) = load_config(config, nginx, import, listen, admin, &data_dir)?;
            if let Some(a) = admin {
                cfg.admin.listen = a;
            }
            if let Some(d) = data_dir {
                cfg.store.data_dir = d;
            }
            let shown = format!("{source:?}");
            let mut server = tideway::server::app::build(&cfg, source, upgrade)?;
            // With --upgrade, this waits for the running process's listening sockets.
            server.bootstrap();
            tracing::info!(config = %shown, upgrade, "tideway starting");
            server.run(pingora::server::RunArgs {
                shutdown_signal: Box::new(tideway::server::signals::Signals),
            });
            // The access-log file's last lines, still queued for its writer thread.
            tideway::proxy::access::sink::flush(std::time::Duration::from_secs(2));
            std::process::exit(0);
        }
        Command::Demo {
            listen,
            admin,
            data_dir,
            backends,
        } => {
            tideway::cli::tour::run(tideway::cli::tour::Tour {
                listen,
                admin,
                data_dir,
                backends,
            })?;
            std::process::exit(0);
        }
        Command::Check {
            config: _,
            nginx: Some(file),
            import,
        } => check_nginx(&file, import),
        Command::Check {
            config: Some(file), ..
        } => check_toml(&file),
        Command::Check { .. } => unreachable!("clap requires --config or --nginx"),
        Command::ImportNginx { file } => import_nginx(&file),
        Command::DemoBackend {
            listen,
            id,
            tcp,
            register,
            upstream,
            advertise,
            secret_file,
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
                tokio::spawn(tideway::cli::demo::serve_tcp(listener, id.clone()))
            } else {
                tokio::spawn(tideway::cli::demo::serve(listener, id.clone()))
            };
            match (register, upstream) {
                (Some(admin), Some(upstream)) => {
                    let token = token
                        .context("--register needs a token (--token or TIDEWAY_REGISTER_TOKEN)")?;
                    let addr = match advertise {
                        Some(a) => advertised(&a).await?,
                        None => addr,
                    };
                    let reg = tideway::cli::demo::Registration {
                        admin,
                        upstream,
                        token,
                        id,
                        secret_file,
                        addr,
                    };
                    reg.run_until_sigterm().await?;
                }
                _ => {
                    server.await??;
                }
            }
            Ok(())
        }),
        Command::Ctl {
            admin,
            token,
            secret_file,
            tls,
            cmd,
        } => ctl(&admin, token, secret_file, (tls, cmd)),
        // Rendered whole, then written through cli::out: a reader that goes away (`| head`)
        // ends the command quietly, as for ctl.
        Command::Completions { shell } => {
            let mut text = Vec::new();
            tideway::cli::package::completions(shell, &mut text);
            Ok(tideway::cli::out(&String::from_utf8_lossy(&text))?)
        }
        Command::Man { out_dir: None } => {
            let mut page = Vec::new();
            tideway::cli::package::man(&mut page)?;
            Ok(tideway::cli::out(&String::from_utf8_lossy(&page))?)
        }
        Command::Man { out_dir: Some(dir) } => {
            let files = tideway::cli::package::man_pages(&dir)?;
            let list: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
            Ok(tideway::cli::out(&list)?)
        }
    }
}

/// Logs on stderr, as text (colours only on a terminal) or JSON; the access log follows.
fn init_logs(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    tideway::proxy::access::set_json(format == LogFormat::Json);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

/// The config `tideway run` starts from: an nginx file, a TOML file, or the built-in one
/// (on `listen`, `admin` and `data_dir`), and where it came from (for reloads).
fn load_config(
    config: Option<PathBuf>,
    nginx: Option<PathBuf>,
    import: NginxImport,
    listen: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    data_dir: &Option<PathBuf>,
) -> anyhow::Result<(Config, ConfigSource)> {
    if let Some(file) = nginx {
        let options = import.into();
        let (cfg, warnings) = tideway::nginx::load_with(&file, options)?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        return Ok((cfg, ConfigSource::Nginx(file, options)));
    }
    if let Some(file) = config {
        return Ok((tideway::config::load(&file)?, ConfigSource::Toml(file)));
    }
    use tideway::config::default::{default_toml, BUILT_IN, DEFAULT_LISTEN};
    let text = default_toml(
        listen.unwrap_or(DEFAULT_LISTEN.parse()?),
        admin.unwrap_or(tideway::config::DEFAULT_ADMIN_LISTEN.parse()?),
        data_dir
            .as_deref()
            .unwrap_or(Path::new(tideway::config::DEFAULT_DATA_DIR)),
    );
    let cfg = tideway::config::parse(&text, Path::new(BUILT_IN))?;
    Ok((cfg, ConfigSource::BuiltIn(text)))
}

/// `tideway check --nginx FILE`: the directive report, then ok or the errors (exit 1).
fn check_nginx(file: &Path, import: NginxImport) -> anyhow::Result<()> {
    let (report, config) = match tideway::nginx::check(file, import.into()) {
        Ok(checked) => checked,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    tideway::cli::out(&report.render())?;
    let Some(cfg) = config else {
        for e in report.lines(tideway::nginx::Class::Error) {
            eprintln!("{e}");
        }
        std::process::exit(1);
    };
    print_ok(file, &cfg)
}

/// `tideway check --config FILE`: ok, or the error (exit 1).
fn check_toml(file: &Path) -> anyhow::Result<()> {
    match tideway::config::load(file) {
        Ok(cfg) => print_ok(file, &cfg),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}

fn print_ok(file: &Path, cfg: &Config) -> anyhow::Result<()> {
    tideway::cli::out(&format!(
        "{}: ok ({} listeners, {} upstreams)\n",
        file.display(),
        cfg.listeners.len(),
        cfg.upstreams.len()
    ))?;
    Ok(())
}

/// `tideway import-nginx FILE`: the TOML on stdout, warnings on stderr.
fn import_nginx(file: &Path) -> anyhow::Result<()> {
    match tideway::nginx::import(file) {
        Ok(converted) => {
            for w in &converted.warnings {
                eprintln!("warning: {w}");
            }
            tideway::cli::out(&converted.toml)?;
            Ok(())
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}

/// The address `--advertise HOST:PORT` names.
async fn advertised(a: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(a)
        .await
        .with_context(|| format!("--advertise {a}"))?
        .next()
        .with_context(|| format!("--advertise {a}: no address"))
}

/// `tideway ctl`: one admin API call, its answer on stdout (exit 1 on error).
fn ctl(
    admin: &str,
    token: Option<String>,
    secret_file: Option<PathBuf>,
    (tls, cmd): (tideway::cli::admin_tls::AdminTlsArgs, CtlCmd),
) -> anyhow::Result<()> {
    let secret = secret_file
        .map(|f| {
            std::fs::read_to_string(&f)
                .map(|s| s.trim().to_string())
                .with_context(|| format!("--secret-file {}", f.display()))
        })
        .transpose()?;
    let token = match token {
        Some(t) => t,
        None => std::fs::read_to_string("data/admin.token")
            .context(
                "no token: pass --token, set TIDEWAY_ADMIN_TOKEN, or run where data/admin.token is",
            )?
            .trim()
            .to_string(),
    };
    let cmd = ctl_command(cmd);
    let client = tideway::cli::admin_tls::client(&tls, admin)?;
    match rt()?.block_on(tideway::cli::ctl::run_with(
        &client,
        admin,
        &token,
        secret.as_deref(),
        &cmd,
    )) {
        Ok(serde_json::Value::String(text)) => {
            tideway::cli::out(&text)?;
            Ok(())
        }
        Ok(v) => {
            tideway::cli::out(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
            Ok(())
        }
        Err(e) => {
            eprintln!("tideway ctl: {e}");
            std::process::exit(1);
        }
    }
}

/// The command line's `ctl` subcommand as the library's call.
fn ctl_command(cmd: CtlCmd) -> tideway::cli::ctl::CtlCommand {
    use tideway::cli::ctl::CtlCommand as C;
    match cmd {
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
        CtlCmd::Drain {
            upstream,
            id,
            wait,
            spread,
        } => C::Drain {
            upstream,
            id,
            wait,
            spread,
        },
        CtlCmd::Deregister { upstream, id } => C::Deregister { upstream, id },
        CtlCmd::Weight {
            upstream,
            id,
            weight,
        } => C::Weight {
            upstream,
            id,
            weight,
        },
    }
}
