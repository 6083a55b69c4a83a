//! The command line against real SQLite files: enroll, show, leads, import,
//! refusals, manual control and `check`.

use serde_json::json;

use crate::fixtures::{text, Project};

const MON_10_UTC: &str = "2026-11-30T10:00:00Z";

#[test]
fn enroll_then_show_then_leads() {
    let p = Project::file();
    let out = p.json(&[
        "enroll",
        "Ana.Lee@Acme.example",
        "--sequence",
        "outreach",
        "--first-name",
        "Ana",
        "--last-name",
        "Lee",
        "--company",
        "Acme",
        "--timezone",
        "America/New_York",
        "--value",
        "12000",
        "--field",
        "plan=pro",
        "--now",
        MON_10_UTC,
    ]);
    assert_eq!(out["email"], "ana.lee@acme.example");
    assert_eq!(out["created_lead"], true);
    // Enrolled Monday 10:00 UTC = 05:00 in New York: the first email waits for 09:00 local.
    assert_eq!(out["next_at"], "2026-11-30T14:00:00Z");

    let show = p.json(&["show", "ana.lee@acme.example"]);
    assert_eq!(show["first_name"], "Ana");
    assert_eq!(show["company"], "Acme");
    assert_eq!(show["value"], 12000.0);
    assert_eq!(show["fields"]["plan"], "pro");
    assert_eq!(show["stage"], "connecting", "the sequence's stage applies on enrollment");
    assert_eq!(show["enrollments"][0]["sequence"], "outreach");
    assert_eq!(show["enrollments"][0]["state"], "active");
    let kinds: Vec<&str> = show["touchpoints"].as_array().unwrap().iter().map(|t| t["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["enrolled", "stage_change"]);

    let leads = p.json(&["leads"]);
    let leads = leads.as_array().unwrap();
    assert_eq!(leads.len(), 1);
    assert_eq!(leads[0]["email"], "ana.lee@acme.example");
    assert_eq!(leads[0]["state"], "active");
    assert_eq!(leads[0]["step"], 1);
    assert_eq!(p.json(&["leads", "--stage", "closing"]).as_array().unwrap().len(), 0);
    assert_eq!(p.json(&["leads", "--sequence", "outreach", "--state", "active"]).as_array().unwrap().len(), 1);

    // The human forms print too.
    assert!(p.ok(&["show", "ana.lee@acme.example"]).contains("timeline:"));
    assert!(p.ok(&["leads"]).contains("ana.lee@acme.example"));
}

#[test]
fn enrolling_twice_is_refused_and_changes_nothing() {
    let p = Project::file();
    p.enroll("bo@acme.example", "UTC", MON_10_UTC);
    let before = p.sql("SELECT count(*), max(updated_at) FROM leads; SELECT count(*) FROM enrollments; SELECT count(*) FROM touchpoints;");
    let out = p.run(&["enroll", "bo@acme.example", "--sequence", "outreach", "--company", "Other", "--now", "2026-12-01T10:00:00Z"]);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("already active in sequence `outreach`"), "{}", text(&out.stderr));
    assert_eq!(
        p.sql("SELECT count(*), max(updated_at) FROM leads; SELECT count(*) FROM enrollments; SELECT count(*) FROM touchpoints;"),
        before
    );
    assert_eq!(p.json(&["show", "bo@acme.example"])["company"], "Acme");
}

#[test]
fn suppressed_addresses_and_domains_are_refused() {
    let p = Project::file();
    p.ok(&["suppress", "no@acme.example"]);
    p.ok(&["suppress", "@blocked.example"]);
    for email in ["NO@acme.example", "anyone@blocked.example"] {
        let out = p.run(&["enroll", email, "--sequence", "outreach"]);
        assert_eq!(out.status.code(), Some(3), "{email}");
        assert!(text(&out.stderr).contains("suppressed"), "{}", text(&out.stderr));
    }
    assert_eq!(p.sql("SELECT count(*) FROM leads"), "0");
}

#[test]
fn suppressing_stops_a_live_enrollment() {
    let p = Project::file();
    p.enroll("cy@acme.example", "UTC", MON_10_UTC);
    assert!(p.ok(&["suppress", "@ACME.example"]).contains("1 enrollment(s) stopped"));
    assert_eq!(p.json(&["show", "cy@acme.example"])["enrollments"][0]["state"], "unsubscribed");
}

#[test]
fn control_characters_in_any_field_are_refused_naming_the_field() {
    let p = Project::file();
    for (flag, value, field) in [
        ("--first-name", "Ana\r\nBcc: victim@evil.example", "first_name"),
        ("--company", "Acme\nX-Spam: yes", "company"),
        ("--last-name", "Lee\u{7}", "last_name"),
        ("--field", "plan=pro\r\nBcc: x@evil.example", "fields.plan"),
    ] {
        let out = p.run(&["enroll", "dee@acme.example", "--sequence", "outreach", flag, value]);
        assert_eq!(out.status.code(), Some(3), "{flag}");
        let err = text(&out.stderr);
        assert!(err.contains(field), "{flag}: message should name `{field}`: {err}");
    }
    let out = p.run(&["enroll", "dee@acme.example\r\nBcc: x@evil.example", "--sequence", "outreach"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("email"));
    let out = p.run(&["enroll", "dee@acme.example", "--sequence", "outreach", "--timezone", "EST"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("timezone"));
    // Refused before the database is even opened: nothing was written.
    assert_eq!(p.count("leads"), 0);
}

#[test]
fn unknown_sequence_or_bad_now_is_a_usage_error() {
    let p = Project::file();
    assert_eq!(p.run(&["enroll", "a@acme.example", "--sequence", "nope"]).status.code(), Some(2));
    assert_eq!(p.run(&["tick", "--now", "yesterday"]).status.code(), Some(2));
    assert_eq!(p.run(&["show", "missing@acme.example"]).status.code(), Some(2));
}

#[test]
fn import_keeps_good_rows_names_bad_lines_and_is_idempotent() {
    let p = Project::file();
    let mut csv = String::from("email,first_name,company,timezone,plan\n");
    let bad_lines = [101usize, 502, 903];
    for i in 0..1000usize {
        let line = i + 2;
        if line == bad_lines[0] {
            csv.push_str("not-an-address,Bad,Acme,UTC,pro\n");
        } else if line == bad_lines[1] {
            csv.push_str(&format!("lead{i}@acme{i}.example,Bad,Acme,Mars/Olympus,pro\n"));
        } else if line == bad_lines[2] {
            csv.push_str(&format!("lead{i}@acme{i}.example,\"Evil\rBcc: x@evil.example\",Acme,UTC,pro\n"));
        } else {
            csv.push_str(&format!("lead{i}@acme{i}.example,Lead{i},Acme {i},Europe/Berlin,pro\n"));
        }
    }
    let file = p.tmp.write("leads.csv", &csv);
    let file = file.to_str().unwrap();
    let out = p.run(&["import", file, "--sequence", "outreach", "--now", MON_10_UTC]);
    assert_eq!(out.status.code(), Some(3), "some rows were skipped");
    let err = text(&out.stderr);
    for line in bad_lines {
        assert!(err.contains(&format!("leads.csv:{line}: skipped")), "line {line} not reported:\n{err}");
    }
    assert!(err.contains("timezone") && err.contains("first_name") && err.contains("email"), "{err}");
    assert!(text(&out.stdout).contains("997 enrolled"), "{}", text(&out.stdout));
    assert_eq!(p.sql("SELECT count(*) FROM leads"), "997");
    assert_eq!(p.sql("SELECT count(*) FROM enrollments WHERE state = 'active'"), "997");
    assert_eq!(p.json(&["show", "lead5@acme5.example"])["fields"]["plan"], "pro");

    let snapshot =
        p.sql("SELECT count(*), max(updated_at) FROM leads; SELECT count(*) FROM enrollments; SELECT count(*) FROM touchpoints;");
    let again = p.run(&["import", file, "--sequence", "outreach", "--now", "2026-12-01T10:00:00Z"]);
    let summary = text(&again.stdout);
    assert!(summary.contains("0 enrolled") && summary.contains("997 already enrolled"), "{summary}");
    assert_eq!(
        p.sql("SELECT count(*), max(updated_at) FROM leads; SELECT count(*) FROM enrollments; SELECT count(*) FROM touchpoints;"),
        snapshot,
        "re-import changed nothing"
    );
}

/// Every index of the tables an import fills, by name and definition.
fn fill_indexes(p: &Project) -> String {
    p.sql(
        "SELECT name || ': ' || sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL \
         AND tbl_name IN ('leads', 'enrollments', 'touchpoints') ORDER BY name",
    )
}

/// A first import sets the secondary indexes aside and builds them at its
/// end (store::bulk): the database ends with the schema it started with.
#[test]
fn sqlite_a_first_import_ends_with_every_index() {
    let p = Project::file();
    p.ok(&["leads"]); // creates and migrates the database
    let migrated = fill_indexes(&p);
    assert!(migrated.contains("touchpoints_lead: CREATE INDEX") && migrated.contains("enrollments_one_live"), "{migrated}");
    let mut csv = String::from("email,first_name\n");
    for i in 0..300 {
        csv.push_str(&format!("lead{i}@acme{}.example,Lead{i}\n", i % 7));
    }
    let file = p.tmp.write("first.csv", &csv);
    let summary = p.json(&["import", file.to_str().unwrap(), "--sequence", "outreach", "--now", MON_10_UTC]);
    assert_eq!(summary["enrolled"], 300, "{summary}");
    assert_eq!(fill_indexes(&p), migrated);
    assert_eq!(p.sql("SELECT count(*) FROM deferred_indexes"), "0");
    assert_eq!(p.sql("SELECT count(*) FROM touchpoints"), "600");
    assert_eq!(p.sql("PRAGMA integrity_check"), "ok");
}

/// An import stopped between setting its indexes aside and building them
/// leaves them listed in `deferred_indexes`; the next cadence command to
/// open the database builds them.
#[test]
fn sqlite_indexes_left_aside_by_a_stopped_import_are_built_at_the_next_open() {
    let p = Project::file();
    p.enroll("ana@acme.example", "UTC", MON_10_UTC);
    let migrated = fill_indexes(&p);
    p.sql(
        "INSERT INTO deferred_indexes (name, sql) SELECT name, sql FROM sqlite_master WHERE name IN ('leads_domain', 'touchpoints_lead'); \
         DROP INDEX leads_domain; DROP INDEX touchpoints_lead;",
    );
    assert!(!fill_indexes(&p).contains("leads_domain"));
    p.ok(&["leads"]);
    assert_eq!(fill_indexes(&p), migrated);
    assert_eq!(p.sql("SELECT count(*) FROM deferred_indexes"), "0");
}

/// The importer writes new leads set-wise and everything else one by one:
/// a batch that mixes new, repeated, suppressed and existing leads must end
/// exactly as enrolling its rows one at a time does.
#[test]
fn an_imported_batch_ends_as_enrolling_its_rows_one_by_one() {
    let rows: [[&str; 4]; 8] = [
        ["new1@one.example", "Ana", "One", "Europe/Berlin"],
        ["returning@two.example", "Bea", "", ""],
        ["new2@three.example", "", "Three", "America/New_York"],
        ["new1@one.example", "Again", "One", ""],
        ["live@two.example", "Cid", "Two", ""],
        ["no@two.example", "Dee", "Two", ""],
        ["x@blocked.example", "Eve", "Blocked", ""],
        ["new3@four.example", "Fay", "Four", "UTC"],
    ];
    let prepared = || {
        let p = Project::file();
        p.enroll("returning@two.example", "Asia/Jakarta", MON_10_UTC);
        // Fixed times: the two projects are compared field by field.
        p.ok(&["unenroll", "returning@two.example", "--now", MON_10_UTC]);
        p.enroll("live@two.example", "UTC", MON_10_UTC);
        p.ok(&["suppress", "no@two.example", "--now", MON_10_UTC]);
        p.ok(&["suppress", "@blocked.example", "--now", MON_10_UTC]);
        p
    };
    let later = "2026-12-01T09:00:00Z";

    let batch = prepared();
    let mut csv = String::from("email,first_name,company,timezone\n");
    for r in &rows {
        csv.push_str(&format!("{}\n", r.join(",")));
    }
    let file = batch.tmp.write("mixed.csv", &csv);
    let summary = batch.json(&["import", file.to_str().unwrap(), "--sequence", "outreach", "--now", later]);
    assert_eq!(
        (&summary["enrolled"], &summary["new_leads"], &summary["already_enrolled"], &summary["suppressed"]),
        (&json!(4), &json!(3), &json!(2), &json!(2)),
        "{summary}"
    );

    let single = prepared();
    for [email, first_name, company, timezone] in rows {
        let mut args = vec!["enroll", email, "--sequence", "outreach", "--now", later];
        for (flag, value) in [("--first-name", first_name), ("--company", company), ("--timezone", timezone)] {
            if !value.is_empty() {
                args.extend([flag, value]);
            }
        }
        single.run(&args);
    }

    // Everything about every lead, without the ids (allocated differently).
    let state = |p: &Project| {
        let mut leads = Vec::new();
        for email in ["new1@one.example", "returning@two.example", "new2@three.example", "live@two.example", "new3@four.example"] {
            let mut lead = p.json(&["show", email]);
            for e in lead["enrollments"].as_array_mut().unwrap() {
                e.as_object_mut().unwrap().remove("id");
            }
            leads.push(lead);
        }
        (leads, p.sql("SELECT count(*) FROM leads; SELECT count(*) FROM enrollments; SELECT count(*) FROM touchpoints;"))
    };
    assert_eq!(state(&batch), state(&single));
}

#[test]
fn import_of_a_clean_file_exits_0_and_handles_bom_and_headers() {
    let p = Project::file();
    let file = p.tmp.write("clean.csv", "\u{feff}Email,First Name,Company\nx@one.example,X,One\ny@two.example,Y,Two\n");
    let out = p.run(&["import", file.to_str().unwrap(), "--sequence", "outreach"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(p.sql("SELECT first_name FROM leads ORDER BY id"), "X\nY");
    let empty = p.tmp.write("empty.csv", "");
    assert_eq!(p.run(&["import", empty.to_str().unwrap(), "--sequence", "outreach"]).status.code(), Some(1));
    let noemail = p.tmp.write("noemail.csv", "name\nx\n");
    let out = p.run(&["import", noemail.to_str().unwrap(), "--sequence", "outreach"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no `email` column"));
}

#[test]
fn manual_control_is_logged() {
    let p = Project::file();
    p.enroll("eve@acme.example", "UTC", MON_10_UTC);
    p.ok(&["pause", "eve@acme.example", "--now", "2026-11-30T10:01:00Z"]);
    assert_eq!(p.run(&["pause", "eve@acme.example"]).status.code(), Some(3), "already paused");
    p.ok(&["resume", "eve@acme.example", "--now", "2026-11-30T10:02:00Z"]);
    p.ok(&["stage", "eve@acme.example", "qualification", "--now", "2026-11-30T10:03:00Z"]);
    assert_eq!(p.run(&["stage", "eve@acme.example", "nowhere"]).status.code(), Some(2));
    p.ok(&["note", "eve@acme.example", "Called, left a voicemail", "--kind", "call", "--now", "2026-11-30T10:04:00Z"]);
    p.ok(&["unenroll", "eve@acme.example", "--now", "2026-11-30T10:05:00Z"]);
    let show = p.json(&["show", "eve@acme.example"]);
    let kinds: Vec<&str> = show["touchpoints"].as_array().unwrap().iter().map(|t| t["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["enrolled", "stage_change", "paused", "resumed", "stage_change", "call", "unenrolled"]);
    assert_eq!(show["stage"], "qualification");
    assert_eq!(show["enrollments"][0]["state"], "completed");

    // Won or lost: the sequence stops.
    p.enroll("fay@acme.example", "UTC", MON_10_UTC);
    p.ok(&["stage", "fay@acme.example", "won", "--now", "2026-11-30T11:00:00Z"]);
    let fay = p.json(&["show", "fay@acme.example"]);
    assert_eq!(fay["stage"], "won");
    assert_eq!(fay["enrollments"][0]["state"], "completed");
}

#[test]
fn check_passes_on_the_shipped_config() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = crate::support::cadence().arg("--config").arg(root.join("config/cadence.toml")).args(["check", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["errors"], 0, "{v:#}");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn check_reports_every_planted_mistake_with_its_file() {
    let p = Project::file();
    p.tmp.write_sequence(
        "broken",
        r#"stage = "nowhere"
max_touches = 3
send_window = { days = "Mon-Fri", start = "17:00", end = "09:00" }
colour = "blue"

[[steps]]
wait = "3 fortnights"
template = "missing-template"
"#,
    );
    p.tmp.write_template("bad-syntax", "---\nsubject: \"x\"\n---\nHello {{#if first_name}}\n");
    p.tmp.write_template("needs-field", "---\nsubject: \"x\"\n---\nYour plan: {{fields.plan}}\n");
    let cfg = std::fs::read_to_string(p.tmp.config_path()).unwrap();
    p.tmp.write_config(&cfg.replace("timezone = \"UTC\"", "timezone = \"Mars/Olympus\"\nfrobnicate = true"));
    let mut cfg = std::fs::read_to_string(p.tmp.config_path()).unwrap();
    cfg.push_str("\n[hygiene]\nschedule = \"every tuesday\"\n");
    p.tmp.write_config(&cfg);
    let out = p.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let report = text(&out.stdout);
    for (file, needle) in [
        ("broken.toml", "nowhere"),
        ("broken.toml", "colour"),
        ("broken.toml", "3 fortnights"),
        ("broken.toml", "missing-template"),
        ("broken.toml", "send_window"),
        ("cadence.toml", "Mars/Olympus"),
        ("cadence.toml", "frobnicate"),
        ("cadence.toml", "schedule"),
        ("bad-syntax.hbs", "bad-syntax"),
        ("needs-field.hbs", "fields.plan"),
    ] {
        assert!(report.lines().any(|l| l.contains(file) && l.contains(needle)), "no line naming {file} and {needle:?}:\n{report}");
    }
}
