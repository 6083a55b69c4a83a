//! `cadence init`: the shipped example project, written into a folder.
//!
//! The files are compiled into the binary (`include_str!`) so that a
//! `cargo install`ed cadence can start a project anywhere, with no clone of
//! the repository. They are the very files of `config/` and `templates/`,
//! so the example the README runs and the one `init` writes cannot drift
//! apart (a test compares them). Nothing that exists is ever overwritten:
//! running `init` again in a project only adds what is missing.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::{CliResult, Failure, EXIT_FAILURE};

/// Every file of the starter project: path relative to the project root,
/// contents.
pub const STARTER_FILES: &[(&str, &str)] = &[
    ("config/cadence.toml", include_str!("../../config/cadence.toml")),
    ("config/sequences/cold-outreach.toml", include_str!("../../config/sequences/cold-outreach.toml")),
    ("templates/intro.hbs", include_str!("../../templates/intro.hbs")),
    ("templates/intro.html.hbs", include_str!("../../templates/intro.html.hbs")),
    ("templates/bump.hbs", include_str!("../../templates/bump.hbs")),
    ("templates/value.hbs", include_str!("../../templates/value.hbs")),
    ("templates/breakup.hbs", include_str!("../../templates/breakup.hbs")),
    ("templates/call-script.hbs", include_str!("../../templates/call-script.hbs")),
    ("templates/digest.hbs", include_str!("../../templates/digest.hbs")),
    ("templates/partials/signature.hbs", include_str!("../../templates/partials/signature.hbs")),
    ("templates/partials/signature.html.hbs", include_str!("../../templates/partials/signature.html.hbs")),
];

/// What happened to one starter file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    /// Already there: left exactly as it was.
    Kept,
}

/// Writes the starter files under `dir` (created if missing), never
/// replacing a file that exists. Returns each file with what happened.
pub fn write_starter(dir: &Path) -> Result<Vec<(PathBuf, Outcome)>, String> {
    if dir.exists() && !dir.is_dir() {
        return Err(format!("{} exists and is not a folder: pick another place for the project", dir.display()));
    }
    let mut done = Vec::new();
    for (rel, contents) in STARTER_FILES {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create the folder {}: {e}; check its permissions or choose another DIR", parent.display()))?;
        }
        // `create_new` refuses atomically when the file exists, so a file
        // written between a check and the write is never clobbered either.
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                f.write_all(contents.as_bytes())
                    .map_err(|e| format!("cannot write {}: {e}; check the free space and permissions", path.display()))?;
                done.push((PathBuf::from(rel), Outcome::Created));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => done.push((PathBuf::from(rel), Outcome::Kept)),
            Err(e) => return Err(format!("cannot create {}: {e}; check the folder's permissions or choose another DIR", path.display())),
        }
    }
    Ok(done)
}

/// The commands to run next, in order. `dir` is shown as given.
pub fn next_commands(dir: &Path) -> [String; 3] {
    let here = dir.as_os_str().is_empty() || dir == Path::new(".");
    let secret = r#"export CADENCE_SECRET="$(openssl rand -hex 32)"   # signs unsubscribe links: keep it stable"#.to_string();
    if here {
        [secret, "cadence check".into(), "cadence run".into()]
    } else {
        [format!("cd {}", shell_quote(&dir.display().to_string())), secret, "cadence check && cadence run".into()]
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:@%,".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

pub fn init(dir: &Path) -> CliResult {
    let done = write_starter(dir).map_err(|e| Failure::new(EXIT_FAILURE, e))?;
    for (rel, outcome) in &done {
        match outcome {
            Outcome::Created => println!("created  {}", dir.join(rel).display()),
            Outcome::Kept => println!("kept     {} (exists; not overwritten)", dir.join(rel).display()),
        }
    }
    let created = done.iter().filter(|(_, o)| *o == Outcome::Created).count();
    if created == 0 {
        println!("every starter file was already there: nothing written");
    }
    println!();
    println!("The example rep writes each email as an .eml file into outbox/; edit config/cadence.toml to send over SMTP.");
    println!("Next:");
    for c in next_commands(dir) {
        println!("  {c}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("my-project"), "my-project");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn three_commands_either_way() {
        assert_eq!(next_commands(Path::new("."))[1], "cadence check");
        assert_eq!(next_commands(Path::new("x"))[0], "cd x");
    }
}
