//! Task steps, the rep's agenda and A/B variants, through the real binary:
//! `tick --now` walks an email → call task → email sequence; the agenda is
//! checked against a database the test builds; the report's variant
//! figures against known counts.

use serde_json::Value;

use crate::fixtures::{Opts, Project};
use crate::support::dovecot::Dovecot;

/// email → call task (1 business day later, skipped after 2 more) → email
/// a day after the task is closed.
const CALLS: &str = r#"stage = "connecting"
reply_stage = "closing"
send_window = { days = "Mon-Fri", start = "09:00", end = "17:00" }

[[steps]]
wait = "0s"
template = "intro"

[[steps]]
wait = "1 business day"
kind = "task"
task = "call"
instructions = "call-script"
task_timeout = "2 business days"

[[steps]]
wait = "1 day"
template = "bump"
"#;

fn calls_project(opts: Opts) -> Project {
    let p = Project::new(opts);
    p.tmp.write_sequence("calls", CALLS);
    p.tmp.write_template(
        "call-script",
        "---\nsubject: \"call\"\n---\nCall {{first_name}} at {{company}} (step {{step}}).\nAsk about their Q1 plans.\n",
    );
    p
}

fn enroll(p: &Project, email: &str, first: &str, sequence: &str, tz: &str, now: &str) {
    p.ok(&["enroll", email, "--sequence", sequence, "--first-name", first, "--company", "Acme", "--timezone", tz, "--now", now]);
}

fn tasks(p: &Project, now: &str) -> Vec<Value> {
    p.json(&["tasks", "--now", now]).as_array().expect("array").clone()
}

fn task_of<'a>(list: &'a [Value], email: &str) -> &'a Value {
    list.iter().find(|t| t["email"] == email).unwrap_or_else(|| panic!("no task for {email} in {list:?}"))
}

fn enrollment(p: &Project, email: &str) -> Value {
    p.json(&["show", email])["enrollments"][0].clone()
}

fn touch_kinds(p: &Project, email: &str) -> Vec<String> {
    p.json(&["show", email])["touchpoints"].as_array().unwrap().iter().map(|t| t["kind"].as_str().unwrap().to_string()).collect()
}

