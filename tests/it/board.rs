//! The pipeline board end to end: a real `cadence run`, real Dovecot and SMTP
//! servers, and Debian's Chromium driven by Playwright (`tests/web/`), plus
//! plain HTTP tests of sign-in, rep isolation and CSRF.
//!
//! The browser script and this file talk over the script's stdin and stdout:
//! the script prints one JSON event per line after each step, and for the
//! steps this side must check or act on (the database after a drag, the
//! reply appended over IMAP) it waits for `go` before going on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, COOKIE, SET_COOKIE};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::fixtures::{Daemon, Opts, Project};
use crate::support::dovecot::Dovecot;
use crate::support::smtp::{SmtpOptions, SmtpServer};
use crate::support::wait_until_blocking;
use crate::support::SETTLE;

const NIK: &str = "nik-board-token-41c7";
const ANA: &str = "ana-board-token-9e02";
const MANAGER: &str = "manager-board-token-5d88";
const IMAP_PW: &str = "imap-pw-b0a4";

/// A sequence whose window is always open, so the daemon on the real clock
/// sends step 1 at once; a reply moves the lead to `connecting`.
const DEMO: &str = "stage = \"qualification\"\nreply_stage = \"connecting\"\n\
send_window = { days = \"Mon-Sun\", start = \"00:00\", end = \"24:00\" }\n\n\
[[steps]]\nwait = \"0s\"\ntemplate = \"intro\"\n\n[[steps]]\nwait = \"2 days\"\ntemplate = \"bump\"\n\n\
[[steps]]\nwait = \"3 days\"\ntemplate = \"value\"\n";

struct Board {
    // Dropped in this order: the daemon before its project folder.
    daemon: Option<Daemon>,
    p: Project,
    base: String,
    http: Client,
}

impl Board {
    /// The standard project plus a second rep (`ana`, file transport), API
    /// tokens for both and the manager, and the `demo` sequence; `cadence
    /// run` started and its port read from its log.
    fn start(opts: Opts) -> Board {
        let p = Project::new(Opts { extra_daemon: "manager_token_env = \"CADENCE_MANAGER_TOKEN\"".into(), ..opts });
        let path = p.tmp.config_path();
        let text = std::fs::read_to_string(&path).expect("read config");
        let sig = "signature = \"Nik\\nVendor Co.\"\n";
        assert!(text.contains(sig), "fixture config changed:\n{text}");
        let text = text.replacen(sig, &format!("{sig}api_token_env = \"CADENCE_TOKEN_NIK\"\n"), 1)
            + "\n[[reps]]\nid = \"ana\"\nname = \"Ana Rep\"\nemail = \"ana@vendor.test\"\ndaily_limit = 200\ntimezone = \"UTC\"\n\
               signature = \"Ana\"\napi_token_env = \"CADENCE_TOKEN_ANA\"\n  [reps.smtp]\n  transport = \"file\"\n  dir = \"outbox\"\n";
        std::fs::write(&path, text).expect("write config");
        p.tmp.write_sequence("demo", DEMO);
        let daemon = p.spawn_run(&[("CADENCE_TOKEN_NIK", NIK), ("CADENCE_TOKEN_ANA", ANA), ("CADENCE_MANAGER_TOKEN", MANAGER)]);
        let addr = daemon.http_addr();
        let http = Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        Board { daemon: Some(daemon), p, base: format!("http://{addr}"), http }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn lead_id(&self, email: &str) -> i64 {
        self.p.sql(&format!("SELECT id FROM leads WHERE email = '{email}'")).parse().expect("lead id")
    }

    fn stage_of(&self, email: &str) -> String {
        self.p.sql(&format!("SELECT stage FROM leads WHERE email = '{email}'"))
    }

    fn state_of(&self, email: &str) -> String {
        self.p.sql(&format!(
            "SELECT e.state FROM enrollments e JOIN leads l ON l.id = e.lead_id WHERE l.email = '{email}' ORDER BY e.id DESC LIMIT 1"
        ))
    }

    /// Open leads per stage and their total value, from the database.
    fn db_columns(&self) -> BTreeMap<String, (u64, f64)> {
        let rows = self.p.sql("SELECT stage, count(*), COALESCE(sum(value), 0) FROM leads WHERE status = 'active' GROUP BY stage");
        rows.lines()
            .map(|l| {
                let mut f = l.split('|');
                let stage = f.next().unwrap().to_string();
                let n = f.next().unwrap().parse().unwrap();
                let v = f.next().unwrap().parse().unwrap();
                (stage, (n, v))
            })
            .collect()
    }

    /// Signs in through the form, as a browser would: the sign-in page's
    /// nonce cookie and hidden CSRF field, then the session cookie.
    async fn sign_in(&self, token: &str) -> Session {
        let resp = self.http.get(self.url("/")).send().await.expect("GET /");
        assert_eq!(resp.status(), StatusCode::OK);
        let login = cookie_pair(resp.headers(), "cadence_login").expect("the sign-in page sets its nonce cookie");
        let page = resp.text().await.unwrap();
        assert!(page.contains("name=\"token\""), "{page}");
        let csrf = hidden(&page, "csrf");
        let resp = self
            .http
            .post(self.url("/session"))
            .header(COOKIE, &login)
            .header("origin", &self.base)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}&csrf={csrf}"))
            .send()
            .await
            .expect("POST /session");
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "sign in with {token}");
        let set = set_cookies(resp.headers());
        let session = set.iter().find(|c| c.starts_with("cadence_session=")).expect("session cookie").clone();
        let cookie = session.split(';').next().unwrap().to_string();
        let page = self.http.get(self.url("/")).header(COOKIE, &cookie).send().await.unwrap().text().await.unwrap();
        let csrf = meta(&page, "csrf-token");
        Session { cookie, csrf, set_cookie: session, page }
    }

    /// A board POST with the session cookie, the given CSRF header (if any)
    /// and `Origin`.
    async fn post(&self, path: &str, s: &Session, csrf: Option<&str>, origin: Option<&str>, body: Value) -> (StatusCode, Value) {
        let mut req = self.http.post(self.url(path)).header(COOKIE, &s.cookie).json(&body);
        if let Some(c) = csrf {
            req = req.header("x-csrf-token", c);
        }
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let resp = req.send().await.expect("POST");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn get(&self, path: &str, s: &Session) -> (StatusCode, String) {
        let resp = self.http.get(self.url(path)).header(COOKIE, &s.cookie).send().await.expect("GET");
        (resp.status(), resp.text().await.unwrap())
    }

    fn stop(mut self) {
        let status = self.daemon.take().expect("daemon").terminate(SETTLE);
        assert!(status.success(), "cadence run exited with {status:?} after SIGTERM");
    }
}

