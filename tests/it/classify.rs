//! The inbound classifier against golden files we wrote and against real
//! mail from the Sisimai corpus that nobody here wrote.

use std::path::{Path, PathBuf};

use cadence::inbox::classify::{classify, Kind};
use chrono::NaiveDate;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inbound")
}

#[derive(serde::Deserialize)]
struct Expected {
    kind: Kind,
    lead: Option<String>,
    #[serde(default)]
    return_date: Option<NaiveDate>,
    #[serde(default)]
    refers_to_contains: Vec<String>,
    #[serde(default)]
    matched_contains: Vec<String>,
    #[serde(default)]
    snippet: Option<String>,
}

#[test]
fn classify_golden_files() {
    let mut emls: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures/inbound exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    emls.sort();
    assert!(!emls.is_empty(), "no golden files found in {:?}", fixtures_dir());

    let mut failures = Vec::new();
    for eml in &emls {
        let name = eml.file_name().unwrap().to_string_lossy().to_string();
        let json_path = eml.with_extension("expected.json");
        let expected: Expected =
            serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap_or_else(|e| panic!("{name}: missing {json_path:?}: {e}")))
                .unwrap_or_else(|e| panic!("{name}: bad expected json: {e}"));
        let raw = std::fs::read(eml).unwrap();
        let v = classify(&raw);
        let mut problems = Vec::new();
        if v.kind != expected.kind {
            problems.push(format!("kind {:?}, expected {:?}", v.kind, expected.kind));
        }
        if v.lead != expected.lead {
            problems.push(format!("lead {:?}, expected {:?}", v.lead, expected.lead));
        }
        if v.return_date != expected.return_date {
            problems.push(format!("return_date {:?}, expected {:?}", v.return_date, expected.return_date));
        }
        for id in &expected.refers_to_contains {
            if !v.refers_to.contains(id) {
                problems.push(format!("refers_to {:?} lacks {id}", v.refers_to));
            }
        }
        for m in &expected.matched_contains {
            if !v.matched.iter().any(|x| x.contains(m.as_str())) {
                problems.push(format!("matched {:?} lacks {m:?}", v.matched));
            }
        }
        if let Some(s) = &expected.snippet {
            if &v.snippet != s {
                problems.push(format!("snippet {:?}, expected {s:?}", v.snippet));
            }
        }
        if v.refers_to.iter().any(|id| id.starts_with('<') || id.ends_with('>')) {
            problems.push(format!("refers_to keeps brackets: {:?}", v.refers_to));
        }
        let unique: std::collections::HashSet<_> = v.refers_to.iter().collect();
        if unique.len() != v.refers_to.len() {
            problems.push(format!("refers_to has duplicates: {:?}", v.refers_to));
        }
        if v.snippet.chars().count() > 200 {
            problems.push("snippet longer than 200 characters".into());
        }
        if !problems.is_empty() {
            failures.push(format!("{name}:\n  {}\n{}", problems.join("\n  "), v.to_text()));
        }
    }
    println!("golden files: {} checked, {} failed", emls.len(), failures.len());
    assert!(failures.is_empty(), "golden file failures:\n{}", failures.join("\n"));
}

/// Files whose name says bounce/complaint but whose content is something
/// else, each verified by reading the message. `None` means "anything but
/// bounce or complaint" (a delay warning or a delivery notice).
const CORPUS_EXCEPTIONS: &[(&str, Option<Kind>)] = &[
    // Delay warnings: `Action: delayed` in the delivery-status part.
    ("lhost-messagingserver-07.eml", None),
    ("lhost-opensmtpd-06.eml", None),
    ("lhost-opensmtpd-12.eml", None),
    ("lhost-opensmtpd-13.eml", None),
    ("lhost-opensmtpd-15.eml", None),
    ("lhost-opensmtpd-16.eml", None),
    ("lhost-outlook-06.eml", None),
    ("lhost-sendmail-29.eml", None),
    ("lhost-sendmail-55.eml", None),
    ("rfc3464-07.eml", None),
    ("rfc3464-09.eml", None),
    ("rfc3464-34.eml", None),
    ("rfc3464-55.eml", None),
    ("rhost-gsuite-06.eml", None),
    ("rhost-outlook-06.eml", None),
    // Delay warnings in prose: "has not yet been delivered", "THIS IS A
    // WARNING MESSAGE ONLY", "Message will be retried", "only a temporary
    // failure report".
    ("lhost-exim-38.eml", None),
    ("lhost-exim-41.eml", None),
    ("lhost-gmail-06.eml", None),
    ("lhost-gmail-08.eml", None),
    ("lhost-gmail-09.eml", None),
    ("lhost-gmail-17.eml", None),
    ("lhost-opensmtpd-04.eml", None),
    ("lhost-zoho-04.eml", None),
    // Subject "Warning--Could not send mail for past 8.5 hours": the
    // sendmail-style delay warning wording, no DSN part to say otherwise.
    ("lhost-x1-04.eml", None),
    // Amazon SES notifications of successful delivery (notificationType
    // Delivery), and one of a complaint.
    ("lhost-amazonses-12.eml", None),
    ("lhost-amazonses-13.eml", None),
    ("lhost-amazonses-11.eml", Some(Kind::Complaint)),
    // `Action: deliverable`: an address verification report, not a failure.
    ("rfc3464-28.eml", None),
    // Apple Mail's one-click unsubscribe ("Subject: unsubscribe",
    // X-Apple-Unsubscribe): Sisimai files it under feedback, we call it what
    // it is.
    ("arf-26.eml", Some(Kind::Unsubscribe)),
];