/// Two leads in New York (UTC-5). Both get the intro on Friday; their call
/// tasks appear on Monday at 10:00 their time, not before; the bump waits.
/// Ana's task is done on Tuesday: her bump goes a day later. Bo's is never
/// done: it is skipped at its timeout (Wednesday 10:00) and his bump goes
/// a day after that.
#[test]
fn an_email_call_task_email_sequence_walks_with_tick() {
    let p = calls_project(Opts::default());
    enroll(&p, "ana@acme.example", "Ana", "calls", "America/New_York", "2026-12-04T15:00:00Z");
    enroll(&p, "bo@bolt.example", "Bo", "calls", "America/New_York", "2026-12-04T15:00:00Z");
    assert_eq!(p.tick("2026-12-04T15:00:00Z")["sent"], 2);
    assert_eq!(enrollment(&p, "ana@acme.example")["next_at"], "2026-12-07T15:00:00Z", "1 business day: Monday 10:00 New York");

    // Over the weekend and until Monday 10:00 New York: no task.
    for now in ["2026-12-05T15:00:00Z", "2026-12-07T14:59:00Z"] {
        assert_eq!(p.tick(now)["sent"], 0);
        assert!(tasks(&p, now).is_empty(), "no task yet at {now}");
    }
    // A tick later in the day creates them, due at the step's time.
    assert_eq!(p.tick("2026-12-07T18:00:00Z")["sent"], 0);
    let open = tasks(&p, "2026-12-07T18:00:00Z");
    assert_eq!(open.len(), 2, "{open:?}");
    let ana = task_of(&open, "ana@acme.example");
    assert_eq!(ana["kind"], "call");
    assert_eq!(ana["state"], "open");
    assert_eq!(ana["rep"], "nik");
    assert_eq!(ana["step"], 2);
    assert_eq!(ana["due_at"], "2026-12-07T15:00:00Z");
    assert_eq!(ana["timeout_at"], "2026-12-09T15:00:00Z");
    assert_eq!(ana["overdue"], false);
    assert_eq!(ana["instructions"], "Call Ana at Acme (step 2).\nAsk about their Q1 plans.", "rendered for the lead");
    let ana_id = ana["id"].as_i64().unwrap().to_string();
    let bo_id = task_of(&open, "bo@bolt.example")["id"].as_i64().unwrap().to_string();
    assert_eq!(enrollment(&p, "ana@acme.example")["phase"], "task");
    let text = p.ok(&["tasks", "--now", "2026-12-07T18:00:00Z"]);
    assert!(text.contains("Call Ana at Acme (step 2).") && text.contains("2 open task(s)"), "{text}");
    let explain = p.ok(&["explain", "ana@acme.example", "--now", "2026-12-07T18:00:00Z"]);
    assert!(explain.contains("waiting for the rep: task 2 (call) is open"), "{explain}");

    // The bump would be due by now were it not for the task.
    assert_eq!(p.tick("2026-12-08T18:00:00Z")["sent"], 0);
    // One day past due, the open tasks are overdue ([report] overdue_after = 1 day).
    let overdue = p.json(&["tasks", "--overdue", "--now", "2026-12-08T18:00:00Z"]);
    assert_eq!(overdue.as_array().unwrap().len(), 2);
    assert_eq!(p.json(&["tasks", "--overdue", "--now", "2026-12-08T14:00:00Z"]).as_array().unwrap().len(), 0);

    // Done, with an outcome: logged as a call; the bump waits a day from now.
    let done = p.json(&["task", "done", &ana_id, "--note", "Talked to Ana, send the deck", "--now", "2026-12-08T19:00:00Z"]);
    assert_eq!(done["state"], "done");
    assert_eq!(done["note"], "Talked to Ana, send the deck");
    assert_eq!(done["finished_at"], "2026-12-08T19:00:00Z");
    let e = enrollment(&p, "ana@acme.example");
    assert_eq!((e["phase"].as_str(), e["step"].as_i64()), (Some("step"), Some(3)));
    assert_eq!(e["next_at"], "2026-12-09T19:00:00Z");
    let show = p.json(&["show", "ana@acme.example"]);
    let call = show["touchpoints"].as_array().unwrap().iter().find(|t| t["kind"] == "call").expect("a call touchpoint").clone();
    assert!(call["detail"].as_str().unwrap().contains("Talked to Ana, send the deck"), "{call}");
    assert_eq!(call["at"], "2026-12-08T19:00:00Z");
    // Closing twice is refused, nothing changes.
    let again = p.run(&["task", "skip", &ana_id, "--now", "2026-12-08T19:05:00Z"]);
    assert_eq!(again.status.code(), Some(3), "{}", crate::fixtures::text(&again.stderr));

    // Bo's task times out at Wednesday 10:00 New York.
    assert_eq!(p.tick("2026-12-09T14:59:00Z")["sent"], 0);
    assert_eq!(task_of(&tasks(&p, "2026-12-09T14:59:00Z"), "bo@bolt.example")["state"], "open");
    assert_eq!(p.tick("2026-12-09T15:00:00Z")["sent"], 0);
    assert!(tasks(&p, "2026-12-09T15:00:00Z").is_empty());
    assert_eq!(
        p.sql(&format!("SELECT state, finished_at FROM tasks WHERE id = {bo_id}")),
        format!("timed_out|{}", ms("2026-12-09T15:00:00Z"))
    );
    assert!(touch_kinds(&p, "bo@bolt.example").contains(&"task_skipped".to_string()));
    assert_eq!(enrollment(&p, "bo@bolt.example")["next_at"], "2026-12-10T15:00:00Z", "a day after the timeout");
    let refused = p.run(&["task", "done", &bo_id, "--now", "2026-12-09T15:01:00Z"]);
    assert_eq!(refused.status.code(), Some(3));

    // Ana's bump at Wednesday 14:00 New York; Bo's on Thursday 10:00.
    assert_eq!(p.tick("2026-12-09T19:00:00Z")["sent"], 1);
    assert_eq!(p.tick("2026-12-10T14:59:00Z")["sent"], 0);
    assert_eq!(p.tick("2026-12-10T15:00:00Z")["sent"], 1);
    let bumps: Vec<String> = p.outbox().into_iter().filter(|m| m.contains("Just bumping this up")).collect();
    assert_eq!(bumps.len(), 2);
    assert!(bumps.iter().all(|m| m.contains("Subject: Re: Quick question about Acme")), "the bump stays in the thread");

    // The report's task step figures.
    let report = p.json(&["report", "--now", "2026-12-10T15:00:00Z"]);
    let line =
        report["steps"].as_array().unwrap().iter().find(|s| s["sequence"] == "calls" && s["kind"] == "task").expect("task line").clone();
    assert_eq!(line["step"], 2);
    assert_eq!(line["label"], "2 task: call");
    assert_eq!(
        (line["tasks"]["done"].as_u64(), line["tasks"]["timed_out"].as_u64(), line["tasks"]["open"].as_u64()),
        (Some(1), Some(1), Some(0))
    );
    let flag = report["flags"].as_array().unwrap().iter().find(|f| f["name"] == "overdue_tasks").unwrap().clone();
    assert_eq!(flag["on"], false);
}

