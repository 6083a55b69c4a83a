//! The variables a template sees, built in one place so that `check`,
//! `preview` and real sends agree on the names.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// Names a lead email may use at the top level (besides `fields.KEY`).
pub(crate) const LEAD_VARIABLES: &[&str] = &["email", "first_name", "last_name", "company", "title", "value"];
/// Names that are not lead data.
pub(crate) const OTHER_VARIABLES: &[&str] = &["rep.name", "rep.email", "rep.signature", "unsubscribe_url", "step"];

/// The lead data of a render. `None` fields are left out of the context, so
/// strict rendering reports them instead of printing nothing.
#[derive(Clone, Copy, Debug)]
pub struct LeadVars<'a> {
    pub email: &'a str,
    pub first_name: Option<&'a str>,
    pub last_name: Option<&'a str>,
    pub company: Option<&'a str>,
    pub title: Option<&'a str>,
    pub value: Option<f64>,
    pub fields: &'a BTreeMap<String, String>,
}

/// The sending rep, as templates see it.
#[derive(Clone, Copy, Debug)]
pub struct RepVars<'a> {
    pub name: &'a str,
    pub email: &'a str,
    pub signature: &'a str,
}

impl<'a> From<&'a crate::config::Rep> for RepVars<'a> {
    fn from(r: &'a crate::config::Rep) -> Self {
        RepVars { name: &r.name, email: r.email.as_str(), signature: &r.signature }
    }
}

/// A whole number renders as `12000`, not `12000.0`.
fn number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

/// The render context of one email: lead fields, `fields.KEY`, `rep.*`,
/// `unsubscribe_url` and `step` (1-based).
pub fn lead_context(lead: &LeadVars, rep: &RepVars, unsubscribe_url: &str, step: usize) -> Value {
    let mut m = Map::new();
    m.insert("email".into(), json!(lead.email));
    for (key, v) in [("first_name", lead.first_name), ("last_name", lead.last_name), ("company", lead.company), ("title", lead.title)] {
        if let Some(v) = v {
            m.insert(key.into(), json!(v));
        }
    }
    if let Some(v) = lead.value {
        m.insert("value".into(), number(v));
    }
    m.insert("fields".into(), json!(lead.fields));
    m.insert("rep".into(), json!({ "name": rep.name, "email": rep.email, "signature": rep.signature }));
    m.insert("unsubscribe_url".into(), json!(unsubscribe_url));
    m.insert("step".into(), json!(step));
    Value::Object(m)
}

/// The lead `cadence check` renders every template against: every built-in
/// field set, no custom fields (a custom field is never guaranteed).
pub fn sample_context() -> Value {
    let fields = BTreeMap::new();
    let lead = LeadVars {
        email: "ana.lee@example.com",
        first_name: Some("Ana"),
        last_name: Some("Lee"),
        company: Some("Example Corp"),
        title: Some("Head of Operations"),
        value: Some(12000.0),
        fields: &fields,
    };
    let rep = RepVars { name: "Nik Levnaich", email: "nik@example.com", signature: "Nik\nVendor Co." };
    lead_context(&lead, &rep, "http://127.0.0.1:8025/unsubscribe/SAMPLE-TOKEN", 1)
}

/// The manager digest's sample data (`templates/digest.hbs`): `date`,
/// `stages` (name, leads, value), `flags` (kind, message) and `report` (the
/// whole plain-text report).
pub fn sample_digest_context() -> Value {
    json!({
        "date": "2026-01-05",
        "stages": [
            { "name": "prospecting", "leads": 12, "value": 48000 },
            { "name": "connecting", "leads": 4, "value": 22000 },
        ],
        "flags": [
            { "kind": "stale", "message": "3 leads had no touch for 14 days" },
        ],
        "report": "prospecting 12 leads, 48000\nconnecting 4 leads, 22000\n",
    })
}

/// The agenda email's sample data (`templates/agenda.hbs`): `date`, `rep`
/// (name, email), counts of `tasks`, `replies`, `quiet` and `emails`, and
/// `agenda` (the whole plain-text agenda).
pub fn sample_agenda_context() -> Value {
    json!({
        "date": "2026-01-05",
        "rep": { "id": "nik", "name": "Nik Levnaich", "email": "nik@example.com" },
        "tasks": 2,
        "replies": 1,
        "quiet": 0,
        "emails": 14,
        "agenda": "Tasks due (2)\n  10:00  call  Ana Lee (Acme)\n",
    })
}
