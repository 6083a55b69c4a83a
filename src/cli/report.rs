//! `cadence report`: the pipeline report, as text or JSON.

use super::output::print_json;
use super::{Cli, CliResult};

pub async fn report(cli: &Cli, json: bool) -> CliResult {
    let ctx = cli.ctx().await?;
    let report = crate::report::build(&ctx.cfg, &ctx.store, ctx.clock.now()).await?;
    ctx.store.close().await;
    if json {
        print_json(&report);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}
