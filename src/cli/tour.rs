//! `tideway demo`: the one-command tour. It starts the proxy on the built-in config and, on a
//! thread of their own, demo backends that register over HTTP like any self-registering
//! server (register, heartbeat), then prints what to try: curl, a WebSocket client, the
//! dashboard with its token, and `tideway ctl`.

use crate::admin::token;
use crate::cli::demo::Registration;
use crate::config::default::{default_toml, BUILT_IN, DEFAULT_UPSTREAM};
use crate::server::reload::ConfigSource;
use std::net::SocketAddr;
use std::path::PathBuf;

/// What the tour starts.
#[derive(Clone, Debug)]
pub struct Tour {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
    pub backends: usize,
}

/// Why the tour could not start.
#[derive(Debug, thiserror::Error)]
pub enum TourError {
    #[error("config: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("token: {0}")]
    Token(#[from] token::TokenError),
    #[error(transparent)]
    Start(#[from] crate::server::app::StartError),
}

/// Run the tour until the process is told to stop (Ctrl-C).
pub fn run(t: Tour) -> Result<(), TourError> {
    let text = default_toml(t.listen, t.admin, &t.data_dir);
    let cfg = crate::config::parse(&text, std::path::Path::new(BUILT_IN))?;
    // The same tokens the proxy will load (from the environment, or generated into data_dir).
    let admin_token = token::load(token::ADMIN_TOKEN_ENV, None, &t.data_dir, "admin.token")?;
    let register_token = token::load(
        token::REGISTER_TOKEN_ENV,
        None,
        &t.data_dir,
        "register.token",
    )?;
    let mut server = crate::server::app::build(&cfg, ConfigSource::BuiltIn(text), false)?;
    server.bootstrap();
    let admin_url = format!("http://{}", t.admin);
    let (tour, register, admin_token) = (
        t.clone(),
        register_token.expose().to_string(),
        admin_token.expose().to_string(),
    );
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the demo backends");
        rt.block_on(backends(tour, admin_url, register, admin_token));
    });
    server.run(pingora::server::RunArgs {
        shutdown_signal: Box::new(crate::server::signals::Signals),
    });
    Ok(())
}

/// Start the demo backends, register them, print the tour, and heartbeat for ever.
async fn backends(t: Tour, admin_url: String, register: String, admin_token: String) {
    let client = reqwest::Client::new();
    // The admin API comes up with the proxy; polled, for at most 30 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !client
        .get(format!("{admin_url}/healthz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        if std::time::Instant::now() >= deadline {
            eprintln!("demo: the admin API at {admin_url} did not come up within 30 s; no demo backends started");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut keep = Vec::new();
    for i in 1..=t.backends {
        let id = format!("demo-{i}");
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("demo backend {id}: {e}");
                continue;
            }
        };
        let Ok(addr) = listener.local_addr() else {
            continue;
        };
        tokio::spawn(crate::cli::demo::serve(listener, id.clone()));
        let reg = Registration {
            admin: admin_url.clone(),
            upstream: DEFAULT_UPSTREAM.into(),
            token: register.clone(),
            id: id.clone(),
            addr,
            secret_file: None,
        };
        match reg.register(&client).await {
            Ok(secret) => {
                let _ = crate::cli::out(&format!("  registered {id} at {addr}\n"));
                keep.push((reg, secret));
            }
            Err(e) => eprintln!("demo backend {id} could not register: {e}"),
        }
    }
    let (l, a) = (t.listen, t.admin);
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "tideway".into());
    // The demo client is a binary of its own, installed next to this one.
    let ws_client = std::env::current_exe()
        .map(|p| {
            p.with_file_name("tideway-demo-client")
                .display()
                .to_string()
        })
        .unwrap_or_else(|_| "tideway-demo-client".into());
    let _ = crate::cli::out(&format!(
        "\ntideway demo: {} backends registered in upstream {DEFAULT_UPSTREAM:?}.\n\
         Try:\n\
         \x20 curl 'http://{l}/hello?uid=42'                 # sticky: uid 42 always lands on one backend\n\
         \x20 {ws_client} --url ws://{l}/chat --connections 50 --duration 20s\n\
         \x20 python3 -m websockets 'ws://{l}/chat?uid=42'    # any WebSocket client: messages echo\n\
         \x20 dashboard: http://{a}/#token={admin_token}\n\
         \x20 TIDEWAY_ADMIN_TOKEN={admin_token} {exe} ctl --admin http://{a} list\n\
         \x20 curl http://{a}/metrics\n\
         Ctrl-C stops it.\n",
        keep.len()
    ));
    let beats = keep.into_iter().map(|(reg, secret)| {
        let client = client.clone();
        async move {
            reg.keep_alive(&client, secret, std::future::pending())
                .await;
        }
    });
    futures_util::future::join_all(beats).await;
}
