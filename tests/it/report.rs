//! `cadence report` figures on a database with known counts, each red flag
//! on and off at its threshold; the hygiene job through `cadence tick`.
//!
//! The pipeline is built through the real commands where they reach the
//! state (enroll, tick) and by direct SQL where only a server could (an
//! IMAP reply, a crash mid-send, a day of bounces).

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::fixtures::{text, Project};

fn ms(s: &str) -> i64 {
    DateTime::parse_from_rfc3339(s).expect("rfc3339").with_timezone(&Utc).timestamp_millis()
}

/// Rewrites the fixture's config with extra `[daemon]` keys and tables.
fn configure(p: &Project, base: &str, daemon_extra: &str, tables: &str) {
    let with_daemon = base.replacen("secret_env = \"CADENCE_SECRET\"", &format!("secret_env = \"CADENCE_SECRET\"\n{daemon_extra}"), 1);
    assert_ne!(with_daemon, base, "the fixture config has changed shape");
    p.tmp.write_config(&format!("{with_daemon}\n{tables}\n"));
}

fn enroll(p: &Project, email: &str, value: Option<&str>, now: &str) {
    let mut args = vec!["enroll", email, "--sequence", "outreach", "--company", "Acme", "--timezone", "UTC", "--now", now];
    if let Some(v) = value {
        args.extend(["--value", v]);
    }
    p.ok(&args);
}

fn enrollment_of(p: &Project, email: &str) -> (i64, i64) {
    let row = p.sql(&format!("SELECT e.id, l.id FROM enrollments e JOIN leads l ON l.id = e.lead_id WHERE l.email = '{email}'"));
    let (e, l) = row.split_once('|').expect("one enrollment");
    (e.parse().unwrap(), l.parse().unwrap())
}

fn touch(p: &Project, email: &str, kind: &str, at: &str, with_enrollment: bool) {
    let (e, l) = enrollment_of(p, email);
    let e = if with_enrollment { e.to_string() } else { "NULL".into() };
    let at = ms(at);
    p.sql(&format!(
        "INSERT INTO touchpoints (lead_id, enrollment_id, kind, at, rep, created_at) VALUES ({l}, {e}, '{kind}', {at}, 'nik', {at})"
    ));
}

fn insert_send(p: &Project, email: Option<&str>, kind: &str, step: i64, state: &str, at: &str, id: &str) {
    let (e, l) = match email {
        Some(m) => {
            let (e, l) = enrollment_of(p, m);
            (e.to_string(), l.to_string())
        }
        None => ("NULL".into(), "NULL".into()),
    };
    let to = email.unwrap_or("filler@other.test");
    p.sql(&format!(
        "INSERT INTO sends (enrollment_id, lead_id, rep, kind, step, recipient, recipient_domain, message_id, state, claimed_at) \
         VALUES ({e}, {l}, 'nik', '{kind}', {step}, '{to}', 'acme.test', '{id}@vendor.test', '{state}', {})",
        ms(at)
    ));
}

fn insert_lead(p: &Project, email: &str, stage: &str, status: &str, value: f64, stage_changed: &str) {
    let t = ms(stage_changed);
    let domain = email.split_once('@').unwrap().1;
    p.sql(&format!(
        "INSERT INTO leads (email, domain, stage, status, value, stage_changed_at, created_at, updated_at) \
         VALUES ('{email}', '{domain}', '{stage}', '{status}', {value}, {t}, {t}, {t})"
    ));
}

fn flag<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["flags"].as_array().unwrap().iter().find(|f| f["name"] == name).unwrap_or_else(|| panic!("no flag {name} in {r:#}"))
}

fn step<'a>(r: &'a Value, kind: &str, n: Option<u64>) -> &'a Value {
    r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sequence"] == "outreach" && s["kind"] == kind && s["step"].as_u64() == n)
        .unwrap_or_else(|| panic!("no {kind} {n:?} row in {:#}", r["steps"]))
}

const MON_08: &str = "2026-11-30T08:00:00Z";
const THU_13: &str = "2026-12-03T13:00:00Z";

