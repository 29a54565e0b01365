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
#[derive(Clone, Debug, PartialEq)]
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
    let (config, mut findings, left_out, text) = read(text);
    let mut refused: Vec<String> = left_out.iter().map(|k| section(k).to_owned()).collect();
    let Some(config) = config else {
        // The sections the reader refused are left out whole, and the
        // others' checks run on what is left.
        refused.extend(findings.iter().map(|d| section(&d.key).to_owned()));
        if let Some((config, text)) = without_sections(&text, &refused) {
            findings.extend(checked_apart_from(&config, &text, &refused));
        }
        findings.sort_by_key(|d| d.line.unwrap_or(usize::MAX));
        return Err(findings);
    };
    findings.extend(checked_apart_from(&config, &text, &refused));
    findings.extend(lists_for_tables(&text));
    if findings.iter().any(|d| d.severity == Severity::Error) {
        findings.sort_by_key(|d| d.line.unwrap_or(usize::MAX));
        Err(findings)
    } else {
        Ok(Loaded { config, warnings: findings })
    }
}

/// The semantic findings of `config` (read from `text`) outside the
/// `refused` sections, whose lines were taken out: only the other sections'
/// findings are sure to be real, and none are when channels or kinds were
/// refused, which the other sections refer to.
fn checked_apart_from(config: &Config, text: &str, refused: &[String]) -> Vec<Diagnostic> {
    let mut checked = validate::check(config);
    let referred = refused.iter().any(|s| matches!(s.as_str(), "channels" | "kinds"));
    checked.retain(|d| !referred && !refused.iter().any(|s| s == section(&d.key)));
    // Lines are found in the text as read (a line left out, e.g. a key given
    // twice, would keep the original from parsing at all).
    locate::add_lines(text, &mut checked);
    checked
}

/// The sections that are tables written as lists (`time = ["1s"]`), which
/// the reader would take field by field, in order.
fn lists_for_tables(text: &str) -> Vec<Diagnostic> {
    const TABLES: [&str; 9] = ["nats", "http", "time", "limits", "identity", "engine", "channels", "attribution", "segments"];
    let Ok(table) = text.parse::<toml::Table>() else { return Vec::new() };
    let mut found: Vec<Diagnostic> = TABLES
        .iter()
        .filter(|k| table.get(**k).is_some_and(toml::Value::is_array))
        .map(|k| Diagnostic { severity: Severity::Error, key: (*k).into(), line: None, message: format!("must be a table (`[{k}]`), not a list") })
        .collect();
    locate::add_lines(text, &mut found);
    found
}

/// `text` without the lines of the `refused` top-level sections, and the
/// config it reads as, if it does.
fn without_sections(text: &str, refused: &[String]) -> Option<(Config, String)> {
    let lines: std::collections::BTreeSet<usize> = locate::sections(text)?.into_iter().filter(|s| !refused.contains(&s.key)).flat_map(|s| s.lines).collect();
    let text = locate::keep_lines(text, |n, _| lines.contains(&n));
    toml::from_str::<Config>(&text).ok().map(|c| (c, text))
}

/// Most refusals a config read reports before it stops.
const MAX_READ_ERRORS: usize = 50;

/// Deserializes `text`. The TOML reader stops at its first error; to report
/// the others as well, the offending line is taken out (lines keep their
/// numbers) and the text read again, as long as that leaves valid TOML and
/// the next error is not about the line taken out (a required key now
/// missing). Returns the config if a read succeeded, the errors found, the
/// keys whose lines were taken out, and the text as last read.
fn read(text: &str) -> (Option<Config>, Vec<Diagnostic>, Vec<String>, String) {
    let (config, mut errors, left_out, now) = read_on(text.to_owned(), Vec::new());
    if config.is_some() {
        return (config, errors, left_out, now);
    }
    // The reading stopped at an error it cannot read past (in an entry of a
    // list of tables, or a required key left out): the sections it had not
    // reached are read one by one, each alone in the text.
    let sections = locate::sections(&now).unwrap_or_default();
    if sections.len() > 1 {
        for s in &sections {
            let (_, found, _, _) = read_on(s.alone(&now), left_out.clone());
            for mut d in found {
                d.key = s.in_whole(d.key);
                if !errors.contains(&d) && errors.len() < MAX_READ_ERRORS {
                    errors.push(d);
                }
            }
        }
    }
    (None, errors, left_out, now)
}