fn ms(rfc: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc).unwrap().timestamp_millis()
}

/// An open task is overdue in the report: count, oldest and per rep; a
/// skip by hand moves the sequence on and is logged.
#[test]
fn overdue_tasks_are_a_red_flag_and_a_skip_moves_on() {
    let p = calls_project(Opts::default());
    let seq = CALLS.replace("task_timeout = \"2 business days\"\n", "");
    p.tmp.write_sequence("calls", &seq);
    enroll(&p, "ana@acme.example", "Ana", "calls", "America/New_York", "2026-12-04T15:00:00Z");
    p.tick("2026-12-04T15:00:00Z");
    p.tick("2026-12-07T15:00:00Z");
    assert_eq!(enrollment(&p, "ana@acme.example")["next_at"], Value::Null, "no timeout: the engine does not wake for it");
    // A week later it is still open.
    p.tick("2026-12-14T15:00:00Z");
    let report = p.json(&["report", "--now", "2026-12-14T15:00:00Z"]);
    let flag = report["flags"].as_array().unwrap().iter().find(|f| f["name"] == "overdue_tasks").unwrap().clone();
    assert_eq!(flag["on"], true, "{flag}");
    assert_eq!(flag["value"], 1);
    assert!(flag["detail"].as_str().unwrap().contains("oldest due 2026-12-07T15:00:00Z"), "{flag}");
    assert_eq!(flag["items"][0]["rep"], "nik");
    assert!(flag["items"][0]["detail"].as_str().unwrap().contains("1 overdue task(s), oldest due 7d 0h ago"), "{flag}");
    assert!(p.ok(&["report", "--now", "2026-12-14T15:00:00Z"]).contains("!!  overdue_tasks"));
    let id = tasks(&p, "2026-12-14T15:00:00Z")[0]["id"].as_i64().unwrap().to_string();
    assert_eq!(p.json(&["task", "skip", &id, "--now", "2026-12-14T16:00:00Z"])["state"], "skipped");
    assert_eq!(enrollment(&p, "ana@acme.example")["next_at"], "2026-12-15T16:00:00Z");
    assert!(touch_kinds(&p, "ana@acme.example").contains(&"task_skipped".to_string()));
    let report = p.json(&["report", "--now", "2026-12-14T16:00:00Z"]);
    let line = report["steps"].as_array().unwrap().iter().find(|s| s["kind"] == "task").unwrap().clone();
    assert_eq!(line["tasks"]["skipped"], 1);
}

