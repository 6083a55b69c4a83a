//! Bytes in, verdict out: whatever lands in an inbox must not panic the
//! classifier (the watcher would stop for that rep).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &[u8]| {
    let _ = cadence::inbox::classify::classify(raw);
});
