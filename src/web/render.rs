//! The board's HTML, written straight into one `String`.
//!
//! Lead data is untrusted (it comes from CSV imports and the API), so every
//! value goes through [`Esc`]: there is no other way in. Plain `write!`
//! into a buffer renders a thousand cards in about a millisecond, which a
//! template engine walking JSON would not; the markup is small enough that
//! a template language would buy nothing else. No inline script or style:
//! the page's Content-Security-Policy forbids both.

use std::collections::BTreeMap;
use std::fmt::{self, Display, Write as _};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::api::auth::Principal;
use crate::clock::from_ms;
use crate::config::Config;
use crate::engine::explain::Explanation;
use crate::report::{fmt_money, Flag};
use crate::store::{BoardCard, LeadDetail};

/// Text made safe for HTML element content and quoted attribute values.
pub struct Esc<'a>(pub &'a str);

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = 0;
        for (i, c) in self.0.char_indices() {
            let rep = match c {
                '&' => "&amp;",
                '<' => "&lt;",
                '>' => "&gt;",
                '"' => "&quot;",
                '\'' => "&#39;",
                _ => continue,
            };
            f.write_str(&self.0[last..i])?;
            f.write_str(rep)?;
            last = i + c.len_utf8();
        }
        f.write_str(&self.0[last..])
    }
}

/// The filters as chosen (the rep filter is forced for a rep's session).
#[derive(Clone, Debug, Default)]
pub struct Filters {
    pub rep: Option<String>,
    pub sequence: Option<String>,
    pub state: Option<String>,
}

/// Everything the live part of the board shows.
pub struct Live<'a> {
    pub cfg: &'a Config,
    pub who: &'a Principal,
    pub now: DateTime<Utc>,
    pub stamp: &'a str,
    pub cards: &'a [BoardCard],
    pub flags: &'a [Flag],
}

/// The signed-in page around the live part.
pub struct Page<'a> {
    pub live: Live<'a>,
    pub filters: &'a Filters,
    pub csrf: &'a str,
    pub signed_in_as: &'a str,
}

const HEAD: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<link rel=\"stylesheet\" href=\"/board/assets/board.css\">\
<link rel=\"icon\" href=\"/board/assets/favicon.svg\" type=\"image/svg+xml\">";

/// Compact "how long ago / from now", to the nearest unit: `45s`, `12m`,
/// `3h`, `2d`, `5w`.
fn span(ms: i64) -> String {
    let s = ms.abs() / 1000;
    let round = |unit: i64| (s + unit / 2) / unit;
    match s {
        0..=59 => format!("{s}s"),
        60..=3569 => format!("{}m", round(60)),
        3570..=84_599 => format!("{}h", round(3600)),
        84_600..=1_252_799 => format!("{}d", round(86_400)),
        _ => format!("{}w", round(604_800)),
    }
}

fn ago(at: i64, now: i64) -> String {
    if (now - at).abs() < 10_000 {
        "just now".into()
    } else if at > now {
        format!("in {}", span(at - now))
    } else {
        format!("{} ago", span(now - at))
    }
}

fn until(at: i64, now: i64) -> String {
    if at >= now {
        format!("in {}", span(at - now))
    } else {
        format!("{} overdue", span(now - at))
    }
}

fn stamp(ms: i64, tz: Tz) -> String {
    from_ms(ms).with_timezone(&tz).format("%a %Y-%m-%d %H:%M %Z").to_string()
}

fn money(v: f64) -> String {
    format!("${}", fmt_money(v))
}

/// A card's heading: the person's name, else the address.
fn name(c: &BoardCard) -> String {
    let n = [c.first_name.as_deref(), c.last_name.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" ");
    if n.trim().is_empty() {
        c.email.clone()
    } else {
        n
    }
}

/// A due email this long past its time is being held by something.
const HELD_AFTER_MS: i64 = 60_000;

