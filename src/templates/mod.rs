//! Email templates: handlebars with front matter, strict rendering.
//!
//! Subjects and text bodies are rendered without HTML escaping; the optional
//! `NAME.html.hbs` body is rendered with it. Rendering is strict: a variable
//! the lead does not have is an error naming it, never an empty string,
//! because "Hi ," in a prospect's inbox costs more than a delayed send.
//! Templates are compiled once at load and checked against a sample lead, so
//! a typo is found by `cadence check`, not by the first real lead.

mod check;
mod context;
mod front_matter;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use handlebars::{Context, Handlebars, Helper, RenderContext, RenderError as HbError, RenderErrorReason, ScopedJson};
use sha2::{Digest, Sha256};

pub use context::{lead_context, sample_agenda_context, sample_context, sample_digest_context, LeadVars, RepVars};

/// The name of the manager digest template: rendered with report data, not
/// a lead, and never used as a sequence step.
pub const DIGEST: &str = "digest";
/// The name of the rep's agenda email template (`[agenda] schedule`):
/// rendered with the agenda, not a lead.
pub const AGENDA: &str = "agenda";

/// A problem found while loading templates: file, line (when known), message.
pub type TemplateProblem = (PathBuf, Option<usize>, String);

/// The compiled templates of a project, with each template's content hash.
/// Cloning is cheap: the compiled registries are shared.
#[derive(Clone, Default)]
pub struct Templates {
    /// Template name -> content hash (of the .hbs and .html.hbs files).
    pub hashes: BTreeMap<String, String>,
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Subjects (`subject:NAME`), text bodies (`text:NAME`) and partials,
    /// without escaping.
    text: Handlebars<'static>,
    /// HTML bodies (`html:NAME`) and partials, HTML-escaped.
    html: Handlebars<'static>,
    /// Names that have an HTML alternative.
    with_html: BTreeSet<String>,
    /// Names that compiled; `hashes` may also hold broken ones (so that a
    /// sequence naming them is not reported twice).
    compiled: BTreeSet<String>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").field("names", &self.hashes.keys().collect::<Vec<_>>()).finish()
    }
}

/// A rendered email.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("template `{0}` does not exist")]
    Unknown(String),
    /// Strict mode: the context lacks a variable the template uses.
    #[error("template `{template}` uses variable `{variable}`, which this lead does not have")]
    MissingVariable { template: String, variable: String },
    #[error("template `{template}`: {message}")]
    Render { template: String, message: String },
}

/// Which part of a template an internal registry name belongs to.
fn part_of(internal: &str) -> (&str, &str) {
    for (prefix, part) in [("subject:", "subject"), ("text:", "text body"), ("html:", "HTML body")] {
        if let Some(name) = internal.strip_prefix(prefix) {
            return (name, part);
        }
    }
    (internal, "partial")
}

fn convert_error(name: &str, e: &HbError) -> RenderError {
    if let RenderErrorReason::MissingVariable(Some(var)) = e.reason() {
        return RenderError::MissingVariable { template: name.to_string(), variable: var.clone() };
    }
    let mut message = e.reason().to_string();
    if let Some(inner) = &e.template_name {
        let (n, part) = part_of(inner);
        let place = if part == "partial" { format!("partial `{n}`") } else { part.to_string() };
        message = match e.line_no {
            Some(l) => format!("{message} ({place}, line {l})"),
            None => format!("{message} ({place})"),
        };
    }
    RenderError::Render { template: name.to_string(), message }
}

/// Subjects are one header line: any CR/LF (or other control character)
/// becomes a space.
fn one_line(s: &str) -> String {
    let mapped: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    mapped.trim().to_string()
}

/// `{{default VAR "fallback"}}`: VAR when it is present and not empty,
/// else the fallback. Strict mode hands a missing helper parameter to the
/// helper as "missing" rather than failing, so this is how a template makes
/// an optional variable safe.
struct DefaultHelper;

impl handlebars::HelperDef for DefaultHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, HbError> {
        let fallback = h
            .param(1)
            .filter(|p| !p.is_value_missing())
            .ok_or_else(|| RenderErrorReason::Other("`default` needs a fallback: {{default first_name \"there\"}}".into()))?;
        let chosen = match h.param(0) {
            Some(p) if !p.is_value_missing() && !is_blank(p.value()) => p.value().clone(),
            _ => fallback.value().clone(),
        };
        Ok(ScopedJson::Derived(chosen))
    }
}

fn is_blank(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

fn registry(escape: bool) -> Handlebars<'static> {
    let mut r = Handlebars::new();
    r.set_strict_mode(true);
    if !escape {
        r.register_escape_fn(handlebars::no_escape);
    }
    r.register_helper("default", Box::new(DefaultHelper));
    r
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b"\0");
        }
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// Files under a folder ending in `.hbs`, sorted, split into plain and
/// `.html.hbs`.
fn hbs_files(dir: &Path) -> std::io::Result<(BTreeMap<String, PathBuf>, BTreeMap<String, PathBuf>)> {
    let mut plain = BTreeMap::new();
    let mut html = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !path.is_file() {
            continue;
        }
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else { continue };
        if let Some(stem) = file.strip_suffix(".html.hbs") {
            html.insert(stem.to_string(), path.clone());
        } else if let Some(stem) = file.strip_suffix(".hbs") {
            plain.insert(stem.to_string(), path.clone());
        }
    }
    Ok((plain, html))
}

