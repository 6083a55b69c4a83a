use std::path::{Path, PathBuf};

use super::load::missing_secrets_with;
use super::*;
use crate::domain::Wait;

/// A project folder with the given files (paths relative to the root).
fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    dir
}

fn no_env(_: &str) -> Option<String> {
    None
}

const TEMPLATE: &str = "---\nsubject: \"Hi {{company}}\"\n---\nHi {{default first_name \"there\"}}\n";

const GOOD_MAIN: &str = r#"
[daemon]
database_url = "sqlite://data/cadence.db"

[[reps]]
id = "nik"
name = "Nik"
email = "Nik@Example.com"
  [reps.smtp]
  host = "smtp.example.com"
  password_env = "SMTP_PW"
  [reps.imap]
  host = "imap.example.com"
  tls = "tls"
"#;

const GOOD_SEQ: &str = r#"
stage = "qualification"
[[steps]]
wait = "0s"
template = "intro"
[[steps]]
wait = "2 business days"
template = "intro"
new_thread = true
"#;

fn load_in(root: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<(Config, Problems), Problems> {
    load_with_env(&root.join("config/cadence.toml"), env)
}

#[test]
fn the_shipped_example_loads_without_errors() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/cadence.toml");
    let (config, warnings) = load_with_env(&path, &no_env).unwrap_or_else(|p| panic!("shipped config has errors:\n{p}"));
    assert!(!warnings.has_errors());
    assert!(warnings.0.iter().any(|w| w.key.as_deref() == Some("reps[0].imap") && w.message.contains("no reply detection")), "{warnings}");
    let rep = config.rep("nik").unwrap();
    assert_eq!(rep.smtp.transport, TransportKind::File);
    assert!(rep.smtp.dir.ends_with("outbox"));
    let seq = config.sequence("cold-outreach").unwrap();
    assert_eq!(seq.steps.len(), 4);
    assert!(
        matches!(&seq.steps[2].kind, StepKind::Task { task, instructions, timeout: Some(_) } if task == "call" && instructions == "call-script")
    );
    assert_eq!(seq.max_touches, Some(3));
    assert_eq!(seq.last_chance.as_ref().unwrap().template, "breakup");
    assert_eq!(seq.archive_after, Some(Wait::Days(7)));
    for name in ["intro", "bump", "value", "breakup", "digest", "call-script"] {
        assert!(config.templates.contains(name), "{name}");
    }
    assert!(config.templates.has_html("intro"));
    let r = config.templates.render("intro", &crate::templates::sample_context()).unwrap();
    assert!(r.text.contains("Hi Ana") && r.text.contains("unsubscribe/SAMPLE-TOKEN"), "{}", r.text);
    assert_eq!(config.calendars["default"].holidays.len(), 2);
}

