//! `regctl history`: flags in, [`ops::history`](crate::ops::history) out, as a table per tag
//! or (`--output json`) one document.

use super::deployment::{block_on, json, print_json};
use crate::cli::{GlobalArgs, HistoryArgs};
use crate::ops::history::{self, History};

/// Runs `regctl history`.
pub fn run(global: &GlobalArgs, args: HistoryArgs) -> anyhow::Result<()> {
    let history = block_on(async {
        let bucket = super::versioned::open(global, &args.bucket).await?;
        history::history(&bucket, &args.target.repository, args.target.tag.as_ref()).await
    })??;
    if json(global) {
        return print_json(&history);
    }
    print_text(&history);
    Ok(())
}

fn print_text(h: &History) {
    println!("{} in S3 bucket {} (oldest first):", h.repository, h.bucket);
    for tag in &h.tags {
        let now = match &tag.current {
            Some(digest) => format!("now {digest}"),
            None => "deleted now".to_string(),
        };
        println!("{}:{}  ({now})", h.repository, tag.tag);
        for e in &tag.events {
            println!("  {}  {:7}  {}", e.at, e.action, e.digest.as_deref().unwrap_or("-"));
        }
    }
}