fn read(path: &Path, problems: &mut Vec<TemplateProblem>) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Some(s),
        Err(e) => {
            problems.push((path.to_path_buf(), None, format!("cannot read: {e}")));
            None
        }
    }
}

fn syntax_problem(file: &Path, line_offset: usize, e: &handlebars::TemplateError) -> TemplateProblem {
    let line = e.pos().map(|(l, _)| l + line_offset);
    (file.to_path_buf(), line, format!("template syntax: {}", e.reason()))
}

impl Templates {
    /// Loads every template under `dir` (and `dir/partials`), failing with
    /// every problem found.
    pub fn load(dir: &Path) -> Result<Templates, Vec<TemplateProblem>> {
        let (t, problems) = Templates::load_checked(dir);
        if problems.is_empty() {
            Ok(t)
        } else {
            Err(problems)
        }
    }

    /// Loads what it can and reports the rest: syntax errors, front matter,
    /// and a strict render of every template against a sample lead. The
    /// returned set names every template file found, even broken ones.
    pub fn load_checked(dir: &Path) -> (Templates, Vec<TemplateProblem>) {
        let mut problems = Vec::new();
        let mut text = registry(false);
        let mut html = registry(true);
        let mut hashes = BTreeMap::new();
        let mut with_html = BTreeSet::new();
        let mut compiled = BTreeSet::new();
        // Where each template's parts start, to turn AST lines into file lines.
        let mut places: BTreeMap<String, Places> = BTreeMap::new();

        let (plain, html_files) = match hbs_files(dir) {
            Ok(f) => f,
            Err(e) => {
                problems.push((dir.to_path_buf(), None, format!("cannot read the templates folder: {e}")));
                return (Templates::default(), problems);
            }
        };

        // Partials first: templates refer to them.
        let partial_dir = dir.join("partials");
        let mut partial_files: BTreeMap<String, PathBuf> = BTreeMap::new();
        if partial_dir.is_dir() {
            match hbs_files(&partial_dir) {
                Ok((p_plain, p_html)) => {
                    for (stem, path) in &p_plain {
                        let Some(src) = read(path, &mut problems) else { continue };
                        partial_files.insert(stem.clone(), path.clone());
                        if let Err(e) = text.register_partial(stem, &src) {
                            problems.push(syntax_problem(path, 0, &e));
                            continue;
                        }
                        if !p_html.contains_key(stem) {
                            let _ = html.register_partial(stem, &src);
                        }
                    }
                    // `partials/NAME.html.hbs` overrides NAME in HTML bodies.
                    for (stem, path) in &p_html {
                        let Some(src) = read(path, &mut problems) else { continue };
                        if let Err(e) = html.register_partial(stem, &src) {
                            problems.push(syntax_problem(path, 0, &e));
                        }
                    }
                }
                Err(e) => problems.push((partial_dir.clone(), None, format!("cannot read the partials folder: {e}"))),
            }
        }

        for (stem, path) in &html_files {
            if !plain.contains_key(stem) {
                problems.push((
                    path.clone(),
                    None,
                    format!("{stem}.html.hbs has no {stem}.hbs beside it (that file holds the subject and the text body)"),
                ));
            }
        }

        for (name, path) in &plain {
            let Some(src) = read(path, &mut problems) else { continue };
            let html_path = html_files.get(name);
            let html_src = html_path.and_then(|p| read(p, &mut problems));
            let mut parts: Vec<&[u8]> = vec![src.as_bytes()];
            if let Some(h) = &html_src {
                parts.push(h.as_bytes());
            }
            hashes.insert(name.clone(), sha256_hex(&parts));

            let fm = match front_matter::split(&src) {
                Ok(fm) => fm,
                Err((line, message)) => {
                    problems.push((path.clone(), line, message));
                    continue;
                }
            };
            let mut ok = true;
            if let Err(e) = text.register_template_string(&format!("subject:{name}"), &fm.subject) {
                problems.push((path.clone(), Some(fm.subject_line), format!("subject: template syntax: {}", e.reason())));
                ok = false;
            }
            if let Err(e) = text.register_template_string(&format!("text:{name}"), fm.body) {
                problems.push(syntax_problem(path, fm.body_line - 1, &e));
                ok = false;
            }
            if let (Some(hp), Some(hsrc)) = (html_path, &html_src) {
                if let Err(e) = html.register_template_string(&format!("html:{name}"), hsrc) {
                    problems.push(syntax_problem(hp, 0, &e));
                    ok = false;
                }
                with_html.insert(name.clone());
            }
            if ok {
                compiled.insert(name.clone());
                places.insert(
                    name.clone(),
                    Places { file: path.clone(), subject_line: fm.subject_line, body_line: fm.body_line, html_file: html_path.cloned() },
                );
            }
        }

        let templates = Templates { hashes, inner: Arc::new(Inner { text, html, with_html, compiled }) };
        for (name, at) in &places {
            templates.check_one(name, at, &partial_files, &mut problems);
        }
        (templates, problems)
    }

