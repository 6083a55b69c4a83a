use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;

use super::*;

/// A templates folder with the given files (paths relative to it).
fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    dir
}

fn problems_of(dir: &Path) -> Vec<TemplateProblem> {
    Templates::load_checked(dir).1
}

fn lead<'a>(fields: &'a BTreeMap<String, String>, company: Option<&'a str>) -> LeadVars<'a> {
    LeadVars { email: "ana@example.com", first_name: Some("Ana"), last_name: None, company, title: None, value: Some(1500.0), fields }
}

const REP: RepVars<'static> = RepVars { name: "Nik", email: "nik@example.com", signature: "Nik\nVendor Co." };

#[test]
fn renders_subject_text_and_partials() {
    let dir = folder(&[
        ("intro.hbs", "---\nsubject: \"Hello {{company}}\"\n---\nHi {{first_name}} (step {{step}}, {{value}})\n{{> signature}}"),
        ("partials/signature.hbs", "{{rep.signature}}\n{{unsubscribe_url}}"),
    ]);
    let t = Templates::load(dir.path()).unwrap();
    let fields = BTreeMap::new();
    let ctx = lead_context(&lead(&fields, Some("Acme")), &REP, "https://x.test/u/T", 2);
    let r = t.render("intro", &ctx).unwrap();
    assert_eq!(r.subject, "Hello Acme");
    assert_eq!(r.text, "Hi Ana (step 2, 1500)\nNik\nVendor Co.\nhttps://x.test/u/T");
    assert_eq!(r.html, None);
    assert!(!t.has_html("intro"));
}

#[test]
fn strict_render_error_names_the_template_and_variable() {
    let dir = folder(&[("intro.hbs", "---\nsubject: \"Hello\"\n---\nHi {{company}}")]);
    let t = Templates::load(dir.path()).unwrap();
    let fields = BTreeMap::new();
    let ctx = lead_context(&lead(&fields, None), &REP, "u", 1);
    let e = t.render("intro", &ctx).unwrap_err();
    match &e {
        RenderError::MissingVariable { template, variable } => {
            assert_eq!(template, "intro");
            assert_eq!(variable, "company");
        }
        other => panic!("expected a missing variable, got {other:?}"),
    }
    assert!(e.to_string().contains("`intro`") && e.to_string().contains("`company`"), "{e}");
    assert!(matches!(t.render("nope", &ctx), Err(RenderError::Unknown(n)) if n == "nope"));
}

#[test]
fn default_helper_covers_missing_null_and_empty() {
    let dir = folder(&[
        (
            "t.hbs",
            "---\nsubject: '{{default fields.plan \"Pro\"}}'\n---\nHi {{default first_name \"there\"}}, {{default fields.plan \"Pro\"}}",
        ),
        ("t.html.hbs", "<p>{{default fields.note \"<none>\"}}</p>"),
    ]);
    let t = Templates::load(dir.path()).unwrap();
    let mut ctx = json!({"first_name": "Ana", "fields": {"plan": "Team & co"}});
    let r = t.render("t", &ctx).unwrap();
    assert_eq!(r.text, "Hi Ana, Team & co");
    assert_eq!(r.subject, "Team & co");
    assert_eq!(r.html.as_deref(), Some("<p>&lt;none&gt;</p>"));
    for missing in [json!(null), json!(""), json!("  ")] {
        ctx["first_name"] = missing.clone();
        assert_eq!(t.render("t", &ctx).unwrap().text, "Hi there, Team & co", "{missing}");
    }
    ctx.as_object_mut().unwrap().remove("first_name");
    ctx["fields"] = json!({});
    assert_eq!(t.render("t", &ctx).unwrap().text, "Hi there, Pro");
}

