//! Faults and hostile input that no other test file covers: the crash soak,
//! SMTP replies at every stage through the whole engine, hostile mail in a
//! real inbox, broken files and databases, leaked secrets, and concurrent
//! enrollments over HTTP. docs/RELIABILITY.md lists each fault with the test
//! that shows what cadence does about it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::fixtures::{text, Opts, Project};
use crate::support::dovecot::Dovecot;
use crate::support::smtp::{Fault, SmtpOptions, SmtpServer, Stage};
use crate::support::wait_until_blocking;
use crate::support::SETTLE;

fn bare_id(id: &str) -> String {
    id.trim().trim_start_matches('<').trim_end_matches('>').to_string()
}

fn count(p: &Project, sql: &str) -> usize {
    p.sql(sql).parse().unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The seed for a randomised test: `CADENCE_TEST_SEED` reruns a given
/// run exactly (docs/RELIABILITY.md); otherwise a fresh one, printed.
fn seed(test: &str) -> u64 {
    let seed = match std::env::var("CADENCE_TEST_SEED") {
        Ok(s) => s.parse().expect("CADENCE_TEST_SEED is a u64"),
        Err(_) => rand::random(),
    };
    eprintln!("{test}: seed {seed} (rerun with CADENCE_TEST_SEED={seed})");
    seed
}

/// Crash consistency: 5,000 emails to a real SMTP server while `cadence run`
/// is killed with SIGKILL at 20 random moments and restarted each time. No
/// Message-ID arrives twice, every enrollment ends sent, `send_unknown` or
/// still due, the counts add up, and every email the database calls sent
/// was received.
#[test]
fn soak_sigkill_20_times_while_sending_5000() {
    const LEADS: usize = 5000;
    const KILLS: usize = 20;
    let seed = seed("soak");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let server = SmtpServer::start(SmtpOptions::default());
    let p = Project::new(Opts { smtp_port: Some(server.port()), daily_limit: 100_000, smtp_timeout: "30s", ..Opts::default() });
    let mut csv = String::from("email,company\n");
    for i in 0..LEADS {
        csv.push_str(&format!("s{i}@soak{}.example,Soak {i}\n", i % 97));
    }
    let file = p.tmp.write("leads.csv", &csv);
    p.ok(&["import", file.to_str().unwrap(), "--sequence", "always"]);
    assert_eq!(count(&p, "SELECT count(*) FROM enrollments WHERE state = 'active'"), LEADS);

    let mut before_start = 0;
    for kill in 1..=KILLS {
        let daemon = p.spawn_run(&[]);
        // The fault: a random moment, sometimes while the daemon is still
        // opening the database and recovering, mostly while it sends.
        if rng.gen_bool(0.2) {
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..80)));
            before_start += 1;
        } else {
            wait_until_blocking("the daemon to start", SETTLE, || daemon.log().contains("cadence started"));
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..250)));
        }
        daemon.kill9();
        eprintln!(
            "soak: kill {kill:2}: received {:5}, sent {:5}, send_unknown {:4}, sending {:3}",
            server.message_count(),
            count(&p, "SELECT count(*) FROM sends WHERE state = 'sent'"),
            count(&p, "SELECT count(*) FROM sends WHERE state = 'send_unknown'"),
            count(&p, "SELECT count(*) FROM sends WHERE state = 'sending'"),
        );
    }
    // The last run is left alone until nothing is due, then stopped cleanly.
    let daemon = p.spawn_run(&[]);
    let (final_start, received_before) = (std::time::Instant::now(), server.message_count());
    wait_until_blocking("every enrollment touched", Duration::from_secs(180), || {
        count(&p, "SELECT count(*) FROM enrollments WHERE touches = 0") == 0
    });
    let final_secs = final_start.elapsed().as_secs_f64();
    let status = daemon.terminate(SETTLE);
    assert!(status.success(), "clean exit after the soak");
    let final_sent = server.message_count() - received_before;
    eprintln!("soak: the last run sent {final_sent} in {final_secs:.1} s ({:.0}/s)", final_sent as f64 / final_secs);

    let received = server.messages();
    let ids: Vec<String> = received.iter().map(|m| bare_id(&m.header("Message-ID").expect("Message-ID"))).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    let duplicates = ids.len() - unique.len();
    let recipients: HashSet<&String> = received.iter().map(|m| &m.rcpt_to[0]).collect();
    let states: HashMap<String, String> = p
        .sql("SELECT message_id, state FROM sends")
        .lines()
        .map(|l| l.split_once('|').expect("id|state"))
        .map(|(a, b)| (a.into(), b.into()))
        .collect();
    let sent = count(&p, "SELECT count(*) FROM sends WHERE state = 'sent'");
    let unknown = count(&p, "SELECT count(*) FROM sends WHERE state = 'send_unknown'");
    let other = count(&p, "SELECT count(*) FROM sends WHERE state NOT IN ('sent', 'send_unknown')");
    let due = count(&p, "SELECT count(*) FROM enrollments e WHERE NOT EXISTS (SELECT 1 FROM sends s WHERE s.enrollment_id = e.id)");
    let unknown_arrived = ids.iter().filter(|id| states.get(*id).map(String::as_str) == Some("send_unknown")).count();
    eprintln!(
        "soak figures: seed {seed}, kills {KILLS} ({before_start} before start), leads {LEADS}, received {}, sent {sent}, \
         send_unknown {unknown} (of which {unknown_arrived} did arrive), still due {due}, duplicates {duplicates}",
        received.len()
    );
    assert_eq!(duplicates, 0, "no Message-ID received twice");
    assert_eq!(recipients.len(), received.len(), "no lead received its first email twice");
    assert_eq!(other, 0, "no send left sending, retrying or failed");
    assert_eq!(sent + unknown + due, LEADS, "every enrollment is sent, send_unknown or still due, exactly once");
    assert_eq!(count(&p, "SELECT count(*) FROM sends"), sent + unknown, "one send row per enrollment");
    for id in &ids {
        assert!(
            matches!(states.get(id).map(String::as_str), Some("sent" | "send_unknown")),
            "received {id} that the database does not know as sent"
        );
    }
    let received_ids: HashSet<&str> = ids.iter().map(String::as_str).collect();
    for (id, state) in &states {
        if state == "sent" {
            assert!(received_ids.contains(id.as_str()), "{id} is recorded sent but never arrived");
        }
    }
    assert_eq!(received.len(), sent + unknown_arrived);
    assert_eq!(
        count(&p, "SELECT count(*) FROM touchpoints WHERE kind IN ('email_sent', 'send_unknown')"),
        sent + unknown,
        "one touchpoint per send"
    );
}

