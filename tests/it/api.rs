//! The HTTP API end to end: a real `cadence run` on a port it picks itself,
//! two reps with their own tokens and a manager token, driven with reqwest.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::fixtures::{Daemon, Opts, Project, SECRET};
use crate::support::SETTLE;

const NIK: &str = "nik-token-3f9a";
const ANA: &str = "ana-token-77c1";
const MANAGER: &str = "manager-token-b210";

/// Every route of DESIGN §4 (plus the OpenAPI document itself): the
/// contract the document must match exactly.
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v1/enrollments"),
    ("GET", "/api/v1/leads"),
    ("GET", "/api/v1/leads/{email}"),
    ("POST", "/api/v1/leads/{email}/pause"),
    ("POST", "/api/v1/leads/{email}/resume"),
    ("POST", "/api/v1/leads/{email}/stage"),
    ("POST", "/api/v1/leads/{email}/notes"),
    ("GET", "/api/v1/report"),
    ("GET", "/api/v1/tasks"),
    ("POST", "/api/v1/tasks/{id}/done"),
    ("POST", "/api/v1/tasks/{id}/skip"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/unsubscribe/{token}"),
    ("POST", "/unsubscribe/{token}"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
];

struct Api {
    // Dropped in this order: the daemon before its project folder.
    daemon: Option<Daemon>,
    _project: Project,
    base: String,
    http: reqwest::Client,
}

impl Api {
    /// Project with reps `nik` and `ana` (both with API tokens) and a
    /// manager token; `cadence run` started and its port read from the log.
    fn start() -> Api {
        Api::start_with(|_| {})
    }

    /// As [`Api::start`], with more files written before the daemon starts.
    fn start_with(prepare: impl FnOnce(&Project)) -> Api {
        let p = Project::new(Opts { extra_daemon: "manager_token_env = \"CADENCE_MANAGER_TOKEN\"".into(), ..Opts::default() });
        prepare(&p);
        let path = p.tmp.config_path();
        let text = std::fs::read_to_string(&path).expect("read config");
        let sig = "signature = \"Nik\\nVendor Co.\"\n";
        assert!(text.contains(sig), "fixture config changed:\n{text}");
        let text = text.replacen(sig, &format!("{sig}api_token_env = \"CADENCE_TOKEN_NIK\"\n"), 1)
            + "\n[[reps]]\nid = \"ana\"\nname = \"Ana Rep\"\nemail = \"ana@vendor.test\"\ndaily_limit = 200\ntimezone = \"UTC\"\n\
               signature = \"Ana\"\napi_token_env = \"CADENCE_TOKEN_ANA\"\n  [reps.smtp]\n  transport = \"file\"\n  dir = \"outbox\"\n";
        std::fs::write(&path, text).expect("write config");
        let daemon = p.spawn_run(&[("CADENCE_TOKEN_NIK", NIK), ("CADENCE_TOKEN_ANA", ANA), ("CADENCE_MANAGER_TOKEN", MANAGER)]);
        let addr = daemon.http_addr();
        assert!(!addr.ends_with(":0"), "the log must name the bound port, not the configured one: {addr}");
        Api { daemon: Some(daemon), _project: p, base: format!("http://{addr}"), http: reqwest::Client::new() }
    }

    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    async fn enroll(&self, token: &str, body: Value) -> Value {
        let (s, v) = self.post("/api/v1/enrollments", token, body.clone()).await;
        assert_eq!(s, StatusCode::CREATED, "enroll {body}: {v}");
        v
    }

    async fn text(&self, method: Method, path: &str) -> (StatusCode, String) {
        let resp = self.http.request(method, format!("{}{path}", self.base)).send().await.expect("request");
        (resp.status(), resp.text().await.expect("body"))
    }

    fn stop(mut self) {
        let status = self.daemon.take().expect("daemon").terminate(SETTLE);
        assert!(status.success(), "cadence run exited with {status:?} after SIGTERM");
    }
}

fn emails(list: &Value) -> BTreeSet<String> {
    list["leads"].as_array().expect("leads array").iter().map(|l| l["email"].as_str().unwrap().to_string()).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn tokens_are_required_and_reps_see_only_their_own_leads() {
    let api = Api::start();
    // No token, a wrong one, another scheme: 401 with the error shape.
    for auth in [None, Some("Bearer wrong-token"), Some("Bearer "), Some(&*format!("Basic {NIK}"))] {
        let mut req = api.http.get(format!("{}/api/v1/leads", api.base));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap()), Some("Bearer"));
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"], "unauthorized");
    }
    let (s, _) = api.call(Method::POST, "/api/v1/enrollments", None, Some(json!({"email": "x@y.example", "sequence": "outreach"}))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Each rep enrolls as itself.
    let a = api.enroll(NIK, json!({"email": "ana@acme.example", "sequence": "outreach", "company": "Acme"})).await;
    assert_eq!(a["owner"], "nik");
    let b = api.enroll(ANA, json!({"email": "bo@globex.example", "sequence": "outreach", "company": "Globex"})).await;
    assert_eq!(b["owner"], "ana");

    // Another rep's lead answers exactly like a missing one.
    let (s_missing, missing) = api.get("/api/v1/leads/nobody@nowhere.example", NIK).await;
    assert_eq!(s_missing, StatusCode::NOT_FOUND);
    for (token, other) in [(NIK, "bo@globex.example"), (ANA, "ana@acme.example")] {
        let (s, v) = api.get(&format!("/api/v1/leads/{other}"), token).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{other}: {v}");
        assert_eq!(v["error"], missing["error"]);
        assert_eq!(v["message"], format!("no lead {other}"));
        for (action, body) in [
            ("pause", json!({})),
            ("resume", json!({})),
            ("stage", json!({"stage": "closing"})),
            ("notes", json!({"kind": "call", "text": "hi"})),
        ] {
            let (s, v) = api.post(&format!("/api/v1/leads/{other}/{action}"), token, body).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{action} {other}: {v}");
            assert_eq!(v["message"], format!("no lead {other}"));
        }
    }
    // Nothing the other rep tried changed anything.
    for (token, email) in [(MANAGER, "bo@globex.example"), (MANAGER, "ana@acme.example")] {
        let (s, v) = api.get(&format!("/api/v1/leads/{email}"), token).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["stage"], "connecting", "{v}");
        assert_eq!(v["enrollments"][0]["state"], "active", "{v}");
        let kinds: Vec<&str> = v["touchpoints"].as_array().unwrap().iter().map(|t| t["kind"].as_str().unwrap()).collect();
        assert!(!kinds.iter().any(|k| ["call", "paused"].contains(k)), "{kinds:?}");
        // Only the enrollment's own move to `connecting`.
        assert_eq!(kinds.iter().filter(|k| **k == "stage_change").count(), 1, "{kinds:?}");
    }

    // Lists are filtered by owner; the manager sees all.
    assert_eq!(emails(&api.get("/api/v1/leads", NIK).await.1), set(&["ana@acme.example"]));
    assert_eq!(emails(&api.get("/api/v1/leads", ANA).await.1), set(&["bo@globex.example"]));
    assert_eq!(emails(&api.get("/api/v1/leads", MANAGER).await.1), set(&["ana@acme.example", "bo@globex.example"]));
    assert_eq!(emails(&api.get("/api/v1/leads?rep=ana", NIK).await.1), set(&[]));
    assert_eq!(emails(&api.get("/api/v1/leads?rep=ana", MANAGER).await.1), set(&["bo@globex.example"]));
    let (_, report) = api.get("/api/v1/report", NIK).await;
    assert_eq!(report["total_leads"], 1, "{report}");

    // A rep cannot take over another rep's lead by enrolling it, nor enroll for someone else.
    let (s, v) = api.post("/api/v1/enrollments", NIK, json!({"email": "bo@globex.example", "sequence": "always"})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, v) = api.post("/api/v1/enrollments", NIK, json!({"email": "new@acme.example", "sequence": "outreach", "rep": "ana"})).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("rep")), "{v}");

    // The manager must say which rep when there are several.
    let (s, v) = api.post("/api/v1/enrollments", MANAGER, json!({"email": "cy@initech.example", "sequence": "outreach"})).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("rep")), "{v}");
    let (s, v) =
        api.post("/api/v1/enrollments", MANAGER, json!({"email": "cy@initech.example", "sequence": "outreach", "rep": "zed"})).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("rep")), "{v}");
    let c = api.enroll(MANAGER, json!({"email": "cy@initech.example", "sequence": "outreach", "rep": "ana"})).await;
    assert_eq!(c["owner"], "ana");
    assert_eq!(emails(&api.get("/api/v1/leads", ANA).await.1), set(&["bo@globex.example", "cy@initech.example"]));
    api.stop();
}

