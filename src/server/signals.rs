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
//!   rotation (see `app`). It has nothing to do with the upgrade, which is SIGUSR2. Its
//!   handler is installed when `run` starts ([`hold_sigusr1`]): one sent earlier than the
//!   reopen task listens (say while `run --upgrade` waits) does nothing rather than end the
//!   process, as the signal's default would.

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

/// Install tokio's SIGUSR1 handler now, at process start, so the signal never has its default
/// action (ending the process) while the control plane that acts on it is not up yet. The
/// handler stays for the life of the process. A signal that comes before the reopen task
/// listens is lost, so that task reopens the file once when it starts.
pub fn hold_sigusr1() -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let _guard = rt.enter();
    signal(SignalKind::user_defined1()).map(drop)
}
