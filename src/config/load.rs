//! Reading and validating the files. (Filled in by the config work.)

use std::path::{Path, PathBuf};

use super::Config;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One thing wrong (or worth a warning) in the config, located.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Problem {
    pub severity: Severity,
    pub file: PathBuf,
    /// Dotted key path, e.g. `reps[0].smtp.tls` or `steps[2].template`.
    pub key: Option<String>,
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}: {}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// All problems found; `load` fails when any is an error.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|p| p.severity == Severity::Error)
    }
}

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.0 {
            writeln!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Loads and validates the config at `path`, its sequences and templates.
/// Returns the config with its warnings, or every problem found.
pub fn load(path: &Path) -> Result<(Config, Problems), Problems> {
    let _ = PathBuf::from(path);
    todo!("config helper")
}
