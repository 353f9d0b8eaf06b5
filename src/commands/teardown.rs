//! `regctl teardown`: flags and recorded settings in, confirmation asked (dialoguer) unless
//! `--yes`, [`ops::teardown`](crate::ops::teardown) out.

use std::time::Duration;

use super::deployment::{block_on, connect, json, load, print_json, target_settings};
use crate::aws::{Retry, security_group};
use crate::cli::{GlobalArgs, TeardownArgs};
use crate::ops::progress::Reporter;
use crate::ops::teardown::{Item, ItemResult, TeardownOptions, teardown};

/// Runs `regctl teardown`.
pub fn run(global: &GlobalArgs, args: TeardownArgs) -> anyhow::Result<()> {
    let (names, recorded) = load(global, &args.state)?;
    let settings = recorded.overlay(&target_settings(global, &args.target));
    let opts = TeardownOptions {
        names,
        settings,
        delete_bucket: args.delete_bucket,
        dry_run: args.dry_run,
        insync_timeout: Duration::from_secs(600),
        group_release: Retry::with_timeout(security_group::RELEASE_TIMEOUT),
        state_file: Some(args.state.state_file.clone()),
    };
    let json = json(global);
    let yes = global.yes;
    block_on(async {
        let aws = connect(global, &opts.settings).await?;
        let rep = Reporter::new(json);
        let summary = teardown(&aws, &opts, &rep, |items| confirm(items, yes)).await?;
        if json {
            print_json(&summary)?;
        }
        if summary.failures > 0 {
            let failed: Vec<String> = summary
                .items
                .iter()
                .filter(|i| i.result == ItemResult::Failed)
                .map(|i| format!("  {} {}: {}", i.resource, i.name, i.detail.as_deref().unwrap_or("")))
                .collect();
            anyhow::bail!(
                "teardown left {} resource(s) behind:\n{}\nfix the causes and run `regctl teardown` again: it \
                 resumes where it stopped",
                summary.failures,
                failed.join("\n")
            );
        }
        if !json && !summary.dry_run && !summary.items.is_empty() {
            let kept: Vec<&str> = summary
                .items
                .iter()
                .filter(|i| i.result == ItemResult::Kept)
                .map(|i| i.name.as_str())
                .collect();
            if kept.is_empty() {
                println!("teardown complete");
            } else {
                println!("teardown complete; kept: {}", kept.join(", "));
            }
        }
        Ok(())
    })?
}

fn confirm(items: &[Item], yes: bool) -> anyhow::Result<bool> {
    let count = items.len();
    super::deployment::confirm(
        &format!("Remove these {count} resources?"),
        &format!("teardown removes {count} resources"),
        yes,
    )
}