#[test]
fn a_valid_project_loads_with_defaults_filled_in() {
    let dir =
        project(&[("config/cadence.toml", GOOD_MAIN), ("config/sequences/welcome.toml", GOOD_SEQ), ("templates/intro.hbs", TEMPLATE)]);
    let env = |v: &str| (v == "SMTP_PW" || v == "CADENCE_SECRET").then(|| "x".to_string());
    let (c, warnings) = load_in(dir.path(), &env).unwrap_or_else(|p| panic!("{p}"));
    assert_eq!(warnings.0, vec![], "every secret is set and the rep has imap");
    assert_eq!(c.root, dir.path());
    assert_eq!(c.daemon.database_url, format!("sqlite://{}", dir.path().join("data/cadence.db").display()));
    assert_eq!(c.daemon.timezone, chrono_tz::Tz::UTC);
    assert_eq!(c.daemon.tick_interval, Duration::from_secs(5));
    assert_eq!(c.daemon.http_listen, "127.0.0.1:8025");
    assert_eq!(c.daemon.public_url, "http://127.0.0.1:8025");
    assert_eq!(c.daemon.max_inbox_lag, Duration::from_secs(120));
    assert_eq!(c.daemon.calendar, "default");
    assert!(c.calendars.contains_key("default"), "the default calendar is created");
    assert_eq!(c.daemon.secret_env, "CADENCE_SECRET");
    assert_eq!(c.daemon.bounce_pause_rate, 0.08);
    assert_eq!(c.stages, DEFAULT_STAGES);
    assert_eq!(c.hygiene.schedule_text, "0 0 7 * * Mon-Fri");
    assert!(c.hygiene.schedule.is_some());
    assert_eq!(c.hygiene.stale_after, Wait::Days(14));
    assert_eq!(c.report.bottleneck_share, 0.5);
    assert_eq!((c.report.min_front, c.report.max_last_stage), (5, 20));
    assert_eq!(c.report.overdue_after, Wait::Days(1));

    let rep = c.rep("nik").unwrap();
    assert_eq!(rep.email.as_str(), "nik@example.com");
    assert_eq!((rep.daily_limit, rep.domain_daily_limit, rep.min_gap), (200, None, Duration::ZERO));
    assert_eq!(rep.timezone, chrono_tz::Tz::UTC);
    assert_eq!(rep.smtp.transport, TransportKind::Smtp);
    assert_eq!((rep.smtp.tls, rep.smtp.port), (TlsMode::Starttls, 587));
    assert_eq!((rep.smtp.pool_size, rep.smtp.max_attempts, rep.smtp.timeout), (4, 5, Duration::from_secs(30)));
    assert_eq!(rep.smtp.dir, dir.path().join("outbox"));
    let imap = rep.imap.as_ref().unwrap();
    assert_eq!((imap.port, imap.folder.as_str(), imap.username.as_str()), (993, "INBOX", "nik@example.com"));
    assert_eq!(imap.poll_interval, Duration::from_secs(60));

    let s = c.sequence("welcome").unwrap();
    assert_eq!(s.stage.as_deref(), Some("qualification"));
    assert_eq!(s.reply_stage.as_deref(), Some("connecting"), "the next stage");
    assert_eq!(s.max_touches, None);
    assert_eq!(s.send_window, crate::schedule::SendWindow::parse("Mon-Fri", "09:00", "17:00").unwrap());
    assert_eq!(s.auto_reply_pause, Wait::Days(3));
    assert!(s.same_company_stop);
    assert!(matches!(&s.steps[1].kind, StepKind::Email { templates, new_thread: true } if templates[0].template == "intro"));
    assert_eq!(s.steps[1].wait, Wait::BusinessDays(2));
    let bytes = std::fs::read(dir.path().join("config/sequences/welcome.toml")).unwrap();
    use sha2::Digest;
    assert_eq!(s.hash, hex::encode(sha2::Sha256::digest(&bytes)));
}

#[test]
fn database_url_env_overrides_the_file() {
    let dir = project(&[("config/cadence.toml", GOOD_MAIN), ("templates/intro.hbs", TEMPLATE)]);
    let env = |v: &str| (v == DATABASE_URL_ENV).then(|| "postgres://u@localhost/cadence".to_string());
    let (c, _) = load_in(dir.path(), &env).unwrap();
    assert_eq!(c.daemon.database_url, "postgres://u@localhost/cadence");
    let env = |v: &str| (v == DATABASE_URL_ENV).then(|| "mysql://nope".to_string());
    let p = load_in(dir.path(), &env).unwrap_err();
    assert!(p.errors().any(|e| e.key.as_deref() == Some("daemon.database_url") && e.message.contains(DATABASE_URL_ENV)), "{p}");
}

#[test]
fn missing_secrets_are_warnings_in_load_and_errors_for_run() {
    let dir = project(&[("config/cadence.toml", GOOD_MAIN), ("templates/intro.hbs", TEMPLATE)]);
    let (c, warnings) = load_in(dir.path(), &no_env).unwrap();
    let w: Vec<_> = warnings.warnings().filter_map(|w| w.key.as_deref()).collect();
    assert!(w.contains(&"reps[0].smtp.password_env") && w.contains(&"daemon.secret_env"), "{warnings}");
    let pw = warnings.0.iter().find(|w| w.key.as_deref() == Some("reps[0].smtp.password_env")).unwrap();
    assert_eq!(pw.line, Some(11));
    assert!(pw.message.contains("SMTP_PW"));
    let missing = missing_secrets_with(&c, &no_env);
    assert!(missing.iter().all(|p| p.severity == Severity::Error));
    let keys: Vec<_> = missing.iter().filter_map(|p| p.key.as_deref()).collect();
    assert_eq!(keys, ["daemon.secret_env", "reps[0].smtp.password_env"]);
    assert!(missing_secrets_with(&c, &|_| Some("set".into())).is_empty());
}

