//! `regctl release publish|user-data`: the flags and the recorded settings in,
//! [`ops::release`](crate::ops::release) out.

use std::path::PathBuf;

use super::deploy::default_server_binary;
use super::deployment::{block_on, connect, json, load, print_json};
use crate::cli::{GlobalArgs, PublishArgs, ReleaseArgs, ReleaseBucketArgs, ReleaseCommand, UserDataArgs};
use crate::ops::progress::Reporter;
use crate::ops::release::{ReleaseOptions, publish, user_data};
use crate::ops::state::Settings;
use crate::usage;

/// Runs `regctl release`.
pub fn run(global: &GlobalArgs, args: ReleaseArgs) -> anyhow::Result<()> {
    match args.command {
        ReleaseCommand::Publish(args) => run_publish(global, args),
        ReleaseCommand::UserData(args) => run_user_data(global, &args),
    }
}

/// The bucket and region of the flags, else the recorded ones; and the recorded settings.
fn bucket_and_region(
    global: &GlobalArgs,
    args: &ReleaseBucketArgs,
) -> anyhow::Result<(String, String, Settings)> {
    let (_, recorded) = load(global, &args.state)?;
    let bucket = args.bucket.clone().or(recorded.bucket.clone()).ok_or_else(|| {
        usage!("no bucket: pass --bucket, or run `regctl provision` first so it is recorded")
    })?;
    let region =
        global.region.clone().or(recorded.region.clone()).ok_or_else(|| {
            usage!("no region for the bucket: pass --region, or run `regctl provision` first")
        })?;
    Ok((bucket, region, recorded))
}

fn run_publish(global: &GlobalArgs, args: PublishArgs) -> anyhow::Result<()> {
    let (bucket, region, recorded) = bucket_and_region(global, &args.bucket)?;
    let opts = release_options(
        args.binary,
        bucket,
        region.clone(),
        args.anonymous_pull,
        args.immutable_tags,
        args.mutable_tags,
    )?;
    let json = json(global);
    let reporter = Reporter::new(json);
    let settings = Settings { region: Some(region), ..recorded };
    let summary = block_on(async {
        let aws = connect(global, &settings).await?;
        publish(&aws.s3, &opts, &reporter).await
    })??;
    if json {
        return print_json(&summary);
    }
    if summary.uploaded.is_empty() {
        println!(
            "Nothing to publish: s3://{}/{} already names this release.",
            summary.bucket, summary.pointer
        );
    } else {
        println!(
            "Published to s3://{}: {} object(s) uploaded; instances launched from now on install it ({}).",
            summary.bucket,
            summary.uploaded.len(),
            summary.target
        );
    }
    Ok(())
}

/// The release of `binary` (default: the server beside this regctl) for `bucket` in `region`,
/// with the server settings given: what `release publish` and a scaled `deploy` publish.
pub(super) fn release_options(
    binary: Option<PathBuf>,
    bucket: String,
    region: String,
    anonymous_pull: bool,
    immutable_tags: Vec<String>,
    mutable_tags: Vec<String>,
) -> anyhow::Result<ReleaseOptions> {
    Ok(ReleaseOptions {
        binary: match binary {
            Some(path) => path,
            None => default_server_binary()?,
        },
        bucket,
        region,
        realm: regctl_registry::config::default_realm(),
        anonymous_pull,
        immutable_tags,
        mutable_tags,
    })
}

fn run_user_data(global: &GlobalArgs, args: &UserDataArgs) -> anyhow::Result<()> {
    let (bucket, region, _) = bucket_and_region(global, &args.bucket)?;
    print!("{}", user_data(&bucket, &region)?);
    Ok(())
}
