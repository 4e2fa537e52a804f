//! How a client connection ends after an answer: a kept-alive one goes on to its next
//! request; any other is closed cleanly (TLS close_notify, TCP FIN), and when the client may
//! still be sending a body tideway did not read, what it sends is read and dropped for a
//! while first (nginx's `lingering_close`), so it gets the answer rather than a reset.

use super::super::exchange::{Buffers, Next};
use super::super::request::{Request, RequestBody};
use super::Step;
use pingora::protocols::Stream;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

/// How long closing a client connection may take (a TLS close_notify to send).
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// nginx's `lingering_time`: longest a closing connection's unread request body is drained.
const LINGERING_TIME: Duration = Duration::from_secs(30);

/// nginx's `lingering_timeout`: longest pause in what the client sends while draining.
const LINGERING_TIMEOUT: Duration = Duration::from_secs(5);

/// After a refusal answered with `next`: the next request on a kept-alive connection, or the
/// end of it ([`close_unread`]).
pub(super) async fn after_refusal(stream: &mut Stream, req: &Request, next: Next) -> Step<'static> {
    if matches!(next, Next::KeepAlive) {
        return Step::Next;
    }
    close_unread(stream, req).await;
    Step::End
}

/// After an answer that went out whole (or was cut, `Abort`), carry out `next`: a kept-alive
/// connection goes on to its next request (the buffers reset), any other closes as `next`
/// says.
pub(super) async fn end(stream: &mut Stream, bufs: &mut Buffers, next: Next) -> Step<'static> {
    match next {
        Next::KeepAlive => {
            bufs.reset();
            return Step::Next;
        }
        Next::Linger => {
            close(stream).await;
            linger(stream).await;
        }
        // A cut response: no close_notify, so a TLS client sees the cut.
        Next::Abort => {}
        Next::Close | Next::Upgraded(_) => close(stream).await,
    }
    Step::End
}

/// Close the connection of a refused request; a body it did not read is drained first
/// ([`linger`]), so the client, still sending it, does not get a reset in place of the answer.
async fn close_unread(stream: &mut Stream, req: &Request) {
    close(stream).await;
    if req.body != RequestBody::None {
        linger(stream).await;
    }
}

/// Close a client connection cleanly: TLS sends its close_notify, TCP its FIN.
pub(super) async fn close(stream: &mut Stream) {
    let end = tokio::io::AsyncWriteExt::shutdown(stream);
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, end).await;
}

/// After [`close`], read and drop what the client still sends until it closes, it pauses for
/// [`LINGERING_TIMEOUT`], or [`LINGERING_TIME`] has passed (nginx's `lingering_close`).
pub(super) async fn linger(stream: &mut Stream) {
    let until = Instant::now() + LINGERING_TIME;
    let mut sink = vec![0u8; 4096];
    loop {
        let next = (Instant::now() + LINGERING_TIMEOUT).min(until);
        match tokio::time::timeout_at(next, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}