#[test]
fn report_figures_and_each_flag_at_its_threshold() {
    let p = Project::file();
    let base = std::fs::read_to_string(p.tmp.config_path()).unwrap();
    let set = |daemon: &str, report: &str, stale: &str| {
        configure(&p, &base, daemon, &format!("[hygiene]\nschedule = \"\"\nstale_after = \"{stale}\"\n\n[report]\n{report}"))
    };
    set("", "", "10 days");

    // Speed to lead: a waits for the 09:00 window (1h); b, c, d go at the
    // 09:30 tick (20m, 10m, 5m).
    enroll(&p, "a@acme.test", Some("1000"), MON_08);
    assert_eq!(p.tick("2026-11-30T09:00:00Z")["sent"], 1);
    enroll(&p, "b@acme.test", Some("2000"), "2026-11-30T09:10:00Z");
    enroll(&p, "c@acme.test", Some("3000"), "2026-11-30T09:20:00Z");
    enroll(&p, "d@acme.test", Some("4000"), "2026-11-30T09:25:00Z");
    assert_eq!(p.tick("2026-11-30T09:30:00Z")["sent"], 3);

    // Step 1 draws a reply (b) and an auto-reply (c); b stops and moves on.
    touch(&p, "b@acme.test", "reply", "2026-11-30T10:00:00Z", true);
    touch(&p, "c@acme.test", "auto_reply", "2026-11-30T10:00:00Z", true);
    p.sql("UPDATE enrollments SET state = 'replied', next_at = NULL WHERE lead_id = (SELECT id FROM leads WHERE email = 'b@acme.test')");
    p.sql("UPDATE leads SET stage = 'closing' WHERE email = 'b@acme.test'");

    // Step 2 (3 business days later) to a, c, d; then a reply from d (seen
    // without its enrollment), a bounce report for a, an unsubscribe from c.
    assert_eq!(p.tick("2026-12-03T10:00:00Z")["sent"], 3);
    touch(&p, "d@acme.test", "reply", "2026-12-03T11:00:00Z", false);
    touch(&p, "a@acme.test", "bounce", "2026-12-03T11:00:00Z", true);
    touch(&p, "c@acme.test", "unsubscribe", "2026-12-03T12:00:00Z", true);
    // c got its last chance, a is due one: both at the cadence limit.
    insert_send(&p, Some("c@acme.test"), "last_chance", 2, "sent", "2026-12-03T12:30:00Z", "lc-c");
    p.sql("UPDATE enrollments SET phase = 'archive' WHERE lead_id = (SELECT id FROM leads WHERE email = 'c@acme.test')");
    p.sql("UPDATE enrollments SET phase = 'last_chance' WHERE lead_id = (SELECT id FROM leads WHERE email = 'a@acme.test')");
    // d's step 3 was interrupted mid-SMTP.
    insert_send(&p, Some("d@acme.test"), "step", 2, "send_unknown", "2026-12-03T12:45:00Z", "unknown-d");
    // e is due at 10:30 and nothing has sent it.
    enroll(&p, "e@acme.test", None, "2026-12-03T10:30:00Z");

    // The rest of the pipeline, written directly.
    insert_lead(&p, "p1@front.test", "prospecting", "active", 500.0, "2026-11-13T13:00:00Z"); // 20 days
    insert_lead(&p, "p2@front.test", "prospecting", "active", 500.0, "2026-11-23T13:00:00Z"); // exactly 10 days
    insert_lead(&p, "p3@front.test", "prospecting", "active", 500.0, "2026-12-02T13:00:00Z");
    insert_lead(&p, "w1@won.test", "won", "active", 10000.0, "2026-10-01T00:00:00Z");
    insert_lead(&p, "l1@lost.test", "lost", "archived", 50.0, "2026-10-01T00:00:00Z");

    let r = p.json(&["report", "--now", THU_13]);

    // Stages: configured order, then outcomes; archived apart.
    let stages: Vec<(String, u64, f64, u64)> = r["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stage"].as_str().unwrap().to_string(),
                s["leads"].as_u64().unwrap(),
                s["value"].as_f64().unwrap(),
                s["archived"].as_u64().unwrap(),
            )
        })
        .collect();
    let expect: Vec<(String, u64, f64, u64)> = [
        ("prospecting", 3, 1500.0, 0),
        ("qualification", 0, 0.0, 0),
        ("connecting", 4, 8000.0, 0),
        ("closing", 1, 2000.0, 0),
        ("won", 1, 10000.0, 0),
        ("lost", 0, 0.0, 1),
    ]
    .iter()
    .map(|(s, n, v, a)| (s.to_string(), *n, *v, *a))
    .collect();
    assert_eq!(stages, expect);
    assert_eq!(r["open_leads"], 8);
    assert_eq!(r["open_value"], 11500.0);
    assert_eq!(r["archived_leads"], 1);

    // Per step: each response goes to the latest email before it.
    let s1 = step(&r, "step", Some(1));
    assert_eq!((s1["sent"].as_u64(), s1["replied"].as_u64(), s1["auto_replied"].as_u64()), (Some(4), Some(1), Some(1)));
    assert_eq!((s1["bounced"].as_u64(), s1["unsubscribed"].as_u64()), (Some(0), Some(0)));
    assert_eq!(s1["reply_rate"], 0.25);
    assert_eq!(s1["label"], "1 intro");
    let s2 = step(&r, "step", Some(2));
    assert_eq!((s2["sent"].as_u64(), s2["replied"].as_u64(), s2["auto_replied"].as_u64()), (Some(3), Some(1), Some(0)));
    assert_eq!((s2["bounced"].as_u64(), s2["unsubscribed"].as_u64()), (Some(1), Some(1)));
    assert!((s2["reply_rate"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
    let s3 = step(&r, "step", Some(3));
    assert_eq!((s3["sent"].as_u64(), s3["replied"].as_u64()), (Some(1), Some(0)), "send_unknown counts as sent");
    let lc = step(&r, "last_chance", None);
    assert_eq!((lc["sent"].as_u64(), lc["unsubscribed"].as_u64()), (Some(1), Some(0)), "the unsubscribe came before the last chance");
    assert_eq!(lc["label"], "last chance (breakup)");

    // Speed to lead over [5m, 10m, 20m, 1h] (e has had no email).
    assert_eq!(r["speed_to_lead"]["enrollments"], 4);
    assert_eq!(r["speed_to_lead"]["median_secs"], 600);
    assert_eq!(r["speed_to_lead"]["p90_secs"], 3600);

    // Defaults: bottleneck 50%, min_front 5, max_last_stage 20, overdue 1 day.
    let b = flag(&r, "bottleneck");
    assert_eq!((b["value"].as_f64(), b["threshold"].as_f64(), b["on"].as_bool()), (Some(0.5), Some(0.5), Some(false)), "at the share: off");
    assert!(b["detail"].as_str().unwrap().contains("connecting holds 4 of 8"));
    assert_eq!((flag(&r, "thin_front")["value"].as_u64(), flag(&r, "thin_front")["on"].as_bool()), (Some(3), Some(true)));
    assert_eq!(flag(&r, "last_stage_crowded")["on"], false);
    assert_eq!(flag(&r, "overdue")["on"], false, "e is 2.5 hours late; the default allows a day");

    let cl = flag(&r, "cadence_limit");
    assert_eq!((cl["on"].as_bool(), cl["value"].as_u64()), (Some(true), Some(2)));
    let cl_leads: Vec<&str> = cl["items"].as_array().unwrap().iter().map(|i| i["email"].as_str().unwrap()).collect();
    assert!(cl_leads.contains(&"a@acme.test") && cl_leads.contains(&"c@acme.test"), "{cl:#}");
    let unk = flag(&r, "send_unknown");
    assert_eq!((unk["on"].as_bool(), unk["value"].as_u64()), (Some(true), Some(1)));
    assert_eq!(unk["items"][0]["email"], "d@acme.test");

    // Stale at 10 days: p1 (20 days) only; p2 is exactly 10 days.
    let st = flag(&r, "stale");
    assert_eq!((st["on"].as_bool(), st["value"].as_u64(), st["threshold"].as_str()), (Some(true), Some(1), Some("10 days")));
    assert_eq!(st["items"][0]["email"], "p1@front.test");

    // Bounces: 1 in 5 sends over 24 hours, too few sends to judge.
    let bp = flag(&r, "bounce_pause");
    assert_eq!((bp["on"].as_bool(), bp["value"].as_f64()), (Some(false), Some(0.0)));

    // The text form: sections, every line within 100 columns.
    let t = p.ok(&["report", "--now", THU_13]);
    for section in ["Stages", "Red flags (4 of 9 raised)", "Sequences", "Speed to lead", "median 10m, p90 1h 00m"] {
        assert!(t.contains(section), "no {section:?} in:\n{t}");
    }
    assert!(t.lines().all(|l| l.chars().count() <= 100), "a line is wider than 100 columns:\n{t}");

    // Now move each threshold across the measured value.
    set("", "bottleneck_share = 0.49\nmin_front = 3\nmax_last_stage = 0\noverdue_after = \"149m\"", "9 days");
    let r = p.json(&["report", "--now", THU_13]);
    assert_eq!(flag(&r, "bottleneck")["on"], true);
    assert_eq!(flag(&r, "thin_front")["on"], false, "3 leads, minimum 3");
    assert_eq!((flag(&r, "last_stage_crowded")["on"].as_bool(), flag(&r, "last_stage_crowded")["value"].as_u64()), (Some(true), Some(1)));
    let od = flag(&r, "overdue");
    assert_eq!((od["on"].as_bool(), od["value"].as_u64(), od["threshold"].as_str()), (Some(true), Some(1), Some("149m")));
    assert_eq!(od["items"][0]["email"], "e@acme.test");
    assert!(od["items"][0]["detail"].as_str().unwrap().ends_with("waiting for the daemon"), "{od:#}");
    assert_eq!(flag(&r, "stale")["value"], 2, "p2 is stale at 9 days");

    set("", "min_front = 4\nmax_last_stage = 1\noverdue_after = \"150m\"", "21 days");
    let r = p.json(&["report", "--now", THU_13]);
    assert_eq!(flag(&r, "thin_front")["on"], true);
    assert_eq!(flag(&r, "last_stage_crowded")["on"], false, "1 lead, maximum 1");
    assert_eq!(flag(&r, "overdue")["on"], false, "exactly 150 minutes late");
    assert_eq!((flag(&r, "stale")["on"].as_bool(), flag(&r, "stale")["value"].as_u64()), (Some(false), Some(0)));

    // The reason for a late step: a failing server, then a full daily cap.
    set("", "overdue_after = \"1 hour\"", "10 days");
    let (e_id, _) = enrollment_of(&p, "e@acme.test");
    p.sql(&format!("UPDATE enrollments SET attempts = 2 WHERE id = {e_id}"));
    let r = p.json(&["report", "--now", THU_13]);
    assert!(flag(&r, "overdue")["items"][0]["detail"].as_str().unwrap().contains("failing server"));
    p.sql(&format!("UPDATE enrollments SET attempts = 0 WHERE id = {e_id}"));
    let capped = base.replacen("daily_limit = 200", "daily_limit = 5", 1);
    configure(&p, &capped, "", "[hygiene]\nschedule = \"\"\n\n[report]\noverdue_after = \"1 hour\"");
    let r = p.json(&["report", "--now", THU_13]);
    let detail = flag(&r, "overdue")["items"][0]["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("daily cap (5 of 5 sent today)"), "{detail}");

    // A rep whose bounces pass the rate after 20 sends: 1 of 20 is 5%.
    for i in 0..15 {
        insert_send(&p, None, "step", 0, "sent", "2026-12-03T08:00:00Z", &format!("filler-{i}"));
    }
    set("bounce_pause_rate = 0.05", "", "10 days");
    let r = p.json(&["report", "--now", THU_13]);
    let bp = flag(&r, "bounce_pause");
    assert_eq!((bp["value"].as_f64(), bp["on"].as_bool()), (Some(0.05), Some(false)), "{bp:#}");
    set("bounce_pause_rate = 0.049", "", "10 days");
    let r = p.json(&["report", "--now", THU_13]);
    let bp = flag(&r, "bounce_pause");
    assert_eq!(bp["on"], true);
    assert_eq!(bp["items"][0]["rep"], "nik");
    // A day later the window has moved past them.
    let r = p.json(&["report", "--now", "2026-12-04T13:00:00Z"]);
    assert_eq!(flag(&r, "bounce_pause")["on"], false);
}

const HYGIENE: &str = "[hygiene]\nschedule = \"0 0 7 * * Mon-Fri\"\nstale_after = \"3 days\"\ndigest_to = [\"manager@vendor.test\"]\n";

fn hygiene_project() -> Project {
    let p = Project::file();
    let base = std::fs::read_to_string(p.tmp.config_path()).unwrap();
    let berlin = base.replacen("timezone = \"UTC\"", "timezone = \"Europe/Berlin\"", 1);
    assert_ne!(berlin, base);
    configure(&p, &berlin, "", HYGIENE);
    p.tmp.write_template("digest", include_str!("../../templates/digest.hbs"));
    // Nobody has touched `old` since Nov 20; `fresh` moved on Nov 29.
    p.ok(&["check"]);
    p.ok(&["leads", "--now", "2026-11-20T00:00:00Z"]); // creates the database
    insert_lead(&p, "old@front.test", "prospecting", "active", 100.0, "2026-11-20T12:00:00Z");
    insert_lead(&p, "fresh@front.test", "qualification", "active", 200.0, "2026-11-29T12:00:00Z");
    p
}

fn digests(p: &Project) -> Vec<String> {
    p.outbox()
}

#[test]
fn hygiene_runs_once_per_fire_and_catches_up_once() {
    let p = hygiene_project();

    // First start, Monday 06:00 in Berlin: Friday's 07:00 fire was missed; it runs now.
    let t = p.tick("2026-11-30T05:00:00Z");
    let h = &t["hygiene"];
    assert_eq!(h["fire_at"], "2026-11-27T06:00:00Z", "{t:#}");
    assert_eq!(h["stale_flagged"], serde_json::json!(["old@front.test"]));
    assert_eq!(h["digest"][0]["to"], "manager@vendor.test");
    assert_eq!(h["digest"][0]["state"], "sent");
    assert_eq!(digests(&p).len(), 1);

    // Same fire again: nothing.
    assert!(p.tick("2026-11-30T05:30:00Z")["hygiene"].is_null());
    assert_eq!(digests(&p).len(), 1);

    // Monday 07:00 Berlin = 06:00 UTC.
    let h = p.tick("2026-11-30T06:00:00Z")["hygiene"].clone();
    assert_eq!(h["fire_at"], "2026-11-30T06:00:00Z");
    assert_eq!(h["stale_flagged"], serde_json::json!([]), "old is flagged already; fresh is not stale yet");
    assert!(p.tick("2026-11-30T06:00:30Z")["hygiene"].is_null());
    assert_eq!(digests(&p).len(), 2);

    // Down Tuesday to Friday noon: the four missed fires run once, as Friday's.
    let h = p.tick("2026-12-04T12:00:00Z")["hygiene"].clone();
    assert_eq!(h["fire_at"], "2026-12-04T06:00:00Z");
    assert_eq!(h["stale_flagged"], serde_json::json!(["fresh@front.test"]));
    assert!(p.tick("2026-12-04T13:00:00Z")["hygiene"].is_null());
    // Saturday: no fire on weekends; Friday's has run.
    assert!(p.tick("2026-12-05T09:00:00Z")["hygiene"].is_null());

    assert_eq!(digests(&p).len(), 3);
    assert_eq!(p.sql("SELECT COUNT(*) FROM sends WHERE kind = 'digest' AND state = 'sent' AND lead_id IS NULL"), "3");
    assert_eq!(
        p.sql("SELECT fire_at FROM cron_fires WHERE job = 'hygiene' AND done_at IS NOT NULL ORDER BY fire_at"),
        [ms("2026-11-27T06:00:00Z"), ms("2026-11-30T06:00:00Z"), ms("2026-12-04T06:00:00Z")].map(|m| m.to_string()).join("\n")
    );
    // One stale touchpoint per lead that went stale, and the flag set.
    assert_eq!(
        p.sql("SELECT l.email, COUNT(*) FROM touchpoints t JOIN leads l ON l.id = t.lead_id WHERE t.kind = 'stale' GROUP BY l.email ORDER BY l.email"),
        "fresh@front.test|1\nold@front.test|1"
    );
    assert_eq!(p.sql("SELECT COUNT(*) FROM leads WHERE stale = 1"), "2");
    // A touch clears the flag.
    p.ok(&["note", "old@front.test", "called, interested", "--kind", "call", "--now", "2026-12-04T14:00:00Z"]);
    assert_eq!(p.sql("SELECT stale FROM leads WHERE email = 'old@front.test'"), "0");

    // The digest: our template, the real report, to the manager, no unsubscribe headers.
    let mail = digests(&p).into_iter().find(|m| m.contains("2026-12-04")).expect("Friday's digest");
    assert!(mail.contains("Subject: Pipeline digest for 2026-12-04"), "{mail}");
    assert!(mail.contains("To: manager@vendor.test"), "{mail}");
    assert!(mail.contains("From: \"Nik Levnaich\" <nik@vendor.test>"), "{mail}");
    assert!(!mail.contains("List-Unsubscribe"), "{mail}");
    let body = mail.replace("=\r\n", "").replace("\r\n", "\n");
    assert!(body.contains("stale"), "{body}");
    assert!(body.contains("Speed to lead"), "{body}");
}

#[test]
fn two_ticks_at_once_run_a_fire_once() {
    let p = hygiene_project();
    p.tick("2026-11-30T05:00:00Z");
    let spawn = || {
        p.tmp
            .cadence()
            .env("CADENCE_SECRET", crate::fixtures::SECRET)
            .args(["tick", "--json", "--now", "2026-11-30T06:00:05Z"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn tick")
    };
    let (a, b) = (spawn(), spawn());
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let ran: Vec<bool> = outs
        .iter()
        .map(|o| {
            assert!(o.status.success(), "tick failed: {}", text(&o.stderr));
            let v: Value = serde_json::from_slice(&o.stdout).expect("tick --json");
            !v["hygiene"].is_null()
        })
        .collect();
    assert_eq!(ran.iter().filter(|r| **r).count(), 1, "exactly one of two ticks runs the fire: {ran:?}");
    assert_eq!(p.sql("SELECT COUNT(*) FROM sends WHERE kind = 'digest'"), "2");
}

/// The report's and the hygiene job's SQL on a real PostgreSQL server.
#[tokio::test]
async fn report_and_hygiene_on_postgres() {
    let p = Project::on(crate::fixtures::Backend::Postgres, crate::fixtures::Opts::default());
    let db = p.pg().expect("a PostgreSQL project");
    let base = std::fs::read_to_string(p.tmp.config_path()).unwrap();
    let pg = base.replacen("timezone = \"UTC\"", "timezone = \"Europe/Berlin\"", 1);
    configure(&p, &pg, "", HYGIENE);
    p.tmp.write_template("digest", include_str!("../../templates/digest.hbs"));

    enroll(&p, "a@acme.test", Some("1000"), MON_08);
    let t = p.tick("2026-11-30T09:00:00Z");
    assert_eq!(t["sent"], 1);
    assert_eq!(t["hygiene"]["fire_at"], "2026-11-30T06:00:00Z");
    assert_eq!(t["hygiene"]["digest"][0]["state"], "sent");
    assert!(p.tick("2026-11-30T09:30:00Z")["hygiene"].is_null());

    let mut conn = db.connect().await;
    let (lead, enrollment): (i64, i64) = sqlx::query_as("SELECT lead_id, id FROM enrollments").fetch_one(&mut conn).await.unwrap();
    let at = ms("2026-11-30T09:45:00Z");
    sqlx::query("INSERT INTO touchpoints (lead_id, enrollment_id, kind, at, rep, created_at) VALUES ($1, $2, 'reply', $3, 'nik', $3)")
        .bind(lead)
        .bind(enrollment)
        .bind(at)
        .execute(&mut conn)
        .await
        .unwrap();
    let old = ms("2026-11-01T00:00:00Z");
    sqlx::query(
        "INSERT INTO leads (email, domain, stage, status, value, stage_changed_at, created_at, updated_at) \
         VALUES ('old@front.test', 'front.test', 'prospecting', 'active', 250.5, $1, $1, $1)",
    )
    .bind(old)
    .execute(&mut conn)
    .await
    .unwrap();

    let r = p.json(&["report", "--now", "2026-11-30T10:00:00Z"]);
    assert_eq!(r["open_leads"], 2);
    assert_eq!(r["open_value"], 1250.5);
    let s1 = step(&r, "step", Some(1));
    assert_eq!((s1["sent"].as_u64(), s1["replied"].as_u64(), s1["reply_rate"].as_f64()), (Some(1), Some(1), Some(1.0)));
    assert_eq!(r["speed_to_lead"]["median_secs"], 3600);
    assert_eq!(flag(&r, "stale")["value"], 1);
    assert_eq!(flag(&r, "bounce_pause")["on"], false);

    // Tuesday's fire flags the stale lead once.
    let h = p.tick("2026-12-01T06:00:00Z")["hygiene"].clone();
    assert_eq!(h["stale_flagged"], serde_json::json!(["old@front.test"]));
    assert!(p.tick("2026-12-01T06:10:00Z")["hygiene"].is_null());
    let (fires, digests): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM cron_fires WHERE done_at IS NOT NULL), (SELECT COUNT(*) FROM sends WHERE kind = 'digest')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!((fires, digests), (2, 2));
    sqlx::Connection::close(conn).await.unwrap();
}
