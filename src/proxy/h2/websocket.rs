//! WebSockets over HTTP/2 (RFC 8441): an extended CONNECT with `:protocol websocket` becomes
//! the HTTP/1.1 handshake its backend expects, and the backend's `101` becomes the stream's
//! `200`.
//!
//! RFC 8441 drops `Sec-WebSocket-Key` and `Sec-WebSocket-Accept` from the client's side, but a
//! backend speaks RFC 6455 and wants a key. tideway makes one ([`Handshake`]: 16 random bytes,
//! base64) and checks the backend's `Sec-WebSocket-Accept` against it ([`Accept`]). The
//! request then goes through the one classifier as `GET :path` with `Connection: upgrade`,
//! `Upgrade: websocket` and that key ([`Handshake::fields`]) in place of the client's own
//! (`Sec-WebSocket-Key`/`-Accept` a client sends are dropped, [`dropped`]), so the route, its
//! `websocket` switch, forwarding headers and admission are decided exactly as for an
//! HTTP/1.1 handshake.
//!
//! Blame: the key is tideway's, so a backend that answers it with another Accept is broken,
//! unless the head it got holds a second `Sec-WebSocket-Key:` (in the target or inside another
//! field's value, which the client wrote): Workerman takes the first it finds, so the client
//! made it answer that way ([`misread`]).
//!
//! Only the stream's answer differs from HTTP/1.1: `200` after a switch (with the backend's
//! `Sec-WebSocket-Protocol`/`-Extensions`, never its hop-by-hop fields, [`passed_on`]), and
//! never a 2xx otherwise, since a 2xx to a CONNECT opens the tunnel (a backend's 2xx that
//! did not switch is a 502, as an answer that cannot be forwarded: not counted against it,
//! it may serve no WebSocket on that path).
//!
//! [`serve`] runs an extended CONNECT stream: refused unless [`admit`]ted, else made into the
//! handshake's parts and given to the gateway ([`crate::proxy::Gateway::h2_upgrade`]), which
//! forwards it as any request and, after the backend's 101, runs the stream as the
//! WebSocket's tunnel. Every HTTP/2 connection announces `SETTINGS_ENABLE_CONNECT_PROTOCOL`
//! ([`ANNOUNCE`]).
//!
//! Imports: the classifier, the gateway and the HTTP/2 door's own modules.

use super::conn::Shared;
use crate::proxy::request::{websocket_keys, Refusal};
use pingora::protocols::Stream;

/// Announce `SETTINGS_ENABLE_CONNECT_PROTOCOL` (RFC 8441 §3) on every HTTP/2 connection.
pub const ANNOUNCE: bool = true;

/// Serve one extended CONNECT stream (`head`, asking for `protocol`) on `io`; until the
/// WebSocket is open, a `reset` of the stream drops the handshake where it is (a strike, as
/// for any request: [`super::reset`]).
pub async fn serve(
    conn: &Shared,
    (head, protocol): (&http::request::Parts, &h2::ext::Protocol),
    mut io: Stream,
    reset: super::stream::ResetWatch,
) {
    let limits = conn.gateway.limits();
    let handshake = Handshake::generate();
    let mut cookie = Vec::new();
    let version = head
        .headers
        .get_all("sec-websocket-version")
        .iter()
        .next_back();
    let decoded = admit(protocol.as_str(), version.map(|v| v.as_bytes()))
        .and_then(|()| super::head::fields(head, &mut cookie, limits))
        .and_then(|fields| {
            let target = super::head::target(head)?;
            super::head::line(head, target, limits)?;
            Ok((target, fields))
        });
    let (target, mut fields) = match decoded {
        Ok(d) => d,
        Err(r) => {
            // Logged and counted as any refused request, with what is known of its head.
            let path = head.uri.path_and_query().map_or("", |p| p.as_str());
            let known = super::head::parts(head, path, &[], false);
            let peers = (conn.peers, conn.identity.as_ref());
            return conn.gateway.h2_refused(&mut io, &known, r, peers).await;
        }
    };
    handshake.replace(&mut fields);
    // A handshake has no body: the stream stays open for the WebSocket's frames.
    let mut parts = super::head::parts(head, target, &fields, false);
    parts.method = METHOD;
    parts.accept = Some(handshake.accept());
    let on = (conn.peers, conn.identity.as_ref(), &conn.shutdown);
    conn.gateway
        .h2_upgrade(io, &parts, on, (reset, &conn.strikes))
        .await;
}

/// The `:protocol` of an extended CONNECT that opens a WebSocket.
pub const PROTOCOL: &str = "websocket";

/// The method an extended CONNECT for a WebSocket goes to the classifier (and the backend) as.
pub const METHOD: &str = "GET";

/// The only `Sec-WebSocket-Version` there is (RFC 6455); RFC 8441 keeps the field.
const VERSION: &[u8] = b"13";