#[test]
fn html_is_escaped_text_and_subject_are_not_and_subject_is_one_line() {
    let dir = folder(&[
        ("t.hbs", "---\nsubject: \"About {{company}}\"\n---\n{{company}} {{> sig}}"),
        ("t.html.hbs", "<b>{{company}}</b> {{> sig}}"),
        ("partials/sig.hbs", "text-sig {{rep.name}}"),
        ("partials/sig.html.hbs", "<i>{{rep.name}}</i>"),
    ]);
    let t = Templates::load(dir.path()).unwrap();
    let fields = BTreeMap::new();
    let rep = RepVars { name: "Nik <boss>", ..REP };
    let ctx = lead_context(&lead(&fields, Some("A & <B>\r\nBcc: evil@x.test")), &rep, "u", 1);
    let r = t.render("t", &ctx).unwrap();
    assert_eq!(r.subject, "About A & <B>  Bcc: evil@x.test");
    assert!(!r.subject.contains('\n') && !r.subject.contains('\r'));
    assert!(r.text.starts_with("A & <B>\r\nBcc"), "{}", r.text);
    assert!(r.text.ends_with("text-sig Nik <boss>"), "{}", r.text);
    assert_eq!(r.html.as_deref(), Some("<b>A &amp; &lt;B&gt;\r\nBcc: evil@x.test</b> <i>Nik &lt;boss&gt;</i>"));
    assert!(t.has_html("t"));
}

#[test]
fn check_flags_custom_fields_without_a_default() {
    let dir = folder(&[("offer.hbs", "---\nsubject: \"Hi\"\n---\nHello {{company}},\nyour plan: {{fields.plan}}\n")]);
    let problems = problems_of(dir.path());
    assert_eq!(problems.len(), 1, "{problems:?}");
    let (file, line, message) = &problems[0];
    assert_eq!(file, &dir.path().join("offer.hbs"));
    assert_eq!(*line, Some(5));
    assert_eq!(message, "uses variable `fields.plan` that a lead does not have; use {{default fields.plan \"...\"}}");
}

#[test]
fn check_sees_inside_if_blocks_and_accepts_guards() {
    let dir = folder(&[
        ("guarded.hbs", "---\nsubject: \"Hi\"\n---\n{{#if fields.plan}}on {{fields.plan}}{{else}}no plan{{/if}}\n"),
        ("typo_in_if.hbs", "---\nsubject: \"Hi\"\n---\n{{#if company}}\n{{fistname}}\n{{/if}}\n"),
        ("typo_test.hbs", "---\nsubject: \"Hi\"\n---\n{{#if frist_name}}x{{/if}}\n"),
        ("else_unguarded.hbs", "---\nsubject: \"Hi\"\n---\n{{#if fields.plan}}ok{{else}}{{fields.plan}}{{/if}}\n"),
        ("in_subject.hbs", "---\nsubject: \"For {{fields.team}}\"\n---\nbody\n"),
        ("in_partial.hbs", "---\nsubject: \"Hi\"\n---\n{{> p}}\n"),
        ("partials/p.hbs", "line one\n{{fields.x}}"),
    ]);
    let problems = problems_of(dir.path());
    let of = |name: &str| problems.iter().filter(|p| p.0.ends_with(name)).collect::<Vec<_>>();
    assert!(of("guarded.hbs").is_empty(), "{problems:?}");
    let typo = of("typo_in_if.hbs");
    assert_eq!(typo.len(), 1, "{problems:?}");
    assert_eq!(typo[0].1, Some(5));
    assert!(typo[0].2.contains("`fistname`"), "{}", typo[0].2);
    assert!(of("typo_test.hbs")[0].2.contains("`frist_name`"));
    assert!(of("else_unguarded.hbs")[0].2.contains("`fields.plan`"));
    let subj = of("in_subject.hbs");
    assert_eq!(subj[0].1, Some(2));
    assert!(subj[0].2.contains("`fields.team`"));
    let part = of("partials/p.hbs");
    assert_eq!(part.len(), 1, "{problems:?}");
    assert_eq!(part[0].1, Some(2));
}

