//! Bytes in, verdict out: whatever lands in an inbox must not panic the
//! classifier (the watcher would stop for that rep).
//!
//! `classify` contains a panic inside mail-parser (it answers `unknown`),
//! and mail-parser has `debug_assert!`s that fire on some malformed
//! multiparts in this debug-assertion build (never in a release build).
//! libFuzzer's panic hook would abort on those before `classify` can catch
//! them, so they are let through to `classify`, as in production; any other
//! panic, in cadence's own code, still aborts and is reported.
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;

fn contain_mail_parser_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.location().is_some_and(|l| l.file().contains("/mail-parser-")) {
                return;
            }
            abort(info)
        }));
    });
}

fuzz_target!(|raw: &[u8]| {
    contain_mail_parser_panics();
    let _ = cadence::inbox::classify::classify(raw);
});
