//! `deploy` of a scaled deployment (`provision --instances N`), without SSH: the release (the
//! server, its config and unit) is published to the bucket; the first user is created among the
//! users kept there when there is none; when the release changed, the Auto Scaling group replaces
//! every instance, launching each new one (which installs the current release at boot, see
//! [`release::user_data`]) before the balancer drains and terminates an old one; then the
//! registry's name must answer through the balancer.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow};
use regctl_registry::config::S3Config;
use serde::Serialize;

use super::deploy::{FirstUser, poll_health};
use super::progress::Reporter;
use super::release::{self, PublishSummary, ReleaseOptions};
use super::users::{self, AddUserOptions, Target};
use crate::aws::{Aws, auto_scaling};

/// What a rollout needs.
#[derive(Debug, Clone)]
pub struct RolloutOptions {
    /// The release to publish.
    pub release: ReleaseOptions,
    /// The Auto Scaling group of the deployment.
    pub group: String,
    /// Where the servers read their users.
    pub users: S3Config,
    /// The user created when there is none.
    pub first_user: FirstUser,
    /// The URL that must answer 401 with a login challenge at the end.
    pub health_url: String,
    /// Extra CA certificates trusted for that check.
    pub ca_file: Option<PathBuf>,
    /// How long to wait for it.
    pub wait: Duration,
}

/// The result of a rollout.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutSummary {
    /// What was published.
    pub published: PublishSummary,
    /// The user created because there was none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_user: Option<String>,
    /// Whether the group's instances were replaced.
    pub refreshed: bool,
    /// The group.
    pub group: String,
    /// The URL that answered.
    pub health_url: String,
}

/// Publishes the release, makes the first user when there is none, replaces the instances when
/// the release changed, and waits until the registry answers.
pub async fn rollout(
    aws: &Aws,
    opts: &RolloutOptions,
    reporter: &Reporter,
) -> anyhow::Result<RolloutSummary> {
    let published = release::publish(&aws.s3, &opts.release, reporter).await?;
    let first_user = first_user(opts, reporter).await?;
    // Instances install the release the pointer names at boot: a new pointer needs new instances.
    let refreshed = published.uploaded.iter().any(|key| key == &published.pointer);
    if refreshed {
        let progress = |status: &str, percent: i32| reporter.note(format!("{status}, {percent}% done"));
        reporter
            .task("instance refresh", &opts.group, async {
                auto_scaling::refresh_instances(
                    aws,
                    &opts.group,
                    auto_scaling::Replace::All,
                    auto_scaling::REFRESH_TIMEOUT,
                    &progress,
                )
                .await?;
                Ok(("every instance replaced by one running the new release".to_string(), ()))
            })
            .await
            .1?;
    }
    let (seconds, answered) =
        poll_health(&opts.health_url, opts.ca_file.as_deref(), opts.wait, reporter).await?;
    answered.map_err(|problem| {
        anyhow!(
            "{} did not answer 401 with a login challenge within {seconds:.0}s; last problem: {problem:#}.\n\
             `regctl status` shows each instance's health in the load balancer's target group; an \
             instance that fails to install the release says why on its console (EC2 console output).",
            opts.health_url
        )
    })?;
    Ok(RolloutSummary {
        published,
        first_user,
        refreshed,
        group: opts.group.clone(),
        health_url: opts.health_url.clone(),
    })
}

/// Creates the first user, an administrator, among the users in the bucket when there is none;
/// its name when it did.
async fn first_user(opts: &RolloutOptions, reporter: &Reporter) -> anyhow::Result<Option<String>> {
    let target = Target::Bucket(opts.users.clone());
    let existing = reporter
        .task("users", &format!("s3://{}", opts.users.bucket), async {
            let existing = users::list_users(&target).await?;
            Ok((format!("{} user(s)", existing.len()), existing.len()))
        })
        .await
        .1?;
    if existing > 0 {
        return Ok(None);
    }
    // Asked outside any spinner, which would draw over the prompt.
    let first = &opts.first_user;
    users::add_user(&AddUserOptions {
        target,
        user: first.name.clone(),
        password: first.password,
        cost: first.cost,
        // The first user administers the registry: `delete` on every repository.
        grant: Some(regctl_registry::auth::access::Grant::full()),
    })
    .await
    .context("the registry has no users yet and deploy creates the first one")?;
    reporter.say(format!("users s3://{}: created the first user, {}", opts.users.bucket, first.name));
    Ok(Some(first.name.clone()))
}
