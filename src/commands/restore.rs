//! `regctl restore`: flags in, the plan of [`ops::restore`](crate::ops::restore) shown,
//! confirmation asked (dialoguer) unless `--yes`, the plan carried out with a line per object.

use regctl_registry::units::human_bytes;
use serde::Serialize;

use super::deployment::{block_on, confirm, json, print_json};
use crate::cli::{GlobalArgs, RestoreArgs};
use crate::ops::restore::{self, Plan, RestoreOptions, Step, Target};

/// What `--output json` prints: the plan, and whether it was carried out.
#[derive(Serialize)]
struct Report<'a> {
    /// False for a dry run (or nothing to do).
    restored: bool,
    #[serde(flatten)]
    plan: &'a Plan,
}

/// Runs `regctl restore`.
pub fn run(global: &GlobalArgs, args: RestoreArgs) -> anyhow::Result<()> {
    let target = match (args.to, args.at) {
        (Some(digest), _) => Target::Digest(digest),
        (None, Some(at)) => Target::At(at),
        (None, None) => Target::LastPushed,
    };
    if args.target.tag.is_none() && target != Target::LastPushed {
        return Err(crate::usage!(
            "--to and --at put one tag back: name it (REPO:TAG); `restore REPO` restores each deleted tag as \
             last pushed"
        ));
    }
    let opts = RestoreOptions { repository: args.target.repository, tag: args.target.tag, target };
    let json = json(global);
    // One runtime for the plan, the question and the writes: the S3 client's connections
    // belong to the runtime that opened them.
    block_on(async {
        let bucket = super::versioned::open(global, &args.bucket).await?;
        let plan = restore::plan(&bucket, &opts).await?;
        if !json {
            print_plan(&plan);
        }
        if plan.is_empty() || args.dry_run {
            if json {
                return print_json(&Report { restored: false, plan: &plan });
            }
            println!("{}", if plan.is_empty() { "nothing to restore" } else { "dry run: nothing restored" });
            return Ok(());
        }
        let count = plan.steps.len();
        let what = format!("restore writes {count} objects to S3 bucket {}", plan.bucket);
        if !confirm(&format!("Write these {count} objects to S3 bucket {}?", plan.bucket), &what, global.yes)?
        {
            anyhow::bail!("restore cancelled: nothing was written");
        }
        let progress = |step: &Step| {
            if !json {
                let verb = if step.action == "restore" { "restored" } else { "wrote" };
                eprintln!("{verb} {}", step.what);
            }
        };
        restore::apply(&bucket, &plan, &progress).await?;
        if json {
            return print_json(&Report { restored: true, plan: &plan });
        }
        let (blobs, bytes) = plan.blobs();
        println!(
            "restored: {} tag{} of {}; {blobs} blob{} ({}) from earlier versions, {} link{} written",
            plan.tags.len(),
            plural(plan.tags.len()),
            plan.repository,
            plural(blobs),
            human_bytes(bytes),
            count - blobs,
            plural(count - blobs),
        );
        anyhow::Ok(())
    })?
}

fn print_plan(plan: &Plan) {
    println!("Restore in {} of S3 bucket {}:", plan.repository, plan.bucket);
    for t in &plan.tags {
        let from = t.from.as_deref().unwrap_or("deleted");
        if t.from.as_deref() == Some(t.to.as_str()) {
            println!("  tag {}: stays at {} (pushed {})", t.tag, t.to, t.pushed_at);
        } else {
            println!("  tag {}: {from} -> {} (pushed {})", t.tag, t.to, t.pushed_at);
        }
    }
    for tag in &plan.kept_tags {
        println!("  tag {tag}: exists, left as it is");
    }
    for step in &plan.steps {
        match (&step.version_at, step.action) {
            (Some(at), "restore") => {
                println!("  restore {}: {}, its version of {at}", step.what, human_bytes(step.size))
            }
            _ => println!("  write {}", step.what),
        }
    }
    println!("  ({} object{} needed already there)", plan.present, plural(plan.present));
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