const BROKEN_MAIN: &str = r#"
colour = "blue"

[daemon]
timezone = "PST"
tick_interval = 5
max_inbox_lag = "2 fortnights"
calendar = "emea"
tls = "none"

[[calendars]]
name = "default"
holidays = ["2026-13-45"]

[hygiene]
schedule = "0 7 * * Mon-Fri"
digest_to = ["boss@"]

[[reps]]
id = "nik"
name = "Nik"
email = "nik-at-example"
api_token_env = "TOKEN_UNSET"
  [reps.smtp]
  host = "smtp.example.com"
  tls = "ssl"
  pasword_env = "X"
  [reps.dkim]
  domain = "example.com"
  selector = "s1"
  private_key_env = "DKIM_KEY"

[[reps]]
id = "nik"
name = "Nik Two"
email = "nik2@example.com"
  [reps.smtp]
  transport = "sendmail"
"#;

const BROKEN_SEQ: &str = r#"
stage = "negotiation"
reply_stage = "nope"
max_touches = "three"
send_window = { days = "Sat", start = "17:00", end = "09:00" }

[[steps]]
wait = "0s"
template = "missing"
colour = "red"

[[steps]]
wait = "soon"
template = "intro"

[[steps]]
wait = "1 day"
kind = "task"
task = "call"
instructions = "call-script"

[[steps]]
wait = "1 day"
templates = [{ name = "intro", weight = 1 }, { name = "intro2", weight = 2 }]

[last_chance]
wait = "5 business days"
template = "gone"

[archive]
after = "whenever"
"#;