/// A reply while the call task is open ends the enrollment and cancels the
/// task: it leaves the rep's list and can no longer be done.
#[tokio::test(flavor = "multi_thread")]
async fn a_reply_while_a_task_is_open_cancels_it() {
    const PW: &str = "imap-pw-task";
    let imap = Dovecot::start(&[("nik", PW)]).await;
    let p = calls_project(Opts { imap: Some((imap.port(), PW.into())), ..Opts::default() });
    enroll(&p, "ana@acme.example", "Ana", "calls", "America/New_York", "2026-12-04T15:00:00Z");
    assert_eq!(p.tick("2026-12-04T15:00:00Z")["sent"], 1);
    p.tick("2026-12-07T15:00:00Z");
    let open = tasks(&p, "2026-12-07T15:00:00Z");
    assert_eq!(open.len(), 1);
    let id = open[0]["id"].as_i64().unwrap();
    let intro_id = p.sql("SELECT message_id FROM sends WHERE kind = 'step' AND step = 0");
    let reply = format!(
        "From: Ana <ana@acme.example>\r\nTo: Nik Levnaich <nik@vendor.test>\r\nSubject: Re: Quick question about Acme\r\n\
         Date: Mon, 07 Dec 2026 16:00:00 +0000\r\nMessage-ID: <reply-task@acme.example>\r\nIn-Reply-To: {intro_id}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nYes, call me tomorrow.\r\n"
    );
    imap.append("nik", "INBOX", reply.as_bytes()).await;
    assert_eq!(p.tick("2026-12-07T16:05:00Z")["sent"], 0);
    assert_eq!(enrollment(&p, "ana@acme.example")["state"], "replied");
    assert_eq!(p.sql(&format!("SELECT state FROM tasks WHERE id = {id}")), "cancelled");
    assert!(tasks(&p, "2026-12-07T16:05:00Z").is_empty());
    let out = p.run(&["task", "done", &id.to_string(), "--now", "2026-12-07T16:10:00Z"]);
    assert_eq!(out.status.code(), Some(3));
    // Nothing more goes out, the timeout included.
    assert_eq!(p.tick("2026-12-15T16:00:00Z")["sent"], 0);
    assert_eq!(p.sql("SELECT count(*) FROM sends"), "1");
    // The unanswered reply is on the rep's agenda.
    let agenda = p.json(&["agenda", "--date", "2026-12-07", "--now", "2026-12-07T16:10:00Z"]);
    assert_eq!(agenda["replies"][0]["email"], "ana@acme.example");
    assert_eq!(agenda["replies"][0]["text"], "Yes, call me tomorrow.");
}

