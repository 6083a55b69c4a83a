//! Replies, out-of-office notices and bounces through a real Dovecot and a
//! real SMTP server: the sequence stops, pauses or suppresses as it should.

use std::time::Duration;

use crate::fixtures::{Opts, Project};
use crate::support::dovecot::Dovecot;
use crate::support::smtp::{SmtpOptions, SmtpServer};
use crate::support::SETTLE;

const PW: &str = "imap-pw-7d1";

struct Rig {
    smtp: SmtpServer,
    imap: Dovecot,
    p: Project,
}

async fn rig() -> Rig {
    let smtp = SmtpServer::start(SmtpOptions::default());
    let imap = Dovecot::start(&[("nik", PW)]).await;
    let p = Project::new(Opts { smtp_port: Some(smtp.port()), imap: Some((imap.port(), PW.into())), ..Opts::default() });
    Rig { smtp, imap, p }
}

pub fn message_id(m: &crate::support::smtp::Received) -> String {
    m.header("Message-ID").unwrap().trim().to_string()
}

pub fn reply(from: &str, in_reply_to: &str, date: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Ana Lee <{from}>\r\nTo: Nik Levnaich <nik@vendor.test>\r\nSubject: Re: Quick question about Acme\r\nDate: {date}\r\n\
         Message-ID: <reply-{}@acme.example>\r\nIn-Reply-To: {in_reply_to}\r\nReferences: {in_reply_to}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         {body}\r\n\r\nOn Mon, Nov 30, 2026 at 10:00 AM Nik Levnaich <nik@vendor.test> wrote:\r\n> Hi Ana,\r\n> step 1 for Acme.\r\n",
        rand_tag()
    )
    .into_bytes()
}

fn rand_tag() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed) ^ u64::from(std::process::id()) << 20
}

