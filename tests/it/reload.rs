//! SIGHUP reloads config and templates: a broken template is refused and
//! the old one keeps sending; a fixed one takes effect.

use std::time::Duration;

use crate::fixtures::{Opts, Project};
use crate::support::smtp::{SmtpOptions, SmtpServer};
use crate::support::wait_until_blocking;

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
    let subject_of = |n: usize| server.wait_for(n, Duration::from_secs(10))[n - 1].header("Subject").unwrap();

    enroll("one@acme.example");
    assert_eq!(subject_of(1), "Quick question about Acme");

    p.tmp.write_template("intro", "---\nsubject: \"Broken {{company\"\n---\nHello {{#if first_name}}\n");
    daemon.signal("HUP");
    wait_until_blocking("the broken reload is refused", Duration::from_secs(10), || daemon.log().contains("keeping the old one"));
    enroll("two@acme.example");
    assert_eq!(subject_of(2), "Quick question about Acme", "still the old template");

    p.tmp.write_template(
        "intro",
        "---\nsubject: \"A better question for {{company}}\"\n---\nHi {{default first_name \"there\"}},\n\nNew text.\n\n{{> signature}}\n",
    );
    daemon.signal("HUP");
    wait_until_blocking("the fixed reload is taken", Duration::from_secs(10), || daemon.log().contains("config and templates reloaded"));
    enroll("three@acme.example");
    assert_eq!(subject_of(3), "A better question for Acme");
    assert!(daemon.terminate(Duration::from_secs(20)).success());
}