#[test]
fn every_planted_mistake_is_reported_with_file_and_key() {
    let dir = project(&[
        ("config/cadence.toml", BROKEN_MAIN),
        ("config/sequences/bad.toml", BROKEN_SEQ),
        ("config/sequences/closed.toml", "send_window = { days = \"Funday\" }\n[[steps]]\nwait = \"0s\"\ntemplate = \"intro\"\n"),
        ("templates/intro.hbs", TEMPLATE),
        ("templates/intro2.hbs", TEMPLATE),
        ("templates/plan.hbs", "---\nsubject: \"Hi\"\n---\nYour plan: {{fields.plan}}\n"),
        ("templates/nofm.hbs", "Hi there\n"),
        ("templates/syntax.hbs", "---\nsubject: \"Hi\"\n---\n{{#if company}}\n"),
    ]);
    let problems = load_in(dir.path(), &no_env).unwrap_err();
    let main = dir.path().join("config/cadence.toml");
    let bad = dir.path().join("config/sequences/bad.toml");
    let closed = dir.path().join("config/sequences/closed.toml");
    let find = |file: &Path, key: Option<&str>, severity: Severity, needle: &str| -> Problem {
        problems
            .0
            .iter()
            .find(|p| p.file == file && p.key.as_deref() == key && p.severity == severity && p.message.contains(needle))
            .cloned()
            .unwrap_or_else(|| panic!("no {severity:?} for {} {key:?} containing {needle:?} in:\n{problems}", file.display()))
    };
    use Severity::{Error, Warning};

    // Unknown keys, all of them, each with its line.
    assert_eq!(find(&main, Some("colour"), Error, "unknown key `colour`").line, Some(2));
    assert_eq!(find(&main, Some("daemon.tls"), Error, "unknown key").line, Some(9));
    assert_eq!(find(&main, Some("reps[0].smtp.pasword_env"), Error, "unknown key").line, Some(27));
    find(&bad, Some("steps[0].colour"), Error, "unknown key");
    // Wrong types.
    assert_eq!(find(&main, Some("daemon.tick_interval"), Error, "expected a string, found an integer").line, Some(6));
    find(&bad, Some("max_touches"), Error, "expected an integer");
    // Bad values.
    assert_eq!(find(&main, Some("daemon.timezone"), Error, "IANA").line, Some(5));
    find(&main, Some("daemon.max_inbox_lag"), Error, "is not a duration");
    find(&main, Some("daemon.calendar"), Error, "unknown calendar `emea`");
    find(&main, Some("calendars[0].holidays[0]"), Error, "is not a date");
    find(&main, Some("hygiene.schedule"), Error, "write 6 or 7, seconds first");
    find(&main, Some("hygiene.digest_to[0]"), Error, "not a valid email");
    find(&main, Some("reps[0].email"), Error, "not a valid email");
    find(&main, Some("reps[0].smtp.tls"), Error, "none | starttls | tls");
    find(&main, Some("reps[1].smtp.transport"), Error, "smtp | file");
    assert_eq!(find(&main, Some("reps[1].id"), Error, "used twice").line, Some(34));
    // Warnings: features not built yet, no imap, unset secrets.
    assert!(!problems.0.iter().any(|p| p.message.contains("DKIM") && p.message.contains("no effect")), "DKIM signs now");
    find(&main, Some("reps[0].imap"), Warning, "no reply detection");
    find(&main, Some("reps[0].api_token_env"), Warning, "TOKEN_UNSET");
    find(&main, Some("reps[0].dkim.private_key_env"), Warning, "DKIM_KEY");
    find(&bad, Some("steps[2].task"), Warning, "no `task_timeout`");
    assert!(!problems.0.iter().any(|p| p.file == bad && p.message.contains("no effect yet")), "tasks and variants take effect: {problems}");
    // Sequence references.
    find(&bad, Some("stage"), Error, "unknown stage `negotiation`");
    find(&bad, Some("reply_stage"), Error, "unknown stage `nope`");
    find(&bad, Some("send_window"), Error, "never open");
    find(&closed, Some("send_window"), Error, "Funday");
    find(&bad, Some("steps[0].template"), Error, "unknown template `missing`");
    find(&bad, Some("steps[1].wait"), Error, "is not a duration");
    find(&bad, Some("steps[2].instructions"), Error, "unknown template `call-script`");
    find(&bad, Some("last_chance.template"), Error, "unknown template `gone`");
    find(&bad, Some("archive.after"), Error, "is not a duration");
    // Templates.
    let t = dir.path().join("templates");
    let plan = find(
        &t.join("plan.hbs"),
        None,
        Error,
        "uses variable `fields.plan` that a lead does not have; use {{default fields.plan \"...\"}}",
    );
    assert_eq!(plan.line, Some(4));
    find(&t.join("nofm.hbs"), None, Error, "missing front matter");
    assert!(find(&t.join("syntax.hbs"), None, Error, "template syntax").line.is_some());

    // Nothing is reported twice.
    let mut seen = std::collections::BTreeSet::new();
    for p in &problems.0 {
        assert!(seen.insert(p.to_string()), "reported twice: {p}");
    }
}

#[test]
fn a_syntax_error_is_located_and_other_files_are_still_checked() {
    let dir = project(&[
        ("config/cadence.toml", "[daemon]\ntimezone = \"UTC\"\nbroken = \n"),
        ("config/sequences/s.toml", "[[steps]]\nwait = \"0s\"\ntemplate = \"nope\"\n"),
        ("templates/intro.hbs", TEMPLATE),
    ]);
    let problems = load_in(dir.path(), &no_env).unwrap_err();
    let main = problems.0.iter().find(|p| p.file.ends_with("cadence.toml")).unwrap();
    assert_eq!(main.line, Some(3), "{problems}");
    assert!(problems.0.iter().any(|p| p.file.ends_with("s.toml") && p.message.contains("unknown template `nope`")), "{problems}");
}

