//! Fuzz the nginx config reader: any text must parse or fail with an error, never panic, and
//! whatever parses must convert.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let none = Path::new("/nonexistent-fuzz-base");
        // Start at the include depth limit: an `include` is then an error instead of a glob
        // over the machine's files (which could name /proc/kcore).
        let depth = tideway::nginx::parse::MAX_INCLUDE_DEPTH;
        if let Ok(top) = tideway::nginx::parse::parse_text(text, Path::new("fuzz.conf"), none, depth) {
            // Conversion only: validating the result would resolve host names.
            let _ = tideway::nginx::convert::convert(&top, none);
        }
    }
});