/// The agenda of rep nik (America/Regina, UTC-6) for Monday 2026-12-07,
/// against a database the test builds with known tasks, replies, quiet
/// leads and scheduled emails.
#[test]
fn the_agenda_for_a_date() {
    let p = calls_project(Opts::default());
    // Tasks: Ana (connecting) due 15:00Z, Cy (moved to closing) due 17:00Z.
    enroll(&p, "ana@acme.example", "Ana", "calls", "America/New_York", "2026-12-04T15:00:00Z");
    enroll(&p, "cy@cyan.example", "Cy", "calls", "America/New_York", "2026-12-04T17:00:00Z");
    // Replies: Fay's is unanswered, Gus's was answered by a call.
    enroll(&p, "fay@fig.example", "Fay", "outreach", "UTC", "2026-12-04T15:00:00Z");
    enroll(&p, "gus@gum.example", "Gus", "outreach", "UTC", "2026-12-04T15:00:00Z");
    // Quiet: Hal in closing, untouched since November.
    enroll(&p, "hal@hat.example", "Hal", "outreach", "UTC", "2026-11-20T10:00:00Z");
    p.ok(&["stage", "hal@hat.example", "closing", "--now", "2026-11-20T10:00:00Z"]);
    p.ok(&["unenroll", "hal@hat.example", "--now", "2026-11-20T10:00:00Z"]);
    p.tick("2026-12-04T17:00:00Z");
    p.ok(&["stage", "cy@cyan.example", "closing", "--now", "2026-12-04T18:00:00Z"]);
    for (email, at, text) in
        [("fay@fig.example", "2026-12-05T10:00:00Z", "Tell me more"), ("gus@gum.example", "2026-12-05T11:00:00Z", "Call me")]
    {
        p.sql(&format!(
            "INSERT INTO touchpoints (lead_id, enrollment_id, kind, at, rep, detail, created_at) \
             SELECT l.id, e.id, 'reply', {ms}, 'nik', '{text}', {ms} FROM leads l JOIN enrollments e ON e.lead_id = l.id WHERE l.email = '{email}'",
            ms = ms(at)
        ));
    }
    p.ok(&["note", "gus@gum.example", "Called back", "--kind", "call", "--now", "2026-12-06T12:00:00Z"]);
    p.tick("2026-12-07T17:30:00Z");
    // Emails later today: two leads in Los Angeles enrolled in the window.
    enroll(&p, "dee@dew.example", "Dee", "outreach", "America/Los_Angeles", "2026-12-07T17:40:00Z");
    enroll(&p, "eve@elm.example", "Eve", "outreach", "America/Los_Angeles", "2026-12-07T20:00:00Z");

    let a = p.json(&["agenda", "--rep", "nik", "--date", "2026-12-07", "--now", "2026-12-07T18:00:00Z"]);
    assert_eq!(a["date"], "2026-12-07");
    assert_eq!(a["timezone"], "America/Regina");
    let order: Vec<&str> = a["tasks"].as_array().unwrap().iter().map(|t| t["email"].as_str().unwrap()).collect();
    assert_eq!(order, ["cy@cyan.example", "ana@acme.example"], "closest to closing first, though due later");
    assert_eq!(a["tasks"][0]["stage"], "closing");
    assert_eq!(a["tasks"][0]["due_at"], "2026-12-07T17:00:00Z");
    assert_eq!(a["tasks"][1]["overdue"], false);
    let replies: Vec<&str> = a["replies"].as_array().unwrap().iter().map(|r| r["email"].as_str().unwrap()).collect();
    assert_eq!(replies, ["fay@fig.example"], "Gus's reply was answered");
    assert_eq!(a["replies"][0]["at"], "2026-12-05T10:00:00Z");
    let quiet: Vec<&str> = a["quiet"].as_array().unwrap().iter().map(|q| q["email"].as_str().unwrap()).collect();
    assert_eq!(quiet, ["hal@hat.example"], "Cy is in closing but was touched on Friday");
    assert_eq!(a["last_stage"], "closing");
    let e = &a["emails"];
    assert_eq!((e["scheduled"].as_u64(), e["held_from_before"].as_u64(), e["sent"].as_u64()), (Some(2), Some(0), Some(0)));
    assert_eq!(e["will_send"], 2);
    assert_eq!(e["first_at"], "2026-12-07T17:40:00Z");
    assert_eq!(e["last_at"], "2026-12-07T20:00:00Z");
    assert_eq!(e["by_hour"], serde_json::json!([["11:00", 1], ["14:00", 1]]), "in the rep's time");
    let text = p.ok(&["agenda", "--date", "2026-12-07", "--now", "2026-12-07T18:00:00Z"]);
    for needle in [
        "Agenda for Nik Levnaich (nik), Mon 2026-12-07",
        "Tasks (2)",
        "Call Cy at Acme (step 2).",
        "Replies waiting for an answer (1)",
        "\"Tell me more\"",
        "In closing with no touch for 5 days (1)",
        "2 scheduled between 11:40 and 14:00",
    ] {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
    // The next day: the tasks are still there, overdue.
    let next = p.json(&["agenda", "--date", "2026-12-08", "--now", "2026-12-08T15:00:00Z"]);
    assert!(next["tasks"].as_array().unwrap().iter().all(|t| t["overdue"] == true), "{next}");
    // An unknown rep is a usage error.
    assert_eq!(p.run(&["agenda", "--rep", "zed"]).status.code(), Some(2));
}

/// `[agenda] schedule`: each rep gets the agenda at 07:00 their time, once
/// per fire however often `tick` runs.
#[test]
fn the_morning_agenda_email_goes_out_once_per_fire() {
    let p = calls_project(Opts::default());
    let cfg = std::fs::read_to_string(p.tmp.config_path()).unwrap();
    p.tmp.write_config(&format!("{cfg}\n[agenda]\nschedule = \"0 0 7 * * Mon-Fri\"\n"));
    enroll(&p, "ana@acme.example", "Ana", "calls", "America/New_York", "2026-12-04T15:00:00Z");
    p.tick("2026-12-04T15:00:00Z");
    p.tick("2026-12-07T15:00:00Z");
    let before = p.outbox().len();
    // 07:00 in Regina is 13:00 UTC; the fire of Monday was before the task.
    let out = p.tick("2026-12-08T13:00:00Z");
    assert_eq!(out["agenda"][0]["rep"], "nik");
    assert_eq!(out["agenda"][0]["state"], "sent");
    assert_eq!(out["agenda"][0]["fire_at"], "2026-12-08T13:00:00Z");
    assert_eq!(p.tick("2026-12-08T13:05:00Z")["agenda"].as_array().unwrap().len(), 0, "once per fire");
    let mails = p.outbox();
    assert_eq!(mails.len(), before + 1);
    let agenda = mails.iter().find(|m| m.contains("Subject: Your day, 2026-12-08: 1 task(s)")).expect("the agenda email");
    assert!(agenda.contains("Agenda for Nik Levnaich (nik), Tue 2026-12-08"), "{agenda}");
    assert!(agenda.contains("Call Ana at Acme (step 2)."), "{agenda}");
    assert!(agenda.lines().any(|l| l.starts_with("To:") && l.contains("nik@vendor.test")), "{agenda}");
    assert!(!agenda.contains("List-Unsubscribe"), "internal mail");
}

/// A step with two templates: every lead gets one of them, recorded on the
/// send; the report's per-variant figures and verdict match a database with
/// known counts.
#[test]
fn variants_are_recorded_and_reported_with_a_two_proportion_test() {
    let p = Project::file();
    p.tmp.write_template("intro-b", "---\nsubject: \"Another question about {{company}}\"\n---\nHello {{default first_name \"there\"}}.\n");
    p.tmp.write_sequence(
        "ab",
        "send_window = { days = \"Mon-Sun\", start = \"00:00\", end = \"24:00\" }\n\n[[steps]]\nwait = \"0s\"\ntemplates = [{ name = \"intro\", weight = 1 }, { name = \"intro-b\", weight = 1 }]\n",
    );
    let check = p.json(&["check"]);
    assert!(!check["problems"].to_string().contains("no effect yet"), "variants take effect: {check}");
    for i in 0..24 {
        enroll(&p, &format!("l{i}@x{i}.example"), "L", "ab", "UTC", "2026-12-07T10:00:00Z");
    }
    assert_eq!(p.tick("2026-12-07T10:00:00Z")["sent"], 24);
    let by_variant = p.sql("SELECT variant, count(*) FROM sends GROUP BY variant ORDER BY variant");
    let rows: Vec<&str> = by_variant.lines().collect();
    assert_eq!(rows.len(), 2, "both variants sent: {by_variant}");
    assert!(rows.iter().all(|r| r.starts_with("intro|") || r.starts_with("intro-b|")), "{by_variant}");
    let subjects_match = p.sql("SELECT count(*) FROM sends WHERE (variant = 'intro-b') = (subject LIKE 'Another%')");
    assert_eq!(subjects_match, "24", "each send carries the template of its variant");

    // Known counts: 150 sends of each variant on top; 30 replies to
    // `intro` (20%) and 60 to `intro-b` (40%).
    p.sql(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300) \
         INSERT INTO leads (id, email, domain, stage, status, stale, stage_changed_at, created_at, updated_at, owner) \
         SELECT 1000 + i, 'k' || i || '@k.example', 'k.example', 'connecting', 'active', 0, 0, 0, 0, 'nik' FROM n",
    );
    p.sql(
        "INSERT INTO enrollments (id, lead_id, sequence, rep, state, phase, step, touches, enrolled_at, updated_at) \
         SELECT id, id, 'ab', 'nik', 'completed', 'archive', 1, 1, 0, 0 FROM leads WHERE id > 1000",
    );
    p.sql(
        "INSERT INTO sends (enrollment_id, lead_id, rep, kind, step, template, variant, recipient, recipient_domain, message_id, subject, state, claimed_at) \
         SELECT id, id, 'nik', 'step', 0, CASE WHEN id <= 1150 THEN 'intro' ELSE 'intro-b' END, CASE WHEN id <= 1150 THEN 'intro' ELSE 'intro-b' END, \
         'k@k.example', 'k.example', 'm' || id || '@vendor.test', 's', 'sent', 1000 FROM leads WHERE id > 1000",
    );
    p.sql(
        "INSERT INTO touchpoints (lead_id, enrollment_id, kind, at, created_at) \
         SELECT id, id, 'reply', 2000, 2000 FROM leads WHERE (id > 1000 AND id <= 1030) OR (id > 1150 AND id <= 1210)",
    );
    let report = p.json(&["report", "--now", "2026-12-08T10:00:00Z"]);
    let line = report["steps"].as_array().unwrap().iter().find(|s| s["sequence"] == "ab").unwrap().clone();
    let v = |name: &str| line["variants"].as_array().unwrap().iter().find(|v| v["variant"] == name).unwrap().clone();
    let (a_sent, b_sent) = (v("intro")["sent"].as_u64().unwrap(), v("intro-b")["sent"].as_u64().unwrap());
    assert_eq!(a_sent + b_sent, 324);
    assert_eq!(a_sent, 150 + rows[0].split('|').nth(1).unwrap().parse::<u64>().unwrap());
    assert_eq!((v("intro")["replied"].as_u64(), v("intro-b")["replied"].as_u64()), (Some(30), Some(60)));
    assert_eq!(line["sent"], 324);
    assert_eq!(line["replied"], 90);
    let t = &line["variant_test"];
    assert_eq!(t["verdict"], "significant", "{t}");
    assert_eq!(t["compared"], serde_json::json!(["intro-b", "intro"]));
    assert!(t["p_value"].as_f64().unwrap() < 0.001, "{t}");
    let text = p.ok(&["report", "--now", "2026-12-08T10:00:00Z"]);
    assert!(text.contains("intro-b vs intro: significant"), "{text}");

    // Below the minimum sample: "not enough data".
    let cfg = std::fs::read_to_string(p.tmp.config_path()).unwrap();
    p.tmp.write_config(&format!("{cfg}\n[report]\nvariant_min_sends = 500\n"));
    let report = p.json(&["report", "--now", "2026-12-08T10:00:00Z"]);
    let line = report["steps"].as_array().unwrap().iter().find(|s| s["sequence"] == "ab").unwrap().clone();
    assert_eq!(line["variant_test"]["verdict"], "not enough data");
    assert_eq!(line["variant_test"]["p_value"], Value::Null);
}

