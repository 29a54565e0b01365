//! Finding the line of a key path (`model[0].transitions[2].to`) in the
//! original TOML text, so semantic errors point where the user must edit.

use super::Diagnostic;
use std::collections::BTreeSet;
use std::ops::Range;
use toml_edit::{Document, Item, Table, Value};

/// Fills in `line` for every diagnostic whose key path exists in `text`.
pub fn add_lines(text: &str, findings: &mut [Diagnostic]) {
    let Ok(doc) = Document::parse(text.to_owned()) else {
        return;
    };
    for d in findings.iter_mut().filter(|d| d.line.is_none()) {
        d.line = span_of(doc.as_item(), &d.key).map(|start| line_of(text, start));
    }
}

/// 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The key path (`model[0].transitions[1].on.within`) of the key or value
/// at byte `offset`, when `text` is well-formed TOML (the reader refused a
/// value, not the syntax).
pub fn path_at(text: &str, offset: usize) -> Option<String> {
    let doc = Document::parse(text.to_owned()).ok()?;
    let mut path = String::new();
    let Item::Table(root) = doc.as_item() else { return None };
    in_table(root, offset, &mut path).then_some(path)
}

fn covers(span: Option<Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.start <= offset && offset < s.end.max(s.start + 1))
}

/// Runs `found` with `seg` appended to `path`, and takes it off again
/// unless `found` says the offset is there.
fn under(path: &mut String, seg: Seg<'_>, found: impl FnOnce(&mut String) -> bool) -> bool {
    let at = path.len();
    match seg {
        Seg::Key(name) => {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(name);
        }
        Seg::Index(i) => path.push_str(&format!("[{i}]")),
    }
    found(path) || {
        path.truncate(at);
        false
    }
}

fn in_table(t: &Table, offset: usize, path: &mut String) -> bool {
    t.iter().any(|(name, _)| {
        let Some((key, item)) = t.get_key_value(name) else { return false };
        under(path, Seg::Key(name), |path| {
            covers(key.span(), offset)
                || match item {
                    Item::Table(child) => in_table(child, offset, path),
                    // An error at an entry's `[[header]]` (a required key missing) is that entry's.
                    Item::ArrayOfTables(tables) => tables
                        .iter()
                        .enumerate()
                        .any(|(i, child)| under(path, Seg::Index(i), |path| covers(child.span(), offset) || in_table(child, offset, path))),
                    Item::Value(v) => in_value(v, offset, path) || covers(v.span(), offset),
                    Item::None => false,
                }
        })
    })
}

fn in_value(v: &Value, offset: usize, path: &mut String) -> bool {
    match v {
        Value::Array(values) => {
            values.iter().enumerate().any(|(i, child)| under(path, Seg::Index(i), |path| in_value(child, offset, path) || covers(child.span(), offset)))
        }
        Value::InlineTable(t) => t.iter().any(|(name, _)| {
            let Some((key, child)) = t.get_key_value(name) else { return false };
            under(path, Seg::Key(name), |path| {
                covers(key.span(), offset) || child.as_value().is_some_and(|v| in_value(v, offset, path)) || covers(child.span(), offset)
            })
        }),
        _ => false,
    }
}

/// One top-level section of a config text: a table, a key, or one entry of a
/// list of tables, with every line it is written on.
pub struct Section {
    pub key: String,
    /// The entry's place, for an entry of a list of tables.
    pub index: Option<usize>,
    /// 1-based, in order.
    pub lines: BTreeSet<usize>,
}

/// `text` with the lines `keep` refuses emptied (given each line's 1-based
/// number and text, in order), so that the others keep their numbers.
pub fn keep_lines(text: &str, mut keep: impl FnMut(usize, &str) -> bool) -> String {
    text.split_inclusive('\n')
        .enumerate()
        .map(|(i, l)| match keep(i + 1, l) {
            true => l,
            false => &l[l.trim_end_matches(['\r', '\n']).len()..],
        })
        .collect()
}

impl Section {
    /// `text` with only this section's lines kept: it reads as a config
    /// with this section alone.
    pub fn alone(&self, text: &str) -> String {
        keep_lines(text, |n, _| self.lines.contains(&n))
    }