/// Is an extended CONNECT's `:protocol` a WebSocket (an upgrade token: any case)?
pub fn is_websocket(protocol: &str) -> bool {
    protocol.eq_ignore_ascii_case(PROTOCOL)
}

/// Whether an extended CONNECT may go to the classifier: a `:protocol` other than
/// `websocket` is not supported (501, as RFC 9220 asks), and a WebSocket needs
/// `sec-websocket-version: 13` (`version`: the last one sent; 400 otherwise: `426`, RFC
/// 6455's answer, would need an `Upgrade` field HTTP/2 forbids).
pub fn admit(protocol: &str, version: Option<&[u8]>) -> Result<(), Refusal> {
    if !is_websocket(protocol) {
        return Err(Refusal::new(
            501,
            "extended CONNECT supports only :protocol websocket",
        ));
    }
    if version.map(<[u8]>::trim_ascii) != Some(VERSION) {
        return Err(Refusal::new(
            400,
            "a WebSocket over HTTP/2 needs sec-websocket-version: 13",
        ));
    }
    Ok(())
}

/// The refusal of an extended CONNECT the classifier did not take as a WebSocket handshake
/// (its route has `websocket = false`): HTTP/1.1 would serve it as a plain GET, but any 2xx
/// answer to a CONNECT opens a tunnel, so it is refused instead.
pub const NOT_ON_ROUTE: Refusal = Refusal::new(501, "WebSockets are not enabled on this route");

/// Is a field of the client's extended CONNECT left out of the backend's handshake? Its
/// `Sec-WebSocket-Key` and `-Accept` (RFC 8441 has none; tideway writes its own key), and the
/// HTTP/1.1 upgrade fields (HTTP/2 forbids them; tideway writes its own).
pub fn dropped(name: &str) -> bool {
    [
        "sec-websocket-key",
        "sec-websocket-accept",
        "connection",
        "upgrade",
    ]
    .iter()
    .any(|d| name.eq_ignore_ascii_case(d))
}

/// The HTTP/1.1 handshake tideway makes for one extended CONNECT: its own
/// `Sec-WebSocket-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// 16 random bytes, base64: 24 characters.
    key: String,
}

impl Handshake {
    /// A handshake with a fresh random key.
    pub fn generate() -> Self {
        Handshake {
            key: tokio_tungstenite::tungstenite::handshake::client::generate_key(),
        }
    }

    /// The key the backend gets.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The fields the handshake adds to the client's (those [`dropped`] left), in the order
    /// they go to the classifier.
    pub fn fields(&self) -> [(&'static str, &[u8]); 3] {
        [
            ("connection", b"upgrade"),
            ("upgrade", PROTOCOL.as_bytes()),
            ("sec-websocket-key", self.key.as_bytes()),
        ]
    }

    /// Make the client's `fields` the handshake's: those [`dropped`] out, [`Handshake::fields`]
    /// in.
    pub fn replace<'a>(&'a self, fields: &mut Vec<httparse::Header<'a>>) {
        fields.retain(|h| !dropped(h.name));
        fields.extend(
            self.fields()
                .map(|(name, value)| httparse::Header { name, value }),
        );
    }

    /// The `Sec-WebSocket-Accept` the backend must answer with.
    pub fn accept(&self) -> Accept {
        Accept::of(self.key.as_bytes())
    }
}

/// The `Sec-WebSocket-Accept` a backend owes a handshake tideway made: base64 of the SHA-1 of
/// the key and RFC 6455's GUID, 28 characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accept([u8; 28]);

impl Accept {
    /// The Accept that answers `key`.
    pub fn of(key: &[u8]) -> Self {
        let derived = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key);
        let mut accept = [0; 28];
        accept.copy_from_slice(derived.as_bytes());
        Accept(accept)
    }

    /// Does a `101`'s head (`fields`) carry this Accept, in exactly one field?
    pub fn answered(&self, fields: &[httparse::Header<'_>]) -> bool {
        let mut found = fields
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"));
        matches!(
            (found.next(), found.next()),
            (Some(h), None) if h.value.trim_ascii() == self.0
        )
    }
}

/// Did the client make a lenient backend misread tideway's handshake? True when the
/// backend's head (`head`) holds `Sec-WebSocket-Key:` more than once: ours, and one the
/// client wrote into its target or another field's value.
pub fn misread(head: &[u8]) -> bool {
    websocket_keys(head) > 1
}

/// Does a field of the backend's `101` go on in the stream's `200`? Not the handshake's own
/// (`Sec-WebSocket-Accept`, `Upgrade`, `Connection`), nor what HTTP/2 forbids or a 2xx to a
/// CONNECT may not carry (RFC 9110 §9.3.6: no framing fields).
pub fn passed_on(name: &str) -> bool {
    ![
        "sec-websocket-accept",
        "upgrade",
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "content-length",
        "te",
        "trailer",
    ]
    .iter()
    .any(|d| name.eq_ignore_ascii_case(d))
}

#[cfg(test)]
mod tests;
