//! libz-ng-sys's API (flate2 calls only the zlib-compatible part of it) served by libz-sys, so
//! the build needs no cmake. gzip in pingora behaves the same; zlib-ng is only faster.

pub use libz_sys::*;
