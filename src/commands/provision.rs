//! `regctl provision`: flags and recorded settings in, [`ops::provision`](crate::ops::provision)
//! out.

use std::time::Duration;

use super::deployment::{block_on, connect, json, load, print_json, target_settings};
use crate::aws::Retry;
use crate::cli::{GlobalArgs, ProvisionArgs};
use crate::ops::progress::Reporter;
use crate::ops::provision::{ProvisionOptions, provision};
use crate::ops::state::Settings;

/// Runs `regctl provision`.
pub fn run(global: &GlobalArgs, args: ProvisionArgs) -> anyhow::Result<()> {
    let (names, recorded) = load(global, &args.state)?;
    let flags = Settings {
        instance_id: args.instance_id.clone(),
        ami: args.ami.clone(),
        instance_type: args.instance_type.clone(),
        key_name: args.key_name.clone(),
        no_ssh_key: args.no_ssh_key.then_some(true),
        subnet_id: args.subnet_id.clone(),
        ssh_cidr: args.ssh_cidr.clone(),
        elastic_ip: if args.elastic_ip {
            Some(true)
        } else if args.no_elastic_ip {
            Some(false)
        } else {
            None
        },
        noncurrent_days: args.noncurrent_days,
        abort_multipart_days: args.abort_multipart_days,
        instances: args.instances,
        ..target_settings(global, &args.target)
    };
    let ssh_cidr_origin = if args.ssh_cidr.is_some() {
        "--ssh-cidr".to_string()
    } else {
        args.state.state_file.display().to_string()
    };
    // Launch settings only apply to a launched instance: a given --instance-id replaces them.
    let mut settings = recorded.overlay(&flags);
    // A key pair and none are one choice: the one given replaces the one recorded.
    if args.key_name.is_some() {
        settings.no_ssh_key = None;
    } else if args.no_ssh_key {
        settings.key_name = None;
    }
    if args.instance_id.is_some() {
        (settings.ami, settings.instance_type, settings.key_name, settings.no_ssh_key, settings.subnet_id) =
            (None, None, None, None, None);
    } else if args.ami.is_some() || args.instance_type.is_some() || args.subnet_id.is_some() {
        settings.instance_id = None;
    }
    let opts = ProvisionOptions {
        names,
        settings,
        dry_run: args.dry_run,
        iam_retry: Retry { timeout: Duration::from_secs(args.iam_wait), ..Retry::IAM_PROPAGATION },
        insync_timeout: Duration::from_secs(600),
        certificate_timeout: Duration::from_secs(args.certificate_wait),
        state_file: Some(args.state.state_file.clone()),
        ssh_cidr_origin,
        replace_foreign_record: global.yes,
    };
    let json = json(global);
    block_on(async {
        let aws = connect(global, &opts.settings).await?;
        let rep = Reporter::new(json);
        let summary = provision(&aws, &opts, &rep).await?;
        if json {
            print_json(&summary)?;
        } else if summary.dry_run {
            println!("dry run: nothing was changed");
        } else if summary.changed {
            println!(
                "provisioned: {} -> {}",
                summary.domain,
                summary.load_balancer.as_deref().or(summary.public_ip.as_deref()).unwrap_or("(no address)")
            );
            if summary.load_balancer.is_some() {
                println!(
                    "next: `regctl deploy` publishes the release the instances install at boot; until then \
                     they fail their health checks and the group replaces them"
                );
            }
        } else {
            println!("everything is up to date: no changes");
        }
        Ok(())
    })?
}
