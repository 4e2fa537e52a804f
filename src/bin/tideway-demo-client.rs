//! `tideway-demo-client`: N uid-keyed WebSockets through a proxy, messages at a set rate,
//! progress on stderr and a JSON report on stdout (see [`tideway::cli::demo_client`]). A binary
//! of its own so that the proxy's binary does not carry a WebSocket client.

use clap::Parser;
use tideway::cli::demo_client::{Args, Client, Options, Report};

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let duration = args
        .duration
        .as_deref()
        .map(tideway::config::parse_duration)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--duration: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let every = std::time::Duration::from_secs(args.every.max(1));
    let options = Options {
        url: args.url,
        connections: args.connections,
        key: args.key,
        first_uid: args.first_uid,
        rate: args.rate,
    };
    let report = rt.block_on(run(options, duration, every));
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Run until `duration` is over (or Ctrl-C without one), a progress line every `every`.
async fn run(
    options: Options,
    duration: Option<std::time::Duration>,
    every: std::time::Duration,
) -> Report {
    let client = Client::start(options);
    let end = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    tokio::pin!(end);
    let mut progress = tokio::time::interval(every);
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
}