/// The columns: configured stages, `won`, `lost`, then any stage only the
/// database still has (a stage removed from the config keeps its leads
/// visible).
pub fn columns<'a>(cfg: &Config, cards: &'a [BoardCard]) -> Vec<(String, Vec<&'a BoardCard>)> {
    let mut cols: Vec<(String, Vec<&BoardCard>)> =
        cfg.stages.iter().cloned().chain(["won".to_string(), "lost".to_string()]).map(|s| (s, Vec::new())).collect();
    let mut index: BTreeMap<String, usize> = cols.iter().enumerate().map(|(i, (s, _))| (s.clone(), i)).collect();
    for c in cards {
        let i = match index.get(&c.stage) {
            Some(i) => *i,
            None => {
                cols.push((c.stage.clone(), Vec::new()));
                index.insert(c.stage.clone(), cols.len() - 1);
                cols.len() - 1
            }
        };
        cols[i].1.push(c);
    }
    cols
}

/// Sequence position in words: `step 2/4`, `last chance`, `archiving`.
fn position(cfg: &Config, c: &BoardCard) -> Option<String> {
    let seq = c.sequence.as_deref()?;
    let live = matches!(c.state.as_deref(), Some("active" | "paused"));
    let total = cfg.sequence(seq).map(|s| s.steps.len());
    let at = match (c.phase.as_deref(), c.step) {
        _ if !live => String::new(),
        (Some("last_chance"), _) => " · last chance".into(),
        (Some("archive"), _) => " · archiving".into(),
        (_, Some(step)) => match total {
            Some(t) => format!(" · step {}/{t}", (step + 1).min(t as i64)),
            None => format!(" · step {}", step + 1),
        },
        _ => String::new(),
    };
    Some(format!("{seq}{at}"))
}

fn card(out: &mut String, cfg: &Config, c: &BoardCard, now: i64, show_owner: bool) {
    let tz = cfg.daemon.timezone;
    let n = name(c);
    let state = c.state.as_deref().unwrap_or("none");
    let held = state == "active" && c.next_at.is_some_and(|t| t + HELD_AFTER_MS <= now);
    let _ = write!(
        out,
        "<li class=\"card\" draggable=\"true\" tabindex=\"0\" data-id=\"{}\" data-stage=\"{}\" data-state=\"{}\" data-name=\"{}\"{}>",
        c.id,
        Esc(&c.stage),
        Esc(state),
        Esc(&n),
        if held { " data-held" } else { "" }
    );
    let _ = write!(
        out,
        "<div class=\"card-top\"><span class=\"name\">{}</span><button type=\"button\" class=\"more\" aria-haspopup=\"menu\" aria-label=\"Actions for {}\">⋯</button></div>",
        Esc(&n),
        Esc(&n)
    );
    let _ = write!(out, "<div class=\"company\">{}</div>", Esc(c.company.as_deref().unwrap_or("—")));
    let _ = write!(out, "<div class=\"line\"><span class=\"value\">{}</span>", c.value.map(money).unwrap_or_else(|| "no value".into()));
    if show_owner {
        if let Some(o) = &c.owner {
            let _ = write!(out, "<span class=\"owner\">{}</span>", Esc(o));
        }
    }
    out.push_str("</div>");
    if let Some(p) = position(cfg, c) {
        let _ = write!(out, "<div class=\"seq\">{} <span class=\"badge s-{}\">{}</span>", Esc(&p), Esc(state), Esc(state));
        if c.stale != 0 {
            out.push_str(" <span class=\"badge stale\">stale</span>");
        }
        out.push_str("</div>");
    } else if c.stale != 0 {
        out.push_str("<div class=\"seq\"><span class=\"badge stale\">stale</span></div>");
    }
    out.push_str("<div class=\"times\">");
    match c.last_touch_at {
        Some(t) => {
            let _ = write!(out, "<span title=\"last touch {}\">touched {}</span>", Esc(&stamp(t, tz)), ago(t, now));
        }
        None => out.push_str("<span>never touched</span>"),
    }
    match (state, c.next_at, c.paused_until) {
        ("active", Some(t), _) => {
            let what = if c.phase.as_deref() == Some("archive") { "archive" } else { "next email" };
            let _ = write!(
                out,
                "<span class=\"next{}\" title=\"{what} {}\">{what} {}</span>",
                if held { " late" } else { "" },
                Esc(&stamp(t, tz)),
                until(t, now)
            );
        }
        ("active", None, _) => out.push_str("<span class=\"next\">sending now</span>"),
        ("paused", _, Some(u)) => {
            let _ = write!(out, "<span class=\"next held\" title=\"{}\">paused until {}</span>", Esc(&stamp(u, tz)), until(u, now));
        }
        ("paused", _, None) => out.push_str("<span class=\"next held\">paused by hand</span>"),
        _ => {}
    }
    out.push_str("</div>");
    if held {
        // Filled in by the page from `explain` (too slow to run per card here).
        out.push_str("<div class=\"why\" aria-live=\"polite\">held: finding out why…</div>");
    }
    out.push_str("</li>");
}

