//! Manual steps and the rep's day: `tasks`, `task done|skip`, `agenda`.

use chrono::NaiveDate;
use clap::Subcommand;

use super::output::{local, print_json, table};
use super::{Cli, CliResult, Failure, EXIT_USAGE};
use crate::api::views::TaskView;
use crate::engine::agenda::{self, AgendaError};
use crate::store::TaskEnd;

#[derive(Subcommand, Debug)]
pub enum TaskAction {
    /// The task is done; the sequence moves on (a done call is logged as a call)
    Done {
        id: i64,
        /// The outcome, logged on the lead's timeline
        #[arg(long)]
        note: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Skip the task; the sequence moves on
    Skip {
        id: i64,
        #[arg(long)]
        json: bool,
    },
}

pub async fn list(cli: &Cli, rep: Option<&str>, overdue: bool, json: bool) -> CliResult {
    let ctx = cli.ctx().await?;
    let cutoff = ctx.overdue_cutoff();
    let tasks: Vec<TaskView> = ctx.tasks(rep, overdue).await?.into_iter().map(|t| TaskView::new(t, cutoff)).collect();
    if json {
        print_json(&tasks);
        return Ok(());
    }
    if tasks.is_empty() {
        println!("no open tasks{}", if overdue { " overdue" } else { "" });
        return Ok(());
    }
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let tz = ctx.cfg.rep(&t.rep).map_or(ctx.cfg.daemon.timezone, |r| r.timezone);
            let due = chrono::DateTime::parse_from_rfc3339(&t.due_at).map(|d| local(d.timestamp_millis(), tz)).unwrap_or_default();
            let name = [t.first_name.as_deref(), t.last_name.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" ");
            vec![
                t.id.to_string(),
                format!("{due}{}", if t.overdue { " (overdue)" } else { "" }),
                t.kind.clone(),
                t.email.clone(),
                name,
                t.company.clone().unwrap_or_default(),
                t.stage.clone(),
                t.rep.clone(),
                t.instructions.lines().find(|l| !l.trim().is_empty()).unwrap_or_default().trim().chars().take(50).collect(),
            ]
        })
        .collect();
    print!("{}", table(&["ID", "DUE", "KIND", "EMAIL", "NAME", "COMPANY", "STAGE", "REP", "INSTRUCTIONS"], &rows));
    println!("{} open task(s)", tasks.len());
    Ok(())
}

pub async fn finish(cli: &Cli, action: &TaskAction) -> CliResult {
    let ctx = cli.ctx().await?;
    let (id, end, note, json) = match action {
        TaskAction::Done { id, note, json } => (*id, TaskEnd::Done, note.as_deref(), *json),
        TaskAction::Skip { id, json } => (*id, TaskEnd::Skipped, None, *json),
    };
    let task = ctx.finish_task(id, end, note, None).await?;
    let cutoff = ctx.overdue_cutoff();
    let enrollment = ctx.store.enrollment(task.enrollment_id).await?;
    if json {
        print_json(&TaskView::new(task, cutoff));
        return Ok(());
    }
    let lead_tz = ctx.store.lead_by_id(task.lead_id).await?.map_or(ctx.cfg.daemon.timezone, |l| l.tz(ctx.cfg.daemon.timezone));
    let next = enrollment.and_then(|e| e.next_at).map(|t| format!("; next action {}", local(t, lead_tz)));
    println!("task {id} ({} for {}) {}{}", task.kind, task.email, end.as_str(), next.unwrap_or_default());
    Ok(())
}

pub async fn agenda(cli: &Cli, rep: Option<&str>, date: Option<NaiveDate>, json: bool) -> CliResult {
    let ctx = cli.ctx().await?;
    let agendas = agenda::build(&ctx.cfg, &ctx.store, ctx.clock.now(), rep, date).await.map_err(|e| match e {
        AgendaError::Usage(m) => Failure::new(EXIT_USAGE, m),
        AgendaError::Store(e) => Failure::from(e),
    })?;
    if json {
        // One rep asked for (or configured): its agenda; else all of them.
        match (rep.is_some() || agendas.len() == 1, agendas.first()) {
            (true, Some(a)) => print_json(a),
            _ => print_json(&agendas),
        }
        return Ok(());
    }
    let texts: Vec<String> = agendas.iter().map(|a| a.to_text()).collect();
    print!("{}", texts.join("\n"));
    Ok(())
}
