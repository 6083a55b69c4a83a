//! The hygiene cron through `cadence run`, on a clock started with `--now`
//! (it then runs at real speed, so a fire two seconds away happens two
//! seconds later): once per schedule point, a missed fire once at start, and
//! the digest reaches a real SMTP server.

use crate::fixtures::{Opts, Project};
use crate::support::smtp::{SmtpOptions, SmtpServer};
use crate::support::wait_until_blocking;
use crate::support::SETTLE;

fn project(server: &SmtpServer) -> Project {
    let p = Project::new(Opts { smtp_port: Some(server.port()), ..Opts::default() });
    let mut cfg = std::fs::read_to_string(p.tmp.config_path()).unwrap();
    cfg.push_str("\n[hygiene]\nschedule = \"0 0 7 * * *\"\nstale_after = \"14 days\"\ndigest_to = [\"manager@vendor.test\"]\n");
    p.tmp.write_config(&cfg);
    p.tmp.write_template("digest", include_str!("../../templates/digest.hbs"));
    p
}

fn fires(p: &Project) -> String {
    if p.count("cron_fires") == 0 {
        return String::new();
    }
    p.sql("SELECT fire_at, CASE WHEN done_at IS NULL THEN 'open' ELSE 'done' END FROM cron_fires WHERE job = 'hygiene' ORDER BY fire_at")
}

fn digests(server: &SmtpServer) -> usize {
    server.messages().iter().filter(|m| m.rcpt_to == ["manager@vendor.test"]).count()
}

const NOV30_07: i64 = 1_796_022_000_000; // 2026-11-30T07:00:00Z
const DAY: i64 = 86_400_000;

#[test]
fn the_hygiene_cron_fires_once_per_schedule_point_through_run() {
    let server = SmtpServer::start(SmtpOptions::default());
    let p = project(&server);
    // Two seconds before the 07:00 fire of Dec 1. A new database runs the
    // latest past fire (Nov 30) at start.
    let daemon = {
        let mut cmd = p.tmp.cadence();
        cmd.env("CADENCE_SECRET", crate::fixtures::SECRET);
        let log = p.tmp.root().join("hygiene-run.log");
        let f = std::fs::File::create(&log).unwrap();
        let child = cmd.args(["run", "--now", "2026-12-01T06:59:58Z"]).stdout(f.try_clone().unwrap()).stderr(f).spawn().unwrap();
        crate::fixtures::Daemon { child, log }
    };
    let expect = format!("{}|done\n{}|done", NOV30_07, NOV30_07 + DAY);
    wait_until_blocking("two fires done", SETTLE, || fires(&p) == expect);
    server.wait_for(2, SETTLE);
    assert!(daemon.terminate(SETTLE).success());
    assert_eq!(fires(&p), expect, "one row per schedule point");
    assert_eq!(digests(&server), 2, "one digest per fire");
    let digest = server.messages().into_iter().find(|m| m.rcpt_to == ["manager@vendor.test"]).unwrap();
    assert!(digest.header("Subject").unwrap().to_lowercase().contains("pipeline"), "{:?}", digest.header("Subject"));
    assert_eq!(digest.header("List-Unsubscribe"), None, "the digest is not a sales email");
}

#[test]
fn a_fire_missed_while_the_daemon_was_down_runs_once_at_start() {
    let server = SmtpServer::start(SmtpOptions::default());
    let p = project(&server);
    // The Nov 30 fire runs through a tick...
    let t = p.tick("2026-11-30T07:00:01Z");
    assert_eq!(t["hygiene"]["fire_at"], "2026-11-30T07:00:00Z");
    assert!(p.tick("2026-11-30T08:00:00Z")["hygiene"].is_null(), "not twice");
    // ... then the daemon is down for three fires and starts on Dec 3 at 08:00.
    let mut cmd = p.tmp.cadence();
    cmd.env("CADENCE_SECRET", crate::fixtures::SECRET);
    let log = p.tmp.root().join("missed-run.log");
    let f = std::fs::File::create(&log).unwrap();
    let child = cmd.args(["run", "--now", "2026-12-03T08:00:00Z"]).stdout(f.try_clone().unwrap()).stderr(f).spawn().unwrap();
    let daemon = crate::fixtures::Daemon { child, log };
    let expect = format!("{}|done\n{}|done", NOV30_07, NOV30_07 + 3 * DAY);
    wait_until_blocking("the missed fire ran", SETTLE, || fires(&p) == expect);
    server.wait_for(2, SETTLE);
    assert!(daemon.terminate(SETTLE).success());
    assert_eq!(fires(&p), expect, "only the latest missed fire, once");
    assert_eq!(digests(&server), 2);
}
