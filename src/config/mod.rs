//! Loading the TOML config: parse with serde (syntax and unknown keys are
//! reported with their line), then check semantics (`validate`) and report every
//! problem with its key path and line, so a user fixes all of them in one pass.

mod duration;
mod locate;
mod schema;
mod validate;

pub use duration::Dur;
pub use schema::*;
pub use validate::{parse_hhmm, parse_utc_offset};

use std::fmt;
use std::path::{Path, PathBuf};

/// How bad a finding is: errors refuse the config, warnings are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about a config file, located by key path and, when known, line.
#[derive(Clone, Debug)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Dotted key path, e.g. `model[0].transitions[2].to`.
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match self.line {
            Some(line) => write!(f, "line {line}: {sev}: {}: {}", self.key, self.message),
            None => write!(f, "{sev}: {}: {}", self.key, self.message),
        }
    }
}

/// A config that failed to load, with every finding.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors = self.diagnostics.iter().filter(|d| d.severity == Severity::Error).count();
        writeln!(f, "{}: invalid config ({errors} error{})", self.file.display(), if errors == 1 { "" } else { "s" })?;
        for d in &self.diagnostics {
            writeln!(f, "  {}: {d}", self.file.display())?;
        }
        Ok(())
    }
}

/// A config that passed validation, with its warnings.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        diagnostics: vec![Diagnostic { severity: Severity::Error, key: "(file)".into(), line: None, message: format!("cannot read: {e}") }],
    })?;
    parse(&text).map_err(|diagnostics| ConfigError { file: path.to_owned(), diagnostics })
}

/// Parses and validates config text; on failure returns every diagnostic (warnings included).
pub fn parse(text: &str) -> Result<Loaded, Vec<Diagnostic>> {
    let config: Config = match toml::from_str(text) {
        Ok(c) => c,
        Err(e) => return Err(vec![syntax_diagnostic(text, &e)]),
    };
    let mut findings = validate::check(&config);
    locate::add_lines(text, &mut findings);
    if findings.iter().any(|d| d.severity == Severity::Error) {
        Err(findings)
    } else {
        Ok(Loaded { config, warnings: findings })
    }
}

fn syntax_diagnostic(text: &str, e: &toml::de::Error) -> Diagnostic {
    let line = e.span().map(|s| locate::line_of(text, s.start));
    let key = e.span().and_then(|s| locate::key_at(text, s.start)).unwrap_or_else(|| "(syntax)".into());
    let mut message = e.message().trim().to_string();
    // `[model]` for `[[model]]`: say how a list of tables is written.
    let single_header = |l: &str| l.trim_start().starts_with('[') && !l.trim_start().starts_with("[[");
    if message.ends_with("expected a sequence") && line.and_then(|l| text.lines().nth(l - 1)).is_some_and(single_header) {
        message.push_str(&format!(" (`[{key}]` is one table; each entry of the list starts with `[[{key}]]`)"));
    }
    Diagnostic { severity: Severity::Error, key, line, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_bracket_header_for_a_list_names_the_table_and_the_fix() {
        let err = parse("kinds = [\"signup\"]\n\n[model]\nname = \"life\"\n").unwrap_err();
        assert_eq!((err[0].key.as_str(), err[0].line), ("model", Some(3)), "{err:?}");
        assert!(err[0].message.contains("starts with `[[model]]`"), "{err:?}");
    }

    #[test]
    fn unknown_key_is_reported_with_its_line() {
        let err = parse("[time]\nallowed_lateness = \"5s\"\nlatenes = \"1s\"\n").unwrap_err();
        assert_eq!(err[0].line, Some(3), "{err:?}");
        assert!(err[0].message.contains("unknown field"), "{err:?}");
    }

    #[test]
    fn bad_duration_is_reported_with_its_line_and_key() {
        let err = parse("[time]\n\nidle_timeout = \"ten seconds\"\n").unwrap_err();
        assert_eq!(err[0].line, Some(3));
        assert!(err[0].message.contains("invalid duration"), "{err:?}");
        assert_eq!(err[0].key, "time.idle_timeout");
    }

    #[test]
    fn empty_config_is_valid_with_defaults() {
        let loaded = parse("").unwrap();
        assert_eq!(loaded.config.time.allowed_lateness, Dur::from_secs(5));
        assert_eq!(loaded.config.nats.subjects, vec!["touch.>"]);
    }
}