#[test]
fn sequence_rules_that_need_both_kinds_of_key() {
    let dir = project(&[
        ("config/cadence.toml", "[pipeline]\nstages = [\"a\", \"b\", \"a\", \"won\"]\n"),
        (
            "config/sequences/s.toml",
            "stage = \"b\"\n[[steps]]\nwait = \"0s\"\ntemplate = \"intro\"\ntemplates = [{ name = \"intro\" }]\n[[steps]]\ntemplate = \"intro\"\ntask = \"call\"\n",
        ),
        ("config/sequences/empty.toml", "stage = \"a\"\n"),
        ("templates/intro.hbs", TEMPLATE),
    ]);
    let problems = load_in(dir.path(), &no_env).unwrap_err();
    let has = |key: &str, needle: &str| problems.0.iter().any(|p| p.key.as_deref() == Some(key) && p.message.contains(needle));
    assert!(has("pipeline.stages[2]", "listed twice"), "{problems}");
    assert!(has("pipeline.stages[3]", "outcome"), "{problems}");
    assert!(has("steps[0].templates", "not both"), "{problems}");
    assert!(has("steps[1].wait", "missing `wait`"), "{problems}");
    assert!(has("steps[1].task", "only applies to kind = \"task\""), "{problems}");
    assert!(has("steps", "at least one"), "{problems}");
    assert!(problems.0.iter().any(|p| p.key.as_deref() == Some("reps") && p.severity == Severity::Warning));
}

#[test]
fn cron_expressions_are_checked_with_seconds_and_day_names() {
    for (expr, ok) in
        [("0 0 7 * * Mon-Fri", true), ("0 30 6 * * Mon,Wed,Fri 2026", true), ("0 0 7 * * Funday", false), ("0 0 25 * * *", false)]
    {
        let main = format!("[hygiene]\nschedule = \"{expr}\"\n");
        let dir = project(&[("config/cadence.toml", &main), ("templates/intro.hbs", TEMPLATE)]);
        let result = load_in(dir.path(), &no_env);
        assert_eq!(result.is_ok(), ok, "{expr}: {result:?}");
        if let Err(p) = result {
            assert!(p.errors().any(|e| e.key.as_deref() == Some("hygiene.schedule") && e.message.contains("not a cron expression")), "{p}");
        }
    }
}

const ED25519_PEM: &str =
    "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEICW/r4W28LiwDAnFXk8WBruUeXO9KlJ8LaPRixqawxfO\n-----END PRIVATE KEY-----\n";

fn dkim_main(dkim: &str) -> String {
    format!(
        "[[reps]]\nid = \"nik\"\nname = \"Nik\"\nemail = \"nik@mail.example.com\"\n  [reps.smtp]\n  transport = \"file\"\n  dir = \"outbox\"\n{dkim}\n\n[[reps]]\nid = \"ana\"\nname = \"Ana\"\nemail = \"ana@other.example\"\n  [reps.smtp]\n  transport = \"file\"\n  dir = \"outbox\"\n"
    )
}

fn dkim_problems(main: &str, files: &[(&str, &str)], env: &dyn Fn(&str) -> Option<String>) -> (Option<Config>, Vec<Problem>) {
    let mut all = vec![("config/cadence.toml", main), ("templates/intro.hbs", TEMPLATE)];
    all.extend_from_slice(files);
    let dir = project(&all);
    match load_in(dir.path(), env) {
        Ok((c, w)) => (Some(c), w.0),
        Err(p) => (None, p.0),
    }
}