/// The task and agenda SQL on a real PostgreSQL server: a task is created,
/// one is done, one times out, a reply cancels nothing that is closed, the
/// agenda and the report read them.
#[tokio::test(flavor = "multi_thread")]
async fn tasks_and_the_agenda_on_postgres() {
    let db = crate::support::postgres::fresh_database().await;
    let p = calls_project(Opts::default());
    let cfg = std::fs::read_to_string(p.tmp.config_path()).unwrap();
    p.tmp.write_config(&cfg.replacen(&p.db_url, db.url(), 1));
    enroll(&p, "ana@acme.example", "Ana", "calls", "America/New_York", "2026-12-04T15:00:00Z");
    enroll(&p, "bo@bolt.example", "Bo", "calls", "America/New_York", "2026-12-04T15:00:00Z");
    assert_eq!(p.tick("2026-12-04T15:00:00Z")["sent"], 2);
    p.tick("2026-12-07T15:00:00Z");
    let open = tasks(&p, "2026-12-07T15:00:00Z");
    assert_eq!(open.len(), 2);
    let agenda = p.json(&["agenda", "--date", "2026-12-07", "--now", "2026-12-07T16:00:00Z"]);
    assert_eq!(agenda["tasks"].as_array().unwrap().len(), 2);
    let ana_id = task_of(&open, "ana@acme.example")["id"].as_i64().unwrap().to_string();
    assert_eq!(p.json(&["task", "done", &ana_id, "--note", "ok", "--now", "2026-12-08T15:00:00Z"])["state"], "done");
    assert_eq!(enrollment(&p, "ana@acme.example")["next_at"], "2026-12-09T15:00:00Z");
    p.tick("2026-12-09T15:00:00Z");
    assert!(tasks(&p, "2026-12-09T15:00:00Z").is_empty(), "Bo's timed out");
    assert_eq!(enrollment(&p, "bo@bolt.example")["next_at"], "2026-12-10T15:00:00Z");
    p.ok(&["unenroll", "bo@bolt.example", "--now", "2026-12-09T16:00:00Z"]);
    let report = p.json(&["report", "--now", "2026-12-09T16:00:00Z"]);
    let line = report["steps"].as_array().unwrap().iter().find(|s| s["kind"] == "task").unwrap().clone();
    assert_eq!((line["tasks"]["done"].as_u64(), line["tasks"]["timed_out"].as_u64()), (Some(1), Some(1)));
    let mut conn = db.connect().await;
    let states: Vec<String> = sqlx::query_scalar("SELECT state FROM tasks ORDER BY id").fetch_all(&mut conn).await.unwrap();
    assert_eq!(states.len(), 2);
    assert!(states.contains(&"done".to_string()) && states.contains(&"timed_out".to_string()), "{states:?}");
    sqlx::Connection::close(conn).await.unwrap();
}
