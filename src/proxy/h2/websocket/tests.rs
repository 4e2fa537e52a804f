use super::*;
use crate::proxy::request::{classify, Request, Steer};

/// RFC 6455 §1.3's example key and the Accept it owes.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fn fields<'a>(pairs: &'a [(&'a str, &'a str)]) -> Vec<httparse::Header<'a>> {
    pairs
        .iter()
        .map(|(name, value)| httparse::Header {
            name,
            value: value.as_bytes(),
        })
        .collect()
}

#[test]
fn accept_is_rfc_6455s() {
    let accept = Accept::of(KEY.as_bytes());
    assert!(accept.answered(&fields(&[("Sec-WebSocket-Accept", ACCEPT)])));
    assert!(accept.answered(&fields(&[("sec-websocket-accept", &format!(" {ACCEPT} "))])));
    let mut handshake = Handshake::generate();
    handshake.key = KEY.into();
    assert_eq!(handshake.accept(), accept);
}

#[test]
fn a_wrong_missing_or_doubled_accept_is_refused() {
    let accept = Accept::of(KEY.as_bytes());
    let lower = ACCEPT.to_ascii_lowercase();
    let wrong = [
        vec![],
        vec![("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOA=")],
        vec![("Sec-WebSocket-Accept", "")],
        vec![("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo")],
        vec![("Sec-WebSocket-Accept", &lower)],
        vec![
            ("Sec-WebSocket-Accept", ACCEPT),
            ("Sec-WebSocket-Accept", ACCEPT),
        ],
        vec![("Sec-WebSocket-Key", ACCEPT)],
    ];
    for pairs in wrong {
        assert!(!accept.answered(&fields(&pairs)), "{pairs:?}");
    }
}

#[test]
fn each_handshake_gets_its_own_random_key() {
    let (a, b) = (Handshake::generate(), Handshake::generate());
    assert_ne!(a.key(), b.key());
    assert_ne!(a.accept(), b.accept());
    for h in [&a, &b] {
        // 16 bytes in base64: 22 characters and two of padding.
        let key = h.key().as_bytes();
        assert_eq!(key.len(), 24, "{}", h.key());
        assert!(key.ends_with(b"=="), "{}", h.key());
        assert!(
            key[..22]
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/'),
            "{}",
            h.key()
        );
    }
    let [connection, upgrade, key] = a.fields();
    assert_eq!(connection, ("connection", &b"upgrade"[..]));
    assert_eq!(upgrade, ("upgrade", &b"websocket"[..]));
    assert_eq!(key, ("sec-websocket-key", a.key().as_bytes()));
}

#[test]
fn only_websocket_with_version_13_is_admitted() {
    assert_eq!(admit("websocket", Some(b"13")), Ok(()));
    assert_eq!(admit("WebSocket", Some(b" 13 ")), Ok(()));
    assert_eq!(admit("connect-udp", Some(b"13")).unwrap_err().status, 501);
    assert_eq!(admit("websocket2", Some(b"13")).unwrap_err().status, 501);
    for version in [None, Some(&b"8"[..]), Some(b""), Some(b"13, 8")] {
        assert_eq!(admit("websocket", version).unwrap_err().status, 400);
    }
}

/// The extended CONNECT `fields` (after `:authority`, which the engine makes the Host) as the
/// classifier gets them: `GET :path HTTP/1.1`, the client's fields but those [`dropped`],
/// then the handshake's. Written as HTTP/1 text only here, to run the classifier's rules.
fn classified(
    path: &str,
    client: &[(&str, &str)],
    handshake: &Handshake,
    websocket: bool,
) -> (Request, String) {
    let mut head = format!("{METHOD} {path} HTTP/1.1\r\nhost: chat.example\r\n");
    let ours = handshake
        .fields()
        .map(|(n, v)| (n, std::str::from_utf8(v).unwrap()));
    for (name, value) in client.iter().filter(|(n, _)| !dropped(n)).chain(&ours) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let conn = Some("10.0.0.9:40000".parse().unwrap());
    let steer = |_: Option<&[u8]>, _: &str| Steer {
        default_host: "app",
        websocket,
        ..Steer::default()
    };
    let mut out = Vec::new();
    let req = classify(head.as_bytes(), (conn, None), "https", steer, &mut out).unwrap();
    (req, String::from_utf8(out).unwrap())
}

#[test]
fn an_extended_connect_is_classified_as_a_handshake_with_tideways_key() {
    let handshake = Handshake::generate();
    let client = [
        ("sec-websocket-version", "13"),
        ("sec-websocket-protocol", "chat, superchat"),
        ("sec-websocket-extensions", "permessage-deflate"),
        ("origin", "https://chat.example"),
        // A client's own key (RFC 8441 has none) never reaches the backend.
        ("sec-websocket-key", "Y2xpZW50J3Mgb3duIGtleQ=="),
    ];
    let (req, out) = classified("/chat?room=1", &client, &handshake, true);
    assert!(
        req.websocket && !req.misreadable && req.idempotent,
        "{req:?}"
    );
    assert!(
        out.starts_with("GET /chat?room=1 HTTP/1.1\r\nhost: chat.example\r\n"),
        "{out}"
    );
    for line in [
        "sec-websocket-version: 13\r\n",
        "sec-websocket-protocol: chat, superchat\r\n",
        "sec-websocket-extensions: permessage-deflate\r\n",
        "origin: https://chat.example\r\n",
        "connection: upgrade\r\nupgrade: websocket\r\n",
        "x-forwarded-proto: https\r\n",
    ] {
        assert!(out.contains(line), "{line:?} missing in {out}");
    }
    assert!(
        out.contains(&format!("sec-websocket-key: {}\r\n", handshake.key())),
        "{out}"
    );
    assert!(!out.contains("Y2xpZW50"), "{out}");
    assert!(!misread(out.as_bytes()));
    // A route without WebSockets: no handshake goes on, and the stream is refused.
    let (req, out) = classified("/chat", &client, &handshake, false);
    assert!(
        !req.websocket && !out.to_ascii_lowercase().contains("sec-websocket"),
        "{out}"
    );
    assert_eq!(NOT_ON_ROUTE.status, 501);
}

#[test]
fn a_second_key_the_client_wrote_is_a_misread_not_the_backends_fault() {
    let handshake = Handshake::generate();
    let version = ("sec-websocket-version", "13");
    let (_, out) = classified("/chat?Sec-WebSocket-Key:abc", &[version], &handshake, true);
    assert!(misread(out.as_bytes()), "{out}");
    let note = ("x-note", "sec-websocket-KEY: a");
    let (_, out) = classified("/chat", &[version, note], &handshake, true);
    assert!(misread(out.as_bytes()), "{out}");
}

#[test]
fn the_streams_200_keeps_only_end_to_end_fields() {
    for name in [
        "Sec-WebSocket-Protocol",
        "sec-websocket-extensions",
        "set-cookie",
        "x-backend",
    ] {
        assert!(passed_on(name), "{name}");
    }
    for name in [
        "Sec-WebSocket-Accept",
        "Upgrade",
        "connection",
        "Keep-Alive",
        "content-length",
        "transfer-encoding",
    ] {
        assert!(!passed_on(name), "{name}");
    }
    assert!(dropped("Sec-WebSocket-Key") && dropped("sec-websocket-accept"));
    assert!(!dropped("sec-websocket-protocol") && !dropped("origin"));
}
