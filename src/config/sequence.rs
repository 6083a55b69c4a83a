//! `config/sequences/NAME.toml`: one cadence per file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::load::{Problem, Severity};
use super::tree::{self, Sink, Table, Val};
use super::{LastChance, Sequence, Step, StepKind, Variant};
use crate::domain::Wait;
use crate::schedule::SendWindow;
use crate::templates::{Templates, AGENDA, DIGEST};

const TASK_KINDS: &[&str] = &["call", "linkedin", "custom"];

/// Reads every `*.toml` under `dir`, sorted by name. A missing folder is
/// a warning: the daemon runs, it just has nothing to enroll into.
pub(crate) fn load_all(
    dir: &Path,
    stages: Option<&[String]>,
    templates: &Templates,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Sequence> {
    let mut out = BTreeMap::new();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect(),
        Err(e) => {
            problems.push(Problem {
                severity: Severity::Warning,
                file: dir.to_path_buf(),
                key: None,
                line: None,
                message: format!("no sequences folder ({e}): nothing can be enrolled"),
            });
            return out;
        }
    };
    files.sort();
    for file in files {
        let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        let bytes = match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) => {
                problems.push(Problem { severity: Severity::Error, file, key: None, line: None, message: format!("cannot read: {e}") });
                continue;
            }
        };
        let Ok(src) = String::from_utf8(bytes.clone()) else {
            problems.push(Problem { severity: Severity::Error, file, key: None, line: None, message: "not UTF-8 text".into() });
            continue;
        };
        let mut sink = Sink::new(&file, &src, problems);
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            sink.error("", None, format!("{name:?} is not a sequence name: name the file with letters, digits, `_` and `-`"));
        }
        let node = match tree::parse(&file, &src) {
            Ok(n) => n,
            Err(p) => {
                sink.problems.push(p);
                continue;
            }
        };
        let hash = hex::encode(Sha256::digest(&bytes));
        let seq = sequence(&node, &mut sink, &name, &file, stages, templates, hash);
        out.insert(name, seq);
    }
    out
}

fn template_ref(sink: &mut Sink, templates: &Templates, v: &Val<String>) {
    if v.v == DIGEST {
        sink.error_at(v, "`digest` is the manager digest template, not a lead email");
    } else if v.v == AGENDA {
        sink.error_at(v, "`agenda` is the rep's agenda email template, not a lead email");
    } else if !templates.contains(&v.v) {
        let known: Vec<&str> = templates.names().filter(|n| *n != DIGEST && *n != AGENDA).collect();
        let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
        sink.error_at(v, format!("unknown template `{}`: templates/{}.hbs does not exist (templates: {known})", v.v, v.v));
    }
}

fn stage_ref(sink: &mut Sink, stages: Option<&[String]>, v: &Val<String>, outcomes_ok: bool) {
    let Some(stages) = stages else { return };
    let is_outcome = v.v == "won" || v.v == "lost";
    if stages.contains(&v.v) || (outcomes_ok && is_outcome) {
        return;
    }
    let extra = if outcomes_ok { ", won, lost" } else { "" };
    let why = if is_outcome { " (an outcome cannot be the enrollment stage)" } else { "" };
    sink.error_at(v, format!("unknown stage `{}`{why}; the pipeline has: {}{extra}", v.v, stages.join(", ")));
}

fn sequence(
    node: &tree::Node,
    sink: &mut Sink,
    name: &str,
    file: &Path,
    stages: Option<&[String]>,
    templates: &Templates,
    hash: String,
) -> Sequence {
    let mut top = Table::root(node);
    let stage = top.str(sink, "stage");
    if let Some(s) = &stage {
        stage_ref(sink, stages, s, false);
    }
    let reply_stage = top.str(sink, "reply_stage");
    if let Some(s) = &reply_stage {
        stage_ref(sink, stages, s, true);
    }
    let reply_stage = match (reply_stage, stages) {
        (Some(r), _) => Some(r.v),
        (None, Some(list)) => match &stage {
            Some(s) => list.iter().position(|x| *x == s.v).and_then(|i| list.get(i + 1)).cloned(),
            None => list.first().cloned(),
        },
        (None, None) => None,
    };
    let max_touches = top.opt_int_in(sink, "max_touches", 1, 1000);

    let default_window = || SendWindow::parse("Mon-Fri", "09:00", "17:00").expect("the default window parses");
    let send_window = match top.table(sink, "send_window") {
        Some(mut w) => {
            let days = w.str(sink, "days");
            let start = w.str(sink, "start");
            let end = w.str(sink, "end");
            let text = |v: &Option<Val<String>>, d: &str| v.as_ref().map(|v| v.v.clone()).unwrap_or_else(|| d.to_string());
            let window = SendWindow::parse(&text(&days, "Mon-Fri"), &text(&start, "09:00"), &text(&end, "17:00"));
            let path = w.path.clone();
            let span = w.span.clone();
            w.finish(sink);
            match window {
                Ok(win) if win.never_opens() => {
                    sink.error(&path, Some(&span), "this send window never opens (no day, or start is not before end)");
                    default_window()
                }
                Ok(win) => win,
                Err(m) => {
                    sink.error(&path, Some(&span), m);
                    default_window()
                }
            }
        }
        None => default_window(),
    };
    let auto_reply_pause = top.wait_or(sink, "auto_reply_pause", Wait::Days(3));
    let same_company_stop = top.bool_or(sink, "same_company_stop", true);

    let mut steps = Vec::new();
    let step_tables = top.tables(sink, "steps");
    if step_tables.is_empty() {
        sink.error("steps", Some(&top.span), "a sequence needs at least one [[steps]]");
    }
    for mut t in step_tables {
        if let Some(s) = step(&mut t, sink, templates) {
            steps.push(s);
        }
        t.finish(sink);
    }

    let last_chance = top.table(sink, "last_chance").and_then(|mut t| {
        let wait = t.wait(sink, "wait");
        if !t.has("wait") {
            sink.error(&t.key_path("wait"), Some(&t.span), "missing `wait`");
        }
        let template = t.req_str(sink, "template");
        if let Some(v) = &template {
            template_ref(sink, templates, v);
        }
        t.finish(sink);
        Some(LastChance { wait: wait?.v, template: template?.v })
    });
    let archive_after = top.table(sink, "archive").and_then(|mut t| {
        if !t.has("after") {
            sink.error(&t.key_path("after"), Some(&t.span), "missing `after`");
        }
        let after = t.wait(sink, "after");
        t.finish(sink);
        after.map(|v| v.v)
    });
    top.finish(sink);

    Sequence {
        name: name.to_string(),
        file: file.to_path_buf(),
        stage: stage.map(|s| s.v),
        reply_stage,
        max_touches,
        send_window,
        auto_reply_pause,
        same_company_stop,
        steps,
        last_chance,
        archive_after,
        hash,
    }
}

