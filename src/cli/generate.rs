//! `cadence completions` and `cadence man`: generated from the clap
//! definitions at run time, so they always describe the flags of the binary
//! that prints them.

use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

use super::{Cli, CliResult, Failure, EXIT_FAILURE};

pub fn completions(shell: Shell) -> CliResult {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "cadence", &mut std::io::stdout());
    Ok(())
}

/// `cadence.1` on stdout; with `dir`, `cadence.1` and one `cadence-SUB.1`
/// per subcommand written there.
pub fn man(dir: Option<&Path>) -> CliResult {
    let cmd = Cli::command();
    match dir {
        None => clap_mangen::Man::new(cmd)
            .render(&mut std::io::stdout())
            .map_err(|e| Failure::new(EXIT_FAILURE, format!("cannot write the man page: {e}"))),
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| Failure::new(EXIT_FAILURE, format!("cannot create {}: {e}", dir.display())))?;
            clap_mangen::generate_to(cmd, dir).map_err(|e| {
                Failure::new(EXIT_FAILURE, format!("cannot write man pages into {}: {e}; check the folder's permissions", dir.display()))
            })?;
            println!("man pages written to {}; try: man -l {}", dir.display(), dir.join("cadence.1").display());
            Ok(())
        }
    }
}
