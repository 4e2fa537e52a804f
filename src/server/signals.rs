//! Process signals, as nginx users expect them:
//!
//! - `SIGTERM`, `SIGQUIT` (`nginx -s quit`): graceful shutdown. Listeners stop accepting, idle
//!   keep-alive connections close, requests in flight are served, every WebSocket gets a 1001
//!   close, and the process exits within `shutdown_grace`.
//! - `SIGINT`: fast shutdown.
//! - `SIGUSR2` (nginx's binary-upgrade signal): hand the listening sockets to a new tideway
//!   process already started with `tideway run --upgrade` on the same `data_dir` (it waits
//!   on `data_dir/upgrade.sock`), then shut down gracefully. pingora takes `SIGQUIT` for this
//!   by default; tideway moves it here.
//! - `SIGHUP`: re-read the config and TLS certificates (see `app`).
//! - `SIGUSR1` (nginx's `-s reopen`): reopen `[server] access_log_file` at its path, for log
//!   rotation (see `app`). It has nothing to do with the upgrade, which is SIGUSR2.

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

/// The signal mapping above, for pingora's run loop.
pub struct Signals;

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut quit), Ok(mut int), Ok(mut usr2)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::quit()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::user_defined2()),
        ) else {
            tracing::error!("cannot listen for signals; stop tideway with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => ShutdownSignal::GracefulTerminate,
            _ = quit.recv() => {
                tracing::info!("SIGQUIT: graceful shutdown");
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => ShutdownSignal::FastShutdown,
            _ = usr2.recv() => {
                tracing::info!("SIGUSR2: handing the listeners to the new process");
                ShutdownSignal::GracefulUpgrade
            }
        }
    }
}