fn step(t: &mut Table, sink: &mut Sink, templates: &Templates) -> Option<Step> {
    if !t.has("wait") {
        sink.error(&t.key_path("wait"), Some(&t.span), "missing `wait` (e.g. \"0s\" for right away, \"3 business days\")");
    }
    let wait = t.wait(sink, "wait");
    let kind = t.str(sink, "kind");
    let is_task = match &kind {
        None => false,
        Some(k) if k.v == "email" => false,
        Some(k) if k.v == "task" => true,
        Some(k) => {
            sink.error_at(k, format!("{:?} is not a step kind: email | task", k.v));
            false
        }
    };
    // Keys of the other kind are named as such rather than as unknown.
    let only_for = |t: &mut Table, sink: &mut Sink, keys: &[&'static str], kind: &str| {
        for key in keys {
            if let Some(n) = t.node(key) {
                sink.error(&t.key_path(key), Some(&n.span), format!("`{key}` only applies to kind = \"{kind}\" steps"));
            }
        }
    };
    if is_task {
        only_for(t, sink, &["template", "templates", "new_thread"], "email");
        let task = t.req_str(sink, "task");
        if let Some(v) = &task {
            if !TASK_KINDS.contains(&v.v.as_str()) {
                sink.error_at(v, format!("{:?} is not a task: call | linkedin | custom", v.v));
            }
        }
        let instructions = t.req_str(sink, "instructions");
        if let Some(v) = &instructions {
            template_ref(sink, templates, v);
        }
        let timeout = t.wait(sink, "task_timeout").map(|v| v.v);
        if !t.has("task_timeout") {
            if let Some(v) = &task {
                sink.warn_at(v, "no `task_timeout`: the sequence waits for the rep however long the task stays open");
            }
        }
        return Some(Step { wait: wait?.v, kind: StepKind::Task { task: task?.v, instructions: instructions?.v, timeout } });
    }

    only_for(t, sink, &["task", "instructions", "task_timeout"], "task");
    let single = t.str(sink, "template");
    let list = if t.has("templates") { Some(t.tables(sink, "templates")) } else { None };
    let new_thread = t.bool_or(sink, "new_thread", false);
    let variants = match (single, list) {
        (Some(_), Some(_)) => {
            sink.error(&t.key_path("templates"), Some(&t.span), "give either `template` or `templates`, not both");
            None
        }
        (Some(v), None) => {
            template_ref(sink, templates, &v);
            Some(vec![Variant { template: v.v, weight: 1 }])
        }
        (None, Some(tables)) => {
            let mut variants = Vec::new();
            for mut vt in tables {
                let name = vt.req_str(sink, "name");
                if let Some(n) = &name {
                    template_ref(sink, templates, n);
                }
                let weight = vt.int_in(sink, "weight", 1, 1000, 1u32);
                vt.finish(sink);
                if let Some(n) = name {
                    variants.push(Variant { template: n.v, weight });
                }
            }
            if variants.is_empty() {
                sink.error(&t.key_path("templates"), Some(&t.span), "`templates` lists no template");
            }
            Some(variants)
        }
        (None, None) => {
            if !t.has("template") {
                sink.error(&t.key_path("template"), Some(&t.span), "missing `template` (the email this step sends)");
            }
            None
        }
    };
    Some(Step { wait: wait?.v, kind: StepKind::Email { templates: variants?, new_thread } })
}