    /// A key path found in [`Section::alone`]'s text, as the whole text
    /// names it: an entry of a list of tables is the first there.
    pub fn in_whole(&self, key: String) -> String {
        match self.index {
            Some(i) => match key.strip_prefix(&format!("{}[0]", self.key)) {
                Some(rest) => format!("{}[{i}]{rest}", self.key),
                None => key,
            },
            None => key,
        }
    }
}

/// The top-level sections of `text`, when it is well-formed TOML.
pub fn sections(text: &str) -> Option<Vec<Section>> {
    let doc = Document::parse(text.to_owned()).ok()?;
    let Item::Table(root) = doc.as_item() else { return None };
    let mut out = Vec::new();
    for (name, _) in root.iter() {
        let Some((key, item)) = root.get_key_value(name) else { continue };
        match item {
            Item::ArrayOfTables(tables) => {
                for (i, t) in tables.iter().enumerate() {
                    out.push(Section { key: name.to_owned(), index: Some(i), lines: lines_of(|l| mark_table(text, t, l)) });
                }
            }
            _ => {
                let lines = lines_of(|l| {
                    mark(text, key.span(), l);
                    mark_item(text, item, l);
                });
                out.push(Section { key: name.to_owned(), index: None, lines });
            }
        }
    }
    Some(out)
}

/// The lines `mark_lines` marks.
fn lines_of(mark_lines: impl FnOnce(&mut BTreeSet<usize>)) -> BTreeSet<usize> {
    let mut lines = BTreeSet::new();
    mark_lines(&mut lines);
    lines
}

/// Adds the lines `span` is written on.
fn mark(text: &str, span: Option<Range<usize>>, lines: &mut BTreeSet<usize>) {
    if let Some(s) = span {
        lines.extend(line_of(text, s.start)..=line_of(text, s.end.max(s.start + 1) - 1));
    }
}

fn mark_table(text: &str, t: &Table, lines: &mut BTreeSet<usize>) {
    mark(text, t.span(), lines);
    for (name, _) in t.iter() {
        if let Some((key, item)) = t.get_key_value(name) {
            mark(text, key.span(), lines);
            mark_item(text, item, lines);
        }
    }
}

fn mark_item(text: &str, item: &Item, lines: &mut BTreeSet<usize>) {
    match item {
        Item::Value(v) => mark(text, v.span(), lines),
        Item::Table(t) => mark_table(text, t, lines),
        Item::ArrayOfTables(tables) => tables.iter().for_each(|t| mark_table(text, t, lines)),
        Item::None => {}
    }
}

/// The dotted key whose value starts at or encloses `offset`, best effort, for syntax errors.
pub fn key_at(text: &str, offset: usize) -> Option<String> {
    let line_start = text[..offset.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?;
    let key = line.split('=').next()?.trim();
    // Inside an inline table (`{ from = [..], on = { knd = "x" } }`): the
    // last `name =` before the error, rather than the line's first text.
    let key = match key.contains(['{', ',']) {
        true => last_key_before(&line[..(offset - line_start).min(line.len())]).unwrap_or(key),
        false => key,
    };
    // The table header above (its comment left out), and whether it starts
    // an entry of a list of tables.
    let header = |l: &str| {
        let l = l.split('#').next().unwrap_or("").trim();
        l.strip_prefix('[').map(|t| (t.trim_start_matches('[').trim_end_matches(']').trim().to_string(), t.starts_with('[')))
    };
    // An error at a table header (`[model]` where a list is expected) is that table's.
    if key.starts_with('[') {
        return header(line).map(|(t, _)| t);
    }
    let above = &text[..line_start];
    let table = above.lines().rev().find_map(header).map(|(t, list)| match list && !t.contains('.') {
        // Which entry: `[[trigger]]` headers down to here.
        true => {
            let n = above.lines().filter(|l| header(l).is_some_and(|(h, list)| list && h == t)).count();
            format!("{t}[{}]", n.saturating_sub(1))
        }
        false => t,
    });
    if key.is_empty() {
        return table;
    }
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    })
}