fn kinds(p: &Project, email: &str) -> Vec<String> {
    p.json(&["show", email])["touchpoints"].as_array().unwrap().iter().map(|t| t["kind"].as_str().unwrap().to_string()).collect()
}

fn times(p: &Project, email: &str, kind: &str) -> usize {
    kinds(p, email).iter().filter(|k| *k == kind).count()
}

/// Every temporary SMTP answer at every stage, through the engine: the tick
/// records a retry and sends nothing, a later tick sends the email exactly
/// once. A server that accepts and never answers is cut off by the timeout
/// and retried the same way.
#[test]
fn temporary_smtp_answers_at_every_stage_retry_and_deliver_once() {
    let server = SmtpServer::start(SmtpOptions::default());
    let p = Project::new(Opts { smtp_port: Some(server.port()), smtp_timeout: "2s", ..Opts::default() });
    let mut cases: Vec<(String, Fault)> = Vec::new();
    for code in ["421 4.3.2 closing", "450 4.2.0 mailbox busy", "451 4.3.0 local error", "452 4.3.1 out of storage"] {
        for stage in [Stage::Connect, Stage::Mail, Stage::Rcpt, Stage::DataEnd] {
            cases.push((format!("{code} at {stage:?}"), Fault::reply(stage, code).once()));
        }
    }
    cases.push(("no answer at connect".into(), Fault::hang(Stage::Connect).once()));
    cases.push(("no answer to MAIL".into(), Fault::hang(Stage::Mail).once()));
    // Monday 2026-11-30, 09:00 UTC onwards: one case every ten minutes.
    let at = |minutes: i64| {
        (chrono::DateTime::parse_from_rfc3339("2026-11-30T09:00:00Z").unwrap() + chrono::Duration::minutes(minutes))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    for (i, (what, fault)) in cases.iter().enumerate() {
        let lead = format!("case{i}@retry{i}.example");
        let t0 = i as i64 * 10;
        p.enroll(&lead, "UTC", &at(t0));
        server.set_faults(std::slice::from_ref(fault));
        let before = server.message_count();
        let started = std::time::Instant::now();
        let first = p.tick(&at(t0));
        assert!(started.elapsed() < Duration::from_secs(20), "{what}: the tick is bounded by the timeout");
        assert_eq!((first["sent"].as_u64(), first["retried"].as_u64()), (Some(0), Some(1)), "{what}: {first}");
        assert_eq!(server.message_count(), before, "{what}: nothing arrived");
        let explain = p.ok(&["explain", &lead, "--now", &at(t0)]);
        assert!(explain.contains("temporary SMTP failure"), "{what}: {explain}");
        server.clear_faults();
        let second = p.tick(&at(t0 + 9));
        assert_eq!(second["sent"], 1, "{what}: retried after the backoff: {second}");
        assert_eq!(server.messages().iter().filter(|m| m.rcpt_to[0] == lead).count(), 1, "{what}: arrived once");
        assert_eq!(times(&p, &lead, "email_sent"), 1, "{what}");
    }
}

/// Permanent answers: a 5xx at RCPT bounces and suppresses the address; a
/// 552 or 554 to the message fails that send (paused, `send_failed` with
/// the server's words) and sends nothing more; no answer after the final
/// dot, or a connection dropped once the message was written, is
/// `send_unknown` and never sent again.
#[test]
fn permanent_and_unknown_smtp_answers_are_final() {
    let server = SmtpServer::start(SmtpOptions::default());
    let p = Project::new(Opts { smtp_port: Some(server.port()), smtp_timeout: "2s", ..Opts::default() });
    let now = "2026-11-30T10:00:00Z";
    let cases = [
        ("rcpt550@a.example", Fault::reply(Stage::Rcpt, "550 5.1.1 no such user"), "bounce", "bounced"),
        ("rcpt554@b.example", Fault::reply(Stage::Rcpt, "554 5.7.1 relay denied"), "bounce", "bounced"),
        ("big552@c.example", Fault::reply(Stage::DataEnd, "552 5.3.4 message too big"), "send_failed", "paused"),
        ("spam554@d.example", Fault::reply(Stage::DataEnd, "554 5.7.1 rejected as spam"), "send_failed", "paused"),
        ("hang@e.example", Fault::hang(Stage::DataEnd), "send_unknown", "active"),
        // The whole (small) message was written before the server hung up:
        // it may have been accepted, so it is never sent again.
        ("drop@f.example", Fault::drop_connection(Stage::DataBody), "send_unknown", "active"),
    ];
    for (lead, fault, _, _) in &cases {
        p.enroll(lead, "UTC", now);
        server.set_faults(&[fault.clone().for_rcpt(lead)]);
        p.tick(now);
    }
    server.clear_faults();
    for later in ["2026-11-30T12:00:00Z", "2026-12-01T12:00:00Z"] {
        p.tick(later);
    }
    for (lead, fault, kind, state) in &cases {
        let show = p.json(&["show", lead]);
        assert_eq!(show["enrollments"][0]["state"], *state, "{lead} after {fault:?}");
        assert_eq!(times(&p, lead, kind), 1, "{lead}: one {kind}");
        if let crate::support::smtp::Action::Reply(line) = &fault.action {
            let tp = show["touchpoints"].as_array().unwrap().iter().find(|t| t["kind"] == *kind).unwrap().clone();
            assert!(tp["detail"].as_str().unwrap_or_default().contains(&line[..3]), "{lead}: the server's code is kept: {tp}");
        }
        assert_eq!(server.messages().iter().filter(|m| m.rcpt_to[0] == *lead).count(), 0, "{lead}: nothing accepted");
    }
    // The hung and dropped ones reached the server's DATA: never resent.
    for lead in ["hang@e.example", "drop@f.example"] {
        assert_eq!(count(&p, &format!("SELECT count(*) FROM sends WHERE recipient = '{lead}'")), 1, "{lead}");
    }
    assert_eq!(p.run(&["enroll", "rcpt550@a.example", "--sequence", "outreach"]).status.code(), Some(3), "suppressed");
}

const IMAP_PW: &str = "imap-pw-reliab";

/// Hostile mail in a real inbox: a 25 MB message, broken MIME, raw 8-bit
/// and mis-encoded headers, a reply with no Message-ID. Nothing panics,
/// each lead's reply is recorded once (also after a UIDVALIDITY reset makes
/// the watcher read the folder again), and the daemon's watcher goes on to
/// act on the next reply.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_inbound_mail_is_survived_and_recorded_once() {
    let smtp = SmtpServer::start(SmtpOptions::default());
    let imap = Dovecot::start(&[("nik", IMAP_PW)]).await;
    let p = Project::new(Opts { smtp_port: Some(smtp.port()), imap: Some((imap.port(), IMAP_PW.into())), ..Opts::default() });
    p.enroll("ana@acme.example", "UTC", "2026-11-30T10:00:00Z");
    p.enroll("bo@beta.example", "UTC", "2026-11-30T10:00:00Z");
    assert_eq!(p.tick("2026-11-30T10:00:00Z")["sent"], 2);
    let intro = |to: &str| smtp.messages().into_iter().find(|m| m.rcpt_to[0] == to).unwrap().header("Message-ID").unwrap();

    let mut huge =
        b"From: Big Sender <big@stranger.example>\r\nTo: nik@vendor.test\r\nSubject: attachment\r\nMessage-ID: <huge@stranger.example>\r\n\
        MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
        --b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            .to_vec();
    let line = [b'A'; 76];
    while huge.len() < 25 * 1024 * 1024 {
        huge.extend_from_slice(&line);
        huge.extend_from_slice(b"\r\n");
    }
    huge.extend_from_slice(b"--b--\r\n");
    let broken_mime = b"From: x@stranger.example\r\nSubject: broken\r\nMessage-ID: <broken@stranger.example>\r\nMIME-Version: 1.0\r\n\
        Content-Type: multipart/report; report-type=delivery-status; boundary=\"never-closed\"\r\n\r\n--never-closed\r\n\
        Content-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822;\r\nAction: failed\r\nStatus: 5.\r\n--never-cl"
        .to_vec();
    let mut eight_bit = b"From: \xc9lodie \xff\xfe <elodie@stranger.example>\r\nSubject: caf\xe9 \xe0 la cr\xe8me\r\n\
        Message-ID: <8bit@stranger.example>\r\nContent-Type: text/plain; charset=x-unknown-charset\r\n\r\nna\xefve body \xff\r\n"
        .to_vec();
    eight_bit.extend_from_slice(b"");
    let bad_encoding =
        b"From: =?utf-8?B?!!!not-base64?= <enc@stranger.example>\r\nSubject: =?bogus-charset?Q?=ZZ=?= =?utf-8?Q?unterminated\r\n\
        Message-ID: <enc@stranger.example>\r\nContent-Transfer-Encoding: base64\r\n\r\n%%%% not base64 %%%%\r\n"
            .to_vec();
    // Ana's reply: no Message-ID at all, an 8-bit subject, threaded.
    let ana_reply = format!(
        "From: Ana <ana@acme.example>\r\nTo: nik@vendor.test\r\nSubject: Re: caf\u{e9}\r\nDate: Tue, 01 Dec 2026 08:15:00 +0000\r\n\
         In-Reply-To: {id}\r\nReferences: {id}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nYes, let's talk.\r\n",
        id = intro("ana@acme.example")
    );
    imap.append_all("nik", "INBOX", [huge.as_slice(), &broken_mime, &eight_bit, &bad_encoding, ana_reply.as_bytes()]).await;

    let out = p.run(&["tick", "--now", "2026-12-01T10:00:00Z", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("panicked"), "{}", text(&out.stderr));
    assert_eq!(p.json(&["show", "ana@acme.example"])["enrollments"][0]["state"], "replied");
    assert_eq!(times(&p, "ana@acme.example", "reply"), 1);
    assert_eq!(p.json(&["show", "bo@beta.example"])["enrollments"][0]["state"], "active", "strangers' mail touches no lead");

    // The folder is read again from the start: still one reply.
    imap.uid_validity_reset("nik", "INBOX").await;
    p.tick("2026-12-01T11:00:00Z");
    p.tick("2026-12-01T12:00:00Z");
    assert_eq!(times(&p, "ana@acme.example", "reply"), 1, "no duplicate touchpoint after a UIDVALIDITY reset");
    assert_eq!(
        count(&p, "SELECT count(*) FROM touchpoints WHERE kind IN ('reply', 'bounce', 'auto_reply', 'complaint', 'unsubscribe')"),
        1
    );

    // The daemon's watcher: more garbage, then Bo's reply is acted on.
    let daemon = p.spawn_run(&[]);
    wait_until_blocking("the daemon to start", SETTLE, || daemon.log().contains("cadence started"));
    let bo_reply = format!(
        "From: bo@beta.example\r\nTo: nik@vendor.test\r\nSubject: Re: hi\r\nMessage-ID: <bo-reply@beta.example>\r\nIn-Reply-To: {id}\r\n\r\nCall me.\r\n",
        id = intro("bo@beta.example")
    );
    imap.append_all("nik", "INBOX", [broken_mime.as_slice(), &bad_encoding, b"\r\n\r\n", bo_reply.as_bytes()]).await;
    wait_until_blocking("Bo's reply recorded by the running watcher", SETTLE, || {
        p.sql("SELECT state FROM enrollments e JOIN leads l ON l.id = e.lead_id WHERE l.email = 'bo@beta.example'") == "replied"
    });
    assert!(daemon.terminate(SETTLE).success());
    assert_eq!(times(&p, "bo@beta.example", "reply"), 1);
    assert_eq!(times(&p, "ana@acme.example", "reply"), 1);
}

/// The planted secrets: distinctive values that must never be printed.
const PLANTED: [(&str, &str); 6] = [
    ("CADENCE_SECRET", "PLANTED-hmac-secret-q7Zx"),
    ("CADENCE_SMTP_PASSWORD_NIK", "PLANTED-smtp-pw-K3vR"),
    ("CADENCE_IMAP_PASSWORD_NIK", "PLANTED-imap-pw-W9mT"),
    ("CADENCE_TOKEN_NIK", "PLANTED-token-nik-J2pL"),
    ("CADENCE_TOKEN_ANA", "PLANTED-token-ana-B8sN"),
    ("CADENCE_MANAGER_TOKEN", "PLANTED-token-mgr-F4cY"),
];
const WRONG_SMTP_PW: &str = "PLANTED-wrong-smtp-pw-X1";
const WRONG_IMAP_PW: &str = "PLANTED-wrong-imap-pw-X2";

fn planted(var: &str) -> &'static str {
    PLANTED.iter().find(|(k, _)| *k == var).unwrap().1
}