struct Session {
    cookie: String,
    csrf: String,
    set_cookie: String,
    page: String,
}

fn set_cookies(h: &HeaderMap) -> Vec<String> {
    h.get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_string()).collect()
}

fn cookie_pair(h: &HeaderMap, name: &str) -> Option<String> {
    set_cookies(h).into_iter().find(|c| c.starts_with(&format!("{name}="))).map(|c| c.split(';').next().unwrap().to_string())
}

fn attr_after(page: &str, marker: &str) -> String {
    let at = page.find(marker).unwrap_or_else(|| panic!("{marker} not in page:\n{page}"));
    let rest = &page[at + marker.len()..];
    let start = rest.find("content=\"").map(|i| i + 9).filter(|i| *i < 80).or_else(|| rest.find("value=\"").map(|i| i + 7)).expect("value");
    rest[start..start + rest[start..].find('"').unwrap()].to_string()
}

fn hidden(page: &str, name: &str) -> String {
    attr_after(page, &format!("type=\"hidden\" name=\"{name}\""))
}

fn meta(page: &str, name: &str) -> String {
    attr_after(page, &format!("<meta name=\"{name}\""))
}

/// The `data-id` of every card on a page.
fn card_ids(page: &str) -> Vec<i64> {
    page.split("<li class=\"card\"")
        .skip(1)
        .map(|c| {
            let at = c.find("data-id=\"").unwrap() + 9;
            c[at..at + c[at..].find('"').unwrap()].parse().unwrap()
        })
        .collect()
}

/// `data-count` of each column, by stage.
fn column_counts(page: &str) -> BTreeMap<String, u64> {
    page.split("<section class=\"column")
        .skip(1)
        .map(|c| {
            let s = c.find("data-stage=\"").unwrap() + 12;
            let stage = c[s..s + c[s..].find('"').unwrap()].to_string();
            let n = c.find("data-count=\"").unwrap() + 12;
            (stage, c[n..n + c[n..].find('"').unwrap()].parse().unwrap())
        })
        .collect()
}

/// Where test artifacts go: `target/artifacts/`.
fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

/// A reply to `in_reply_to`, dated `date` (the daemon runs on the real
/// clock: the intro's own Date keeps the timeline in order).
fn reply(from: &str, to: &str, in_reply_to: &str, date: &str, body: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: Re: Quick question\r\nDate: {date}\r\n\
         Message-ID: <board-reply-{}@lead.example>\r\nIn-Reply-To: {in_reply_to}\r\nReferences: {in_reply_to}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n",
        std::process::id()
    )
    .into_bytes()
}