fn flag_label(name: &str) -> &str {
    match name {
        "bottleneck" => "Bottleneck",
        "thin_front" => "Thin front",
        "last_stage_crowded" => "Last stage crowded",
        "overdue" => "Overdue steps",
        "stale" => "Stale leads",
        "cadence_limit" => "Cadence limit reached",
        "send_unknown" => "Unknown send outcome",
        "bounce_pause" => "Bounce pause",
        other => other,
    }
}

/// The banner: raised flags. A rep sees the flags about its own leads; the
/// shape of the whole pipeline (bottleneck, thin front) is the manager's.
fn flags(out: &mut String, who: &Principal, flags: &[Flag]) {
    let mut shown = Vec::new();
    for f in flags.iter().filter(|f| f.on) {
        match who {
            Principal::Manager => shown.push((f, f.items.iter().collect::<Vec<_>>(), f.detail.clone())),
            Principal::Rep(id) => {
                let mine: Vec<_> = f.items.iter().filter(|i| i.rep.as_deref() == Some(id.as_str())).collect();
                if !mine.is_empty() {
                    let detail = format!("{} of your leads", mine.len());
                    shown.push((f, mine, detail));
                }
            }
        }
    }
    if shown.is_empty() {
        out.push_str("<section id=\"flags\" class=\"flags ok\" aria-label=\"Red flags\">No red flags.</section>");
        return;
    }
    out.push_str("<section id=\"flags\" class=\"flags\" aria-label=\"Red flags\"><ul>");
    for (f, items, detail) in shown {
        let _ = write!(out, "<li data-flag=\"{}\"><strong>{}</strong> {}", Esc(f.name), Esc(flag_label(f.name)), Esc(&detail));
        if !items.is_empty() {
            let names: Vec<String> = items.iter().take(3).map(|i| i.email.clone().or_else(|| i.rep.clone()).unwrap_or_default()).collect();
            let more = items.len().saturating_sub(3) as u64 + if matches!(who, Principal::Manager) { f.more } else { 0 };
            let _ = write!(
                out,
                " <span class=\"items\">({}{})</span>",
                Esc(&names.join(", ")),
                if more > 0 { format!(", +{more}") } else { String::new() }
            );
        }
        out.push_str("</li>");
    }
    out.push_str("</ul></section>");
}

/// The part of the page that refreshes: banner and columns.
pub fn live(l: &Live<'_>) -> String {
    let now = l.now.timestamp_millis();
    let mut out = String::with_capacity(1024 + l.cards.len() * 640);
    let _ = write!(out, "<div id=\"live\" data-stamp=\"{}\">", Esc(l.stamp));
    flags(&mut out, l.who, l.flags);
    out.push_str("<div id=\"columns\" class=\"columns\">");
    let show_owner = matches!(l.who, Principal::Manager) && l.cfg.reps.len() > 1;
    for (stage, cards) in columns(l.cfg, l.cards) {
        let total: f64 = cards.iter().filter_map(|c| c.value).sum();
        let outcome = if stage == "won" || stage == "lost" { " outcome" } else { "" };
        let _ = write!(
            out,
            "<section class=\"column{outcome}\" data-stage=\"{s}\" aria-label=\"{s}\"><header><h2>{s}</h2>\
             <span class=\"count\" data-count=\"{n}\" title=\"leads\">{n}</span><span class=\"total\" data-total=\"{total}\">{}</span></header><ol class=\"cards\">",
            money(total),
            s = Esc(&stage),
            n = cards.len(),
        );
        for c in cards {
            card(&mut out, l.cfg, c, now, show_owner);
        }
        out.push_str("</ol></section>");
    }
    out.push_str("</div></div>");
    out
}

