//! Fuzz tideway's own HTTP path on hostile bytes: request and response heads must be
//! inspected or refused, never panic; a chunked body scanned in any split must end at the same
//! place as scanned whole; whatever is forwarded must parse again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tideway::config::HashKey;
use tideway::proxy::body::ChunkScanner;
use tideway::proxy::message::{inspect_request, inspect_response, Inspected};

fuzz_target!(|data: &[u8]| {
    let ip = Some("10.1.2.3".parse().unwrap());
    let key = HashKey::Cookie("sid".into());
    let mut out = Vec::new();
    if let Inspected::Forward(_) = inspect_request(data, ip, "http", Some(&key), &mut out) {
        // The head sent to a backend is itself a complete, parseable request head.
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        assert!(matches!(req.parse(&out), Ok(httparse::Status::Complete(n)) if n == out.len()));
    }
    let _ = inspect_response(data, false, false, &mut out);

    let whole = ChunkScanner::default().feed(data);
    let split = data.len() / 3;
    let mut s = ChunkScanner::default();
    let first = s.feed(&data[..split]);
    let parts = match first {
        Ok(Some(end)) => Ok(Some(end)),
        Ok(None) => s.feed(&data[split..]).map(|r| r.map(|e| e + split)),
        Err(e) => Err(e),
    };
    assert_eq!(whole, parts);
});
