//! Files in, a config or a list of problems out, never a panic. The input
//! is split at 0xFF bytes into `config/cadence.toml`, one sequence, one
//! template and one partial, written to a scratch project that is reused
//! for every run (the loader reads files, as `cadence check` does).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn root() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("cadence-fuzz-config-{}", std::process::id()));
        for sub in ["config/sequences", "templates/partials"] {
            std::fs::create_dir_all(root.join(sub)).expect("scratch project");
        }
        root
    })
}

fuzz_target!(|data: &[u8]| {
    let root = root();
    let mut parts = data.split(|b| *b == 0xFF);
    let files = ["config/cadence.toml", "config/sequences/s.toml", "templates/t.hbs", "templates/partials/p.hbs"];
    for file in files {
        let path = root.join(file);
        match parts.next() {
            Some(bytes) => std::fs::write(&path, bytes).expect("write scratch file"),
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    let env = |var: &str| Some(format!("value-of-{var}"));
    let _ = cadence::config::load_with_env(&root.join("config/cadence.toml"), &env);
});