#[test]
fn dkim_keys_are_read_and_checked_at_load() {
    // A good key in a file: loads, no DKIM problem.
    let main = dkim_main("  [reps.dkim]\n  domain = \"example.com\"\n  selector = \"s1\"\n  private_key_file = \"secrets/dkim.pem\"");
    let (cfg, problems) = dkim_problems(&main, &[("secrets/dkim.pem", ED25519_PEM)], &no_env);
    let cfg = cfg.unwrap_or_else(|| panic!("{problems:?}"));
    assert!(cfg.reps[0].dkim.as_ref().unwrap().private_key_file.as_ref().unwrap().ends_with("secrets/dkim.pem"));
    assert!(!problems.iter().any(|p| p.key.as_deref().is_some_and(|k| k.contains("dkim"))), "{problems:?}");

    // A missing file: an error naming the file and the key.
    let (cfg, problems) = dkim_problems(&main, &[], &no_env);
    assert!(cfg.is_none());
    let p = problems.iter().find(|p| p.key.as_deref() == Some("reps[0].dkim.private_key_file")).expect("missing key file reported");
    assert!(p.message.contains("secrets/dkim.pem") && p.message.contains("cannot read"), "{}", p.message);

    // Garbage in a file.
    let (_, problems) = dkim_problems(&main, &[("secrets/dkim.pem", "hello")], &no_env);
    let p = problems.iter().find(|p| p.key.as_deref() == Some("reps[0].dkim.private_key_file")).expect("bad key reported");
    assert!(p.message.contains("not a usable DKIM key"), "{}", p.message);

    // From a variable: unset is a warning; set to garbage is an error that
    // names the variable and never shows its value.
    let main = dkim_main("  [reps.dkim]\n  domain = \"example.com\"\n  selector = \"s1\"\n  private_key_env = \"DKIM_KEY\"");
    let (cfg, problems) = dkim_problems(&main, &[], &no_env);
    assert!(cfg.is_some(), "{problems:?}");
    assert!(problems.iter().any(|p| p.severity == Severity::Warning && p.message.contains("DKIM_KEY")));
    let secret_garbage = "sekrit-value-123";
    let (cfg, problems) = dkim_problems(&main, &[], &|v| (v == "DKIM_KEY").then(|| secret_garbage.to_string()));
    assert!(cfg.is_none());
    let p = problems.iter().find(|p| p.key.as_deref() == Some("reps[0].dkim.private_key_env")).expect("bad env key reported");
    assert!(p.message.contains("DKIM_KEY") && !p.message.contains(secret_garbage), "{}", p.message);
    let (cfg, _) = dkim_problems(&main, &[], &|v| (v == "DKIM_KEY").then(|| ED25519_PEM.replace('\n', "\\n")));
    assert!(cfg.is_some(), "a one-line PEM in a variable works");
}

#[test]
fn per_domain_dkim_applies_to_reps_of_that_domain() {
    let main = format!("{}\n[[dkim]]\ndomain = \"example.com\"\nselector = \"cadence\"\nprivate_key_file = \"dkim.pem\"\n", dkim_main(""));
    let (cfg, problems) = dkim_problems(&main, &[("dkim.pem", ED25519_PEM)], &no_env);
    let cfg = cfg.unwrap_or_else(|| panic!("{problems:?}"));
    let nik = cfg.reps[0].dkim.as_ref().expect("nik@mail.example.com is under example.com");
    assert_eq!((nik.domain.as_str(), nik.selector.as_str()), ("example.com", "cadence"));
    assert!(cfg.reps[1].dkim.is_none(), "ana@other.example is not");

    // A rep signing for a domain its From address is not under: a warning.
    let main = dkim_main("  [reps.dkim]\n  domain = \"other.example\"\n  selector = \"s1\"\n  private_key_file = \"dkim.pem\"");
    let (_, problems) = dkim_problems(&main, &[("dkim.pem", ED25519_PEM)], &no_env);
    let p = problems.iter().find(|p| p.key.as_deref() == Some("reps[0].dkim.domain")).expect("alignment warning");
    assert_eq!(p.severity, Severity::Warning);
    assert!(p.message.contains("DMARC"), "{}", p.message);
}

#[test]
fn http_listen_env_overrides_the_file() {
    let dir = project(&[("config/cadence.toml", GOOD_MAIN), ("templates/intro.hbs", TEMPLATE)]);
    let (cfg, _) = load_in(dir.path(), &|v| (v == HTTP_LISTEN_ENV).then(|| "127.0.0.1:0".to_string())).unwrap();
    assert_eq!(cfg.daemon.http_listen, "127.0.0.1:0");
    let bad = load_in(dir.path(), &|v| (v == HTTP_LISTEN_ENV).then(|| "nope".to_string())).unwrap_err();
    assert!(bad.0.iter().any(|p| p.message.contains(HTTP_LISTEN_ENV)), "{bad}");
}