/// Secrets never appear in logs (at debug level), `--json` output, HTTP
/// answers or error messages, whether the command works or fails for a wrong
/// password: every byte printed is searched for every planted value.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_appear_in_any_output() {
    let smtp =
        SmtpServer::start(SmtpOptions { auth: Some(("nik".into(), planted("CADENCE_SMTP_PASSWORD_NIK").into())), ..Default::default() });
    let imap = Dovecot::start(&[("nik", planted("CADENCE_IMAP_PASSWORD_NIK"))]).await;
    let p = Project::new(Opts {
        smtp_port: Some(smtp.port()),
        imap: Some((imap.port(), planted("CADENCE_IMAP_PASSWORD_NIK").into())),
        extra_daemon: "manager_token_env = \"CADENCE_MANAGER_TOKEN\"".into(),
        ..Opts::default()
    });
    let cfg = std::fs::read_to_string(p.tmp.config_path()).unwrap();
    let cfg = cfg
        .replacen("transport = \"smtp\"\n", "transport = \"smtp\"\nusername = \"nik\"\npassword_env = \"CADENCE_SMTP_PASSWORD_NIK\"\n", 1)
        .replacen("signature = \"Nik\\nVendor Co.\"\n", "signature = \"Nik\\nVendor Co.\"\napi_token_env = \"CADENCE_TOKEN_NIK\"\n", 1)
        + "\n[[reps]]\nid = \"ana\"\nname = \"Ana Rep\"\nemail = \"ana@vendor.test\"\ntimezone = \"UTC\"\napi_token_env = \"CADENCE_TOKEN_ANA\"\n  \
           [reps.smtp]\n  transport = \"file\"\n  dir = \"outbox\"\n";
    p.tmp.write_config(&cfg);
    let mut printed: Vec<(String, String)> = Vec::new();
    let run = |args: &[&str], overrides: &[(&str, &str)]| -> std::process::Output {
        let mut cmd = p.tmp.cadence();
        cmd.env("RUST_LOG", "debug");
        for (k, v) in PLANTED {
            cmd.env(k, v);
        }
        for (k, v) in overrides {
            cmd.env(k, v);
        }
        cmd.args(args).output().expect("run cadence")
    };
    fn record(printed: &mut Vec<(String, String)>, what: String, out: &std::process::Output) {
        printed.push((format!("{what} stdout"), text(&out.stdout)));
        printed.push((format!("{what} stderr"), text(&out.stderr)));
    }
    let now = "2026-11-30T10:00:00Z";
    let commands: Vec<Vec<&str>> = vec![
        vec!["check"],
        vec!["check", "--json"],
        vec![
            "--log-format",
            "json",
            "enroll",
            "ana@acme.example",
            "--sequence",
            "outreach",
            "--rep",
            "nik",
            "--company",
            "Acme",
            "--now",
            now,
        ],
        vec!["tick", "--now", now, "--json"],
        vec!["show", "ana@acme.example", "--json"],
        vec!["leads", "--json"],
        vec!["report", "--json"],
        vec!["explain", "ana@acme.example", "--now", now],
        vec!["preview", "intro", "ana@acme.example"],
    ];
    for args in &commands {
        let out = run(args, &[]);
        assert!(out.status.success(), "cadence {args:?}: {}", text(&out.stderr));
        record(&mut printed, format!("{args:?}"), &out);
    }
    assert_eq!(smtp.message_count(), 1, "the right SMTP password works");
    // Wrong passwords: the errors name the problem, not the password.
    p.ok(&["enroll", "bo@beta.example", "--sequence", "outreach", "--rep", "nik", "--company", "Beta", "--now", now]);
    let out = run(&["tick", "--now", now, "--json"], &[("CADENCE_SMTP_PASSWORD_NIK", WRONG_SMTP_PW)]);
    record(&mut printed, "tick with a wrong SMTP password".into(), &out);
    let show = run(&["show", "bo@beta.example", "--json"], &[]);
    record(&mut printed, "show after the wrong SMTP password".into(), &show);
    let out = run(&["tick", "--now", "2026-11-30T11:00:00Z"], &[("CADENCE_IMAP_PASSWORD_NIK", WRONG_IMAP_PW)]);
    record(&mut printed, "tick with a wrong IMAP password".into(), &out);
    let all_err: String = printed.iter().rev().take(6).map(|(_, s)| s.as_str()).collect();
    assert!(all_err.to_lowercase().contains("auth") || all_err.to_lowercase().contains("login"), "the failures are explained:\n{all_err}");
    let out = run(&["check"], &[("CADENCE_SECRET", "")]);
    record(&mut printed, "check with an empty secret".into(), &out);

    // The daemon at debug level, and the HTTP API with right and wrong tokens.
    let mut env: Vec<(&str, &str)> = PLANTED.to_vec();
    env.push(("RUST_LOG", "debug"));
    let daemon = p.spawn_run(&env);
    let base = format!("http://{}", daemon.http_addr());
    let http = reqwest::Client::new();
    let nik = planted("CADENCE_TOKEN_NIK");
    let calls: Vec<(reqwest::Method, String, Option<String>, Option<serde_json::Value>)> = vec![
        (reqwest::Method::GET, "/api/v1/leads".into(), Some(nik.into()), None),
        (reqwest::Method::GET, "/api/v1/leads".into(), Some(format!("{nik}x")), None),
        (reqwest::Method::GET, "/api/v1/leads".into(), Some(planted("CADENCE_TOKEN_ANA").into()), None),
        (reqwest::Method::GET, "/api/v1/report".into(), Some(planted("CADENCE_MANAGER_TOKEN").into()), None),
        (reqwest::Method::GET, "/api/v1/leads/ana@acme.example".into(), Some(nik.into()), None),
        (
            reqwest::Method::POST,
            "/api/v1/enrollments".into(),
            Some(nik.into()),
            Some(serde_json::json!({"email": "cy@gamma.example", "sequence": "outreach"})),
        ),
        (
            reqwest::Method::POST,
            "/api/v1/enrollments".into(),
            Some(nik.into()),
            Some(serde_json::json!({"email": "bad", "sequence": "nope"})),
        ),
        (reqwest::Method::GET, "/metrics".into(), None, None),
        (reqwest::Method::GET, "/healthz".into(), None, None),
        (reqwest::Method::GET, "/unsubscribe/forged-token".into(), None, None),
    ];
    for (method, path, token, body) in calls {
        let mut req = http.request(method.clone(), format!("{base}{path}"));
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = &body {
            req = req.json(b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = format!("{:?}", resp.headers());
        let body = resp.text().await.expect("body");
        assert!(!status.is_server_error(), "{method} {path}: {status} {body}");
        printed.push((format!("{method} {path}"), format!("{headers}\n{body}")));
    }
    let log_path = daemon.log.clone();
    assert!(daemon.terminate(SETTLE).success());
    printed.push(("cadence run log (debug)".into(), std::fs::read_to_string(log_path).expect("daemon log")));
    let log = printed.last().unwrap().1.clone();
    assert!(log.contains("DEBUG") || log.contains("debug"), "the daemon really logged at debug level");

    for (what, output) in &printed {
        for (var, value) in PLANTED.iter().chain(&[("wrong SMTP password", WRONG_SMTP_PW), ("wrong IMAP password", WRONG_IMAP_PW)]) {
            assert!(!output.contains(value), "{var}'s value appears in {what}:\n{output}");
        }
    }
    // The database holds no secret either (a copy of it is often shared).
    let dump = std::process::Command::new("sqlite3").arg(p.tmp.database_path()).arg(".dump").output().expect("sqlite3");
    let dump = text(&dump.stdout);
    for (var, value) in PLANTED {
        assert!(!dump.contains(value), "{var}'s value is stored in the database");
    }
}

/// A small tmpfs mounted for one test (root only: CI runs as root); unmounted
/// on drop. `None` where mounting is not allowed.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::Builder::new().prefix("cadence-tmpfs-").tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs { dir })
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    fn remount(&self, mode: &str) {
        let ok = std::process::Command::new("mount").args(["-o", &format!("remount,{mode}")]).arg(self.path()).status().unwrap().success();
        assert!(ok, "remount {mode}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Runs cadence in the project against the database at `db`.
fn on_db(p: &Project, db: &std::path::Path, args: &[&str]) -> std::process::Output {
    let url = format!("sqlite://{}", db.display());
    let mut all = vec!["--database", url.as_str()];
    all.extend_from_slice(args);
    p.run(&all)
}

fn enroll_on(p: &Project, db: &std::path::Path, email: &str) -> std::process::Output {
    on_db(p, db, &["enroll", email, "--sequence", "outreach", "--company", "Acme", "--now", "2026-11-30T10:00:00Z"])
}

fn emails_on(p: &Project, db: &std::path::Path) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(&on_db(p, db, &["leads", "--json"]).stdout).expect("leads --json");
    let mut e: Vec<String> = v.as_array().unwrap().iter().map(|l| l["email"].as_str().unwrap().to_string()).collect();
    e.sort();
    e
}

fn skip_unless_sqlite(test: &str) -> bool {
    if crate::fixtures::backend() != crate::fixtures::Backend::Sqlite {
        eprintln!("{test}: SQLite file faults; nothing to do on PostgreSQL");
        return true;
    }
    false
}

/// A database on a read-only file system: writes fail with a message that
/// says so and exit 1; nothing already stored is lost.
#[test]
fn a_read_only_database_is_a_clear_error_and_loses_nothing() {
    if skip_unless_sqlite("read-only database") {
        return;
    }
    let p = Project::file();
    let Some(fs) = Tmpfs::mount("8m") else {
        panic!("this test mounts a tmpfs: run it as root (CI does)");
    };
    let db = fs.path().join("cadence.db");
    for i in 0..3 {
        assert!(enroll_on(&p, &db, &format!("keep{i}@acme.example")).status.success());
    }
    fs.remount("ro");
    let out = enroll_on(&p, &db, "new@acme.example");
    eprintln!("read-only: exit {:?}\nstdout: {}\nstderr: {}", out.status.code(), text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("read-only") || err.contains("readonly"), "names the problem: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let tick = on_db(&p, &db, &["tick", "--now", "2026-11-30T10:00:00Z"]);
    eprintln!("read-only tick: exit {:?}\nstderr: {}", tick.status.code(), text(&tick.stderr));
    assert_eq!(tick.status.code(), Some(1));
    assert!(p.outbox().is_empty(), "nothing sent that could not be recorded");
    fs.remount("rw");
    assert_eq!(emails_on(&p, &db), ["keep0@acme.example", "keep1@acme.example", "keep2@acme.example"]);
}

/// Another process holds the database locked: a short lock is waited out;
/// one held past the busy timeout (30 s) is a clear error, exit 1, and
/// nothing is half-written.
#[test]
fn a_locked_database_is_waited_for_then_a_clear_error() {
    if skip_unless_sqlite("locked database") {
        return;
    }
    use std::io::{BufRead, Write};
    let p = Project::file();
    p.enroll("keep@acme.example", "UTC", "2026-11-30T10:00:00Z");
    let db = p.tmp.database_path();
    let lock = || {
        let mut child = std::process::Command::new("sqlite3")
            .arg(&db)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sqlite3");
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "BEGIN EXCLUSIVE; INSERT INTO suppressions VALUES ('@lock.example', 'lock', 0); SELECT 'locked';").unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "locked", "the other process holds the write lock");
        (child, stdin)
    };
    // A short lock: the command waits and succeeds.
    let (mut child, mut stdin) = lock();
    let waiting = std::thread::spawn({
        let mut cmd = p.tmp.cadence();
        cmd.env("CADENCE_SECRET", crate::fixtures::SECRET).args([
            "enroll",
            "short@acme.example",
            "--sequence",
            "outreach",
            "--company",
            "Acme",
        ]);
        move || cmd.output().expect("cadence")
    });
    std::thread::sleep(Duration::from_millis(1500));
    writeln!(stdin, "ROLLBACK;").unwrap();
    drop(stdin);
    child.wait().unwrap();
    let out = waiting.join().unwrap();
    assert!(out.status.success(), "a short lock is waited out: {}", text(&out.stderr));

    // A lock held past the busy timeout.
    let (mut child, stdin) = lock();
    let started = std::time::Instant::now();
    let out = p.run(&["enroll", "late@acme.example", "--sequence", "outreach", "--company", "Acme"]);
    eprintln!("locked: exit {:?} after {:?}\nstderr: {}", out.status.code(), started.elapsed(), text(&out.stderr));
    drop(stdin);
    child.wait().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("locked") && err.contains("another"), "names the problem: {err}");
    assert_eq!(p.sql("SELECT email FROM leads ORDER BY email"), "keep@acme.example\nshort@acme.example");
    assert_eq!(p.sql("SELECT count(*) FROM suppressions"), "0", "the other process's transaction was rolled back");
}

