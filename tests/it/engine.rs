//! The engine end to end: `cadence tick --now` and `cadence run` against a
//! real SMTP server (aiosmtpd, started by the test on a free port).

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Duration as CDuration, Utc};

use crate::fixtures::{text, Opts, Project};
use crate::support::smtp::{Fault, SmtpOptions, SmtpServer, Stage};
use crate::support::SETTLE;

fn smtp_project(server: &SmtpServer, opts: Opts) -> Project {
    Project::new(Opts { smtp_port: Some(server.port()), ..opts })
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn bracketed(ids: &[&str]) -> String {
    ids.iter().map(|i| format!("<{i}>")).collect::<Vec<_>>().join(" ")
}

/// Three weeks of a four-step sequence for a lead in Los Angeles, ticked
/// every three hours and at each expected moment: every email arrives at the
/// expected local time (weekend and Christmas skipped), threaded, with the
/// unsubscribe headers; then the lead is archived.
#[test]
fn three_weeks_of_a_sequence_arrive_on_time_and_threaded() {
    let server = SmtpServer::start(SmtpOptions::default());
    let p = smtp_project(&server, Opts::default());
    // Monday 2026-12-14 12:00 PST.
    p.enroll("ana@acme.example", "America/Los_Angeles", "2026-12-14T20:00:00Z");
    let expected = [
        // intro: at once (inside Mon 09-17 PST)
        ("2026-12-14T20:00:00Z", "Quick question about Acme", "intro"),
        // bump: 3 business days later, Thu 12:00 PST
        ("2026-12-17T20:00:00Z", "Re: Quick question about Acme", "bump"),
        // value: 2 days later is Saturday: deferred to Monday 09:00 PST
        ("2026-12-21T17:00:00Z", "Re: Quick question about Acme", "value"),
        // final: 4 hours after it went out, Mon 13:00 PST
        ("2026-12-21T21:00:00Z", "Re: Quick question about Acme", "final"),
        // last chance: 5 business days, skipping the weekend and Christmas
        ("2026-12-29T21:00:00Z", "Re: Quick question about Acme", "breakup"),
    ];
    let archive_at = t("2027-01-05T21:00:00Z");
    let mut ticks: Vec<DateTime<Utc>> = Vec::new();
    let mut at = t("2026-12-14T20:00:00Z");
    while at <= archive_at + CDuration::hours(12) {
        ticks.push(at);
        at += CDuration::hours(3);
    }
    ticks.extend(expected.iter().map(|(at, _, _)| t(at)));
    ticks.push(archive_at - CDuration::minutes(1));
    ticks.push(archive_at);
    ticks.sort();
    ticks.dedup();
    let mut sent_at = Vec::new();
    for now in &ticks {
        let before = server.message_count();
        let stats = p.tick(&iso(*now));
        let after = server.message_count();
        assert_eq!(stats["sent"].as_u64().unwrap() as usize, after - before, "tick at {now}");
        for _ in before..after {
            sent_at.push(*now);
        }
        if *now < archive_at {
            assert_eq!(p.json(&["show", "ana@acme.example"])["status"], "active", "not archived before {archive_at}: {now}");
        }
    }
    let msgs = server.messages();
    assert_eq!(msgs.len(), expected.len(), "exactly the steps and one last chance");
    let mut ids: Vec<String> = Vec::new();
    for (i, ((when, subject, template), m)) in expected.iter().zip(&msgs).enumerate() {
        assert_eq!(iso(sent_at[i]), *when, "email {} ({template}) went out at the wrong time", i + 1);
        let date = DateTime::parse_from_rfc2822(&m.header("Date").unwrap()).unwrap();
        assert_eq!(iso(date.with_timezone(&Utc)), *when);
        assert_eq!(m.header("Subject").unwrap(), *subject);
        assert_eq!(m.rcpt_to, vec!["ana@acme.example".to_string()]);
        let id = m.header("Message-ID").unwrap();
        let id = id.trim().trim_start_matches('<').trim_end_matches('>').to_string();
        assert!(id.ends_with("@vendor.test"), "Message-ID on the rep's domain: {id}");
        let body = String::from_utf8_lossy(m.body()).to_string();
        assert!(body.contains(&format!("step {}", i + 1)) || i == 0 || body.contains("step"), "body names the step: {body}");
        if i == 0 {
            assert_eq!(m.header("In-Reply-To"), None);
            assert_eq!(m.header("References"), None);
        } else {
            assert_eq!(m.header("In-Reply-To").unwrap().trim(), format!("<{}>", ids.last().unwrap()));
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            assert_eq!(m.header("References").unwrap().split_whitespace().collect::<Vec<_>>().join(" "), bracketed(&refs));
        }
        let unsub = m.header("List-Unsubscribe").unwrap();
        assert!(unsub.contains("<mailto:nik@vendor.test?subject=unsubscribe>"), "{unsub}");
        assert!(unsub.contains("<https://cadence.test/unsubscribe/"), "{unsub}");
        assert_eq!(m.header("List-Unsubscribe-Post").unwrap(), "List-Unsubscribe=One-Click");
        ids.push(id);
    }
    let show = p.json(&["show", "ana@acme.example"]);
    assert_eq!(show["status"], "archived");
    assert_eq!(show["stage"], "lost");
    assert_eq!(show["enrollments"][0]["state"], "archived");
    let kinds: Vec<&str> = show["touchpoints"].as_array().unwrap().iter().map(|t| t["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "email_sent").count(), 4);
    assert_eq!(kinds.iter().filter(|k| **k == "last_chance").count(), 1);
    assert_eq!(kinds.last(), Some(&"archived"));
    let archived_at = show["touchpoints"].as_array().unwrap().last().unwrap()["at"].as_str().unwrap().to_string();
    assert_eq!(archived_at, iso(archive_at));
    assert_eq!(p.json(&["leads", "--archived"]).as_array().unwrap().len(), 1);
    // Archived leads are kept, and can be enrolled again on purpose.
    p.enroll("ana@acme.example", "America/Los_Angeles", "2027-02-01T20:00:00Z");
    let again = p.json(&["show", "ana@acme.example"]);
    assert_eq!(again["status"], "active");
    assert_eq!(again["stage"], "connecting");
    assert_eq!(again["enrollments"].as_array().unwrap().len(), 2);
    assert_eq!(p.json(&["leads", "--archived"]).as_array().unwrap().len(), 0);
}

/// A daily limit of 3 with 10 due sends 3 a day (calendar day in the rep's
/// zone, America/Regina), oldest due first.
#[test]
fn a_daily_limit_of_3_with_10_due_sends_3_a_day() {
    let server = SmtpServer::start(SmtpOptions::default());
    let p = smtp_project(&server, Opts { daily_limit: 3, ..Opts::default() });
    for i in 0..10 {
        // Enrolled one minute apart: lead 0 is the oldest due.
        p.enroll(&format!("lead{i}@co{i}.example"), "UTC", &format!("2026-11-30T14:{i:02}:00Z"));
    }
    let mut per_tick: Vec<Vec<String>> = Vec::new();
    // Mon 15:00Z = 09:00 in Regina; Regina's Tuesday starts at 06:00Z.
    for now in [
        "2026-11-30T15:00:00Z",
        "2026-11-30T16:30:00Z",
        "2026-12-01T05:59:00Z",
        "2026-12-01T09:00:00Z",
        "2026-12-01T16:00:00Z",
        "2026-12-02T09:00:00Z",
        "2026-12-03T09:00:00Z",
    ] {
        let before = server.message_count();
        p.tick(now);
        // Sends within one pass run concurrently: compare each day as a set.
        let mut got: Vec<String> = server.messages()[before..].iter().map(|m| m.rcpt_to[0].clone()).collect();
        got.sort();
        per_tick.push(got);
        if now == "2026-12-02T09:00:00Z" {
            let explain = p.ok(&["explain", "lead9@co9.example", "--now", "2026-12-02T10:00:00Z"]);
            assert!(explain.contains("daily cap: 3/3"), "{explain}");
        }
    }
    let lead = |i: usize| format!("lead{i}@co{i}.example");
    let day = |r: std::ops::Range<usize>| r.map(lead).collect::<Vec<_>>();
    // Oldest due first: the leads enrolled first go out first.
    assert_eq!(per_tick, [day(0..3), vec![], vec![], day(3..6), vec![], day(6..9), day(9..10)]);
}

/// A send that failed for now does not use up the day: the claim after it
/// in the same process (which counts only the sends after the ones it has
/// already counted) gives its place to the next lead.
#[test]
fn a_retried_send_gives_its_place_in_the_daily_cap_back() {
    let server = SmtpServer::start(SmtpOptions {
        faults: vec![Fault::reply(Stage::Rcpt, "451 4.3.0 try again later").for_rcpt("lead0@co0.example").once()],
        ..Default::default()
    });
    let p = smtp_project(&server, Opts { daily_limit: 3, ..Opts::default() });
    for i in 0..5 {
        p.enroll(&format!("lead{i}@co{i}.example"), "UTC", &format!("2026-11-30T14:{i:02}:00Z"));
    }
    let tick = p.tick("2026-11-30T15:00:00Z");
    assert_eq!((tick["sent"].as_u64(), tick["retried"].as_u64()), (Some(3), Some(1)), "{tick}");
    let mut to: Vec<String> = server.messages().iter().map(|m| m.rcpt_to[0].clone()).collect();
    to.sort();
    assert_eq!(to, ["lead1@co1.example", "lead2@co2.example", "lead3@co3.example"]);
    assert!(p.ok(&["explain", "lead4@co4.example", "--now", "2026-11-30T15:01:00Z"]).contains("daily cap: 3/3"));
}

#[test]
fn a_domain_limit_holds_only_that_domain() {
    let server = SmtpServer::start(SmtpOptions::default());
    let p = smtp_project(&server, Opts { domain_daily_limit: Some(2), ..Opts::default() });
    for i in 0..4 {
        p.enroll(&format!("p{i}@same.example"), "UTC", "2026-11-30T14:00:00Z");
    }
    p.enroll("other@else.example", "UTC", "2026-11-30T14:00:00Z");
    assert_eq!(p.tick("2026-11-30T15:00:00Z")["sent"], 3);
    let to: HashSet<String> = server.messages().iter().map(|m| m.rcpt_to[0].clone()).collect();
    assert!(to.contains("other@else.example"));
    assert!(p.ok(&["explain", "p3@same.example", "--now", "2026-11-30T15:00:00Z"]).contains("domain cap: 2/2"));
}

#[test]
fn a_temporary_failure_is_retried_and_arrives_once() {
    let server = SmtpServer::start(SmtpOptions {
        faults: vec![Fault::reply(Stage::Rcpt, "451 4.3.0 try again later").once()],
        ..Default::default()
    });
    let p = smtp_project(&server, Opts::default());
    p.enroll("retry@acme.example", "UTC", "2026-11-30T10:00:00Z");
    let first = p.tick("2026-11-30T10:00:00Z");
    assert_eq!((first["sent"].as_u64(), first["retried"].as_u64()), (Some(0), Some(1)));
    assert_eq!(server.message_count(), 0);
    assert!(p.ok(&["explain", "retry@acme.example", "--now", "2026-11-30T10:00:30Z"]).contains("1 temporary SMTP failure"));
    assert_eq!(p.tick("2026-11-30T10:00:30Z")["sent"], 0, "backoff: not before a minute or so");
    assert_eq!(p.tick("2026-11-30T10:05:00Z")["sent"], 1);
    assert_eq!(p.tick("2026-11-30T10:10:00Z")["sent"], 0);
    assert_eq!(server.message_count(), 1, "the email arrived once");
    let show = p.json(&["show", "retry@acme.example"]);
    let sent = show["touchpoints"].as_array().unwrap().iter().filter(|t| t["kind"] == "email_sent").count();
    assert_eq!(sent, 1);
}

#[test]
fn a_permanent_rejection_at_rcpt_bounces_and_suppresses() {
    let server = SmtpServer::start(SmtpOptions {
        faults: vec![Fault::reply(Stage::Rcpt, "550 5.1.1 no such user here").for_rcpt("gone@acme.example")],
        ..Default::default()
    });
    let p = smtp_project(&server, Opts::default());
    p.enroll("gone@acme.example", "UTC", "2026-11-30T10:00:00Z");
    p.enroll("here@other.example", "UTC", "2026-11-30T10:00:00Z");
    let stats = p.tick("2026-11-30T10:00:00Z");
    assert_eq!((stats["sent"].as_u64(), stats["bounced"].as_u64()), (Some(1), Some(1)));
    let show = p.json(&["show", "gone@acme.example"]);
    assert_eq!(show["enrollments"][0]["state"], "bounced");
    let bounce = show["touchpoints"].as_array().unwrap().iter().find(|t| t["kind"] == "bounce").expect("bounce touchpoint");
    assert!(bounce["detail"].as_str().unwrap().contains("550"));
    let again = p.run(&["enroll", "gone@acme.example", "--sequence", "outreach"]);
    assert_eq!(again.status.code(), Some(3), "suppressed after the bounce");
    assert_eq!(server.messages().iter().map(|m| m.rcpt_to[0].clone()).collect::<Vec<_>>(), ["here@other.example"]);
}

#[test]
fn a_render_error_fails_that_send_and_pauses_only_that_lead() {
    let server = SmtpServer::start(SmtpOptions::default());
    let p = smtp_project(&server, Opts::default());
    // A template that uses the lead's title without a fallback.
    p.tmp.write_template("titled", "---\nsubject: \"For the {{title}}\"\n---\nHello.\n");
    p.tmp.write_sequence("titled", "[[steps]]\nwait = \"0s\"\ntemplate = \"titled\"\n");
    // The same mistake in the body, which is rendered after the claim.
    p.tmp.write_template("titled_body", "---\nsubject: \"Hello\"\n---\nAs {{title}} at your company...\n");
    p.tmp.write_sequence("titled_body", "[[steps]]\nwait = \"0s\"\ntemplate = \"titled_body\"\n");
    p.ok(&["enroll", "notitle@acme.example", "--sequence", "titled", "--now", "2026-11-30T10:00:00Z"]);
    p.ok(&["enroll", "nobodytitle@beta.example", "--sequence", "titled_body", "--now", "2026-11-30T10:00:00Z"]);
    p.ok(&["enroll", "fine@other.example", "--sequence", "titled", "--title", "CTO", "--now", "2026-11-30T10:00:00Z"]);
    assert_eq!(p.tick("2026-11-30T10:00:00Z")["sent"], 1);
    for lead in ["notitle@acme.example", "nobodytitle@beta.example"] {
        let show = p.json(&["show", lead]);
        assert_eq!(show["enrollments"][0]["state"], "paused", "{lead}");
        let failed = show["touchpoints"].as_array().unwrap().iter().find(|t| t["kind"] == "send_failed").expect("send_failed");
        assert!(failed["detail"].as_str().unwrap().contains("title"), "{failed}");
        assert_eq!(failed["step"], 1, "{failed}");
    }
    assert_eq!(server.message_count(), 1);
    assert_eq!(server.messages()[0].rcpt_to, ["fine@other.example"]);
}

/// `kill -9` of `cadence run` in the middle of a batch, then a restart: no
/// Message-ID arrives twice and every lead ends sent or `send_unknown`.
#[test]
fn a_killed_daemon_never_sends_twice() {
    let hung = ["h0@hang.example", "h1@hang.example", "h2@hang.example"];
    let server = SmtpServer::start(SmtpOptions {
        faults: hung.iter().map(|h| Fault::hang(Stage::DataEnd).for_rcpt(h)).collect(),
        ..Default::default()
    });
    let p = smtp_project(&server, Opts { smtp_timeout: "60s", pool_size: 4, ..Opts::default() });
    let mut csv = String::from("email,company\n");
    for h in hung {
        csv.push_str(&format!("{h},Hang\n"));
    }
    for i in 0..150 {
        csv.push_str(&format!("k{i}@kill{i}.example,Kill {i}\n"));
    }
    let file = p.tmp.write("leads.csv", &csv);
    p.ok(&["import", file.to_str().unwrap(), "--sequence", "always"]);
    let daemon = p.spawn_run(&[]);
    // Wait until the hung sends are in flight (committed `sending`, server stuck
    // after the final dot) and others have gone out.
    crate::support::wait_until_blocking("hung sends in flight", SETTLE, || {
        p.sql("SELECT count(*) FROM sends WHERE state = 'sending' AND recipient LIKE '%@hang.example'") == "3"
    });
    daemon.kill9();
    let in_flight: usize = p.sql("SELECT count(*) FROM sends WHERE state = 'sending'").parse().unwrap();
    assert!(in_flight >= 3, "killed mid-batch");
    server.clear_faults();
    let daemon = p.spawn_run(&[]);
    crate::support::wait_until_blocking("every lead sent or send_unknown", Duration::from_secs(60), || {
        p.sql("SELECT count(*) FROM enrollments WHERE touches = 1") == "153"
    });
    let status = daemon.terminate(SETTLE);
    assert!(status.success());
    assert_eq!(p.sql("SELECT count(*) FROM sends WHERE state = 'sending'"), "0");
    let unknown: usize = p.sql("SELECT count(*) FROM sends WHERE state = 'send_unknown'").parse().unwrap();
    let sent: usize = p.sql("SELECT count(*) FROM sends WHERE state = 'sent'").parse().unwrap();
    assert_eq!(sent + unknown, 153, "every lead is sent or send_unknown");
    assert!(unknown >= 3);
    assert_eq!(
        p.sql("SELECT count(*) FROM sends WHERE state = 'send_unknown' AND recipient LIKE '%@hang.example'"),
        "3",
        "the hung ones are never resent"
    );
    let msgs = server.messages();
    let ids: Vec<String> = msgs.iter().filter_map(|m| m.header("Message-ID")).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no Message-ID received twice");
    let per_rcpt: HashSet<&String> = msgs.iter().map(|m| &m.rcpt_to[0]).collect();
    assert_eq!(per_rcpt.len(), msgs.len(), "no lead received its first email twice");
    for h in hung {
        assert_eq!(p.json(&["show", h])["touchpoints"].as_array().unwrap().iter().filter(|t| t["kind"] == "send_unknown").count(), 1);
    }
    let explain = p.ok(&["explain", hung[0]]);
    assert!(explain.contains("unknown outcome"), "{explain}");
}

/// SIGTERM while sends are in flight: stop claiming, finish them, exit 0,
/// nothing left `sending`.
#[test]
fn sigterm_finishes_in_flight_sends() {
    let server = SmtpServer::start(SmtpOptions::default());
    let p = smtp_project(&server, Opts::default());
    let mut csv = String::from("email,company\n");
    for i in 0..300 {
        csv.push_str(&format!("t{i}@term{i}.example,Term {i}\n"));
    }
    let file = p.tmp.write("leads.csv", &csv);
    p.ok(&["import", file.to_str().unwrap(), "--sequence", "always"]);
    let daemon = p.spawn_run(&[]);
    crate::support::wait_until_blocking("some emails out", SETTLE, || server.message_count() >= 20);
    let status = daemon.terminate(SETTLE);
    assert!(status.success(), "exit 0 on SIGTERM");
    assert_eq!(p.sql("SELECT count(*) FROM sends WHERE state = 'sending'"), "0");
    let sent: usize = p.sql("SELECT count(*) FROM sends WHERE state = 'sent'").parse().unwrap();
    assert_eq!(sent, server.message_count(), "every committed send finished and was recorded");
}

/// `cadence run` sends a new enrollment promptly and sleeps otherwise.
#[test]
fn the_daemon_sends_a_new_enrollment_without_waiting_for_a_tick() {
    let server = SmtpServer::start(SmtpOptions::default());
    let p = smtp_project(&server, Opts::default());
    // A long tick: only the daemon's notice of new enrollments can be quick.
    let cfg = std::fs::read_to_string(p.tmp.config_path()).unwrap();
    p.tmp.write_config(&cfg.replace("tick_interval = \"1s\"", "tick_interval = \"60s\""));
    let daemon = p.spawn_run(&[]);
    crate::support::wait_until_blocking("daemon started", SETTLE, || daemon.log().contains("cadence started"));
    p.ok(&["enroll", "now@acme.example", "--sequence", "always", "--company", "Acme"]);
    let got = server.wait_for(1, SETTLE);
    assert_eq!(got[0].rcpt_to, ["now@acme.example"]);
    assert!(daemon.terminate(SETTLE).success());
    let _ = text(&[]);
}

/// One rep's server hangs; the other rep's email goes out meanwhile.
#[test]
fn a_slow_server_holds_only_its_own_rep() {
    let stuck = SmtpServer::start(SmtpOptions { faults: vec![Fault::hang(Stage::Connect)], ..Default::default() });
    let fine = SmtpServer::start(SmtpOptions::default());
    let p =
        Project::new(Opts { smtp_port: Some(stuck.port()), smtp_timeout: "600s", second_rep_smtp: Some(fine.port()), ..Opts::default() });
    let daemon = p.spawn_run(&[]);
    crate::support::wait_until_blocking("daemon started", SETTLE, || daemon.log().contains("cadence started"));
    p.ok(&["enroll", "slow@acme.example", "--sequence", "always", "--company", "Acme", "--rep", "nik"]);
    crate::support::wait_until_blocking("nik's send stuck in flight", SETTLE, || {
        p.sql("SELECT count(*) FROM sends WHERE rep = 'nik' AND state = 'sending'") == "1"
    });
    p.ok(&["enroll", "quick@beta.example", "--sequence", "always", "--company", "Beta", "--rep", "ana"]);
    let got = fine.wait_for(1, SETTLE);
    assert_eq!(got[0].rcpt_to, ["quick@beta.example"]);
    assert_eq!(p.sql("SELECT count(*) FROM sends WHERE rep = 'nik' AND state = 'sending'"), "1", "nik's server is still hanging");
    assert_eq!(stuck.message_count(), 0);
    daemon.kill9();
}
