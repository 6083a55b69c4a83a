//! `cadence import`: stream a CSV into enrollments.
//!
//! Rows are read one at a time and committed in batches, so a million-row
//! file never sits in memory. Reading and validating run on a thread of
//! their own, a batch ahead of the database writes, so that the two
//! overlap. A bad row is reported with its line number and skipped; every
//! good row is kept. Into a database without leads (a first import), the
//! secondary indexes are built once at the end (see `store::bulk`).

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::output::print_json;
use super::{Cli, CliResult, Failure, EXIT_FAILURE, EXIT_REFUSED};
use crate::domain::LeadInput;
use crate::store::Refusal;

/// Rows per transaction: the more, the fewer times the same index pages
/// are written out. A batch holds the write lock for about half a second
/// (measured on 2 cores), which a running daemon waits out. 50,000 and
/// 100,000 were slower for a first import (two runs each).
const BATCH: usize = 20_000;
/// Batches waiting for the database while the next is read: one is enough
/// for the two sides to overlap, and each waiting batch is memory.
const AHEAD: usize = 1;

#[derive(Args, Debug)]
pub struct ImportArgs {
    pub file: PathBuf,
    #[arg(long)]
    pub sequence: String,
    #[arg(long)]
    pub rep: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct ImportSummary {
    pub rows: u64,
    pub enrolled: u64,
    pub new_leads: u64,
    pub already_enrolled: u64,
    pub suppressed: u64,
    pub bad: Vec<BadRow>,
}

#[derive(Debug, Serialize)]
pub struct BadRow {
    pub line: u64,
    pub reason: String,
}

pub async fn import(cli: &Cli, a: &ImportArgs) -> CliResult {
    let file = std::fs::File::open(&a.file).map_err(|e| Failure::new(EXIT_FAILURE, format!("cannot read {}: {e}", a.file.display())))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let ctx = cli.bulk_ctx().await?;
    let mut reader =
        csv::ReaderBuilder::new().flexible(true).trim(csv::Trim::All).from_reader(std::io::BufReader::with_capacity(1 << 20, file));
    let headers = match reader.byte_headers() {
        Ok(h) if !(h.is_empty() || h.len() == 1 && h[0].is_empty()) => h.clone(),
        Ok(_) => {
            return Err(Failure::new(
                EXIT_FAILURE,
                format!("{}: the file is empty (a header row naming the fields is required)", a.file.display()),
            ))
        }
        Err(e) => return Err(Failure::new(EXIT_FAILURE, format!("{}: cannot read the header row: {e}", a.file.display()))),
    };
    let headers: Vec<String> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let h = if i == 0 { h.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(h) } else { h };
            String::from_utf8_lossy(h).trim().to_lowercase().replace([' ', '-'], "_")
        })
        .collect();
    if !headers.iter().any(|h| h == "email") {
        return Err(Failure::new(
            EXIT_FAILURE,
            format!("{}: line 1: the header row has no `email` column (found: {})", a.file.display(), headers.join(", ")),
        ));
    }

    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(size);
        bar.set_style(ProgressStyle::with_template("{bar:40} {percent:>3}% {msg}").expect("valid template"));
        bar
    });
    // Into empty tables, the secondary indexes are built once at the end
    // (see store::bulk), also when a batch fails.
    let deferred = ctx.store.defer_indexes().await?;
    let (batches, mut parsed) = tokio::sync::mpsc::channel(AHEAD);
    let reading = tokio::task::spawn_blocking(move || read_batches(reader, &headers, &batches));
    let mut summary = ImportSummary::default();
    let written = async {
        while let Some(batch) = parsed.recv().await {
            summary.rows += batch.rows;
            summary.bad.extend(batch.bad);
            flush(&ctx, a, &batch.leads, &mut summary).await?;
            if let Some(bar) = &bar {
                bar.set_position(batch.read_to);
                bar.set_message(format!("{} rows", summary.rows));
            }
        }
        Ok::<_, Failure>(())
    }
    .await;
    let built = if deferred > 0 {
        if let Some(bar) = &bar {
            bar.set_message(format!("{} rows; building indexes", summary.rows));
        }
        ctx.store.build_deferred_indexes().await.map(drop)
    } else {
        Ok(())
    };
    // The batch's error first (a full disk fails the build too).
    written?;
    built?;
    reading.await.map_err(|e| Failure::new(EXIT_FAILURE, format!("the CSV reader stopped: {e}")))?;
    ctx.store.finish_bulk_write().await?;
    ctx.store.close().await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }

    if a.json {
        print_json(&summary);
    } else {
        for b in &summary.bad {
            eprintln!("{}:{}: skipped: {}", a.file.display(), b.line, b.reason);
        }
        if summary.enrolled == 0 && summary.bad.is_empty() && summary.rows > 0 {
            println!("nothing changed: all {} row(s) were already enrolled or suppressed", summary.rows);
        }
        println!(
            "{} row(s): {} enrolled ({} new leads), {} already enrolled, {} suppressed, {} bad",
            summary.rows,
            summary.enrolled,
            summary.new_leads,
            summary.already_enrolled,
            summary.suppressed,
            summary.bad.len()
        );
    }
    if summary.bad.is_empty() {
        Ok(())
    } else {
        Err(Failure::new(EXIT_REFUSED, format!("{} bad row(s) skipped; every other row was imported", summary.bad.len())))
    }
}