/// The demo pipeline: (first, last, company, value, rep, stage).
const LEADS: &[(&str, &str, &str, f64, &str, &str)] = &[
    ("Ana", "Lee", "Acme Corp", 12_000.0, "nik", "prospecting"),
    ("Bo", "Chen", "Globex", 8_500.0, "nik", "prospecting"),
    ("Lu", "Mendes", "Pied Piper", 7_400.0, "ana", "prospecting"),
    ("Cy", "Park", "Initech", 23_000.0, "nik", "qualification"),
    ("Dee", "Ruiz", "Umbrella Health", 4_200.0, "ana", "qualification"),
    ("Eli", "Novak", "Hooli", 15_000.0, "nik", "qualification"),
    ("Max", "Olsen", "Dunder Mifflin", 2_600.0, "nik", "qualification"),
    ("Fay", "Wong", "Stark Logistics", 41_000.0, "ana", "connecting"),
    ("Gus", "Ito", "Wayne Freight", 9_900.0, "nik", "connecting"),
    ("Hana", "Kim", "Soylent Foods", 6_100.0, "ana", "closing"),
    ("Ivo", "Petrov", "Tyrell Systems", 52_000.0, "nik", "closing"),
    ("Jo", "Adams", "Cyberdyne", 18_000.0, "ana", "won"),
    ("Kai", "Berg", "Vandelay Imports", 3_000.0, "nik", "lost"),
];

fn email_of(first: &str, company: &str) -> String {
    let domain: String = company.to_lowercase().chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!("{}@{domain}.example", first.to_lowercase())
}

/// Runs the browser script, answering its events with `check`, which
/// returns once this side has checked (or done) what the event asks.
struct Browser {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    stdin: tokio::process::ChildStdin,
}

const STEP_LIMIT: Duration = Duration::from_secs(90);

