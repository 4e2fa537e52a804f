//! Fuzz the chunked decoder: hostile bytes decoded whole and in three reads (split at two
//! data-derived points) give the same data, the same end and the same verdict; a body that
//! ends, re-encoded by tideway's encoder, decodes to the same data and ends exactly at its end.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tideway::proxy::chunked::{push_chunk, ChunkDecoder, LAST_CHUNK};

/// What decoding a byte string gave: the data, and `Ok((used, done))` or `Err(())`.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    data: Vec<u8>,
    end: Result<(usize, bool), ()>,
}

/// Decode `input` fed in the pieces that end at each of `cuts` (ascending), then the rest.
/// Feeding stops at the first error or once the body is done, as a reader would.
fn decode(input: &[u8], cuts: &[usize]) -> Outcome {
    let mut decoder = ChunkDecoder::default();
    let mut data = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain([input.len()].iter()) {
        match decoder.decode(&input[start..end], |d| data.extend_from_slice(d)) {
            Err(_) => return Outcome { data, end: Err(()) },
            Ok(d) => {
                assert!(d.used <= end - start, "used more than it was given");
                if d.done {
                    return Outcome {
                        data,
                        end: Ok((start + d.used, true)),
                    };
                }
                assert_eq!(d.used, end - start, "an unfinished body left bytes unused");
            }
        }
        start = end;
    }
    Outcome {
        data,
        end: Ok((input.len(), false)),
    }
}

/// FNV-1a: split points derived from the input, stable across runs.
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fuzz_target!(|data: &[u8]| {
    let h = fnv(data);
    let n = data.len() as u64 + 1;
    let (a, b) = ((h % n) as usize, ((h >> 32) % n) as usize);
    let cuts = [a.min(b), a.max(b)];

    let whole = decode(data, &[]);
    let split = decode(data, &cuts);
    assert_eq!(whole, split, "whole vs split at {cuts:?}");

    if let Ok((used, true)) = whole.end {
        assert!(used <= data.len());
        // Re-encode as tideway does: in chunks (cut at a data-derived point), then the last
        // chunk; whatever follows must not be taken as part of the body.
        let mut encoded = Vec::new();
        let cut = (h >> 16) as usize % (whole.data.len() + 1);
        push_chunk(&mut encoded, &whole.data[..cut]);
        push_chunk(&mut encoded, &whole.data[cut..]);
        encoded.extend_from_slice(LAST_CHUNK);
        let body_len = encoded.len();
        encoded.extend_from_slice(&data[used..]);
        let again = decode(&encoded, &[]);
        assert_eq!(
            again.data, whole.data,
            "re-encoded body decodes differently"
        );
        assert_eq!(
            again.end,
            Ok((body_len, true)),
            "re-encoded body ends elsewhere"
        );
    }
});
