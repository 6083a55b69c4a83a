//! A static look at the variables a template names.
//!
//! Strict rendering against a sample lead misses two things: what sits
//! inside an `{{#if}}` that is false for the sample (handlebars does not
//! render it, so it cannot complain), and custom fields, which the sample
//! cannot guess. So the compiled template is walked: every variable must be
//! one a lead email has, and a custom field (`fields.KEY`, present for some
//! leads only) must be guarded by `{{#if fields.KEY}}` or wrapped in
//! `{{default fields.KEY "..."}}`. Blocks that change the context (`each`,
//! `with`) are left to the render check.

use std::collections::BTreeSet;

use handlebars::template::{HelperTemplate, Parameter, Template, TemplateElement};
use handlebars::{Handlebars, Path, PathSeg};

use super::context::{LEAD_VARIABLES, OTHER_VARIABLES};

/// One variable problem; `line` is relative to the template (or partial)
/// it was found in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Found {
    pub line: Option<usize>,
    /// The partial it was found in, if not the template itself.
    pub partial: Option<String>,
    pub message: String,
}

/// The message for a variable the sample lead lacks.
pub(crate) fn missing_message(var: &str) -> String {
    if var.starts_with("fields.") {
        format!("uses variable `{var}` that a lead does not have; use {{{{default {var} \"...\"}}}}")
    } else {
        let mut known: Vec<&str> = LEAD_VARIABLES.to_vec();
        known.push("fields.KEY");
        known.extend_from_slice(OTHER_VARIABLES);
        format!("uses variable `{var}`, which no lead email has (variables: {})", known.join(", "))
    }
}

/// Helper names (built in, and ours) that may appear without parameters.
const HELPERS: &[&str] =
    &["if", "unless", "each", "with", "lookup", "log", "eq", "ne", "gt", "gte", "lt", "lte", "and", "or", "not", "len", "default"];

enum Class {
    /// Always present in a lead email's context.
    Known,
    /// A custom field: present for some leads only.
    Custom,
    Unknown,
}

fn class(name: &str) -> Class {
    if LEAD_VARIABLES.contains(&name) || OTHER_VARIABLES.contains(&name) || name == "rep" || name == "fields" {
        return Class::Known;
    }
    match name.strip_prefix("fields.") {
        Some(key) if !key.is_empty() && !key.contains('.') => Class::Custom,
        _ => Class::Unknown,
    }
}

/// The variable a parameter names, when it can be judged statically
/// (`this`, `../` and `@index` style paths cannot).
fn variable(p: &Parameter) -> Option<String> {
    match p {
        Parameter::Name(n) => Some(n.clone()),
        Parameter::Path(Path::Relative((segs, _))) => {
            let mut names = Vec::new();
            for s in segs {
                match s {
                    PathSeg::Named(n) => names.push(n.as_str()),
                    _ => return None,
                }
            }
            Some(names.join("."))
        }
        _ => None,
    }
}

pub(crate) fn variables(t: &Template, reg: &Handlebars<'static>) -> Vec<Found> {
    let mut w = Walker { reg, out: Vec::new(), partial: None, depth: 0, seen: BTreeSet::new() };
    w.walk(t, &mut Vec::new());
    w.out
}

struct Walker<'r> {
    reg: &'r Handlebars<'static>,
    out: Vec<Found>,
    partial: Option<String>,
    depth: usize,
    seen: BTreeSet<(Option<String>, Option<usize>, String)>,
}

impl Walker<'_> {
    fn report(&mut self, line: Option<usize>, message: String) {
        if self.seen.insert((self.partial.clone(), line, message.clone())) {
            self.out.push(Found { line, partial: self.partial.clone(), message });
        }
    }

    /// A use that needs the variable present (`{{x}}`, most helper params).
    fn strict(&mut self, p: &Parameter, line: Option<usize>, guards: &[String]) {
        if let Parameter::Subexpression(sub) = p {
            if let TemplateElement::Expression(ht) = sub.element.as_ref() {
                self.helper(ht, line, guards);
            }
            return;
        }
        let Some(name) = variable(p) else { return };
        match class(&name) {
            Class::Known => {}
            Class::Custom if guards.contains(&name) => {}
            _ => self.report(line, missing_message(&name)),
        }
    }

    /// A use that tolerates absence (`{{#if x}}`, `{{default x ".."}}`): the
    /// name must still be one a lead could have.
    fn loose(&mut self, p: &Parameter, line: Option<usize>, guards: &[String]) {
        if let Parameter::Subexpression(_) = p {
            return self.strict(p, line, guards);
        }
        let Some(name) = variable(p) else { return };
        if let Class::Unknown = class(&name) {
            self.report(line, missing_message(&name));
        }
    }

    fn helper(&mut self, ht: &HelperTemplate, line: Option<usize>, guards: &[String]) {
        let name = variable(&ht.name).unwrap_or_default();
        let params = ht.params.iter().chain(ht.hash.values());
        if name == "default" {
            params.for_each(|p| self.loose(p, line, guards));
        } else {
            params.for_each(|p| self.strict(p, line, guards));
        }
    }

    fn walk(&mut self, t: &Template, guards: &mut Vec<String>) {
        for (i, el) in t.elements.iter().enumerate() {
            let line = t.mapping.get(i).map(|m| m.0);
            match el {
                TemplateElement::Expression(ht) | TemplateElement::HtmlExpression(ht) => {
                    let name = variable(&ht.name).unwrap_or_default();
                    let is_helper = !ht.params.is_empty() || !ht.hash.is_empty() || HELPERS.contains(&name.as_str());
                    if is_helper {
                        self.helper(ht, line, guards);
                    } else {
                        self.strict(&ht.name, line, guards);
                    }
                }
                TemplateElement::HelperBlock(ht) => self.block(ht, line, guards),
                TemplateElement::PartialExpression(dt) | TemplateElement::PartialBlock(dt) => {
                    let Some(name) = variable(&dt.name) else { continue };
                    let Some(partial) = self.reg.get_template(&name) else { continue };
                    if self.depth >= 8 {
                        continue;
                    }
                    let saved = self.partial.replace(name);
                    self.depth += 1;
                    self.walk(partial, guards);
                    self.depth -= 1;
                    self.partial = saved;
                }
                _ => {}
            }
        }
    }

    fn block(&mut self, ht: &HelperTemplate, line: Option<usize>, guards: &mut Vec<String>) {
        let name = variable(&ht.name).unwrap_or_default();
        match name.as_str() {
            "if" | "unless" => {
                ht.params.iter().for_each(|p| self.loose(p, line, guards));
                let tested = ht.params.first().and_then(variable);
                let (then_guarded, else_guarded) = if name == "if" { (true, false) } else { (false, true) };
                for (part, guarded) in [(&ht.template, then_guarded), (&ht.inverse, else_guarded)] {
                    let Some(part) = part else { continue };
                    let pushed = match (&tested, guarded) {
                        (Some(v), true) => {
                            guards.push(v.clone());
                            true
                        }
                        _ => false,
                    };
                    self.walk(part, guards);
                    if pushed {
                        guards.pop();
                    }
                }
            }
            "each" | "with" => {
                ht.params.iter().for_each(|p| self.strict(p, line, guards));
                if let Some(inv) = &ht.inverse {
                    self.walk(inv, guards);
                }
            }
            _ => {
                self.helper(ht, line, guards);
                for part in [&ht.template, &ht.inverse].into_iter().flatten() {
                    self.walk(part, guards);
                }
            }
        }
    }
}