impl Browser {
    fn start(env: &[(&str, String)]) -> Browser {
        let web = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/web");
        assert!(
            web.join("node_modules/playwright-core").is_dir(),
            "playwright-core is not installed: run `npm ci --prefix tests/web` (scripts/test does)"
        );
        let chromium = std::env::var("CADENCE_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        assert!(std::path::Path::new(&chromium).exists(), "{chromium} not found: install Debian's `chromium` (scripts/test does)");
        let mut cmd = tokio::process::Command::new("node");
        cmd.arg(web.join("board.spec.mjs"))
            .current_dir(&web)
            .env("CHROMIUM", chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("run node (is Node.js installed?)");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let stdin = child.stdin.take().expect("stdin");
        Browser { child, lines, stdin }
    }

    /// The next event the script reports.
    async fn next(&mut self) -> Value {
        loop {
            let line = tokio::time::timeout(STEP_LIMIT, self.lines.next_line())
                .await
                .expect("the browser script took too long for one step")
                .expect("read the browser script's output");
            let Some(line) = line else {
                let status = self.child.wait().await.expect("wait for node");
                panic!("the browser script ended early ({status}); see its output above");
            };
            // Anything that is not an event is the script's own log.
            match serde_json::from_str::<Value>(&line) {
                Ok(v) if v.get("event").is_some() => return v,
                _ => eprintln!("browser: {line}"),
            }
        }
    }

    async fn expect(&mut self, name: &str) -> Value {
        let v = self.next().await;
        assert_eq!(v["event"], name, "unexpected event from the browser script: {v}");
        v
    }

    async fn go(&mut self) {
        self.stdin.write_all(b"go\n").await.expect("answer the browser script");
        self.stdin.flush().await.expect("flush");
    }

    async fn finish(mut self) {
        let status = tokio::time::timeout(STEP_LIMIT, self.child.wait()).await.expect("node to exit").expect("wait");
        assert!(status.success(), "the browser script failed: {status}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_board_in_chromium_moves_pauses_and_follows_replies_live() {
    let smtp = SmtpServer::start(SmtpOptions::default());
    let imap = Dovecot::start(&[("nik", IMAP_PW)]).await;
    let b = Board::start(Opts { smtp_port: Some(smtp.port()), imap: Some((imap.port(), IMAP_PW.into())), ..Opts::default() });

    for (first, last, company, value, rep, stage) in LEADS {
        let email = email_of(first, company);
        let value = value.to_string();
        b.p.ok(&[
            "enroll",
            &email,
            "--sequence",
            "demo",
            "--rep",
            rep,
            "--first-name",
            first,
            "--last-name",
            last,
            "--company",
            company,
            "--value",
            &value,
            "--timezone",
            "UTC",
        ]);
        if *stage != "qualification" {
            b.p.ok(&["stage", &email, stage]);
        }
    }
    b.p.ok(&["note", &email_of("Ivo", "Tyrell Systems"), "Budget approved; legal review next week.", "--kind", "call"]);
    // The daemon sends every step 1 (nik's over SMTP, ana's to files) before the browser looks.
    // A lead moved to won or lost stops its sequence; the daemon, already
    // running, may have sent its step 1 in the moment between `enroll` and
    // `stage` (seen on a loaded machine), so only the open leads are counted.
    let open = |l: &&(&str, &str, &str, f64, &str, &str)| l.5 != "won" && l.5 != "lost";
    wait_until_blocking("every intro sent", Duration::from_secs(60), || {
        b.p.sql(
            "SELECT count(*) FROM touchpoints t JOIN leads l ON l.id = t.lead_id \
             WHERE t.kind = 'email_sent' AND l.stage NOT IN ('won', 'lost')",
        ) == LEADS.iter().filter(open).count().to_string()
    });
    // Recorded as sent once the server took it.
    let sent = smtp.messages();
    let nik_leads = LEADS.iter().filter(open).filter(|l| l.4 == "nik").count();
    assert!(sent.len() >= nik_leads, "{} of {nik_leads} intros over SMTP", sent.len());

    let drag = email_of("Ana", "Acme Corp"); // prospecting -> qualification, by mouse
    let keyboard = email_of("Bo", "Globex"); // prospecting -> won, from the card menu
    let pause = email_of("Eli", "Hooli");
    let replier = email_of("Cy", "Initech"); // qualification -> connecting, by replying
    let ana_ids: Vec<String> = LEADS.iter().filter(|l| l.4 == "ana").map(|l| b.lead_id(&email_of(l.0, l.2)).to_string()).collect();
    let shot = artifacts().join("board.png");
    let mut browser = Browser::start(&[
        ("BASE_URL", b.base.clone()),
        ("MANAGER_TOKEN", MANAGER.into()),
        ("REP_TOKEN", NIK.into()),
        ("OTHER_REP_IDS", ana_ids.join(",")),
        ("DRAG_ID", b.lead_id(&drag).to_string()),
        ("KEYBOARD_ID", b.lead_id(&keyboard).to_string()),
        ("PAUSE_ID", b.lead_id(&pause).to_string()),
        ("REPLY_ID", b.lead_id(&replier).to_string()),
        ("SCREENSHOT", shot.display().to_string()),
        ("TIMELINE_SCREENSHOT", artifacts().join("board-timeline.png").display().to_string()),
    ]);

    // Signed in: the session cookie is HttpOnly and SameSite=Strict.
    let v = browser.expect("signed-in").await;
    assert_eq!(v["cookie"]["httpOnly"], true, "{v}");
    assert_eq!(v["cookie"]["sameSite"], "Strict", "{v}");
    assert_eq!(v["scriptSeesCookie"], false, "{v}");
    browser.go().await;

    // Columns: every stage plus won and lost, counts and totals as in the database.
    let v = browser.expect("columns").await;
    let shown: Vec<&str> = v["stages"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert_eq!(shown, ["prospecting", "qualification", "connecting", "closing", "won", "lost"]);
    let db = b.db_columns();
    for stage in &shown {
        let (n, total) = db.get(*stage).copied().unwrap_or((0, 0.0));
        let col = &v["columns"][stage];
        assert_eq!(col["count"], n, "{stage}: {v}");
        assert_eq!(col["cards"], n, "{stage}: {v}");
        assert_eq!(col["total"].as_f64().unwrap(), total, "{stage}: {v}");
    }
    assert_eq!(v["flags"].as_str().map(|s| !s.is_empty()), Some(true), "the red-flag banner is shown: {v}");
    browser.go().await;

    // Dragged to the next column: the stage changed through `cadence stage`'s code.
    let v = browser.expect("dragged").await;
    assert_eq!(v["to"], "qualification");
    assert_eq!(b.stage_of(&drag), "qualification");
    let detail = b.p.sql(&format!(
        "SELECT detail FROM touchpoints t JOIN leads l ON l.id = t.lead_id WHERE l.email = '{drag}' AND t.kind = 'stage_change' ORDER BY t.id DESC LIMIT 1"
    ));
    assert_eq!(detail, "prospecting -> qualification");
    browser.go().await;

    // The timeline shows the move.
    let v = browser.expect("timeline").await;
    let kinds: Vec<&str> = v["kinds"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    for k in ["stage_change", "email_sent", "enrolled"] {
        assert!(kinds.contains(&k), "{k} missing from the timeline: {v}");
    }
    assert_eq!(kinds[0], "stage_change", "newest first: {v}");
    assert!(v["text"].as_str().unwrap().contains("prospecting -> qualification"), "{v}");
    assert_eq!(
        kinds.len().to_string(),
        b.p.sql(&format!("SELECT count(*) FROM touchpoints t JOIN leads l ON l.id = t.lead_id WHERE l.email = '{drag}'")),
        "every touchpoint is listed: {v}"
    );
    browser.go().await;

    // Moved from the card's menu with the keyboard alone.
    let v = browser.expect("keyboard-moved").await;
    assert_eq!(v["to"], "won");
    assert_eq!(b.stage_of(&keyboard), "won");
    browser.go().await;

    // Paused from the card's menu.
    browser.expect("paused").await;
    assert_eq!(b.state_of(&pause), "paused");
    browser.go().await;

    // A reply through the real IMAP server moves the card without a reload.
    browser.expect("ready-for-reply").await;
    let intro = sent.iter().find(|m| m.rcpt_to[0] == replier).expect("intro to the replier");
    let mid = intro.header("Message-ID").unwrap().trim().to_string();
    let date = intro.header("Date").expect("Date").trim().to_string();
    imap.append("nik", "INBOX", &reply(&replier, "nik@vendor.test", &mid, &date, "Yes, let's talk on Tuesday.")).await;
    browser.go().await;
    let v = browser.expect("reply-moved").await;
    assert_eq!(v["reloaded"], false, "{v}");
    assert_eq!(b.stage_of(&replier), "connecting");
    assert_eq!(b.state_of(&replier), "replied");
    browser.go().await;

    // A rep sees only its own cards.
    let v = browser.expect("rep-view").await;
    assert_eq!(v["otherRepCards"], 0, "{v}");
    assert!(v["ownCards"].as_u64().unwrap() > 0, "{v}");
    browser.go().await;

    browser.expect("done").await;
    browser.finish().await;
    let png = std::fs::read(&shot).expect("the screenshot was saved");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
    b.stop();
}

#[tokio::test]
async fn sign_in_sets_a_strict_http_only_cookie_and_reps_see_only_their_own_cards() {
    let b = Board::start(Opts::default());
    for (email, rep, first) in [
        ("ana@acme.example", "nik", "Ana"),
        ("bo@globex.example", "ana", "Bo"),
        ("cy@initech.example", "ana", "<img src=x onerror=alert(1)>"),
    ] {
        b.p.ok(&["enroll", email, "--sequence", "outreach", "--rep", rep, "--first-name", first, "--value", "1000"]);
    }
    let nik_lead = b.lead_id("ana@acme.example");
    let ana_lead = b.lead_id("bo@globex.example");

    // Signed out: the sign-in page, and the board's data answers 401.
    let resp = b.http.get(b.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let csp = resp.headers().get("content-security-policy").unwrap().to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!resp.text().await.unwrap().contains("data-id="), "no cards before signing in");
    for path in ["/board/live", "/board/stamp", &format!("/board/leads/{nik_lead}")] {
        let s = b.http.get(b.url(path)).send().await.unwrap().status();
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
    }
    // A wrong token is refused and sets no session.
    let resp = b.http.get(b.url("/")).send().await.unwrap();
    let login = cookie_pair(resp.headers(), "cadence_login").unwrap();
    let csrf = hidden(&resp.text().await.unwrap(), "csrf");
    let resp = b
        .http
        .post(b.url("/session"))
        .header(COOKIE, &login)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token=not-a-token&csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(cookie_pair(resp.headers(), "cadence_session").is_none());
    // The sign-in form itself needs its CSRF token.
    let resp = b
        .http
        .post(b.url("/session"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={NIK}&csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "no nonce cookie");
    assert!(cookie_pair(resp.headers(), "cadence_session").is_none());

    let nik = b.sign_in(NIK).await;
    let attrs: Vec<&str> = nik.set_cookie.split(';').map(str::trim).collect();
    assert!(attrs.contains(&"HttpOnly") && attrs.contains(&"SameSite=Strict") && attrs.contains(&"Path=/"), "{}", nik.set_cookie);
    assert!(!nik.set_cookie.contains(NIK), "the raw token is encoded in the cookie: {}", nik.set_cookie);

    // Nik's board holds Nik's lead only, whatever the filter asks for.
    assert_eq!(card_ids(&nik.page), vec![nik_lead], "{}", nik.page);
    let (_, other) = b.get("/?rep=ana", &nik).await;
    assert_eq!(card_ids(&other), vec![nik_lead]);
    let (_, fragment) = b.get("/board/live?rep=ana", &nik).await;
    assert_eq!(card_ids(&fragment), vec![nik_lead]);
    // Another rep's lead answers like a missing one, and cannot be changed.
    let (s, _) = b.get(&format!("/board/leads/{ana_lead}"), &nik).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, why) = b.get(&format!("/board/why?ids={ana_lead},{nik_lead}"), &nik).await;
    assert_eq!(s, StatusCode::OK);
    let why: Value = serde_json::from_str(&why).unwrap();
    assert!(why.get(ana_lead.to_string()).is_none() && why.get(nik_lead.to_string()).is_some(), "{why}");
    for (path, body) in [("stage", json!({"stage": "won"})), ("pause", json!({}))] {
        let (s, v) = b.post(&format!("/board/leads/{ana_lead}/{path}"), &nik, Some(&nik.csrf), None, body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {v}");
    }
    assert_eq!(b.stage_of("bo@globex.example"), "connecting");
    assert_eq!(b.state_of("bo@globex.example"), "active");

    // The manager sees everyone's, filters by rep, and lead data is escaped.
    let manager = b.sign_in(MANAGER).await;
    let mut all = card_ids(&manager.page);
    all.sort();
    let mut expected = vec![nik_lead, ana_lead, b.lead_id("cy@initech.example")];
    expected.sort();
    assert_eq!(all, expected);
    assert!(manager.page.contains("&lt;img src=x onerror=alert(1)&gt;"), "escaped");
    assert!(!manager.page.contains("<img src=x"), "never raw");
    let (_, filtered) = b.get("/?rep=ana", &manager).await;
    assert_eq!(card_ids(&filtered).len(), 2);
    let (s, timeline) = b.get(&format!("/board/leads/{nik_lead}"), &manager).await;
    assert_eq!(s, StatusCode::OK);
    assert!(timeline.contains("data-kind=\"enrolled\""), "{timeline}");
    b.stop();
}

#[tokio::test]
async fn state_changing_requests_need_the_csrf_token_and_a_same_site_origin() {
    let b = Board::start(Opts::default());
    b.p.ok(&["enroll", "ana@acme.example", "--sequence", "outreach", "--rep", "nik"]);
    let id = b.lead_id("ana@acme.example");
    let nik = b.sign_in(NIK).await;
    let ana = b.sign_in(ANA).await;
    let stage = format!("/board/leads/{id}/stage");
    let touches = || b.p.sql("SELECT count(*) FROM touchpoints");
    let before = touches();

    let refused = [
        (None, None, "no token"),
        (Some(""), None, "empty token"),
        (Some("bm90LXRoZS10b2tlbg"), None, "made-up token"),
        (Some(ana.csrf.as_str()), None, "another session's token"),
        (Some(nik.csrf.as_str()), Some("http://evil.example"), "right token, another site"),
        (Some(nik.csrf.as_str()), Some("null"), "right token, opaque origin"),
    ];
    for (csrf, origin, why) in refused {
        for (path, body) in [(stage.as_str(), json!({"stage": "won"})), (&*format!("/board/leads/{id}/pause"), json!({}))] {
            let (s, v) = b.post(path, &nik, csrf, origin, body).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{why} {path}: {v}");
            assert_eq!(v["error"], "forbidden", "{v}");
        }
    }
    // Nothing changed.
    assert_eq!(b.stage_of("ana@acme.example"), "connecting");
    assert_eq!(b.state_of("ana@acme.example"), "active");
    assert_eq!(touches(), before);
    // Signing out needs it too.
    let resp = b
        .http
        .post(b.url("/session/end"))
        .header(COOKIE, &nik.cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // With the token (and the page's own origin): done, and logged like `cadence stage`.
    let (s, v) = b.post(&stage, &nik, Some(&nik.csrf), Some(&b.base), json!({"stage": "closing"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["stage"].as_str(), v["previous_stage"].as_str()), (Some("closing"), Some("connecting")));
    assert_eq!(b.stage_of("ana@acme.example"), "closing");
    assert_eq!(
        b.p.sql(&format!(
            "SELECT rep || ' ' || detail FROM touchpoints WHERE lead_id = {id} AND kind = 'stage_change' ORDER BY id DESC LIMIT 1"
        )),
        "nik connecting -> closing"
    );
    let (s, v) = b.post(&stage, &nik, Some(&nik.csrf), None, json!({"stage": "negotiating"})).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("stage")), "{v}");
    let (s, v) = b.post(&format!("/board/leads/{id}/pause"), &nik, Some(&nik.csrf), None, json!({})).await;
    assert_eq!((s, v["state"].as_str()), (StatusCode::OK, Some("paused")), "{v}");
    let (s, _) = b.post(&format!("/board/leads/{id}/pause"), &nik, Some(&nik.csrf), None, json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "already paused");
    let (s, v) = b.post(&format!("/board/leads/{id}/resume"), &nik, Some(&nik.csrf), None, json!({})).await;
    assert_eq!((s, v["state"].as_str()), (StatusCode::OK, Some("active")), "{v}");
    assert_eq!(b.state_of("ana@acme.example"), "active");

    // The stamp the page polls changed with each of those.
    let (_, stamp) = b.get("/board/stamp", &nik).await;
    let stamp: Value = serde_json::from_str(&stamp).unwrap();
    let at = nik.page.find("data-stamp=\"").expect("the page carries its stamp") + 12;
    let page_stamp = &nik.page[at..at + nik.page[at..].find('"').unwrap()];
    assert!(!page_stamp.is_empty());
    assert_ne!(stamp["stamp"].as_str().unwrap(), page_stamp);

    // Signing out clears the cookie.
    let resp = b
        .http
        .post(b.url("/session/end"))
        .header(COOKIE, &nik.cookie)
        .header("origin", &b.base)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={}", nik.csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let cleared = set_cookies(resp.headers()).into_iter().find(|c| c.starts_with("cadence_session=")).unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    b.stop();
}

#[tokio::test]
async fn a_thousand_leads_render_in_one_page() {
    let b = Board::start(Opts::default());
    let mut csv = String::from("email,first_name,last_name,company,value\n");
    for i in 0..1000 {
        csv.push_str(&format!("lead{i}@co{i}.example,First{i},Last{i},Company {i},{}\n", 500 + i * 10));
    }
    let file = b.p.tmp.write("leads.csv", &csv);
    // Enrolled "in 2030": nothing falls due while the test runs.
    b.p.ok(&["import", file.to_str().unwrap(), "--sequence", "outreach", "--rep", "nik", "--now", "2030-01-07T10:00:00Z"]);
    b.p.sql(
        "UPDATE leads SET stage = CASE id % 6 WHEN 0 THEN 'prospecting' WHEN 1 THEN 'qualification' WHEN 2 THEN 'connecting' \
         WHEN 3 THEN 'closing' WHEN 4 THEN 'won' ELSE 'lost' END",
    );
    let manager = b.sign_in(MANAGER).await;
    let started = Instant::now();
    let (s, page) = b.get("/", &manager).await;
    let took = started.elapsed();
    assert_eq!(s, StatusCode::OK);
    assert_eq!(card_ids(&page).len(), 1000);
    let counts = column_counts(&page);
    let db: BTreeMap<String, u64> = b.db_columns().into_iter().map(|(k, (n, _))| (k, n)).collect();
    assert_eq!(counts, db);
    // A sanity bound on size, not a timing assertion: about 600 bytes a card.
    assert!(page.len() < 1_000_000, "{} bytes for 1,000 cards", page.len());
    eprintln!("board with 1,000 leads: {} bytes in {took:?} (debug build, loopback)", page.len());

    // In Chromium: it renders, and a drag still lands (timings are printed, not judged).
    let id: i64 = b.p.sql("SELECT min(id) FROM leads WHERE stage = 'prospecting'").parse().unwrap();
    let mut browser = Browser::start(&[
        ("MODE", "thousand".into()),
        ("BASE_URL", b.base.clone()),
        ("MANAGER_TOKEN", MANAGER.into()),
        ("DRAG_ID", id.to_string()),
    ]);
    let v = browser.expect("thousand").await;
    eprintln!("Chromium, 1,000 cards: {v}");
    assert_eq!(v["cards"], 1000, "{v}");
    assert_eq!(v["from"], "prospecting");
    assert_eq!(b.p.sql(&format!("SELECT stage FROM leads WHERE id = {id}")), "qualification");
    browser.go().await;
    browser.expect("done").await;
    browser.finish().await;
    b.stop();
}

#[tokio::test]
async fn a_held_card_says_why_from_explain() {
    // Nothing listens on nik's IMAP port: nik's inbox never syncs, so nik's
    // due emails are held (never sent with a reply possibly unread).
    let b = Board::start(Opts { imap: Some((crate::support::free_port(), IMAP_PW.into())), ..Opts::default() });
    b.p.ok(&["enroll", "ana@acme.example", "--sequence", "demo", "--rep", "nik", "--first-name", "Ana", "--company", "Acme"]);
    b.p.ok(&["enroll", "bo@globex.example", "--sequence", "demo", "--rep", "ana", "--first-name", "Bo", "--company", "Globex"]);
    let (held, sent) = (b.lead_id("ana@acme.example"), b.lead_id("bo@globex.example"));
    wait_until_blocking("ana's rep sends Bo's intro", SETTLE, || {
        b.p.sql(&format!("SELECT count(*) FROM touchpoints WHERE lead_id = {sent} AND kind = 'email_sent'")) == "1"
    });
    // Due an hour ago rather than just now (the daemon runs on the real clock).
    b.p.sql(&format!("UPDATE enrollments SET due_at = due_at - 3600000, next_at = next_at - 3600000 WHERE lead_id = {held}"));

    let manager = b.sign_in(MANAGER).await;
    let card = |id: i64| {
        let at = manager.page.find(&format!("data-id=\"{id}\"")).expect("card");
        manager.page[at..at + manager.page[at..].find("</li>").unwrap()].to_string()
    };
    assert!(card(held).contains("data-held") && card(held).contains("class=\"why\""), "{}", card(held));
    assert!(!card(sent).contains("data-held"), "{}", card(sent));
    let (s, why) = b.get(&format!("/board/why?ids={held},{sent}"), &manager).await;
    assert_eq!(s, StatusCode::OK);
    let why: Value = serde_json::from_str(&why).unwrap();
    let reason = why[held.to_string()].as_str().unwrap_or_default();
    assert!(reason.contains("held") && reason.contains("inbox lag"), "{why}");
    let (_, timeline) = b.get(&format!("/board/leads/{held}"), &manager).await;
    assert!(timeline.contains("inbox lag"), "{timeline}");
    b.stop();
}

/// The board's two queries on both backends.
#[tokio::test]
async fn board_queries_on_sqlite_and_postgres() {
    use cadence::store::{BoardFilter, Store};
    let pg = crate::support::postgres::fresh_database().await;
    let p = Project::file();
    for url in [p.tmp.database_url(), pg.url().to_string()] {
        let run = |args: &[&str]| {
            let mut a = vec!["--database", url.as_str()];
            a.extend_from_slice(args);
            p.ok(&a);
        };
        let now = ["--now", "2026-11-30T10:00:00Z"];
        run(&[&["enroll", "a@acme.example", "--sequence", "outreach", "--company", "Acme", "--value", "100.5"][..], &now].concat());
        run(&[&["enroll", "b@globex.example", "--sequence", "always", "--company", "Globex"][..], &now].concat());
        run(&[&["pause", "b@globex.example"][..], &now].concat());
        let store = Store::open(&url).await.expect("open");
        let stamp = store.board_stamp().await.unwrap();
        let all = store.board_cards(&BoardFilter::default()).await.unwrap();
        let emails: Vec<&str> = all.iter().map(|c| c.email.as_str()).collect();
        assert_eq!(emails, ["a@acme.example", "b@globex.example"], "{url}");
        let a = &all[0];
        assert_eq!(
            (a.stage.as_str(), a.value, a.sequence.as_deref(), a.state.as_deref()),
            ("connecting", Some(100.5), Some("outreach"), Some("active"))
        );
        assert_eq!((a.step, a.phase.as_deref(), a.owner.as_deref()), (Some(0), Some("step"), Some("nik")));
        assert!(a.next_at.is_some() && a.due_at.is_some() && a.last_touch_at.is_some(), "{a:?}");
        assert_eq!(all[1].state.as_deref(), Some("paused"));
        let only = |f: BoardFilter| {
            let store = store.clone();
            async move { store.board_cards(&f).await.unwrap().into_iter().map(|c| c.email).collect::<Vec<_>>() }
        };
        assert_eq!(only(BoardFilter { sequence: Some("always".into()), ..Default::default() }).await, ["b@globex.example"]);
        assert_eq!(only(BoardFilter { state: Some("paused".into()), ..Default::default() }).await, ["b@globex.example"]);
        assert_eq!(only(BoardFilter { rep: Some("nik".into()), ..Default::default() }).await.len(), 2);
        assert!(only(BoardFilter { rep: Some("ana".into()), ..Default::default() }).await.is_empty());
        // A stage change moves the stamp.
        run(&[&["stage", "a@acme.example", "won"][..], &now].concat());
        assert_ne!(store.board_stamp().await.unwrap(), stamp, "{url}");
        assert_eq!(store.board_cards(&BoardFilter::default()).await.unwrap()[0].stage, "won");
        store.close().await;
    }
}
