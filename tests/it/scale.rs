//! Several `cadence run` processes on one PostgreSQL database share the work
//! with nothing sent twice (DESIGN 5.12). These tests always use PostgreSQL.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::fixtures::{Backend, Daemon, Opts, Project};
use crate::support::dovecot::Dovecot;
use crate::support::smtp::{SmtpOptions, SmtpServer};
use crate::support::wait_until_blocking;
use crate::support::SETTLE;

fn import(p: &Project, n: usize, tag: &str) {
    let mut csv = String::from("email,company\n");
    for i in 0..n {
        csv.push_str(&format!("{tag}{i}@{tag}{i}.example,Co {i}\n"));
    }
    let file = p.tmp.write(&format!("{tag}.csv"), &csv);
    p.ok(&["import", file.to_str().unwrap(), "--sequence", "always"]);
}

fn no_message_id_twice(server: &SmtpServer) -> usize {
    let msgs = server.messages();
    let ids: Vec<String> = msgs.iter().map(|m| m.header("Message-ID").expect("Message-ID")).collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len(), "a Message-ID arrived twice");
    let rcpts: Vec<&String> = msgs.iter().map(|m| &m.rcpt_to[0]).collect();
    assert_eq!(rcpts.iter().collect::<HashSet<_>>().len(), rcpts.len(), "a lead got its email twice");
    msgs.len()
}

fn instance_pid(instance: &str) -> u32 {
    // `host-pid-random`
    let mut parts = instance.rsplitn(3, '-');
    let _ = parts.next();
    parts.next().and_then(|p| p.parse().ok()).expect("pid in instance id")
}

#[test]
fn three_daemons_share_3000_due_leads_and_send_each_once() {
    let server = SmtpServer::start(SmtpOptions::default());
    let p = Project::on(Backend::Postgres, Opts { smtp_port: Some(server.port()), pool_size: 8, daily_limit: 100_000, ..Opts::default() });
    import(&p, 3000, "s");
    let started = Instant::now();
    let daemons: Vec<Daemon> = (0..3).map(|_| p.spawn_run(&[])).collect();
    server.wait_for(3000, Duration::from_secs(120));
    wait_until_blocking("all 3000 recorded as sent", Duration::from_secs(60), || {
        p.sql("SELECT count(*) FROM sends WHERE state = 'sent'") == "3000"
    });
    let elapsed = started.elapsed();
    for d in daemons {
        assert!(d.terminate(SETTLE).success());
    }
    assert_eq!(no_message_id_twice(&server), 3000);
    let shares: HashMap<String, usize> = p
        .sql("SELECT claimed_by, count(*) FROM sends GROUP BY claimed_by")
        .lines()
        .map(|l| {
            let (who, n) = l.split_once('|').unwrap();
            (who.to_string(), n.parse().unwrap())
        })
        .collect();
    println!("3 daemons, 3000 emails in {elapsed:?} ({:.0}/s); shares {shares:?}", 3000.0 / elapsed.as_secs_f64());
    assert_eq!(shares.len(), 3, "every daemon sent a share: {shares:?}");
    assert_eq!(p.sql("SELECT count(*) FROM sends WHERE state = 'sending'"), "0");
}

/// A claim's cost must not grow with the backlog: right after an import the
/// daemon's claims read the due index in (next_at, id) order and stop at
/// their limit, instead of reading and sorting every due row. That needs
/// the index to end with the id (migration 0006) and the planner to know
/// the imported rows (the import ends with ANALYZE).
#[test]
fn claims_right_after_an_import_read_the_due_index_in_order() {
    let p = Project::on(Backend::Postgres, Opts::default());
    import(&p, 2000, "q");
    let analyzed = p.sql("SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL");
    assert_eq!(analyzed, "enrollments,leads,touchpoints");
    // The due query of Store::claim, its first page.
    let plan = p.sql(
        "EXPLAIN SELECT id FROM enrollments WHERE state = 'active' AND next_at IS NOT NULL AND next_at <= 9e15::int8 \
         AND (next_at > -1 OR (next_at = -1 AND id > -1)) ORDER BY next_at, id LIMIT 256 FOR UPDATE SKIP LOCKED",
    );
    assert!(plan.contains("Index Scan using enrollments_due") && !plan.contains("Sort"), "{plan}");
}