    /// The sample-lead check of one compiled template: first a static look
    /// at every variable it names (strict mode cannot see inside a false
    /// `{{#if}}`), then a real strict render.
    fn check_one(&self, name: &str, at: &Places, partial_files: &BTreeMap<String, PathBuf>, problems: &mut Vec<TemplateProblem>) {
        let before = problems.len();
        if name != DIGEST && name != AGENDA {
            let parts = [
                (format!("subject:{name}"), &self.inner.text, at.file.clone(), at.subject_line - 1),
                (format!("text:{name}"), &self.inner.text, at.file.clone(), at.body_line - 1),
                (format!("html:{name}"), &self.inner.html, at.html_file.clone().unwrap_or_default(), 0),
            ];
            for (internal, reg, file, offset) in parts {
                let Some(t) = reg.get_template(&internal) else { continue };
                for found in check::variables(t, reg) {
                    let (file, line) = match &found.partial {
                        Some(p) => (partial_files.get(p).cloned().unwrap_or_else(|| file.clone()), found.line),
                        None => (file.clone(), found.line.map(|l| l + offset)),
                    };
                    problems.push((file, line, found.message));
                }
            }
        }
        if problems.len() > before {
            return;
        }
        let ctx = match name {
            DIGEST => sample_digest_context(),
            AGENDA => sample_agenda_context(),
            _ => sample_context(),
        };
        if let Err(e) = self.render(name, &ctx) {
            let message = match e {
                RenderError::MissingVariable { variable, .. } => check::missing_message(&variable),
                other => other.to_string(),
            };
            problems.push((at.file.clone(), None, format!("rendering against a sample lead: {message}")));
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.hashes.contains_key(name)
    }

    pub fn hash(&self, name: &str) -> Option<&str> {
        self.hashes.get(name).map(String::as_str)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.hashes.keys().map(String::as_str)
    }

    /// Whether the template has an HTML alternative.
    pub fn has_html(&self, name: &str) -> bool {
        self.inner.with_html.contains(name)
    }

    /// Renders subject, text and (when present) HTML body. The subject comes
    /// back on one line.
    pub fn render(&self, name: &str, ctx: &serde_json::Value) -> Result<Rendered, RenderError> {
        let vars = Vars::from(ctx.clone());
        let subject = self.render_subject(name, &vars)?;
        let (text, html) = self.render_body(name, &vars)?;
        Ok(Rendered { subject, text, html })
    }

    /// Only the subject, on one line. A claim records it with the send and
    /// leaves the body to [`Templates::render_body`], outside the store's
    /// write turn.
    pub fn render_subject(&self, name: &str, vars: &Vars) -> Result<String, RenderError> {
        self.known(name)?;
        self.inner.text.render_with_context(&format!("subject:{name}"), &vars.0).map(|s| one_line(&s)).map_err(|e| convert_error(name, &e))
    }

    /// The text body and, when the template has one, the HTML body.
    pub fn render_body(&self, name: &str, vars: &Vars) -> Result<(String, Option<String>), RenderError> {
        self.known(name)?;
        let err = |e: HbError| convert_error(name, &e);
        let text = self.inner.text.render_with_context(&format!("text:{name}"), &vars.0).map_err(err)?;
        let html = if self.inner.with_html.contains(name) {
            Some(self.inner.html.render_with_context(&format!("html:{name}"), &vars.0).map_err(err)?)
        } else {
            None
        };
        Ok((text, html))
    }

    fn known(&self, name: &str) -> Result<(), RenderError> {
        if self.inner.compiled.contains(name) {
            Ok(())
        } else {
            Err(RenderError::Unknown(name.to_string()))
        }
    }

    /// Renders only a body as text (task instructions are templates too).
    pub fn render_text(&self, name: &str, ctx: &serde_json::Value) -> Result<String, RenderError> {
        self.known(name)?;
        self.inner.text.render(&format!("text:{name}"), ctx).map_err(|e| convert_error(name, &e))
    }
}

struct Places {
    file: PathBuf,
    subject_line: usize,
    /// 1-based line of the body's first line in the file.
    body_line: usize,
    html_file: Option<PathBuf>,
}

/// A template's variables in handlebars' own form, made once for any
/// number of renders: handlebars' `render` copies a plain JSON value into
/// that form each time (38% of an email's rendering, callgrind).
pub struct Vars(handlebars::Context);

impl From<serde_json::Value> for Vars {
    fn from(value: serde_json::Value) -> Self {
        Vars(handlebars::Context::from(value))
    }
}

#[cfg(test)]
mod tests;