#[test]
fn front_matter_and_syntax_errors_are_located() {
    let dir = folder(&[
        ("nofm.hbs", "Hi {{first_name}}\n"),
        ("nosubject.hbs", "---\ntitle: \"x\"\n---\nbody"),
        ("syntax.hbs", "---\nsubject: \"Hi\"\n---\nline 4\n{{#if company}}\nunclosed\n"),
        ("badsubject.hbs", "---\nsubject: \"{{#if}}\"\n---\nbody"),
        ("orphan.html.hbs", "<p>no text part</p>"),
        ("unknown_partial.hbs", "---\nsubject: \"Hi\"\n---\n{{> nothere}}"),
    ]);
    let problems = problems_of(dir.path());
    let one = |name: &str| {
        let found: Vec<_> = problems.iter().filter(|p| p.0.ends_with(name)).collect();
        assert_eq!(found.len(), 1, "{name}: {problems:?}");
        found[0].clone()
    };
    let p = one("nofm.hbs");
    assert_eq!(p.1, Some(1));
    assert!(p.2.contains("missing front matter"), "{}", p.2);
    let p = one("nosubject.hbs");
    assert_eq!(p.1, Some(2));
    assert!(p.2.contains("unknown key `title`"), "{}", p.2);
    let p = one("syntax.hbs");
    assert!(p.2.contains("template syntax"), "{}", p.2);
    assert!(p.1.is_some_and(|l| l >= 5), "{p:?}");
    let p = one("badsubject.hbs");
    assert_eq!(p.1, Some(2));
    assert!(p.2.starts_with("subject:"), "{}", p.2);
    assert!(one("orphan.html.hbs").2.contains("has no orphan.hbs"));
    assert!(one("unknown_partial.hbs").2.contains("nothere"), "{problems:?}");
    assert!(Templates::load(dir.path()).is_err());
}

#[test]
fn hashes_cover_both_files_and_clones_share_the_registry() {
    let dir = folder(&[("t.hbs", "---\nsubject: \"Hi\"\n---\nbody"), ("u.hbs", "---\nsubject: \"Hi\"\n---\nbody")]);
    let a = Templates::load(dir.path()).unwrap();
    assert_eq!(a.hash("t"), a.hash("u"), "same content, same hash");
    assert_eq!(a.hash("t").unwrap().len(), 64);
    std::fs::write(dir.path().join("t.html.hbs"), "<p>body</p>").unwrap();
    let b = Templates::load(dir.path()).unwrap();
    assert_ne!(a.hash("t"), b.hash("t"));
    assert_eq!(a.hash("u"), b.hash("u"));
    let c = b.clone();
    assert!(Arc::ptr_eq(&b.inner, &c.inner));
    assert!(c.contains("t") && !c.contains("v"));
}

#[test]
fn digest_renders_with_report_data_not_a_lead() {
    let dir = folder(&[("digest.hbs", "---\nsubject: \"Digest {{date}}\"\n---\n{{#each stages}}{{name}}={{leads}};{{/each}}")]);
    let t = Templates::load(dir.path()).unwrap();
    let r = t.render(DIGEST, &sample_digest_context()).unwrap();
    assert_eq!(r.subject, "Digest 2026-01-05");
    assert_eq!(r.text, "prospecting=12;connecting=4;");
}

#[test]
fn sample_context_has_every_documented_variable() {
    let ctx = sample_context();
    for key in ["email", "first_name", "last_name", "company", "title", "value", "unsubscribe_url", "step"] {
        assert!(ctx.get(key).is_some(), "{key}");
    }
    for key in ["name", "email", "signature"] {
        assert!(ctx["rep"].get(key).is_some(), "rep.{key}");
    }
    assert_eq!(ctx["fields"], json!({}));
    assert_eq!(ctx["step"], json!(1));
}

#[test]
fn missing_templates_folder_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let problems = problems_of(&missing);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].0, missing);
}
