//! `regctl gc`: garbage collection of a registry's storage, safe while servers keep serving
//! pushes (see `regctl_registry::gc`).

use anyhow::Context;
use regctl_registry::config::Config;
use regctl_registry::gc::{self, GcOptions, GcReport};
use regctl_registry::units::human_bytes;

use crate::cli::{GcArgs, GlobalArgs, OutputFormat};

/// The configuration: file, then environment, then flags; and the options of this run.
fn settings(args: &GcArgs) -> anyhow::Result<(Config, GcOptions)> {
    let config = super::storage::config(args.config.as_deref(), args.root.as_ref())?;
    let mut options = GcOptions::from_config(&config.gc, &config.tags);
    options.dry_run = args.dry_run;
    options.delete_untagged |= args.delete_untagged;
    options.grace = args.grace_period.unwrap_or(options.grace);
    options.upload_max_age = args.upload_max_age.unwrap_or(options.upload_max_age);
    options.settle = args.settle.unwrap_or(options.settle);
    Ok((config, options))
}

/// Runs `regctl gc`.
pub fn run(global: &GlobalArgs, args: GcArgs) -> anyhow::Result<()> {
    let (config, options) = settings(&args)?;
    regctl_registry::cli::init_logging(config.log.format, "warn")?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let report = runtime.block_on(async {
        let storage = super::storage::open(&config, "docker/registry/v2").await?;
        if !options.dry_run {
            eprintln!("announcing the collection; marking in {:?} …", options.settle);
        }
        anyhow::Ok(gc::collect(storage.as_ref(), &options).await?)
    })?;
    match global.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => print_text(&report),
    }
    Ok(())
}

fn print_text(r: &GcReport) {
    let verb = if r.dry_run { "would delete" } else { "deleted" };
    for blob in &r.blobs {
        println!("{verb} blob {} ({})", blob.digest, human_bytes(blob.size));
    }
    for t in &r.tags {
        println!("{verb} tag {}:{} (retention)", t.repository, t.tag);
    }
    for m in &r.manifests {
        println!("{verb} manifest {}@{}", m.repository, m.digest);
    }
    for u in &r.uploads {
        println!("{verb} upload {} in {}", u.id, u.repository);
    }
    if r.incomplete_writes > 0 {
        println!("{verb} {} incomplete storage write(s) of abandoned uploads", r.incomplete_writes);
    }
    for warning in &r.warnings {
        println!("warning: {warning}");
    }
    println!(
        "{}: {} tag{}, {} blob{} ({}), {} untagged manifest{}, {} abandoned upload{} {verb}; {} of {} blobs in use, \
         {} spared as recent, {} pinned by pushes; {} repositories, {:.1}s",
        if r.dry_run { "dry run" } else { "done" },
        r.tags.len(),
        plural(r.tags.len()),
        r.blobs.len(),
        plural(r.blobs.len()),
        human_bytes(r.bytes_freed),
        r.manifests.len(),
        plural(r.manifests.len()),
        r.uploads.len(),
        plural(r.uploads.len()),
        r.blobs_in_use,
        r.blobs_total,
        r.blobs_spared_recent,
        r.blobs_spared_pinned,
        r.repositories,
        r.seconds,
    );
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