/// What the file name (and the exception list) says the message is.
/// `Err(())` means "anything but bounce or complaint".
fn corpus_expectation(name: &str) -> Result<Kind, ()> {
    if let Some((_, k)) = CORPUS_EXCEPTIONS.iter().find(|(n, _)| *n == name) {
        return k.ok_or(());
    }
    if name.starts_with("rfc3834-") {
        Ok(Kind::AutoReply)
    } else if name.starts_with("arf-") {
        Ok(Kind::Complaint)
    } else if name.starts_with("lhost-") || name.starts_with("rhost-") || name.starts_with("rfc3464-") {
        Ok(Kind::Bounce)
    } else {
        Err(())
    }
}

#[test]
fn classify_sisimai_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/sisimai");
    if !root.is_dir() {
        // CI always has the corpus; a developer checkout may not.
        println!("SKIPPED: Sisimai corpus absent at {} (CI always has it)", root.display());
        return;
    }
    let mut cases: Vec<(PathBuf, Result<Kind, ()>)> = Vec::new();
    for (dir, is_not) in [("maildir/bsd", false), ("maildir/not", true)] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "eml") {
                continue;
            }
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let expected = if is_not { Err(()) } else { corpus_expectation(&name) };
            cases.push((p, expected));
        }
    }
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!cases.is_empty(), "corpus directory present but empty");

    let mut misses = Vec::new();
    let mut bounce_leads = (0, 0);
    for (path, expected) in &cases {
        let raw = std::fs::read(path).unwrap();
        let v = classify(&raw);
        let ok = match expected {
            Ok(k) => v.kind == *k,
            Err(()) => !matches!(v.kind, Kind::Bounce | Kind::Complaint),
        };
        if v.kind == Kind::Bounce {
            bounce_leads.1 += 1;
            if v.lead.is_some() {
                bounce_leads.0 += 1;
            }
        }
        if !ok {
            misses.push(format!(
                "{}: got {} (matched {:?}), expected {}",
                path.strip_prefix(&root).unwrap_or(path).display(),
                v.kind,
                v.matched,
                expected.map_or("not bounce/complaint".to_string(), |k| k.to_string()),
            ));
        }
    }
    let total = cases.len();
    let correct = total - misses.len();
    let pct = 100.0 * correct as f64 / total as f64;
    for m in &misses {
        println!("MISS {m}");
    }
    println!("Sisimai corpus: {correct}/{total} correct ({pct:.1}%); bounces with a lead: {}/{}", bounce_leads.0, bounce_leads.1);
    assert!(pct >= 95.0, "classifier below 95% on the corpus: {pct:.1}%");
}

proptest::proptest! {
    #[test]
    fn classify_never_panics_on_bytes(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
        let _ = classify(&raw);
    }

    #[test]
    fn classify_never_panics_on_mangled_fixtures(cut in 0usize..4096, junk in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
        for entry in std::fs::read_dir(fixtures_dir()).unwrap().flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|x| x == "eml") {
                let mut raw = std::fs::read(&p).unwrap();
                let at = cut.min(raw.len());
                raw.splice(at..at, junk.iter().copied());
                let v = classify(&raw);
                proptest::prop_assert!(v.snippet.chars().count() <= 200);
            }
        }
    }
}