fn select(out: &mut String, name: &str, label: &str, options: &[String], chosen: Option<&str>) {
    let _ = write!(out, "<label>{} <select name=\"{}\"><option value=\"\">all</option>", Esc(label), Esc(name));
    for o in options {
        let sel = if chosen == Some(o.as_str()) { " selected" } else { "" };
        let _ = write!(out, "<option value=\"{o}\"{sel}>{o}</option>", o = Esc(o));
    }
    out.push_str("</select></label>");
}

/// The whole signed-in page.
pub fn page(p: &Page<'_>) -> String {
    let l = &p.live;
    let mut out = String::with_capacity(4096 + l.cards.len() * 640);
    out.push_str(HEAD);
    let _ = write!(
        out,
        "<meta name=\"csrf-token\" content=\"{}\"><title>Pipeline · cadence</title><script src=\"/board/assets/board.js\" defer></script></head><body>",
        Esc(p.csrf)
    );
    out.push_str("<header class=\"top\"><h1>Pipeline</h1><form class=\"filters\" method=\"get\" action=\"/\">");
    if matches!(l.who, Principal::Manager) {
        let reps: Vec<String> = l.cfg.reps.iter().map(|r| r.id.clone()).collect();
        select(&mut out, "rep", "Rep", &reps, p.filters.rep.as_deref());
    }
    let seqs: Vec<String> = l.cfg.sequences.keys().cloned().collect();
    select(&mut out, "sequence", "Sequence", &seqs, p.filters.sequence.as_deref());
    let states: Vec<String> = crate::domain::EnrollmentState::ALL.iter().map(|s| s.as_str().to_string()).collect();
    select(&mut out, "state", "State", &states, p.filters.state.as_deref());
    out.push_str("<button type=\"submit\">Filter</button></form>");
    let _ = write!(
        out,
        "<form class=\"signout\" method=\"post\" action=\"/session/end\"><span>{}</span><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Sign out</button></form></header>",
        Esc(p.signed_in_as),
        Esc(p.csrf)
    );
    out.push_str("<main>");
    out.push_str(&live(l));
    out.push_str(
        "</main><div id=\"menu\" class=\"menu\" role=\"menu\" hidden></div>\
         <dialog id=\"timeline\" aria-label=\"Lead timeline\"><div class=\"dialog-body\"></div></dialog>\
         <div id=\"toast\" class=\"toast\" role=\"alert\" hidden></div></body></html>",
    );
    out
}

/// The sign-in page; `error` is shown above the form.
pub fn sign_in(csrf: &str, error: Option<&str>) -> String {
    let mut out = String::from(HEAD);
    out.push_str("<title>Sign in · cadence</title></head><body class=\"signin\"><main><h1>cadence pipeline</h1>");
    if let Some(e) = error {
        let _ = write!(out, "<p class=\"error\" role=\"alert\">{}</p>", Esc(e));
    }
    let _ = write!(
        out,
        "<form method=\"post\" action=\"/session\"><label for=\"token\">API token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Sign in</button></form>\
         <p class=\"hint\">Your rep token shows your leads; the manager token shows everyone's.</p></main></body></html>",
        Esc(csrf)
    );
    out
}

fn kind_label(kind: &str) -> String {
    kind.replace('_', " ")
}

