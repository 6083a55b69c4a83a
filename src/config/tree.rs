//! A TOML document that remembers where each value was written.
//!
//! Deserializing straight into typed structs stops at the first wrong type
//! and cannot tell an unknown key from a known one without failing. Instead
//! the file is read into this tree (every value with its byte span), and the
//! validators walk it with [`Table`], which records every key they ask for:
//! whatever is left over is an unknown key, and a wrong type is one problem
//! among many, so `cadence check` lists them all in one run, each with its
//! dotted key and line.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::load::{Problem, Severity};
use crate::domain::Wait;

/// The key toml uses to pass a datetime through serde's data model.
const DATETIME_KEY: &str = "$__toml_private_datetime";

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub span: Range<usize>,
    pub kind: Kind,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// Entries in the order written.
    Table(Vec<(String, Node)>),
    Array(Vec<Node>),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// A TOML date or datetime, as written.
    Datetime(String),
}

impl Kind {
    fn describe(&self) -> &'static str {
        match self {
            Kind::Table(_) => "a table",
            Kind::Array(_) => "an array",
            Kind::Str(_) => "a string",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a float",
            Kind::Bool(_) => "a boolean",
            Kind::Datetime(_) => "a date",
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = toml::Spanned::<Kind>::deserialize(d)?;
        Ok(Node { span: spanned.span(), kind: spanned.into_inner() })
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KindVisitor)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Kind;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a TOML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Kind, E> {
        Ok(Kind::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Kind, E> {
        Ok(Kind::Int(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Kind, E> {
        i64::try_from(v).map(Kind::Int).map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Kind, E> {
        Ok(Kind::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Kind, E> {
        Ok(Kind::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Kind, E> {
        Ok(Kind::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Kind::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == DATETIME_KEY {
                let text: String = map.next_value()?;
                return Ok(Kind::Datetime(text));
            }
            let value: Node = map.next_value()?;
            entries.push((key, value));
        }
        Ok(Kind::Table(entries))
    }
}

/// Parses a TOML document; a syntax error comes back as a located problem.
pub(crate) fn parse(file: &Path, src: &str) -> Result<Node, Problem> {
    toml::from_str::<Node>(src).map_err(|e| {
        let line = e.span().map(|s| line_of(src, s.start));
        Problem { severity: Severity::Error, file: file.to_path_buf(), key: None, line, message: e.message().trim().to_string() }
    })
}

/// 1-based line of a byte offset.
pub(crate) fn line_of(src: &str, offset: usize) -> usize {
    let end = offset.min(src.len());
    src.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
}

/// Collects problems for one file.
pub(crate) struct Sink<'a> {
    pub file: PathBuf,
    src: &'a str,
    pub problems: &'a mut Vec<Problem>,
}

impl<'a> Sink<'a> {
    pub fn new(file: &Path, src: &'a str, problems: &'a mut Vec<Problem>) -> Self {
        Sink { file: file.to_path_buf(), src, problems }
    }

    pub fn line(&self, span: &Range<usize>) -> usize {
        line_of(self.src, span.start)
    }

    fn push(&mut self, severity: Severity, key: &str, span: Option<&Range<usize>>, message: String) {
        let line = span.map(|s| line_of(self.src, s.start));
        let key = (!key.is_empty()).then(|| key.to_string());
        self.problems.push(Problem { severity, file: self.file.clone(), key, line, message });
    }

    pub fn error(&mut self, key: &str, span: Option<&Range<usize>>, message: impl Into<String>) {
        self.push(Severity::Error, key, span, message.into());
    }

    pub fn warn(&mut self, key: &str, span: Option<&Range<usize>>, message: impl Into<String>) {
        self.push(Severity::Warning, key, span, message.into());
    }

    pub fn error_at<T>(&mut self, v: &Val<T>, message: impl Into<String>) {
        self.push(Severity::Error, &v.key, Some(&v.span), message.into());
    }

    pub fn warn_at<T>(&mut self, v: &Val<T>, message: impl Into<String>) {
        self.push(Severity::Warning, &v.key, Some(&v.span), message.into());
    }
}

/// A value read from the tree, with where it was written.
#[derive(Debug, Clone)]
pub(crate) struct Val<T> {
    pub v: T,
    pub key: String,
    pub span: Range<usize>,
}

impl<T> Val<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Val<U> {
        Val { v: f(self.v), key: self.key, span: self.span }
    }
}

/// A table being validated: every key asked for is remembered, so
/// [`Table::finish`] can report the rest as unknown.
pub(crate) struct Table<'n> {
    pub path: String,
    pub span: Range<usize>,
    entries: &'n [(String, Node)],
    asked: Vec<&'static str>,
}

impl<'n> Table<'n> {
    /// The document root, or an error when it is not a table (never happens
    /// for a parsed TOML document, but the tree type allows it).
    pub fn root(node: &'n Node) -> Table<'n> {
        match &node.kind {
            Kind::Table(entries) => Table { path: String::new(), span: node.span.clone(), entries, asked: Vec::new() },
            _ => Table { path: String::new(), span: node.span.clone(), entries: &[], asked: Vec::new() },
        }
    }

    /// A table with no entries (for absent optional sections), so defaults
    /// apply through the same code.
    pub fn empty(path: String) -> Table<'n> {
        Table { path, span: 0..0, entries: &[], asked: Vec::new() }
    }

    pub fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub fn has(&mut self, key: &'static str) -> bool {
        self.node(key).is_some()
    }

    /// The raw node under `key`, marking it known.
    pub fn node(&mut self, key: &'static str) -> Option<&'n Node> {
        if !self.asked.contains(&key) {
            self.asked.push(key);
        }
        self.entries.iter().find(|(k, _)| k == key).map(|(_, n)| n)
    }

    fn wrong(&self, sink: &mut Sink, key: &str, node: &Node, expected: &str) {
        sink.error(&self.key_path(key), Some(&node.span), format!("expected {expected}, found {}", node.kind.describe()));
    }

    pub fn str(&mut self, sink: &mut Sink, key: &'static str) -> Option<Val<String>> {
        let node = self.node(key)?;
        match &node.kind {
            Kind::Str(s) => Some(Val { v: s.clone(), key: self.key_path(key), span: node.span.clone() }),
            _ => {
                self.wrong(sink, key, node, "a string");
                None
            }
        }
    }

    /// A string that must be present; reports it missing otherwise.
    pub fn req_str(&mut self, sink: &mut Sink, key: &'static str) -> Option<Val<String>> {
        if !self.has(key) {
            sink.error(&self.key_path(key), Some(&self.span), format!("missing `{key}`"));
            return None;
        }
        self.str(sink, key)
    }

    pub fn string_or(&mut self, sink: &mut Sink, key: &'static str, default: &str) -> String {
        self.str(sink, key).map(|v| v.v).unwrap_or_else(|| default.to_string())
    }

    pub fn int(&mut self, sink: &mut Sink, key: &'static str) -> Option<Val<i64>> {
        let node = self.node(key)?;
        match &node.kind {
            Kind::Int(i) => Some(Val { v: *i, key: self.key_path(key), span: node.span.clone() }),
            _ => {
                self.wrong(sink, key, node, "an integer");
                None
            }
        }
    }

    /// An integer in `min..=max`, else `default` (with a problem if present
    /// but out of range).
    pub fn int_in<T: TryFrom<i64> + Copy>(&mut self, sink: &mut Sink, key: &'static str, min: i64, max: i64, default: T) -> T {
        let Some(v) = self.int(sink, key) else { return default };
        if v.v < min || v.v > max {
            sink.error_at(&v, format!("must be between {min} and {max}, not {}", v.v));
            return default;
        }
        T::try_from(v.v).unwrap_or(default)
    }

    pub fn opt_int_in<T: TryFrom<i64> + Copy>(&mut self, sink: &mut Sink, key: &'static str, min: i64, max: i64) -> Option<T> {
        let v = self.int(sink, key)?;
        if v.v < min || v.v > max {
            sink.error_at(&v, format!("must be between {min} and {max}, not {}", v.v));
            return None;
        }
        T::try_from(v.v).ok()
    }

    /// A number (integer or float).
    pub fn float(&mut self, sink: &mut Sink, key: &'static str) -> Option<Val<f64>> {
        let node = self.node(key)?;
        match &node.kind {
            Kind::Float(f) => Some(Val { v: *f, key: self.key_path(key), span: node.span.clone() }),
            Kind::Int(i) => Some(Val { v: *i as f64, key: self.key_path(key), span: node.span.clone() }),
            _ => {
                self.wrong(sink, key, node, "a number");
                None
            }
        }
    }

    pub fn bool_or(&mut self, sink: &mut Sink, key: &'static str, default: bool) -> bool {
        let Some(node) = self.node(key) else { return default };
        match &node.kind {
            Kind::Bool(b) => *b,
            _ => {
                self.wrong(sink, key, node, "true or false");
                default
            }
        }
    }

    /// An array of strings; each wrong element is its own problem.
    pub fn str_list(&mut self, sink: &mut Sink, key: &'static str) -> Option<Vec<Val<String>>> {
        let node = self.node(key)?;
        let Kind::Array(items) = &node.kind else {
            self.wrong(sink, key, node, "an array of strings");
            return None;
        };
        let base = self.key_path(key);
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let key = format!("{base}[{i}]");
            match &item.kind {
                Kind::Str(s) => out.push(Val { v: s.clone(), key, span: item.span.clone() }),
                // A bare TOML date (holidays = [2026-12-25]) reads as text.
                Kind::Datetime(s) => out.push(Val { v: s.clone(), key, span: item.span.clone() }),
                other => sink.error(&key, Some(&item.span), format!("expected a string, found {}", other.describe())),
            }
        }
        Some(out)
    }

    pub fn table(&mut self, sink: &mut Sink, key: &'static str) -> Option<Table<'n>> {
        let node = self.node(key)?;
        match &node.kind {
            Kind::Table(entries) => Some(Table { path: self.key_path(key), span: node.span.clone(), entries, asked: Vec::new() }),
            _ => {
                self.wrong(sink, key, node, "a table");
                None
            }
        }
    }

    /// The table under `key`, or an empty one so defaults apply.
    pub fn table_or_empty(&mut self, sink: &mut Sink, key: &'static str) -> Table<'n> {
        let path = self.key_path(key);
        self.table(sink, key).unwrap_or_else(|| Table::empty(path))
    }

    /// An array of tables (`[[reps]]`), each with its indexed path.
    pub fn tables(&mut self, sink: &mut Sink, key: &'static str) -> Vec<Table<'n>> {
        let Some(node) = self.node(key) else { return Vec::new() };
        let Kind::Array(items) = &node.kind else {
            self.wrong(sink, key, node, "an array of tables");
            return Vec::new();
        };
        let base = self.key_path(key);
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{base}[{i}]");
            match &item.kind {
                Kind::Table(entries) => out.push(Table { path, span: item.span.clone(), entries, asked: Vec::new() }),
                other => sink.error(&path, Some(&item.span), format!("expected a table, found {}", other.describe())),
            }
        }
        out
    }

    /// A duration such as `3 business days`.
    pub fn wait(&mut self, sink: &mut Sink, key: &'static str) -> Option<Val<Wait>> {
        let v = self.str(sink, key)?;
        match Wait::parse(&v.v) {
            Ok(w) => Some(v.map(|_| w)),
            Err(e) => {
                sink.error_at(&v, e.to_string());
                None
            }
        }
    }

    pub fn wait_or(&mut self, sink: &mut Sink, key: &'static str, default: Wait) -> Wait {
        self.wait(sink, key).map(|v| v.v).unwrap_or(default)
    }

    /// A fixed length (seconds to days; business days make no sense for a
    /// timeout or an interval).
    pub fn duration_or(&mut self, sink: &mut Sink, key: &'static str, default: Duration) -> Duration {
        let Some(v) = self.wait(sink, key) else { return default };
        match v.v {
            Wait::BusinessDays(_) => {
                sink.error_at(&v, "business days are not a fixed length; write e.g. \"30s\", \"5m\" or \"1 day\"");
                default
            }
            w => w.approx().to_std().unwrap_or(default),
        }
    }

    /// Reports every key nobody asked for.
    pub fn finish(self, sink: &mut Sink) {
        for (key, node) in self.entries {
            if !self.asked.contains(&key.as_str()) {
                let mut known: Vec<&str> = self.asked.clone();
                known.sort_unstable();
                let hint = if known.is_empty() { String::new() } else { format!(" (known keys here: {})", known.join(", ")) };
                sink.error(&self.key_path(key), Some(&node.span), format!("unknown key `{key}`{hint}"));
            }
        }
    }
}