/// A full disk (a 1 MB tmpfs): enroll and import fail with a message that
/// says the disk is full, exit 1 or 3, and every row stored before is kept;
/// with space again, the same commands work.
#[test]
fn a_full_disk_is_a_clear_error_and_loses_nothing() {
    if skip_unless_sqlite("full disk") {
        return;
    }
    let p = Project::file();
    let Some(fs) = Tmpfs::mount("1m") else {
        panic!("this test mounts a tmpfs: run it as root (CI does)");
    };
    let db = fs.path().join("cadence.db");
    for i in 0..3 {
        assert!(enroll_on(&p, &db, &format!("keep{i}@acme.example")).status.success());
    }
    // Fill what is left.
    let filler = fs.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    let mut csv = String::from("email,company,notes\n");
    for i in 0..2000 {
        csv.push_str(&format!("bulk{i}@bulk{i}.example,Bulk {i},{}\n", "x".repeat(200)));
    }
    let file = p.tmp.write("bulk.csv", &csv);
    let outs = [enroll_on(&p, &db, "new@acme.example"), on_db(&p, &db, &["import", file.to_str().unwrap(), "--sequence", "outreach"])];
    for out in &outs {
        eprintln!("full: exit {:?}\nstdout: {}\nstderr: {}", out.status.code(), text(&out.stdout), text(&out.stderr));
        let err = text(&out.stderr);
        assert!(matches!(out.status.code(), Some(1 | 3)), "{err}");
        assert!(err.contains("full"), "names the problem: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    std::fs::remove_file(&filler).unwrap();
    let emails = emails_on(&p, &db);
    for i in 0..3 {
        assert!(emails.contains(&format!("keep{i}@acme.example")), "kept: {emails:?}");
    }
    assert!(enroll_on(&p, &db, "after@acme.example").status.success(), "works again once there is space");
}

/// 50 enrollments over HTTP at once while `cadence run` dispatches 1,000
/// emails and its watcher reads a busy inbox, all on one SQLite file: every
/// request gets 201, every enrollment is stored, and no "database is
/// locked" reaches a user or the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_enrollments_while_dispatching_and_reading_the_inbox() {
    const MANAGER: &str = "manager-token-conc";
    let smtp = SmtpServer::start(SmtpOptions::default());
    let imap = Dovecot::start(&[("nik", IMAP_PW)]).await;
    let p = Project::new(Opts {
        smtp_port: Some(smtp.port()),
        imap: Some((imap.port(), IMAP_PW.into())),
        daily_limit: 100_000,
        extra_daemon: "manager_token_env = \"CADENCE_MANAGER_TOKEN\"".into(),
        ..Opts::default()
    });
    let mut csv = String::from("email,company\n");
    for i in 0..1000 {
        csv.push_str(&format!("busy{i}@busy{}.example,Busy {i}\n", i % 50));
    }
    let file = p.tmp.write("busy.csv", &csv);
    p.ok(&["import", file.to_str().unwrap(), "--sequence", "always"]);
    let daemon = p.spawn_run(&[("CADENCE_MANAGER_TOKEN", MANAGER)]);
    let base = format!("http://{}", daemon.http_addr());
    smtp.wait_for_async(20, Duration::from_secs(60)).await;
    // The inbox is busy too: strangers' mail arriving while we enroll.
    let inbox: Vec<Vec<u8>> = (0..40)
        .map(|i| format!("From: s{i}@stranger.example\r\nTo: nik@vendor.test\r\nSubject: hello {i}\r\nMessage-ID: <conc-{i}@stranger.example>\r\n\r\nhi\r\n").into_bytes())
        .collect();
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (http, base) = (http.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let body = serde_json::json!({"email": format!("http{i}@conc{i}.example"), "sequence": "always", "company": format!("Conc {i}"), "rep": "nik"});
            let resp = http.post(format!("{base}/api/v1/enrollments")).bearer_auth(MANAGER).json(&body).send().await.expect("request");
            (resp.status(), resp.text().await.expect("body"))
        }));
    }
    imap.append_all("nik", "INBOX", inbox.iter().map(Vec::as_slice)).await;
    let mut statuses = Vec::new();
    for t in tasks {
        let (status, body) = t.await.expect("task");
        assert!(!body.to_lowercase().contains("locked"), "{status}: {body}");
        statuses.push((status, body));
    }
    let created = statuses.iter().filter(|(s, _)| s.as_u16() == 201).count();
    assert_eq!(
        created,
        50,
        "every request created its enrollment: {:?}",
        statuses.iter().filter(|(s, _)| s.as_u16() != 201).collect::<Vec<_>>()
    );
    crate::support::wait_until("every email out", Duration::from_secs(120), || {
        p.sql("SELECT count(*) FROM enrollments WHERE touches = 0") == "0"
    })
    .await;
    crate::support::wait_until("the watcher to read all 40", SETTLE, || {
        p.sql("SELECT last_uid FROM mailboxes WHERE rep = 'nik'").parse::<u32>().is_ok_and(|n| n >= 40)
    })
    .await;
    let log_path = daemon.log.clone();
    assert!(daemon.terminate(SETTLE).success());
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(!log.contains("database is locked"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
    assert_eq!(count(&p, "SELECT count(*) FROM leads WHERE email LIKE 'http%@conc%.example'"), 50);
    assert_eq!(count(&p, "SELECT count(*) FROM enrollments e JOIN leads l ON l.id = e.lead_id WHERE l.email LIKE 'http%'"), 50);
    assert_eq!(count(&p, "SELECT count(*) FROM sends WHERE state = 'sent'"), 1050, "all sent, nothing lost");
    let ids: HashSet<String> = smtp.messages().iter().map(|m| m.header("Message-ID").unwrap()).collect();
    assert_eq!(ids.len(), 1050);
}

/// Exotic and invalid addresses: the valid ones are enrolled (lower-cased,
/// once), the rest refused with exit 3 naming `email`, nothing stored.
#[test]
fn exotic_and_invalid_addresses() {
    let p = Project::file();
    let long_local = format!("{}@acme.example", "a".repeat(65));
    let long_total = format!("x@{}.example", "d".repeat(250));
    let ok = [
        "o'brien+tag@acme.example",
        "\"john.q\"@quoted.example",
        "Mixed.Case@Acme.Example",
        "ana@b\u{fc}cher.example",
        "ana@xn--bcher-kva.example",
    ];
    let bad = [
        "plain",
        // Quoted local parts are accepted, but not with a space in them.
        "\"john doe\"@quoted.example",
        "two@@at.example",
        "a@b",
        "a@.example",
        "a@example.",
        "sp ace@acme.example",
        "@acme.example",
        "a@",
        long_local.as_str(),
        long_total.as_str(),
        "a@acme.example\u{7f}",
        "tab\tx@acme.example",
    ];
    let mut outcomes = Vec::new();
    for email in ok.iter().chain(&bad) {
        let out = p.run(&["enroll", email, "--sequence", "outreach", "--now", "2026-11-30T10:00:00Z"]);
        outcomes.push((email.to_string(), out.status.code(), text(&out.stderr)));
    }
    eprintln!("{outcomes:#?}");
    for (email, code, err) in &outcomes {
        if ok.contains(&email.as_str()) {
            assert_eq!(*code, Some(0), "{email:?} is a valid address: {err}");
        } else {
            assert!(matches!(code, Some(2 | 3)), "{email:?} refused: {code:?} {err}");
            assert!(err.contains("email") || err.contains("address"), "{email:?}: names the field: {err}");
        }
    }
    assert_eq!(count(&p, "SELECT count(*) FROM leads"), ok.len());
    assert_eq!(count(&p, "SELECT count(*) FROM leads WHERE email = 'mixed.case@acme.example'"), 1, "stored lower-cased");
    assert_eq!(
        p.run(&["enroll", "MIXED.case@ACME.example", "--sequence", "outreach"]).status.code(),
        Some(3),
        "the same lead, whatever the case"
    );
}

/// CR, LF and NUL in every lead field and in a custom field, by CSV and by
/// HTTP: each row or request is refused naming the field; the good rows of
/// the same file are imported.
#[tokio::test(flavor = "multi_thread")]
async fn control_characters_in_every_field_by_csv_and_http() {
    let p = Project::new(Opts { extra_daemon: "manager_token_env = \"CADENCE_MANAGER_TOKEN\"".into(), ..Opts::default() });
    let fields = ["email", "first_name", "last_name", "company", "title", "timezone", "region", "value", "plan"];
    let good = ["ok@acme.example", "Ana", "Lee", "Acme", "CTO", "UTC", "default", "1000", "pro"];
    let mut csv = fields.join(",") + "\n";
    let mut bad_lines = Vec::new();
    let mut line = 1;
    for (i, field) in fields.iter().enumerate() {
        for (c, name) in [("\r", "CR"), ("\n", "LF"), ("\u{0}", "NUL")] {
            let mut row: Vec<String> = good.iter().map(|s| s.to_string()).collect();
            row[0] = format!("bad-{field}-{name}@acme.example");
            row[i] = if i == 0 { format!("bad-{name}{c}x@acme.example") } else { format!("{}{c}Bcc: x@evil.example", good[i]) };
            csv.push_str(&row.iter().map(|v| format!("\"{v}\"")).collect::<Vec<_>>().join(","));
            csv.push('\n');
            line += 1;
            bad_lines.push((line, *field));
            // A quoted CR or LF spans lines of the file: count them.
            line += row[i].matches('\n').count();
        }
        let mut row: Vec<String> = good.iter().map(|s| s.to_string()).collect();
        row[0] = format!("good-{field}@acme.example");
        csv.push_str(&row.join(","));
        csv.push('\n');
        line += 1;
    }
    let file = p.tmp.write("hostile.csv", &csv);
    let out = p.run(&["import", file.to_str().unwrap(), "--sequence", "outreach", "--now", "2026-11-30T10:00:00Z"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    for (line, field) in &bad_lines {
        let label = if *field == "plan" { "fields.plan".to_string() } else { field.to_string() };
        assert!(
            err.lines().any(|l| l.contains(&format!("hostile.csv:{line}: skipped")) && l.contains(&label)),
            "line {line} ({field}) not refused by name:\n{err}"
        );
    }
    assert_eq!(count(&p, "SELECT count(*) FROM leads"), fields.len(), "every good row imported, no bad one");
    assert_eq!(count(&p, "SELECT count(*) FROM leads WHERE email LIKE 'good-%'"), fields.len());

    let daemon = p.spawn_run(&[("CADENCE_MANAGER_TOKEN", "mgr-ctl")]);
    let base = format!("http://{}", daemon.http_addr());
    let http = reqwest::Client::new();
    for field in ["email", "first_name", "last_name", "company", "title", "timezone", "region"] {
        for c in ["\r", "\n", "\u{0}"] {
            let mut body = serde_json::json!({"email": "api@acme.example", "sequence": "outreach", "first_name": "Ana"});
            body[field] = serde_json::Value::String(format!("x{c}Bcc: y@evil.example"));
            let resp = http.post(format!("{base}/api/v1/enrollments")).bearer_auth("mgr-ctl").json(&body).send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            assert_eq!(status, 422, "{field} with {c:?}: {text}");
            assert!(text.contains(field), "{field}: names the field: {text}");
        }
    }
    let mut body = serde_json::json!({"email": "api@acme.example", "sequence": "outreach", "fields": {"plan": "pro\u{0}"}});
    let resp = http.post(format!("{base}/api/v1/enrollments")).bearer_auth("mgr-ctl").json(&body).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 422, "{}", resp.text().await.unwrap());
    body["fields"] = serde_json::json!({"plan": "pro\r\nBcc: z@evil.example"});
    let resp = http.post(format!("{base}/api/v1/enrollments")).bearer_auth("mgr-ctl").json(&body).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 422);
    assert!(daemon.terminate(SETTLE).success());
    assert_eq!(count(&p, "SELECT count(*) FROM leads WHERE email = 'api@acme.example'"), 0);
}

/// Broken CSV files: wrong encoding, ragged rows, duplicate emails, a
/// header only, an empty file. Each bad row is named by line and skipped,
/// the good ones imported; a file with nothing to import says so.
#[test]
fn broken_csv_files() {
    let p = Project::file();
    let now = "2026-11-30T10:00:00Z";
    let import = |name: &str, bytes: &[u8]| {
        let path = p.tmp.root().join(name);
        std::fs::write(&path, bytes).unwrap();
        p.run(&["import", path.to_str().unwrap(), "--sequence", "outreach", "--now", now])
    };
    // Latin-1 bytes in one row; the others are UTF-8.
    let out = import("latin1.csv", b"email,company\nl1@acme.example,Acme\nl2@acme.example,Caf\xe9 Co\nl3@acme.example,Beta\n");
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("latin1.csv:3: skipped") && text(&out.stderr).contains("UTF-8"), "{}", text(&out.stderr));
    // Too few and too many fields.
    let out = import(
        "ragged.csv",
        b"email,company,title\nr1@acme.example,Acme,CTO\nr2@acme.example,Acme\nr3@acme.example,Acme,CTO,extra\nr4@acme.example,Acme,CEO\n",
    );
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(err.contains("ragged.csv:3: skipped") && err.contains("ragged.csv:4: skipped"), "{err}");
    // The same lead twice (in any case): enrolled once.
    let out = import("dups.csv", b"email,company\nd1@acme.example,Acme\nD1@ACME.example,Acme again\nd2@acme.example,Acme\n");
    assert!(matches!(out.status.code(), Some(0 | 3)), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("1 already enrolled"), "{}", text(&out.stdout));
    // Header only: nothing to do, nothing wrong.
    let out = import("header.csv", b"email,company\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("0 row(s)"), "{}", text(&out.stdout));
    let out = import("empty.csv", b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(!text(&out.stderr).is_empty());
    let out = import("bom-crlf.csv", b"\xef\xbb\xbfemail,company\r\nb1@acme.example,Acme\r\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let emails = p.sql("SELECT email FROM leads ORDER BY email");
    assert_eq!(
        emails.lines().collect::<Vec<_>>(),
        [
            "b1@acme.example",
            "d1@acme.example",
            "d2@acme.example",
            "l1@acme.example",
            "l3@acme.example",
            "r1@acme.example",
            "r4@acme.example"
        ]
    );
}

/// Templates and sequences that try to reach outside `templates/`: by a
/// relative or absolute template name, or a partial path. `check` refuses
/// each; the outside file's content is never read into any output.
#[test]
fn templates_cannot_reach_outside_their_folder() {
    let p = Project::file();
    p.tmp.write("outside.hbs", "---\nsubject: \"x\"\n---\nTOP-SECRET-OUTSIDE\n");
    p.tmp.write("templates/../outside2.hbs", "TOP-SECRET-OUTSIDE\n");
    p.tmp.write_sequence(
        "escape",
        "[[steps]]\nwait = \"0s\"\ntemplate = \"../outside\"\n\n[[steps]]\nwait = \"1 day\"\ntemplate = \"/etc/passwd\"\n",
    );
    p.tmp.write_template("sneaky", "---\nsubject: \"x\"\n---\n{{> ../outside}} {{> /etc/hostname}} {{> ../../outside2}}\n");
    let out = p.run(&["check"]);
    let all = text(&out.stdout) + &text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.lines().any(|l| l.contains("escape.toml") && l.contains("../outside")), "{all}");
    assert!(all.lines().any(|l| l.contains("escape.toml") && l.contains("/etc/passwd")), "{all}");
    assert!(all.lines().any(|l| l.contains("sneaky.hbs")), "{all}");
    assert!(!all.contains("TOP-SECRET-OUTSIDE") && !all.contains("root:x:0"), "{all}");
    let out = p.run(&["preview", "sneaky", "nobody@acme.example"]);
    let all = text(&out.stdout) + &text(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(!all.contains("TOP-SECRET-OUTSIDE"), "{all}");
}

/// Inputs the fuzzers found (tests/fixtures/fuzz/): each still gives an
/// answer and no panic escapes. `classify-mail-parser-debug-assert.eml`
/// trips a `debug_assert!` inside mail-parser (debug builds only, as here);
/// `classify` contains it and answers.
#[test]
fn fuzz_regressions_are_handled() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/fixtures/fuzz") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&path).unwrap();
        if name.starts_with("classify-") {
            let verdict = cadence::inbox::classify::classify(&bytes);
            assert!(!format!("{verdict:?}").is_empty(), "{name}");
            // The CLI answers too, with exit 0.
            let p = Project::file();
            let out = p.run(&["classify", path.to_str().unwrap(), "--json"]);
            assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out.stderr));
            n += 1;
        }
    }
    assert!(n >= 1, "the regression inputs are there");
}