/// Rows read from the file for one `enroll_many`, with what was counted on
/// the way.
#[derive(Default)]
struct Batch {
    leads: Vec<LeadInput>,
    /// Rows read, good or bad (blank lines are not rows).
    rows: u64,
    bad: Vec<BadRow>,
    /// How far into the file (bytes), for the progress bar.
    read_to: u64,
}

/// Reads, parses and validates the file into batches (on a thread of its
/// own, so that it overlaps the database writes), until the end of the
/// file or until the receiving side has gone.
fn read_batches(mut reader: csv::Reader<impl std::io::Read>, headers: &[String], batches: &tokio::sync::mpsc::Sender<Batch>) {
    let mut record = csv::ByteRecord::new();
    loop {
        let mut batch = Batch { leads: Vec::with_capacity(BATCH), ..Batch::default() };
        let mut more = true;
        while more && batch.leads.len() < BATCH {
            match reader.read_byte_record(&mut record) {
                Ok(true) => {}
                Ok(false) => more = false,
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line());
                    batch.rows += 1;
                    batch.bad.push(BadRow { line, reason: format!("unreadable CSV: {e}") });
                    continue;
                }
            }
            if !more || record.len() == 1 && record[0].is_empty() {
                continue; // the end, or a blank line
            }
            batch.rows += 1;
            match parse_row(headers, &record) {
                Ok(input) => batch.leads.push(input),
                Err(reason) => batch.bad.push(BadRow { line: record.position().map_or(0, |p| p.line()), reason }),
            }
        }
        batch.read_to = reader.position().byte();
        if batches.blocking_send(batch).is_err() || !more {
            return;
        }
    }
}

/// One CSV row into a validated lead; the error names the field.
pub fn parse_row(headers: &[String], record: &csv::ByteRecord) -> Result<LeadInput, String> {
    if record.len() != headers.len() {
        return Err(format!("has {} field(s) but the header has {}", record.len(), headers.len()));
    }
    let mut lead = LeadInput::default();
    for (name, raw) in headers.iter().zip(record.iter()) {
        let value = std::str::from_utf8(raw).map_err(|_| format!("field `{name}` is not valid UTF-8 (save the file as UTF-8)"))?;
        lead.set(name, value).map_err(|e| e.to_string())?;
    }
    if lead.email.is_none() {
        return Err("field `email` is empty".into());
    }
    Ok(lead)
}

async fn flush(ctx: &crate::ops::Ctx, a: &ImportArgs, batch: &[LeadInput], summary: &mut ImportSummary) -> Result<(), Failure> {
    if batch.is_empty() {
        return Ok(());
    }
    let results = ctx.enroll_many(batch, &a.sequence, a.rep.as_deref()).await?;
    for r in results {
        match r {
            Ok(e) => {
                summary.enrolled += 1;
                summary.new_leads += u64::from(e.created_lead);
            }
            Err(Refusal::AlreadyEnrolled { .. }) => summary.already_enrolled += 1,
            Err(Refusal::Suppressed { .. }) => summary.suppressed += 1,
        }
    }
    Ok(())
}