#[test]
fn a_daily_cap_holds_across_three_daemons() {
    let server = SmtpServer::start(SmtpOptions::default());
    let p = Project::on(Backend::Postgres, Opts { smtp_port: Some(server.port()), daily_limit: 50, ..Opts::default() });
    let daemons: Vec<Daemon> = (0..3).map(|_| p.spawn_run(&[])).collect();
    for d in &daemons {
        wait_until_blocking("daemon started", SETTLE, || d.log().contains("cadence started"));
    }
    import(&p, 300, "c");
    server.wait_for(50, Duration::from_secs(60));
    // Every daemon has looked at the due work since the cap filled (each
    // logs its passes); then stop them and count.
    wait_until_blocking("nothing in flight", SETTLE, || p.sql("SELECT count(*) FROM sends WHERE state = 'sending'") == "0");
    for d in daemons {
        assert!(d.terminate(SETTLE).success());
    }
    assert_eq!(no_message_id_twice(&server), 50, "the rep's daily limit of 50 holds globally");
    assert_eq!(p.sql("SELECT count(*) FROM enrollments WHERE touches = 0 AND state = 'active'"), "250");
    // Which 50 went out depends on how the daemons' claims interleaved;
    // any lead still waiting is held by the cap.
    let held = p.sql("SELECT l.email FROM leads l JOIN enrollments e ON e.lead_id = l.id WHERE e.touches = 0 AND e.state = 'active' ORDER BY l.email DESC LIMIT 1");
    let why = p.ok(&["explain", &held]);
    assert!(why.contains("daily cap: 50/50"), "explain {held}:\n{why}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_daemon_s_work_and_inbox_move_to_the_survivors() {
    let pw = "scale-imap-pw";
    let dovecot = Dovecot::start(&[("nik", pw)]).await;
    let server = SmtpServer::start(SmtpOptions::default());
    let p = Project::on(
        Backend::Postgres,
        Opts { smtp_port: Some(server.port()), imap: Some((dovecot.port(), pw.into())), daily_limit: 100_000, ..Opts::default() },
    );
    let mut daemons: Vec<Option<Daemon>> = (0..3).map(|_| Some(p.spawn_run(&[]))).collect();
    // The daemons create the schema as they start: until then there is no
    // table to ask.
    wait_until_blocking("an inbox lease holder", SETTLE, || {
        p.count("mailboxes") > 0 && !p.sql("SELECT coalesce(lease_holder, '') FROM mailboxes").is_empty()
    });
    import(&p, 2000, "k");
    wait_until_blocking("a quarter sent", Duration::from_secs(60), || server.message_count() >= 500);
    let holder = p.sql("SELECT lease_holder FROM mailboxes");
    let pid = instance_pid(&holder);
    let victim = daemons.iter().position(|d| d.as_ref().is_some_and(|d| d.child.id() == pid)).expect("the lease holder is one of ours");
    let killed_at = Instant::now();
    daemons[victim].take().unwrap().kill9();
    wait_until_blocking("the lease moves to a survivor", Duration::from_secs(40), || {
        let h = p.sql("SELECT coalesce(lease_holder, '') FROM mailboxes");
        !h.is_empty() && h != holder
    });
    let failover = killed_at.elapsed();
    println!("inbox lease failover after kill -9: {failover:?}");
    assert!(failover <= Duration::from_secs(30), "failover took {failover:?}");
    wait_until_blocking("every lead sent or send_unknown", Duration::from_secs(90), || {
        p.sql("SELECT count(*) FROM enrollments WHERE touches = 1") == "2000"
            && p.sql("SELECT count(*) FROM sends WHERE state = 'sending'") == "0"
    });
    for d in daemons.into_iter().flatten() {
        assert!(d.terminate(Duration::from_secs(30)).success());
    }
    let received = no_message_id_twice(&server);
    let sent: usize = p.sql("SELECT count(*) FROM sends WHERE state = 'sent'").parse().unwrap();
    let unknown: usize = p.sql("SELECT count(*) FROM sends WHERE state = 'send_unknown'").parse().unwrap();
    println!("after kill -9: {sent} sent, {unknown} send_unknown, {received} received");
    assert_eq!(sent + unknown, 2000, "every lead is sent or send_unknown");
    assert!(received >= sent && received <= 2000);
}
