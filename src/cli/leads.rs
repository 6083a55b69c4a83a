//! Lead commands: enroll, leads, show and manual control.

use clap::Args;
use serde_json::json;

use super::output::{local, print_json, table, utc};
use super::{Cli, CliResult, Failure, NoteKind, EXIT_USAGE};
use crate::domain::{LeadInput, TouchKind};
use crate::store::{rfc3339, LeadFilter};

#[derive(Args, Debug)]
pub struct EnrollArgs {
    pub email: String,
    #[arg(long)]
    pub sequence: String,
    #[arg(long)]
    pub rep: Option<String>,
    #[arg(long)]
    pub first_name: Option<String>,
    #[arg(long)]
    pub last_name: Option<String>,
    #[arg(long)]
    pub company: Option<String>,
    #[arg(long)]
    pub title: Option<String>,
    #[arg(long)]
    pub timezone: Option<String>,
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long)]
    pub value: Option<String>,
    /// A custom field, KEY=VALUE (repeatable)
    #[arg(long = "field", value_name = "KEY=VALUE")]
    pub fields: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LeadsArgs {
    #[arg(long)]
    pub stage: Option<String>,
    #[arg(long)]
    pub sequence: Option<String>,
    #[arg(long)]
    pub rep: Option<String>,
    #[arg(long)]
    pub state: Option<String>,
    /// List archived leads instead of active ones
    #[arg(long)]
    pub archived: bool,
    #[arg(long)]
    pub json: bool,
}

pub async fn enroll(cli: &Cli, a: &EnrollArgs) -> CliResult {
    let mut pairs: Vec<(String, String)> = vec![("email".into(), a.email.clone())];
    for (k, v) in [
        ("first_name", &a.first_name),
        ("last_name", &a.last_name),
        ("company", &a.company),
        ("title", &a.title),
        ("timezone", &a.timezone),
        ("region", &a.region),
        ("value", &a.value),
    ] {
        if let Some(v) = v {
            pairs.push((k.into(), v.clone()));
        }
    }
    for f in &a.fields {
        let Some((k, v)) = f.split_once('=') else {
            return Err(Failure::new(EXIT_USAGE, format!("--field {f:?}: write KEY=VALUE")));
        };
        if crate::domain::LEAD_COLUMNS.contains(&k.trim()) {
            return Err(Failure::new(EXIT_USAGE, format!("--field {k}: use --{} for this field", k.replace('_', "-"))));
        }
        pairs.push((k.into(), v.into()));
    }
    let input = LeadInput::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(crate::ops::OpError::from)?;
    let ctx = cli.ctx().await?;
    let enrolled = ctx.enroll(&input, &a.sequence, a.rep.as_deref()).await?;
    let email = input.email.expect("validated");
    if a.json {
        print_json(&json!({
            "email": email,
            "lead_id": enrolled.lead_id,
            "enrollment_id": enrolled.enrollment_id,
            "created_lead": enrolled.created_lead,
            "sequence": a.sequence,
            "next_at": enrolled.next_at.map(rfc3339),
        }));
    } else {
        let lead = ctx.lead(email.as_str()).await?;
        let when = enrolled.next_at.map_or("not scheduled".to_string(), |t| local(t, lead.tz(ctx.cfg.daemon.timezone)));
        println!("enrolled {email} in {}; first email {when}", a.sequence);
    }
    Ok(())
}

pub async fn list(cli: &Cli, a: &LeadsArgs) -> CliResult {
    let ctx = cli.ctx().await?;
    let filter = LeadFilter {
        stage: a.stage.clone(),
        sequence: a.sequence.clone(),
        rep: a.rep.clone(),
        state: a.state.clone(),
        archived: a.archived,
    };
    let rows = ctx.store.list_leads(&filter).await?;
    if a.json {
        let out: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "email": r.email, "first_name": r.first_name, "last_name": r.last_name, "company": r.company,
                    "value": r.value, "owner": r.owner, "stage": r.stage, "status": r.status,
                    "sequence": r.sequence, "state": r.state, "step": r.step.map(|s| s + 1),
                    "next_at": r.next_at.map(rfc3339), "last_touch_at": r.last_touch_at.map(rfc3339),
                })
            })
            .collect();
        print_json(&out);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no leads match");
        return Ok(());
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let name = [r.first_name.as_deref(), r.last_name.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" ");
            vec![
                r.email.clone(),
                name,
                r.company.clone().unwrap_or_default(),
                r.stage.clone(),
                r.sequence.clone().unwrap_or_else(|| "-".into()),
                r.state.clone().unwrap_or_else(|| "-".into()),
                r.next_at.map_or("-".into(), utc),
            ]
        })
        .collect();
    print!("{}", table(&["EMAIL", "NAME", "COMPANY", "STAGE", "SEQUENCE", "STATE", "NEXT EMAIL"], &cells));
    println!("{} lead(s)", rows.len());
    Ok(())
}

