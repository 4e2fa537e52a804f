//! The `tideway` command line.

use anyhow::Context;
use clap::Parser;
use tideway::cli::{Cli, Command, CtlCmd, LogFormat};
use tideway::server::reload::ConfigSource;

fn rt() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Colours only on a terminal: a log file gets plain text.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    tideway::proxy::access::set_json(cli.log_format == LogFormat::Json);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
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
            let (mut cfg, source) = match nginx {
                Some(file) => {
                    let options = import.into();
                    let (cfg, warnings) = tideway::nginx::load_with(&file, options)?;
                    for w in warnings {
                        tracing::warn!("{w}");
                    }
                    (cfg, ConfigSource::Nginx(file, options))
                }
                None => match config {
                    Some(file) => (tideway::config::load(&file)?, ConfigSource::Toml(file)),
                    None => {
                        use tideway::config::default::{default_toml, BUILT_IN, DEFAULT_LISTEN};
                        let text = default_toml(
                            listen.unwrap_or(DEFAULT_LISTEN.parse()?),
                            admin.unwrap_or(tideway::config::DEFAULT_ADMIN_LISTEN.parse()?),
                            data_dir
                                .as_deref()
                                .unwrap_or(std::path::Path::new(tideway::config::DEFAULT_DATA_DIR)),
                        );
                        let cfg = tideway::config::parse(&text, std::path::Path::new(BUILT_IN))?;
                        (cfg, ConfigSource::BuiltIn(text))
                    }
                },
            };
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
        } => match tideway::nginx::check(&file, import.into()) {
            Ok((report, config)) => {
                print!("{}", report.render());
                match config {
                    Some(cfg) => {
                        println!(
                            "{}: ok ({} listeners, {} upstreams)",
                            file.display(),
                            cfg.listeners.len(),
                            cfg.upstreams.len()
                        );
                        Ok(())
                    }
                    None => {
                        for e in report.lines(tideway::nginx::Class::Error) {
                            eprintln!("{e}");
                        }
                        std::process::exit(1);
                    }
                }
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        },
        Command::Check {
            config: Some(file), ..
        } => match tideway::config::load(&file) {
            Ok(cfg) => {
                println!(
                    "{}: ok ({} listeners, {} upstreams)",
                    file.display(),
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
        Command::Check { .. } => unreachable!("clap requires --config or --nginx"),
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
                    let reg = tideway::cli::demo::Registration {
                        admin,
                        upstream,
                        token: token.context(
                            "--register needs a token (--token or TIDEWAY_REGISTER_TOKEN)",
                        )?,
                        id,
                        secret_file,
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
        Command::Ctl {
            admin,
            token,
            secret_file,
            cmd,
        } => {
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
                    .context("no token: pass --token, set TIDEWAY_ADMIN_TOKEN, or run where data/admin.token is")?
                    .trim()
                    .to_string(),
            };
            use tideway::cli::ctl::CtlCommand as C;
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
            };
            match rt()?.block_on(tideway::cli::ctl::run(
                &admin,
                &token,
                secret.as_deref(),
                &cmd,
            )) {
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