/// The lead's dialog: who, what happens next, and every touchpoint,
/// newest first.
pub fn timeline(cfg: &Config, d: &LeadDetail, x: Option<&Explanation>, now: DateTime<Utc>) -> String {
    let tz = cfg.daemon.timezone;
    let now = now.timestamp_millis();
    let l = &d.lead;
    let full = l.full_name();
    let title = if full.trim().is_empty() { l.email.clone() } else { full };
    let mut out = String::with_capacity(2048 + d.touchpoints.len() * 200);
    let _ = write!(
        out,
        "<article class=\"lead\" data-id=\"{}\"><header><h2 id=\"timeline-title\">{}</h2><button type=\"button\" class=\"close\" data-action=\"close\" aria-label=\"Close\">×</button></header>",
        l.id,
        Esc(&title)
    );
    out.push_str("<dl class=\"facts\">");
    for (k, v) in [
        ("Email", Some(l.email.clone())),
        ("Company", l.company.clone()),
        ("Title", l.title.clone()),
        ("Value", l.value.map(money)),
        ("Stage", Some(l.stage.clone())),
        ("Owner", l.owner.clone()),
        ("Time zone", l.timezone.clone()),
    ] {
        if let Some(v) = v {
            let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", Esc(k), Esc(&v));
        }
    }
    out.push_str("</dl>");
    let live = d.enrollments.iter().rev().find(|e| e.state == "active" || e.state == "paused");
    out.push_str("<div class=\"actions\">");
    match live.map(|e| e.state.as_str()) {
        Some("active") => out.push_str("<button type=\"button\" data-action=\"pause\">Pause</button>"),
        Some("paused") => out.push_str("<button type=\"button\" data-action=\"resume\">Resume</button>"),
        _ => {}
    }
    out.push_str("</div>");
    if let Some(x) = x {
        let _ = write!(out, "<section class=\"next\"><h3>Next email</h3><p class=\"summary\">{}</p>", Esc(&x.summary));
        if !x.reasons.is_empty() {
            out.push_str("<ul>");
            for r in &x.reasons {
                let _ = write!(out, "<li>{}</li>", Esc(r));
            }
            out.push_str("</ul>");
        }
        out.push_str("</section>");
    }
    if !d.enrollments.is_empty() {
        out.push_str("<section><h3>Enrollments</h3><ul class=\"enrollments\">");
        for e in d.enrollments.iter().rev() {
            let _ = write!(
                out,
                "<li>{} <span class=\"badge s-{}\">{}</span> · {} email(s) sent · enrolled {}</li>",
                Esc(&e.sequence),
                Esc(&e.state),
                Esc(&e.state),
                e.touches,
                Esc(&stamp(e.enrolled_at, tz))
            );
        }
        out.push_str("</ul></section>");
    }
    let _ = write!(out, "<section><h3>Timeline <span class=\"count\">{}</span></h3><ol class=\"touches\">", d.touchpoints.len());
    for t in d.touchpoints.iter().rev() {
        let _ = write!(
            out,
            "<li class=\"touch\" data-kind=\"{k}\"><time title=\"{}\">{}</time> <span class=\"kind k-{k}\">{}</span>",
            Esc(&stamp(t.at, tz)),
            Esc(&format!("{} ({})", from_ms(t.at).with_timezone(&tz).format("%Y-%m-%d %H:%M"), ago(t.at, now))),
            Esc(&kind_label(&t.kind)),
            k = Esc(&t.kind),
        );
        if let Some(s) = &t.subject {
            let _ = write!(out, " <span class=\"subject\">{}</span>", Esc(s));
        }
        if let Some(r) = &t.rep {
            let _ = write!(out, " <span class=\"rep\">{}</span>", Esc(r));
        }
        if let Some(d) = &t.detail {
            let _ = write!(out, "<div class=\"detail\">{}</div>", Esc(d));
        }
        out.push_str("</li>");
    }
    out.push_str("</ol></section></article>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            Esc("<script>alert('x')</script> & \"q\"").to_string(),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(Esc("plain ünïcode").to_string(), "plain ünïcode");
        assert_eq!(Esc("").to_string(), "");
    }

    #[test]
    fn spans_read_briefly() {
        assert_eq!(ago(0, 80_000), "1m ago");
        assert_eq!(ago(0, 90_000), "2m ago", "to the nearest minute");
        assert_eq!(ago(0, 9_000), "just now");
        assert_eq!(ago(7_200_000, 0), "in 2h");
        assert_eq!(until(0, 3 * 86_400_000), "3d overdue");
        assert_eq!(span(30 * 86_400_000), "4w");
        assert_eq!(span(2 * 86_400_000 - 60_000), "2d", "rounded, not truncated");
        assert_eq!(span(3_590_000), "1h");
        assert_eq!(span(59_000), "59s");
    }
}