pub async fn show(cli: &Cli, email: &str, as_json: bool) -> CliResult {
    let ctx = cli.ctx().await?;
    let Some(d) = ctx.store.lead_detail(email).await? else {
        return Err(Failure::new(EXIT_USAGE, format!("no lead {} (`cadence leads` lists them)", email.trim())));
    };
    let tz = d.lead.tz(ctx.cfg.daemon.timezone);
    if as_json {
        let l = &d.lead;
        print_json(&json!({
            "email": l.email, "first_name": l.first_name, "last_name": l.last_name, "company": l.company,
            "title": l.title, "timezone": l.timezone, "region": l.region, "value": l.value,
            "fields": l.custom_fields(), "owner": l.owner, "stage": l.stage, "status": l.status,
            "created_at": rfc3339(l.created_at), "last_touch_at": l.last_touch_at.map(rfc3339),
            "enrollments": d.enrollments.iter().map(|e| json!({
                "id": e.id, "sequence": e.sequence, "rep": e.rep, "state": e.state, "phase": e.phase,
                "step": e.step + 1, "touches": e.touches, "due_at": e.due_at.map(rfc3339), "next_at": e.next_at.map(rfc3339),
                "paused_until": e.paused_until.map(rfc3339), "enrolled_at": rfc3339(e.enrolled_at),
                "ended_at": e.ended_at.map(rfc3339), "end_reason": e.end_reason, "thread": e.refs(),
            })).collect::<Vec<_>>(),
            "touchpoints": d.touchpoints.iter().map(|t| json!({
                "kind": t.kind, "at": rfc3339(t.at), "rep": t.rep, "subject": t.subject,
                "message_id": t.message_id, "detail": t.detail, "step": t.step,
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    let l = &d.lead;
    println!("{} <{}>", l.full_name(), l.email);
    for (k, v) in [("company", &l.company), ("title", &l.title), ("region", &l.region), ("owner", &l.owner)] {
        if let Some(v) = v {
            println!("  {k:<9} {v}");
        }
    }
    println!("  {:<9} {}", "timezone", tz.name());
    if let Some(v) = l.value {
        println!("  {:<9} {v:.2}", "value");
    }
    println!("  {:<9} {}{}", "stage", l.stage, if l.is_archived() { " (archived)" } else { "" });
    for (k, v) in l.custom_fields() {
        println!("  {:<9} {v}", format!("{k}:"));
    }
    for e in &d.enrollments {
        let next = e.next_at.map_or(String::new(), |t| format!(", next action {}", local(t, tz)));
        println!("enrollment: {} ({}) step {} of rep {}{next}", e.sequence, e.state, e.step + 1, e.rep);
    }
    println!("timeline:");
    for t in &d.touchpoints {
        let mut line = format!("  {}  {:<13}", local(t.at, tz), t.kind);
        if let Some(s) = &t.subject {
            line.push_str(&format!(" {s:?}"));
        }
        if let Some(x) = &t.detail {
            line.push_str(&format!(" {x}"));
        }
        println!("{line}");
    }
    Ok(())
}

pub async fn pause(cli: &Cli, email: &str) -> CliResult {
    cli.ctx().await?.pause(email).await?;
    println!("paused {}", email.trim());
    Ok(())
}

pub async fn resume(cli: &Cli, email: &str) -> CliResult {
    let ctx = cli.ctx().await?;
    let next = ctx.resume(email).await?;
    println!("resumed {}; next action {}", email.trim(), next.map_or("not scheduled".into(), utc));
    Ok(())
}

pub async fn unenroll(cli: &Cli, email: &str) -> CliResult {
    cli.ctx().await?.unenroll(email).await?;
    println!("unenrolled {}", email.trim());
    Ok(())
}

pub async fn stage(cli: &Cli, email: &str, stage: &str) -> CliResult {
    match cli.ctx().await?.stage(email, stage).await? {
        Some(old) => println!("{}: {old} -> {stage}", email.trim()),
        None => println!("{} is already in {stage}", email.trim()),
    }
    Ok(())
}

pub async fn note(cli: &Cli, email: &str, text: &str, kind: NoteKind) -> CliResult {
    let kind = match kind {
        NoteKind::Note => TouchKind::Note,
        NoteKind::Call => TouchKind::Call,
        NoteKind::Meeting => TouchKind::Meeting,
    };
    cli.ctx().await?.note(email, kind, text).await?;
    println!("logged {kind} for {}", email.trim());
    Ok(())
}

pub async fn suppress(cli: &Cli, target: &str) -> CliResult {
    let stopped = cli.ctx().await?.suppress(target, "suppressed by hand").await?;
    println!("suppressed {}; {stopped} enrollment(s) stopped", target.trim());
    Ok(())
}

pub async fn preview(cli: &Cli, template: &str, email: &str) -> CliResult {
    let ctx = cli.ctx().await?;
    let lead = ctx.lead(email).await?;
    let rep_id = lead.owner.clone().or_else(|| ctx.cfg.reps.first().map(|r| r.id.clone()));
    let rep = rep_id.as_deref().and_then(|r| ctx.cfg.rep(r)).ok_or_else(|| Failure::new(EXIT_USAGE, "no rep configured to send as"))?;
    let secret = crate::config::secret(&ctx.cfg.daemon.secret_env).unwrap_or_default();
    let url = format!("{}/unsubscribe/{}", ctx.cfg.daemon.public_url, crate::domain::token::sign(secret.as_bytes(), lead.id));
    let rendered = ctx
        .cfg
        .templates
        .render(template, &crate::engine::render_context(&lead, rep, &url, 1))
        .map_err(|e| Failure::new(super::EXIT_FAILURE, e.to_string()))?;
    println!("From: {} <{}>", rep.name, rep.email);
    println!("To: {} <{}>", lead.full_name(), lead.email);
    println!("Subject: {}", rendered.subject);
    println!("List-Unsubscribe: <mailto:{}?subject=unsubscribe>, <{url}>", rep.email);
    println!("List-Unsubscribe-Post: List-Unsubscribe=One-Click");
    println!();
    println!("{}", rendered.text.trim_end());
    if let Some(html) = rendered.html {
        println!("\n--- HTML alternative ---\n{}", html.trim_end());
    }
    Ok(())
}