/// The last bare key followed by `=` in `s`, or the key `s` ends inside of.
fn last_key_before(s: &str) -> Option<&str> {
    let is_key = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let mut best = None;
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let name = rest[..eq].trim_end();
        let start = name.char_indices().rev().find(|(_, c)| !is_key(*c)).map_or(0, |(i, c)| i + c.len_utf8());
        if start < name.len() {
            best = Some(&name[start..]);
        }
        rest = &rest[eq + 1..];
    }
    // An error at a key itself (an unknown field) points into its name.
    let tail = rest.trim_start_matches(|c: char| !is_key(c));
    let tail_key = &tail[..tail.find(|c: char| !is_key(c)).unwrap_or(tail.len())];
    if !tail_key.is_empty() && !rest.contains(['"', '[']) {
        return Some(tail_key);
    }
    best
}

/// Start offset of the deepest item on `path` that exists.
fn span_of(root: &Item, path: &str) -> Option<usize> {
    let mut item = root;
    let mut best = None;
    for seg in segments(path) {
        let next = match seg {
            Seg::Key(k) => item.get(k),
            Seg::Index(i) => item.get(i),
        };
        match next {
            Some(n) => {
                item = n;
                if let Some(span) = n.span() {
                    best = Some(span.start);
                }
            }
            None => break,
        }
    }
    best
}

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (name, rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        if !name.is_empty() {
            out.push(Seg::Key(name));
        }
        for idx in rest.split('[') {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                out.push(Seg::Index(i));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Severity;

    #[test]
    fn a_line_with_non_ascii_text_before_an_equals_sign_is_read_whole() {
        assert_eq!(last_key_before("  { from = [\"é=\"], to = \"b\", on = { knd = "), Some("knd"));
        assert_eq!(last_key_before("name = \"ü\" # ß=x"), Some("x"));
        let e = crate::config::parse(
            "[[model]]\nname = \"m\"\ninitial = \"a\"\nstages = [\"a\", \"b\"]\ntransitions = [\n  { from = [\"é=\"], to = \"b\", on = { knd = \"x\" } },\n]\n",
        );
        let e = e.expect_err("an unknown key");
        assert_eq!(e.iter().map(|d| d.line).collect::<Vec<_>>(), [Some(6)], "{e:?}");
    }

    #[test]
    fn a_refused_value_inside_inline_tables_in_arrays_is_named_by_its_whole_path() {
        let text = "[[model]]\nname = \"a\"\ninitial = \"x\"\nstages = [\"x\"]\n[[model]]\nname = \"b\"\ninitial = \"x\"\nstages = [\"x\", \"y\"]\ntransitions = [\n  { from = [\"x\"], to = \"y\", on = { kind = \"k\" } },\n  { from = [\"x\"], to = \"y\", on = { kind = \"k\", min_value = \"big\" }, extra = 1 },\n]\n";
        let at = |needle: &str| text.find(needle).expect("in the text");
        assert_eq!(path_at(text, at("\"big\"")).as_deref(), Some("model[1].transitions[1].on.min_value"));
        assert_eq!(path_at(text, at("extra")).as_deref(), Some("model[1].transitions[1].extra"));
        assert_eq!(path_at(text, at("name = \"b\"")).as_deref(), Some("model[1].name"));
        let e = crate::config::parse(&text.replace(", extra = 1", "")).expect_err("a string for a number");
        assert_eq!((e[0].key.as_str(), e[0].line), ("model[1].transitions[1].on.min_value", Some(11)), "{e:?}");
    }

    #[test]
    fn finds_lines_inside_arrays_of_tables_and_inline_arrays() {
        let text =
            "[[model]]\nname = \"a\"\n\n[[model]]\nname = \"b\"\ntransitions = [\n  { from = [\"x\"], to = \"y\" },\n  { from = [\"y\"], to = \"z\" },\n]\n";
        let mut d = vec![Diagnostic { severity: Severity::Error, key: "model[1].transitions[1].to".into(), line: None, message: String::new() }];
        add_lines(text, &mut d);
        assert_eq!(d[0].line, Some(8));
    }
}
