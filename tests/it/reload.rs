//! SIGHUP reloads config and templates: a broken template is refused and
//! the old one keeps sending; a fixed one takes effect.

use crate::fixtures::{Opts, Project};
use crate::support::smtp::{SmtpOptions, SmtpServer};
use crate::support::wait_until_blocking;
use crate::support::SETTLE;

#[test]
fn sighup_keeps_the_old_templates_when_the_new_ones_are_broken() {
    let server = SmtpServer::start(SmtpOptions::default());
    let p = Project::new(Opts {
        smtp_port: Some(server.port()),
        extra_daemon: "manager_token_env = \"CADENCE_MANAGER_TOKEN\"".into(),
        ..Opts::default()
    });
    let daemon = p.spawn_run(&[("CADENCE_MANAGER_TOKEN", "mgr-token-1")]);
    let addr = daemon.http_addr();
    // Through the running daemon's API: the files on disk may be broken.
    let enroll = |email: &str| {
        let body = format!(r#"{{"email":"{email}","sequence":"always","company":"Acme","rep":"nik"}}"#);
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                "Authorization: Bearer mgr-token-1",
                "-H",
                "Content-Type: application/json",
            ])
            .args(["--data", &body, &format!("http://{addr}/api/v1/enrollments")])
            .output()
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "201", "enroll {email}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let subject_of = |n: usize| server.wait_for(n, SETTLE)[n - 1].header("Subject").unwrap();

    enroll("one@acme.example");
    assert_eq!(subject_of(1), "Quick question about Acme");

    p.tmp.write_template("intro", "---\nsubject: \"Broken {{company\"\n---\nHello {{#if first_name}}\n");
    daemon.signal("HUP");
    wait_until_blocking("the broken reload is refused", SETTLE, || daemon.log().contains("keeping the old one"));
    enroll("two@acme.example");
    assert_eq!(subject_of(2), "Quick question about Acme", "still the old template");

    p.tmp.write_template(
        "intro",
        "---\nsubject: \"A better question for {{company}}\"\n---\nHi {{default first_name \"there\"}},\n\nNew text.\n\n{{> signature}}\n",
    );
    daemon.signal("HUP");
    wait_until_blocking("the fixed reload is taken", SETTLE, || daemon.log().contains("config and templates reloaded"));
    enroll("three@acme.example");
    assert_eq!(subject_of(3), "A better question for Acme");
    assert!(daemon.terminate(SETTLE).success());
}

/// A rep given an inbox by a reload is watched at once (a reply is acted on
/// without a restart); an inbox taken out of the config stops its watcher.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_starts_and_stops_inbox_watchers_to_match_the_config() {
    use crate::inbox::{message_id, reply};
    let pw = "reload-imap-pw";
    let smtp = SmtpServer::start(SmtpOptions::default());
    let imap = crate::support::dovecot::Dovecot::start(&[("nik", pw)]).await;
    let p = Project::new(Opts { smtp_port: Some(smtp.port()), imap: Some((imap.port(), pw.into())), ..Opts::default() });
    let with_inbox = std::fs::read_to_string(p.tmp.config_path()).unwrap();
    let section = &with_inbox[with_inbox.find("\n  [reps.imap]").expect("the fixture's inbox section")..];
    let without_inbox = with_inbox.replace(section, "\n");
    p.tmp.write_config(&without_inbox);

    let daemon = p.spawn_run(&[]);
    p.ok(&["enroll", "ana@acme.example", "--sequence", "always", "--company", "Acme"]);
    let first = smtp.wait_for(1, SETTLE).remove(0);
    imap.append("nik", "INBOX", &reply("ana@acme.example", &message_id(&first), "Mon, 30 Nov 2026 10:05:00 +0000", "Yes, let's talk."))
        .await;
    assert!(!daemon.log().contains("inbox watcher connected"), "no inbox configured yet");

    p.tmp.write_config(&with_inbox);
    daemon.signal("HUP");
    wait_until_blocking("the reply recorded by the new watcher", SETTLE, || {
        p.sql("SELECT state FROM enrollments e JOIN leads l ON l.id = e.lead_id WHERE l.email = 'ana@acme.example'") == "replied"
    });

    p.tmp.write_config(&without_inbox);
    daemon.signal("HUP");
    wait_until_blocking("the watcher stops", SETTLE, || daemon.log().contains("inbox no longer configured"));
    let log = daemon.log();
    assert!(daemon.terminate(SETTLE).success());
    assert_eq!(log.matches("inbox watcher connected").count(), 1, "{log}");
}