/// [`read`]'s loop over the whole `text`, given the keys whose lines were
/// already taken out of it.
fn read_on(text: String, left_out: Vec<String>) -> (Option<Config>, Vec<Diagnostic>, Vec<String>, String) {
    let (mut now, mut errors, mut left_out) = (text, Vec::new(), left_out);
    loop {
        let e = match toml::from_str::<Config>(&now) {
            Ok(c) => return (Some(c), errors, left_out, now),
            Err(e) => e,
        };
        let d = syntax_diagnostic(&now, &e);
        let line = d.line;
        let follow_on = e
            .message()
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
            // The line taken out held that key, or a value inside it
            // (`funnel[0].steps[1].withn` was on the line of `steps`).
            .is_some_and(|missing| left_out.iter().any(|k| k.split(['.', '[']).any(|seg| seg == missing)));
        if follow_on {
            return (None, errors, left_out, now);
        }
        let key = d.key.clone();
        errors.push(d);
        let Some(next) = line.filter(|_| errors.len() < MAX_READ_ERRORS).and_then(|l| without_line(&now, l)).filter(|next| *next != now) else {
            return (None, errors, left_out, now);
        };
        now = next;
        left_out.push(key);
    }
}

/// `text` with line `line` (1-based) emptied (a table header: with the
/// table's lines), if the rest is still valid TOML.
fn without_line(text: &str, line: usize) -> Option<String> {
    let is_header = |l: &str| l.trim_start().starts_with('[') && !l.contains('=');
    let first = text.lines().nth(line - 1)?;
    let header = is_header(first);
    // Only a `key = value` line or a single table: taking out an entry of a
    // list of tables, or one line of a list of inline tables, would renumber
    // the entries after it.
    let key = first.split_once('=').map(|(k, _)| k.trim()).filter(|k| !k.is_empty() && !k.starts_with(['{', '[', ',']));
    if first.trim_start().starts_with("[[") || (!header && key.is_none()) {
        return None;
    }
    let mut in_table = false;
    let out = locate::keep_lines(text, |n, l| {
        in_table = match n == line {
            true => header,
            false => in_table && !is_header(l),
        };
        !(n == line || in_table)
    });
    out.parse::<toml::Table>().ok().map(|_| out)
}

/// The top-level section of a key path: `model` of `model[0].stages`.
fn section(key: &str) -> &str {
    key.split(['.', '[']).next().unwrap_or(key)
}

