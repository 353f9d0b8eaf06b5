//! `regctl status`: flags and recorded settings in, [`ops::status`](crate::ops::status) out, as
//! a table or JSON.

use std::time::Duration;

use super::deployment::{block_on, connect, json, load, print_json, target_settings};
use crate::aws::Retry;
use crate::cli::{GlobalArgs, StatusArgs};
use crate::exit::Failure;
use crate::ops::provision::ProvisionOptions;
use crate::ops::status::{State, StatusOptions, StatusReport, status};

/// Runs `regctl status`.
pub fn run(global: &GlobalArgs, args: StatusArgs) -> anyhow::Result<()> {
    let (names, recorded) = load(global, &args.state)?;
    let settings = recorded.overlay(&target_settings(global, &args.target));
    let opts = StatusOptions {
        provision: ProvisionOptions {
            names,
            settings,
            dry_run: true,
            iam_retry: Retry::IAM_PROPAGATION,
            insync_timeout: Duration::from_secs(0),
            certificate_timeout: Duration::from_secs(0),
            state_file: None,
            ssh_cidr_origin: args.state.state_file.display().to_string(),
            replace_foreign_record: false,
        },
        probe: !args.no_probe,
        health_url: args.health_url.clone(),
        ca_file: args.ca_file.clone(),
    };
    let json = json(global);
    block_on(async {
        let aws = connect(global, &opts.provision.settings).await?;
        let report = status(&aws, &opts).await?;
        if json { print_json(&report) } else { print_text(&report) }?;
        let drifted: Vec<String> = report
            .resources
            .iter()
            .filter(|r| matches!(r.status, State::Missing | State::Drifted))
            .map(|r| format!("{} {} ({})", r.resource, r.name, r.status))
            .collect();
        if drifted.is_empty() {
            return Ok(());
        }
        Err(Failure::Drift.mark(anyhow::anyhow!(
            "{} resource(s) differ from the recorded settings: {}; `regctl provision` converges them",
            drifted.len(),
            drifted.join(", ")
        )))
    })?
}

fn print_text(r: &StatusReport) -> anyhow::Result<()> {
    println!("deployment {} in {} (compared with {})", r.deployment, r.region, r.source);
    if r.resources.is_empty() {
        println!("  nothing found");
    }
    for res in &r.resources {
        let changes =
            if res.changes.is_empty() { String::new() } else { format!(": {}", res.changes.join("; ")) };
        println!("  {:<8} {} {}{changes}", res.status, res.resource, res.name);
    }
    if let Some(g) = &r.group {
        println!(
            "Auto Scaling group {}: {} of {} instances{}",
            g.name,
            g.instances.len(),
            g.desired,
            g.status.as_deref().map(|s| format!(" ({s})")).unwrap_or_default()
        );
        for m in &g.instances {
            println!(
                "  instance {} in {}: {}, {}; load balancer: {}{}",
                m.member.id,
                m.member.zone,
                m.member.lifecycle,
                m.member.health,
                m.target_health.as_deref().unwrap_or("not registered"),
                m.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
            );
        }
    }
    match &r.instance {
        Some(i) => println!(
            "instance {}: {}, public address {}",
            i.id,
            i.state,
            i.public_ip.as_deref().unwrap_or("none")
        ),
        None if r.group.is_some() => {}
        None => println!("instance: none"),
    }
    if let Some(why) = &r.probe_skipped {
        println!("DNS and HTTPS: not probed ({why})");
    }
    if let (Some(domain), Some(dns)) = (&r.domain, &r.dns) {
        match &dns.error {
            Some(e) => println!("DNS {domain}: no answer ({e})"),
            None => println!("DNS {domain}: {}", dns.addresses.join(", ")),
        }
    }
    if let Some(h) = &r.https {
        match (&h.error, h.status) {
            (Some(e), _) => println!("HTTPS: failed ({e})"),
            (None, Some(s)) => println!(
                "HTTPS /v2/: {s}{}{}",
                if s == 200 || s == 401 { " (registry answering)" } else { "" },
                h.certificate_days_left
                    .map(|d| format!(", certificate expires in {d} days"))
                    .unwrap_or_default()
            ),
            (None, None) => println!("HTTPS /v2/: no HTTP status line"),
        }
    }
    Ok(())
}