fn kinds(p: &Project, email: &str) -> Vec<String> {
    p.json(&["show", email])["touchpoints"].as_array().unwrap().iter().map(|t| t["kind"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_stops_the_sequence_and_moves_the_stage() {
    let r = rig().await;
    r.p.enroll("ana@acme.example", "UTC", "2026-11-30T10:00:00Z");
    r.p.enroll("bo@acme.example", "UTC", "2026-11-30T10:00:00Z");
    r.p.enroll("cy@other.example", "UTC", "2026-11-30T10:00:00Z");
    assert_eq!(r.p.tick("2026-11-30T10:00:00Z")["sent"], 3);
    let intro = r.smtp.messages().into_iter().find(|m| m.rcpt_to[0] == "ana@acme.example").unwrap();
    r.imap
        .append(
            "nik",
            "INBOX",
            &reply("ana@acme.example", &message_id(&intro), "Tue, 01 Dec 2026 08:15:00 +0000", "Sounds interesting, can we talk Thursday?"),
        )
        .await;
    // Thursday: the bump is due for everyone; the inbox is read first.
    let stats = r.p.tick("2026-12-03T10:00:00Z");
    assert_eq!(stats["sent"], 1, "only the lead at another company gets the bump");
    assert_eq!(r.smtp.messages().iter().filter(|m| m.rcpt_to[0] == "ana@acme.example").count(), 1);
    let show = r.p.json(&["show", "ana@acme.example"]);
    assert_eq!(show["enrollments"][0]["state"], "replied");
    assert_eq!(show["stage"], "closing", "reply_stage");
    let reply_tp = show["touchpoints"].as_array().unwrap().iter().find(|t| t["kind"] == "reply").unwrap().clone();
    assert_eq!(reply_tp["at"], "2026-12-01T08:15:00Z", "dated by the message");
    assert_eq!(reply_tp["detail"], "Sounds interesting, can we talk Thursday?", "quoted history stripped");
    // same_company_stop: a colleague at acme.example stops too; the other company goes on.
    assert_eq!(r.p.json(&["show", "bo@acme.example"])["enrollments"][0]["state"], "completed");
    assert_eq!(r.p.json(&["show", "cy@other.example"])["enrollments"][0]["state"], "active");
    // Weeks later nothing more goes to Ana.
    r.p.tick("2026-12-20T10:00:00Z");
    assert_eq!(r.smtp.messages().iter().filter(|m| m.rcpt_to[0] == "ana@acme.example").count(), 1);
    assert_eq!(kinds(&r.p, "ana@acme.example").iter().filter(|k| *k == "reply").count(), 1, "processed once");
}

/// Messages read in one batch (one transaction) act as they would one by
/// one: each sees what the earlier ones did.
#[tokio::test(flavor = "multi_thread")]
async fn messages_of_one_batch_see_each_others_effects() {
    let r = rig().await;
    for email in ["ana@acme.example", "bo@acme.example", "cy@other.example"] {
        r.p.enroll(email, "UTC", "2026-11-30T10:00:00Z");
    }
    assert_eq!(r.p.tick("2026-11-30T10:00:00Z")["sent"], 3);
    let intro = |to: &str| message_id(&r.smtp.messages().into_iter().find(|m| m.rcpt_to[0] == to).unwrap());
    let date = "Tue, 01 Dec 2026 08:15:00 +0000";
    let ana = reply("ana@acme.example", &intro("ana@acme.example"), date, "Yes, let's talk.");
    let dsn = format!(
        "From: Mail Delivery System <MAILER-DAEMON@mx.other.example>\r\nTo: nik@vendor.test\r\nSubject: Undelivered Mail Returned to Sender\r\n\
         Date: Tue, 01 Dec 2026 08:20:00 +0000\r\nMessage-ID: <dsn-cy@mx.other.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n\
         Your message could not be delivered.\r\n\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\n\
         Reporting-MTA: dns; mx.other.example\r\n\r\nFinal-Recipient: rfc822; cy@other.example\r\nAction: failed\r\nStatus: 5.1.1\r\n\
         Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {}\r\n\
         From: nik@vendor.test\r\nTo: cy@other.example\r\nSubject: Quick question about Other\r\n\r\n--B--\r\n",
        intro("cy@other.example")
    );
    let batch = [
        ana.clone(),
        // The same message twice (a copy in the same folder).
        ana,
        reply("ana@acme.example", &intro("ana@acme.example"), date, "And one more thing."),
        // Bo was stopped by Ana's reply, earlier in the batch.
        reply("bo@acme.example", &intro("bo@acme.example"), date, "Me too."),
        // A reply, then a bounce for the same lead.
        reply("cy@other.example", &intro("cy@other.example"), date, "Sure."),
        dsn.into_bytes(),
    ];
    for m in &batch {
        r.imap.append("nik", "INBOX", m).await;
    }
    r.p.tick("2026-12-01T09:00:00Z");

    assert_eq!(r.p.sql("SELECT COUNT(*) FROM inbound_seen"), "5", "the copy is recorded once");
    let ana = r.p.json(&["show", "ana@acme.example"]);
    assert_eq!(ana["enrollments"][0]["state"], "replied");
    assert_eq!(ana["stage"], "closing");
    let k = kinds(&r.p, "ana@acme.example");
    assert_eq!(k.iter().filter(|k| *k == "reply").count(), 2, "{k:?}");
    assert_eq!(k.iter().filter(|k| *k == "stage_change").count(), 2, "the enrolment's and the first reply's: {k:?}");

    let bo = r.p.json(&["show", "bo@acme.example"]);
    assert_eq!(bo["enrollments"][0]["state"], "completed", "stopped by the colleague's reply, not replied");
    let k = kinds(&r.p, "bo@acme.example");
    assert!(k.contains(&"unenrolled".to_string()) && k.contains(&"reply".to_string()), "{k:?}");

    let cy = r.p.json(&["show", "cy@other.example"]);
    assert_eq!(cy["enrollments"][0]["state"], "replied", "the bounce came after the reply had ended the enrollment");
    let k = kinds(&r.p, "cy@other.example");
    assert!(k.contains(&"reply".to_string()) && k.contains(&"bounce".to_string()), "{k:?}");
    assert_eq!(r.p.run(&["enroll", "cy@other.example", "--sequence", "outreach"]).status.code(), Some(3), "suppressed");
}

/// A batch of 300 replies from 300 companies, matched by address: each
/// records a reply and a stage change, 600 touchpoints in one transaction,
/// more than one statement binds on SQLite. Every one of them is there.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_of_hundreds_of_replies_records_every_touchpoint() {
    const N: usize = 300;
    let r = rig().await;
    let mut csv = String::from("email,first_name,company\n");
    for i in 0..N {
        csv.push_str(&format!("lead{i}@co{i}.example,Lead{i},Co {i}\n"));
    }
    let file = r.p.tmp.write("leads.csv", &csv);
    // Enrolled in 2030: nothing falls due at the tick below.
    r.p.ok(&["import", file.to_str().unwrap(), "--sequence", "outreach", "--now", "2030-01-07T10:00:00Z"]);
    for i in 0..N {
        let m = format!(
            "From: Lead {i} <lead{i}@co{i}.example>\r\nTo: nik@vendor.test\r\nSubject: Re: Quick question\r\n\
             Date: Tue, 08 Jan 2030 08:15:00 +0000\r\nMessage-ID: <r{i}@co{i}.example>\r\n\r\nTell me more, {i}.\r\n"
        );
        r.imap.append("nik", "INBOX", m.as_bytes()).await;
    }
    r.p.tick("2030-01-08T09:00:00Z");
    assert_eq!(r.p.sql("SELECT COUNT(*) FROM enrollments WHERE state = 'replied'"), N.to_string());
    assert_eq!(r.p.sql("SELECT COUNT(*) FROM leads WHERE stage = 'closing'"), N.to_string());
    assert_eq!(r.p.sql("SELECT COUNT(DISTINCT lead_id) FROM touchpoints WHERE kind = 'reply'"), N.to_string());
    assert_eq!(r.p.sql("SELECT COUNT(*) FROM touchpoints WHERE kind = 'reply'"), N.to_string());
    assert_eq!(
        r.p.sql("SELECT COUNT(*) FROM touchpoints WHERE kind = 'stage_change' AND detail LIKE '% -> closing (reply)'"),
        N.to_string()
    );
    assert_eq!(r.p.sql("SELECT detail FROM touchpoints WHERE kind = 'reply' AND lead_id = (SELECT id FROM leads WHERE email = 'lead299@co299.example')"), "Tell me more, 299.");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_out_of_office_pauses_until_the_return_date_then_the_next_step_goes_out() {
    let r = rig().await;
    r.p.enroll("ana@acme.example", "UTC", "2026-11-30T10:00:00Z");
    r.p.tick("2026-11-30T10:00:00Z");
    let intro = r.smtp.messages().remove(0);
    let ooo = format!(
        "From: Ana Lee <ana@acme.example>\r\nTo: nik@vendor.test\r\nSubject: Automatic reply: Quick question about Acme\r\nAuto-Submitted: auto-replied\r\n\
         Date: Mon, 30 Nov 2026 10:00:05 +0000\r\nMessage-ID: <ooo-1@acme.example>\r\nIn-Reply-To: {}\r\nContent-Type: text/plain\r\n\r\n\
         I am out of the office and will be back on 14 December 2026. For urgent matters contact bo@acme.example.\r\n",
        message_id(&intro)
    );
    r.imap.append("nik", "INBOX", ooo.as_bytes()).await;
    // The bump would be due Thursday; the lead is paused until the 14th.
    assert_eq!(r.p.tick("2026-12-03T10:00:00Z")["sent"], 0);
    let show = r.p.json(&["show", "ana@acme.example"]);
    assert_eq!(show["enrollments"][0]["state"], "paused");
    assert_eq!(show["enrollments"][0]["paused_until"], "2026-12-14T00:00:00Z");
    assert!(r.p.ok(&["explain", "ana@acme.example", "--now", "2026-12-03T10:00:00Z"]).contains("paused until"));
    assert_eq!(r.p.tick("2026-12-11T10:00:00Z")["sent"], 0);
    // Monday the 14th: resumed at the first window opening on that date.
    assert_eq!(r.p.tick("2026-12-14T08:00:00Z")["sent"], 0, "before the window opens");
    let stats = r.p.tick("2026-12-14T09:00:00Z");
    assert_eq!(stats["sent"], 1);
    let bump = r.smtp.messages().pop().unwrap();
    assert_eq!(bump.header("Subject").unwrap(), "Re: Quick question about Acme");
    assert_eq!(bump.header("In-Reply-To").unwrap().trim(), message_id(&intro));
    let k = kinds(&r.p, "ana@acme.example");
    assert!(k.contains(&"auto_reply".to_string()) && k.contains(&"resumed".to_string()), "{k:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bounce_suppresses_the_address() {
    let r = rig().await;
    r.p.enroll("gone@acme.example", "UTC", "2026-11-30T10:00:00Z");
    r.p.tick("2026-11-30T10:00:00Z");
    let sent = r.smtp.messages().remove(0);
    let dsn = format!(
        "From: Mail Delivery System <MAILER-DAEMON@mx.acme.example>\r\nTo: nik@vendor.test\r\nSubject: Undelivered Mail Returned to Sender\r\n\
         Date: Mon, 30 Nov 2026 10:00:09 +0000\r\nMessage-ID: <dsn-1@mx.acme.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n\
         I'm sorry to have to inform you that your message could not be delivered.\r\n\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\n\
         Reporting-MTA: dns; mx.acme.example\r\n\r\nFinal-Recipient: rfc822; gone@acme.example\r\nAction: failed\r\nStatus: 5.1.1\r\n\
         Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {}\r\n\
         From: nik@vendor.test\r\nTo: gone@acme.example\r\nSubject: Quick question about Acme\r\n\r\n--B--\r\n",
        message_id(&sent)
    );
    r.imap.append("nik", "INBOX", dsn.as_bytes()).await;
    r.p.tick("2026-12-03T10:00:00Z");
    let show = r.p.json(&["show", "gone@acme.example"]);
    assert_eq!(show["enrollments"][0]["state"], "bounced");
    assert!(kinds(&r.p, "gone@acme.example").contains(&"bounce".to_string()));
    assert_eq!(r.p.run(&["enroll", "gone@acme.example", "--sequence", "outreach"]).status.code(), Some(3));
    assert_eq!(r.smtp.message_count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_inbox_that_has_not_synced_holds_its_reps_sending() {
    let mut r = rig().await;
    r.p.enroll("ana@acme.example", "UTC", "2026-11-30T10:00:00Z");
    r.imap.stop();
    let out = r.p.run(&["tick", "--now", "2026-11-30T10:00:00Z"]);
    assert!(out.status.success());
    assert_eq!(r.smtp.message_count(), 0, "never synced: nothing goes out");
    let explain = r.p.ok(&["explain", "ana@acme.example", "--now", "2026-11-30T10:00:00Z"]);
    assert!(explain.contains("inbox lag"), "{explain}");
    r.imap.start_again().await;
    assert_eq!(r.p.tick("2026-11-30T10:01:00Z")["sent"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_is_acted_on_within_seconds_under_idle_and_after_a_restart() {
    let r = rig().await;
    let daemon = r.p.spawn_run(&[]);
    r.p.ok(&["enroll", "ana@acme.example", "--sequence", "always", "--company", "Acme"]);
    r.p.ok(&["enroll", "bo@beta.example", "--sequence", "always", "--company", "Beta"]);
    let sent = r.smtp.wait_for(2, SETTLE);
    let to_ana = sent.iter().find(|m| m.rcpt_to[0] == "ana@acme.example").unwrap();
    let to_bo = sent.iter().find(|m| m.rcpt_to[0] == "bo@beta.example").unwrap();
    // Under IDLE: acted on within seconds, no restart, no tick.
    r.imap
        .append("nik", "INBOX", &reply("ana@acme.example", &message_id(to_ana), "Mon, 30 Nov 2026 10:05:00 +0000", "Yes, let's talk."))
        .await;
    crate::support::wait_until_blocking("reply recorded through IDLE", Duration::from_secs(20), || {
        r.p.sql("SELECT state FROM enrollments e JOIN leads l ON l.id = e.lead_id WHERE l.email = 'ana@acme.example'") == "replied"
    });
    assert!(daemon.terminate(SETTLE).success());
    // While the daemon is down, Bo replies; the restart acts on it.
    r.imap
        .append("nik", "INBOX", &reply("bo@beta.example", &message_id(to_bo), "Mon, 30 Nov 2026 10:06:00 +0000", "Not now, thanks."))
        .await;
    let daemon = r.p.spawn_run(&[]);
    crate::support::wait_until_blocking("reply recorded at restart", SETTLE, || {
        r.p.sql("SELECT state FROM enrollments e JOIN leads l ON l.id = e.lead_id WHERE l.email = 'bo@beta.example'") == "replied"
    });
    assert!(daemon.terminate(SETTLE).success());
    assert_eq!(r.p.sql("SELECT count(*) FROM touchpoints WHERE kind = 'reply'"), "2", "each reply recorded once");
}

/// After the last chance, a reply still wins: the lead is not archived.
#[tokio::test(flavor = "multi_thread")]
async fn a_reply_after_the_last_chance_prevents_the_archive() {
    let r = rig().await;
    r.p.enroll("ana@acme.example", "America/Los_Angeles", "2026-12-14T20:00:00Z");
    for now in ["2026-12-14T20:00:00Z", "2026-12-17T20:00:00Z", "2026-12-21T17:00:00Z", "2026-12-21T21:00:00Z", "2026-12-29T21:00:00Z"] {
        assert_eq!(r.p.tick(now)["sent"], 1, "{now}");
    }
    let last = r.smtp.messages().pop().unwrap();
    assert!(String::from_utf8_lossy(last.body()).contains("close your file"), "the last chance went out");
    r.imap
        .append(
            "nik",
            "INBOX",
            &reply("ana@acme.example", &message_id(&last), "Wed, 30 Dec 2026 17:00:00 +0000", "Sorry, busy month. Let's talk in January."),
        )
        .await;
    r.p.tick("2027-01-05T21:00:00Z");
    r.p.tick("2027-01-20T21:00:00Z");
    let show = r.p.json(&["show", "ana@acme.example"]);
    assert_eq!(show["status"], "active", "not archived");
    assert_eq!(show["stage"], "closing");
    assert_eq!(show["enrollments"][0]["state"], "replied");
    assert!(!kinds(&r.p, "ana@acme.example").contains(&"archived".to_string()));
}