fn syntax_diagnostic(text: &str, e: &toml::de::Error) -> Diagnostic {
    let line = e.span().map(|s| locate::line_of(text, s.start));
    let key = e.span().and_then(|s| locate::path_at(text, s.start).or_else(|| locate::key_at(text, s.start))).unwrap_or_else(|| "(syntax)".into());
    let mut message = e.message().trim().to_string();
    // The reader names the schema's types: `expected struct MatchConfig`.
    if let Some(at) = message.find("expected struct ") {
        let rest = &message[at + "expected struct ".len()..];
        let end = rest.find(|c: char| !c.is_alphanumeric() && c != '_').unwrap_or(rest.len());
        message = format!("{}expected a table{}", &message[..at], &rest[end..]);
    }
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
    fn every_error_is_reported_not_only_the_first_the_reader_meets() {
        let text = "[time]\nlatenes = \"1s\"\nidle_timeout = \"ten\"\nmax_future_skew = \"soon\"\n\n[[model]]\nname = \"life\"\ninitial = \"a\"\nstages = [\"a\", \"b\"]\ntransitions = [{ from = [\"a\"], to = \"zz\", on = { kind = \"x\" } }]\n";
        let err = parse(text).unwrap_err();
        let found: Vec<(Option<usize>, &str)> = err.iter().map(|d| (d.line, d.key.as_str())).collect();
        assert_eq!(
            found,
            [
                (Some(2), "time.latenes"),
                (Some(3), "time.idle_timeout"),
                (Some(4), "time.max_future_skew"),
                (Some(9), "model[0].stages[1]"),
                (Some(10), "model[0].transitions[0].to")
            ],
            "{err:?}"
        );
    }

    #[test]
    fn an_unknown_table_is_taken_out_whole_and_the_reading_goes_on() {
        let err = parse("[bogus]\nx = 1\n\n[time]\nidle_timeout = \"x\"\n").unwrap_err();
        let found: Vec<(Option<usize>, &str)> = err.iter().map(|d| (d.line, d.key.as_str())).collect();
        assert_eq!(found, [(Some(1), "bogus"), (Some(5), "time.idle_timeout"), (None, "model")], "{err:?}");
    }

    #[test]
    fn errors_after_a_key_given_twice_keep_their_lines() {
        let err =
            parse("[nats]\nurl = \"nats://a:4222\"\nurl = \"nats://b:4222\"\n\n[[model]]\nname = \"m\"\ninitial = \"q\"\nstages = [\"a\"]\n").unwrap_err();
        let found: Vec<(Option<usize>, &str)> = err.iter().map(|d| (d.line, d.key.as_str())).collect();
        assert_eq!(found, [(Some(3), "nats.url"), (Some(7), "model[0].initial"), (Some(8), "model[0].stages[0]")], "{err:?}");
    }

    #[test]
    fn a_line_inside_a_list_of_inline_tables_is_not_left_out() {
        let text = "[[model]]\nname = \"m\"\ninitial = \"a\"\nstages = [\"a\", \"b\"]\ntransitions = [\n  { from = [\"a\"], to = \"b\", on = { kind = \"x\", min_value = \"big\" } },\n  { from = [\"a\"], to = \"b\", on = { kind = \"x\", min_value = \"huge\" } },\n]\n";
        let err = parse(text).unwrap_err();
        let found: Vec<&str> = err.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(found, ["model[0].transitions[0].on.min_value"], "the second would be misnamed transitions[0]: {err:?}");
    }

    #[test]
    fn a_channel_left_out_does_not_make_the_models_naming_it_errors() {
        let text = "[channels]\napp = \"tech\"\nweb = \"tehc\"\n\n[[model]]\nname = \"m\"\ninitial = \"a\"\nstages = [\"a\", \"b\"]\ntransitions = [{ from = [\"a\"], to = \"b\", on = { kind = \"x\", channel = [\"web\"] } }]\n";
        let err = parse(text).unwrap_err();
        assert_eq!(err.iter().map(|d| d.key.as_str()).collect::<Vec<_>>(), ["channels.web"], "{err:?}");
    }

    #[test]
    fn a_required_key_with_a_wrong_value_is_one_error_not_two() {
        let err = parse("[[model]]\nname = 7\ninitial = \"a\"\nstages = [\"a\"]\n").unwrap_err();
        assert_eq!(err.len(), 1, "{err:?}");
        assert_eq!((err[0].line, err[0].key.as_str()), (Some(2), "model[0].name"), "{err:?}");
    }

    #[test]
    fn an_error_the_reading_cannot_pass_does_not_hide_the_other_sections_errors() {
        let text = "[time]\nidle_timeout = 10\n\n[[model]]\nname = \"m\"\ninitial = \"a\"\nstages = [\"a\"]\ntransitions = [{ from = [\"a\"], to = \"a\", on = { kind = \"x\", cnt = 3 } }]\n\n[[model]]\nname = 5\ninitial = \"a\"\nstages = [\"a\"]\n\n[[funnel]]\nname = \"f\"\nsteps = [\"a\"]\nwindow = \"5q\"\n\n[[model]]\nname = \"z\"\ninitial = \"a\"\nstages = [\"a\"]\n[[model.transitions]]\nfrom = [\"a\"]\nto = \"a\"\non = { kind = \"x\", min_value = \"big\" }\n";
        let err = parse(text).unwrap_err();
        let found: Vec<(Option<usize>, &str)> = err.iter().map(|d| (d.line, d.key.as_str())).collect();
        assert_eq!(
            found,
            [
                (Some(2), "time.idle_timeout"),
                (Some(8), "model[0].transitions[0].on.cnt"),
                (Some(11), "model[1].name"),
                (Some(18), "funnel[0].window"),
                (Some(27), "model[2].transitions[0].on.min_value")
            ],
            "{err:?}"
        );
    }

    #[test]
    fn a_missing_key_or_a_key_given_twice_in_an_entry_of_a_list_names_the_entry() {
        let entry = |name: &str| format!("[[trigger]]\nname = \"{name}\"\nchannels = [\"app\"]\non = {{ kind = \"x\" }}\nconsent = \"m\"\n");
        let err = parse(&format!("{}{}consent = \"n\"\n", entry("t"), entry("u"))).unwrap_err();
        assert_eq!((err[0].line, err[0].key.as_str()), (Some(11), "trigger[1].consent"), "{err:?}");
        let err = parse("[[funnel]]\nname = \"a\"\nsteps = [\"x\"]\nwindow = \"1d\"\n\n[[funnel]]\nname = \"b\"\nsteps = [\"x\"]\n").unwrap_err();
        assert_eq!((err[0].line, err[0].key.as_str()), (Some(6), "funnel[1]"), "{err:?}");
        assert!(err[0].message.contains("missing field `window`"), "{err:?}");
    }

    #[test]
    fn the_other_sections_are_still_checked_when_one_cannot_be_read() {
        let text = "[engine]\nshards = 300\n\n[attribution]\nmodels = [\"linear\", \"nope\"]\n\n[[model]]\nname = \"m\"\ninitial = \"a\"\nstages = [\"a\", \"b\"]\ntransitions = [{ from = [\"a\"], to = \"b\", on = { kind = \"x\", min_value = \"big\" } }]\n";
        let err = parse(text).unwrap_err();
        let found: Vec<(Option<usize>, &str)> = err.iter().map(|d| (d.line, d.key.as_str())).collect();
        assert_eq!(found, [(Some(2), "engine.shards"), (Some(5), "attribution.models[1]"), (Some(11), "model[0].transitions[0].on.min_value")], "{err:?}");
        // Not when channels could not be read: the other sections refer to them.
        let err = parse(&text.replace("[engine]", "[channels]\napp = \"x\"\n[engine]")).unwrap_err();
        assert_eq!(err.iter().map(|d| d.key.as_str()).collect::<Vec<_>>(), ["channels.app", "model[0].transitions[0].on.min_value"], "{err:?}");
    }

    #[test]
    fn a_section_written_as_a_list_is_refused_and_no_type_name_shows() {
        let err = parse("kinds = [\"x\"]\nhttp = []\ntime = [\"1s\"]\n").unwrap_err();
        let found: Vec<String> = err.iter().filter(|d| d.severity == Severity::Error).map(|d| d.to_string()).collect();
        assert_eq!(found, ["line 2: error: http: must be a table (`[http]`), not a list", "line 3: error: time: must be a table (`[time]`), not a list"]);
        let err = parse("[[model]]\nname = \"m\"\ninitial = \"a\"\nstages = [\"a\"]\ntransitions = [{ from = [\"a\"], to = \"a\", on = 5 }]\n").unwrap_err();
        assert_eq!(err[0].message, "invalid type: integer `5`, expected a table", "{err:?}");
    }

    #[test]
    fn empty_config_is_valid_with_defaults() {
        let loaded = parse("").unwrap();
        assert_eq!(loaded.config.time.allowed_lateness, Dur::from_secs(5));
        assert_eq!(loaded.config.nats.subjects, vec!["touch.>"]);
    }
}