#[tokio::test]
async fn enrollment_input_is_validated_like_the_cli() {
    let api = Api::start();
    let e = "/api/v1/enrollments";
    let cases = [
        (json!({"email": "a@b.example", "sequence": "outreach", "first_name": "Ana\r\nBcc: x@evil.example"}), "first_name"),
        (json!({"email": "a@b.example", "sequence": "outreach", "company": "Acme\nX-Evil: 1"}), "company"),
        (json!({"email": "a@b.example", "sequence": "outreach", "fields": {"plan": "pro\r\nX: y"}}), "fields.plan"),
        (json!({"email": "a@b.example", "sequence": "outreach", "nickname": "Annie"}), "nickname"),
        (json!({"email": "a@b.example", "sequence": "outreach", "timezone": "PST"}), "timezone"),
        (json!({"email": "a@b.example", "sequence": "outreach", "value": -3}), "value"),
        (json!({"email": "a@b.example", "sequence": "outreach", "value": "lots"}), "value"),
        (json!({"email": "not-an-address", "sequence": "outreach"}), "email"),
        (json!({"email": "", "sequence": "outreach"}), "email"),
        (json!({"sequence": "outreach"}), "email"),
        (json!({"email": "a@b.example", "sequence": "nope"}), "sequence"),
        (json!({"email": "a@b.example", "sequence": "outreach", "fields": {"email": "x@y.example"}}), "fields.email"),
    ];
    for (body, field) in cases {
        let (s, v) = api.post(e, NIK, body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        assert_eq!(v["error"], "invalid", "{body}: {v}");
        assert_eq!(v["field"], field, "{body}: {v}");
        assert!(v["message"].as_str().unwrap().contains(field.trim_start_matches("fields.")), "{body}: {v}");
    }
    // Nothing was created by the refused requests.
    let (_, list) = api.get("/api/v1/leads", MANAGER).await;
    assert_eq!(list["count"], 0, "{list}");

    // Oversized, malformed and non-JSON bodies.
    let big = "x".repeat(70 * 1024);
    let (s, v) = api.post(e, NIK, json!({"email": "a@b.example", "sequence": "outreach", "fields": {"notes": big}})).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["error"], "payload_too_large");
    let resp = api
        .http
        .post(format!("{}{e}", api.base))
        .bearer_auth(NIK)
        .header("content-type", "application/json")
        .body("{\"email\":")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = api.http.post(format!("{}{e}", api.base)).bearer_auth(NIK).body("email=a@b.example").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // A good enrollment, then the same again: 409, nothing changed.
    let ok = api
        .enroll(
            NIK,
            json!({"email": "Ana@Acme.example", "sequence": "outreach", "first_name": "Ana", "value": 1200.5, "fields": {"plan": "pro"}}),
        )
        .await;
    assert_eq!(ok["email"], "ana@acme.example");
    assert_eq!(ok["created_lead"], true);
    assert!(ok["next_at"].is_string(), "{ok}");
    let (s, v) = api.post(e, NIK, json!({"email": "ana@acme.example", "sequence": "always"})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"], "refused");
    let (_, lead) = api.get("/api/v1/leads/ana@acme.example", NIK).await;
    assert_eq!(lead["enrollments"].as_array().unwrap().len(), 1, "{lead}");
    assert_eq!(lead["enrollments"][0]["sequence"], "outreach");
    assert_eq!(lead["value"], 1200.5);
    assert_eq!(lead["fields"]["plan"], "pro");
    api.stop();
}

#[tokio::test]
async fn leads_can_be_shown_filtered_paused_resumed_staged_and_noted() {
    let api = Api::start();
    api.enroll(NIK, json!({"email": "ana@acme.example", "sequence": "outreach", "first_name": "Ana"})).await;
    api.enroll(NIK, json!({"email": "bo@acme.example", "sequence": "always", "company": "Acme"})).await;
    let lead = "/api/v1/leads/ana@acme.example";

    let (s, v) = api.get(lead, NIK).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["first_name"], "Ana");
    assert_eq!(v["owner"], "nik");
    assert!(v["touchpoints"].as_array().unwrap().iter().any(|t| t["kind"] == "enrolled"), "{v}");
    let (s, v) = api.get("/api/v1/leads/nobody@acme.example", NIK).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));

    // Pause, pause again (refused), resume, resume again (refused).
    let (s, v) = api.post(&format!("{lead}/pause"), NIK, json!({})).await;
    assert_eq!((s, v["state"].as_str()), (StatusCode::OK, Some("paused")), "{v}");
    let (s, v) = api.post(&format!("{lead}/pause"), NIK, json!({})).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::CONFLICT, Some("refused")), "{v}");
    assert_eq!(emails(&api.get("/api/v1/leads?state=paused", NIK).await.1), set(&["ana@acme.example"]));
    let (s, v) = api.post(&format!("{lead}/resume"), NIK, json!({})).await;
    assert_eq!((s, v["state"].as_str()), (StatusCode::OK, Some("active")), "{v}");
    assert!(v["next_at"].is_string(), "{v}");
    let (s, _) = api.post(&format!("{lead}/resume"), NIK, json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT);

    // Stage.
    let (s, v) = api.post(&format!("{lead}/stage"), NIK, json!({"stage": "closing"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["stage"].as_str(), v["previous_stage"].as_str()), (Some("closing"), Some("connecting")));
    let (s, v) = api.post(&format!("{lead}/stage"), NIK, json!({"stage": "negotiating"})).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("stage")), "{v}");
    let (s, v) = api.post(&format!("{lead}/stage"), NIK, json!({"stage": "won", "why": "x"})).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("why")), "{v}");
    assert_eq!(emails(&api.get("/api/v1/leads?stage=closing", NIK).await.1), set(&["ana@acme.example"]));
    assert_eq!(emails(&api.get("/api/v1/leads?sequence=always", NIK).await.1), set(&["bo@acme.example"]));

    // Notes.
    let (s, v) = api.post(&format!("{lead}/notes"), NIK, json!({"kind": "call", "text": "Spoke with Ana.\nCall back Friday."})).await;
    assert_eq!((s, v["kind"].as_str()), (StatusCode::CREATED, Some("call")), "{v}");
    let (s, v) = api.post(&format!("{lead}/notes"), NIK, json!({"kind": "telegram", "text": "x"})).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("kind")), "{v}");
    let (s, v) = api.post(&format!("{lead}/notes"), NIK, json!({"kind": "note", "text": "bad\u{0}byte"})).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("text")), "{v}");
    let (_, v) = api.get(lead, NIK).await;
    let kinds: Vec<&str> = v["touchpoints"].as_array().unwrap().iter().map(|t| t["kind"].as_str().unwrap()).collect();
    for k in ["enrolled", "paused", "resumed", "stage_change", "call"] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    let call = v["touchpoints"].as_array().unwrap().iter().find(|t| t["kind"] == "call").unwrap();
    assert_eq!(call["detail"], "Spoke with Ana.\nCall back Friday.");
    assert_eq!(kinds.iter().filter(|k| **k == "call").count(), 1);

    // Filters are checked.
    let (s, v) = api.get("/api/v1/leads?state=sleeping", NIK).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("state")), "{v}");
    let (s, v) = api.get("/api/v1/leads?colour=red", NIK).await;
    assert_eq!((s, v["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("colour")), "{v}");

    // The report counts leads per stage.
    let (s, r) = api.get("/api/v1/report", MANAGER).await;
    assert_eq!(s, StatusCode::OK);
    let count = |stage: &str| r["stages"].as_array().unwrap().iter().find(|x| x["stage"] == stage).map(|x| x["leads"].clone());
    assert_eq!(count("closing"), Some(json!(1)), "{r}");
    assert_eq!(count("prospecting"), Some(json!(1)), "{r}");
    assert_eq!(r["total_leads"], 2);
    api.stop();
}

#[tokio::test]
async fn unsubscribe_links_confirm_on_post_only_and_refuse_forgeries() {
    let api = Api::start();
    let v = api.enroll(NIK, json!({"email": "ana@acme.example", "sequence": "outreach"})).await;
    let id = v["lead_id"].as_i64().unwrap();
    let token = cadence::domain::token::sign(SECRET.as_bytes(), id);
    let state = || async { api.get("/api/v1/leads/ana@acme.example", MANAGER).await.1["enrollments"][0]["state"].clone() };

    // Forged: signed with another secret, another lead's id, or garbage.
    let other_secret = cadence::domain::token::sign(b"not-the-secret", id);
    let mut altered = token.clone();
    let last = altered.pop().unwrap();
    altered.push(if last == 'A' { 'B' } else { 'A' });
    for bad in [other_secret, altered, cadence::domain::token::sign(SECRET.as_bytes(), id + 1000), "garbage".into()] {
        for m in [Method::GET, Method::POST] {
            let (s, page) = api.text(m.clone(), &format!("/unsubscribe/{bad}")).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{m} {bad}");
            assert!(page.contains("not valid"), "{page}");
        }
    }
    assert_eq!(state().await, "active");

    // GET shows a confirm button and changes nothing.
    let (s, page) = api.text(Method::GET, &format!("/unsubscribe/{token}")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("<form method=\"post\">") && page.contains("ana@acme.example"), "{page}");
    assert_eq!(state().await, "active");

    // The RFC 8058 one-click POST unsubscribes at once.
    let resp = api
        .http
        .post(format!("{}/unsubscribe/{token}", api.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.text().await.unwrap().contains("unsubscribed"));
    assert_eq!(state().await, "unsubscribed");
    // Pressing the button again is harmless: one unsubscribe touchpoint.
    let (s, _) = api.text(Method::POST, &format!("/unsubscribe/{token}")).await;
    assert_eq!(s, StatusCode::OK);
    let (_, lead) = api.get("/api/v1/leads/ana@acme.example", MANAGER).await;
    let unsubs = lead["touchpoints"].as_array().unwrap().iter().filter(|t| t["kind"] == "unsubscribe").count();
    assert_eq!(unsubs, 1, "{lead}");

    // A suppressed lead cannot be enrolled again.
    let (s, v) = api.post("/api/v1/enrollments", NIK, json!({"email": "ana@acme.example", "sequence": "always"})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["message"].as_str().unwrap().contains("suppressed"), "{v}");
    api.stop();
}

#[tokio::test]
async fn openapi_documents_every_route_and_metrics_and_health_answer() {
    let api = Api::start();
    let (s, _) = api.text(Method::GET, "/healthz").await;
    assert_eq!(s, StatusCode::OK);

    let (s, doc) = api.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let expected: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(documented, expected, "the OpenAPI document and DESIGN §4 disagree");
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object(), "{doc}");

    // Every documented route is served (routed, not the fallback).
    api.enroll(NIK, json!({"email": "ana@acme.example", "sequence": "outreach"})).await;
    for (method, path) in ROUTES {
        let path = path.replace("{email}", "ana@acme.example").replace("{token}", "not-a-token");
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let (s, body) = api.call(m, &path, Some(MANAGER), Some(json!({"stage": "closing", "text": "x"}))).await;
        assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(!body.to_string().contains("no such route"), "{method} {path} fell through to the fallback: {body}");
    }
    let (s, v) = api.get("/api/v1/nothing-here", MANAGER).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (s, _) = api.call(Method::DELETE, "/api/v1/leads", Some(MANAGER), None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);

    // Metrics: engine counters and gauges exist; HTTP requests are counted
    // by route template, and every route seen is a documented one.
    let (s, text) = api.text(Method::GET, "/metrics").await;
    assert_eq!(s, StatusCode::OK);
    for name in [
        "cadence_emails_total",
        "cadence_inbound_total",
        "cadence_due_backlog",
        "cadence_oldest_overdue_seconds",
        "cadence_http_requests_total",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    assert!(
        text.lines().any(|l| l.starts_with("cadence_http_requests_total{")
            && l.contains("route=\"/api/v1/enrollments\"")
            && l.contains("status=\"201\"")),
        "{text}"
    );
    let paths: BTreeSet<&str> = ROUTES.iter().map(|(_, p)| *p).collect();
    for line in text.lines().filter(|l| l.starts_with("cadence_http_requests_total{")) {
        let route = line.split("route=\"").nth(1).and_then(|r| r.split('"').next()).expect("route label");
        assert!(route == "unmatched" || paths.contains(route), "route {route} answers requests but is not documented");
    }

    // SIGTERM: exit 0 and the port is closed.
    let base = api.base.clone();
    api.stop();
    // A fresh client: a pooled connection would fail differently.
    let err = reqwest::Client::new().get(format!("{base}/healthz")).send().await.expect_err("the API must be down after SIGTERM");
    assert!(err.is_connect(), "{err}");
}

/// Tasks over the API: a rep lists and closes only its own; the manager
/// sees and closes all; a closed task answers 409.
#[tokio::test]
async fn tasks_are_listed_and_closed_per_rep() {
    let api = Api::start_with(|p| {
        p.tmp.write_sequence(
            "call-first",
            "send_window = { days = \"Mon-Sun\", start = \"00:00\", end = \"24:00\" }\n\n[[steps]]\nwait = \"0s\"\nkind = \"task\"\n\
             task = \"call\"\ninstructions = \"script\"\ntask_timeout = \"2 days\"\n\n[[steps]]\nwait = \"2 days\"\ntemplate = \"intro\"\n",
        );
        p.tmp.write_template("script", "---\nsubject: \"s\"\n---\nCall {{default first_name \"them\"}} at {{company}}.\n");
    });
    api.enroll(NIK, json!({"email": "ana@acme.example", "sequence": "call-first", "company": "Acme", "first_name": "Ana"})).await;
    api.enroll(ANA, json!({"email": "bo@globex.example", "sequence": "call-first", "company": "Globex"})).await;
    let all = crate::support::poll_until("both tasks created", SETTLE, || async {
        let (_, v) = api.get("/api/v1/tasks", MANAGER).await;
        (v["count"] == 2).then_some(v)
    })
    .await;
    let (s, nik) = api.get("/api/v1/tasks", NIK).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(nik["count"], 1);
    assert_eq!(nik["tasks"][0]["email"], "ana@acme.example");
    assert_eq!(nik["tasks"][0]["instructions"], "Call Ana at Acme.");
    assert_eq!(api.get("/api/v1/tasks?rep=ana", NIK).await.1["count"], 0, "a rep sees no other rep's tasks");
    let nik_id = nik["tasks"][0]["id"].as_i64().unwrap();
    let ana_id = all["tasks"].as_array().unwrap().iter().find(|t| t["rep"] == "ana").unwrap()["id"].as_i64().unwrap();
    // Another rep's task answers like a missing one.
    let (s, v) = api.post(&format!("/api/v1/tasks/{nik_id}/done"), ANA, json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(api.post("/api/v1/tasks/999999/skip", NIK, json!({})).await.0, StatusCode::NOT_FOUND);
    let (s, v) = api.post(&format!("/api/v1/tasks/{nik_id}/done"), NIK, json!({"note": "Left a voicemail"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["state"].as_str(), v["note"].as_str()), (Some("done"), Some("Left a voicemail")));
    let (s, v) = api.post(&format!("/api/v1/tasks/{nik_id}/skip"), NIK, json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, v) = api.post(&format!("/api/v1/tasks/{ana_id}/skip"), MANAGER, json!({})).await;
    assert_eq!((s, v["state"].as_str()), (StatusCode::OK, Some("skipped")));
    assert_eq!(api.get("/api/v1/tasks", MANAGER).await.1["count"], 0);
    let (_, lead) = api.get("/api/v1/leads/ana@acme.example", NIK).await;
    assert!(lead.to_string().contains("Left a voicemail"), "{lead}");
    api.stop();
}

/// Rep isolation on every route the OpenAPI document lists, found by
/// walking the document rather than a hand-kept list: with Nik's token, a
/// route about Ana's lead answers 404 exactly like a missing lead, a list,
/// report or metrics page never names it, enrolling it is refused; and
/// afterwards the lead is untouched.
#[tokio::test]
async fn every_documented_route_hides_another_reps_lead() {
    let api = Api::start();
    let theirs = "secret-lead@globex.example";
    api.enroll(ANA, json!({"email": theirs, "sequence": "outreach", "company": "Globex"})).await;
    api.enroll(NIK, json!({"email": "mine@acme.example", "sequence": "outreach", "company": "Acme"})).await;
    let before = api.get(&format!("/api/v1/leads/{theirs}"), MANAGER).await.1;
    let (_, doc) = api.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    let mut tried = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let concrete = path.replace("{email}", theirs).replace("{token}", "forged-token");
            let body = match path.rsplit('/').next().unwrap() {
                "stage" => json!({"stage": "closing"}),
                "notes" => json!({"kind": "note", "text": "snooping"}),
                "enrollments" => json!({"email": theirs, "sequence": "always"}),
                _ => json!({}),
            };
            let (status, answer) = api.call(m.clone(), &concrete, Some(NIK), (m == Method::POST).then_some(body)).await;
            tried += 1;
            if path.contains("{email}") {
                assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {answer}");
                assert_eq!(answer["message"], format!("no lead {theirs}"), "{method} {path}: same answer as a missing lead");
            } else if path == "/api/v1/enrollments" {
                assert_eq!(status, StatusCode::CONFLICT, "{method} {path}: {answer}");
            } else {
                assert!(!status.is_success() || !answer.to_string().contains(theirs), "{method} {path} names another rep's lead: {answer}");
            }
            assert!(!answer.to_string().contains("Globex"), "{method} {path} leaks the lead's company: {answer}");
        }
    }
    assert!(tried >= 12, "walked {tried} routes");
    let (_, report) = api.get("/api/v1/report", NIK).await;
    assert_eq!(report["total_leads"], 1, "the report counts only Nik's leads: {report}");
    let after = api.get(&format!("/api/v1/leads/{theirs}"), MANAGER).await.1;
    // What Nik could have changed: stage, state, manual touchpoints. (The
    // daemon may meanwhile have sent Ana's intro: that is not Nik's doing.)
    let mine = |v: &serde_json::Value| {
        let kinds: Vec<String> = v["touchpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["kind"].as_str().unwrap().to_string())
            .filter(|k| k != "email_sent")
            .collect();
        (v["stage"].clone(), v["status"].clone(), v["enrollments"][0]["state"].clone(), kinds)
    };
    assert_eq!(mine(&before), mine(&after), "nothing Nik tried changed Ana's lead");
    api.stop();
}
