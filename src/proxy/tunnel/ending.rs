//! What a tunnel reports when it ends ([`Ending`]): how it ended, how long it lived, the bytes
//! and, for a WebSocket, who closed it with which code, counted and, with the access log on,
//! logged.

use super::super::access::{Closer, Handshake, TunnelRecord};
use super::super::route::Route;
use super::TunnelEnd;
use crate::metrics::websocket::TunnelMeter;
use std::sync::Arc;

/// What a tunnel leaves for its report once its sockets are closed.
pub struct Finished {
    /// Bytes read: client to backend, backend to client.
    pub moved: (u64, u64),
    /// The first close frame's code and who sent it (WebSocket).
    pub closed: Option<(u16, Closer)>,
    /// Whose stream ended first while no close frame had gone by (WebSocket).
    pub(super) cut: Option<Closer>,
    pub(super) meter: Option<Arc<TunnelMeter>>,
}

impl Finished {
    /// Who closed a WebSocket (one of [`crate::metrics::websocket::CLOSERS`]) and its close
    /// code (None: no close frame, 1006), given its `end`'s reason (`ours`: tideway closed it
    /// for that reason). What came first decides: a stream's end before any close frame is an
    /// abrupt end of that side; else the first close frame's sender, or tideway's reason for
    /// its own 1001; else, with no close frame at all, tideway's reason.
    pub(super) fn closed_by(
        &self,
        (reason, ours): (&'static str, bool),
    ) -> (&'static str, Option<u16>) {
        match (self.cut, self.closed) {
            (Some(side), _) => (side.name(), None),
            (None, Some((code, Closer::Tideway))) => (reason, Some(code)),
            (None, Some((code, side))) => (side.name(), Some(code)),
            (None, None) if ours => (reason, None),
            // Not met: a tunnel ends closed or with an error only after a stream ended or
            // broke, which notes the cut.
            (None, None) => (Closer::Client.name(), None),
        }
    }
}

/// What a tunnel reports when it ends: how it ended, how long it lived, the bytes both ways,
/// counted and, with the access log on, logged. Kept beside the relay rather than in it, and
/// only what the report needs (not the whole [`Route`]): an idle tunnel's memory is the point.
pub struct Ending {
    upstream: Arc<str>,
    client: Option<std::net::IpAddr>,
    backend: std::net::SocketAddr,
    /// A WebSocket (else a TCP tunnel).
    websocket: bool,
    started: std::time::Instant,
    /// With the access log on: what its line needs. Held here, not boxed: a box was one more
    /// heap block (48 bytes) for every WebSocket, where these 32 more bytes of future fit in
    /// the padding of the task's cell (tokio rounds a cell up to 128 bytes: the WebSocket
    /// task's future went from 440 to 472 bytes, its cell stays 640).
    logged: Option<Logged>,
}

/// What a tunnel's access line needs beyond the counts.
pub struct Logged {
    pub backend_id: crate::pool::BackendId,
    /// A WebSocket's handshake.
    pub handshake: Option<Handshake>,
}

impl Ending {
    /// A tunnel (a WebSocket if `websocket`, else TCP) from `client` to `backend` on `route`,
    /// starting now.
    pub fn new(
        route: &Route,
        client: Option<std::net::IpAddr>,
        backend: std::net::SocketAddr,
        websocket: bool,
    ) -> Self {
        Ending {
            upstream: route.upstream.clone(),
            client,
            backend,
            websocket,
            started: std::time::Instant::now(),
            logged: None,
        }
    }

    /// With the access log on, what the tunnel's line shows of its backend and handshake.
    pub fn logging(mut self, logged: Logged) -> Self {
        if super::super::access::enabled() {
            self.logged = Some(logged);
        }
        self
    }

    /// The tunnel ended with `end`; `finished`: what it left (see [`Tunnel::finish`]).
    pub fn report(self, end: TunnelEnd, finished: Finished) {
        // The reason's name, and whether tideway closed the tunnel for it (a WebSocket's
        // `by` is then that name).
        let (end, ours) = match end {
            TunnelEnd::Closed => ("closed", false),
            TunnelEnd::Idle => ("idle", true),
            TunnelEnd::Drain => ("drain", true),
            TunnelEnd::Rebalance => ("rebalance", true),
            TunnelEnd::Shutdown => ("shutdown", true),
            TunnelEnd::PingTimeout => ("ping_timeout", true),
            TunnelEnd::SendTimeout => ("send_timeout", true),
            TunnelEnd::Error(e) => {
                tracing::debug!(error = %e, "tunnel ended with an error");
                ("error", false)
            }
        };
        let duration = self.started.elapsed();
        crate::metrics::global()
            .tunnels_ended
            .with_label_values(&[&self.upstream, end])
            .inc();
        if let Some(meter) = &finished.meter {
            meter.duration.observe(duration.as_secs_f64());
            if self.websocket {
                meter.session.observe(duration.as_secs_f64());
                let (by, code) = finished.closed_by((end, ours));
                meter.closed(by, code);
            }
        }
        let Finished {
            moved: (up, down),
            closed,
            ..
        } = finished;
        if super::super::access::enabled() {
            super::super::access::tunnel(&TunnelRecord {
                client: self.client,
                upstream: &self.upstream,
                backend: self.backend,
                kind: if self.websocket { "websocket" } else { "tcp" },
                up,
                down,
                duration,
                end,
                close: closed,
                backend_id: self.logged.as_ref().map(|l| &*l.backend_id),
                handshake: self.logged.as_ref().and_then(|l| l.handshake.as_ref()),
            });
        }
    }
}
