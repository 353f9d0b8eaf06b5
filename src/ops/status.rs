//! `status`: each resource present, missing or drifted; the instance; the DNS answer; the
//! registry's HTTPS health and certificate expiry.

use std::path::PathBuf;

use serde::Serialize;

use super::https::{Target, trust_roots};
use super::probe::{self, DnsAnswer, HttpsAnswer};
use super::progress::Reporter;
use super::provision::{ProvisionOptions, provision};
use super::state::Settings;
use super::teardown::inventory;
use crate::aws::{Aws, Change, Names, auto_scaling, instance, target_group};

/// What `status` is asked to show.
#[derive(Debug, Clone)]
pub struct StatusOptions {
    /// The deployment and its settings (used for the drift check when complete).
    pub provision: ProvisionOptions,
    /// Resolve the name and connect over HTTPS.
    pub probe: bool,
    /// The HTTPS URL to probe instead of `https://DOMAIN/v2/`; given, the probe runs even
    /// against an endpoint override.
    pub health_url: Option<String>,
    /// Extra CA certificates (PEM file) trusted by the HTTPS probe.
    pub ca_file: Option<PathBuf>,
}

/// How a resource compares with the wanted settings (in JSON: `ok`, `missing`, `drifted`,
/// `present`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// As wanted.
    Ok,
    /// Not there.
    Missing,
    /// There, but different (or no longer wanted).
    Drifted,
    /// There; the wanted settings are not known.
    Present,
}

impl State {
    /// The word of the JSON output and the table.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Missing => "missing",
            State::Drifted => "drifted",
            State::Present => "present",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One resource's status.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceStatus {
    /// Kind of resource.
    pub resource: String,
    /// Name or ID.
    pub name: String,
    /// How it compares with the wanted settings.
    pub status: State,
    /// What differs from the wanted settings.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
}

/// The instance as seen now.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    /// ID.
    pub id: String,
    /// State (`running`, `stopped`, ...).
    pub state: String,
    /// Public address.
    pub public_ip: Option<String>,
}

/// One instance of a scaled deployment's group, with its health as the load balancer sees it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    /// The group's view: ID, zone, lifecycle state and health.
    #[serde(flatten)]
    pub member: auto_scaling::Member,
    /// The target group's view: `healthy`, `unhealthy`, `initial`, `draining`, ... (`None`: not
    /// registered).
    pub target_health: Option<String>,
    /// Why, when not healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A scaled deployment's Auto Scaling group as seen now.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    /// Group name.
    pub name: String,
    /// The number of instances it keeps.
    pub desired: i32,
    /// Set while it is being deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Its instances.
    pub instances: Vec<MemberStatus>,
}

/// Everything `status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// Deployment name.
    pub deployment: String,
    /// Region.
    pub region: String,
    /// `settings` when compared with the recorded settings, `tags` when only found by tags.
    pub source: String,
    /// Each resource.
    pub resources: Vec<ResourceStatus>,
    /// The instance, if there is one (of a single-instance deployment).
    pub instance: Option<InstanceStatus>,
    /// The Auto Scaling group of a scaled deployment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupStatus>,
    /// The DNS name.
    pub domain: Option<String>,
    /// What it resolves to (absent when not probed).
    pub dns: Option<DnsAnswer>,
    /// The registry's HTTPS answer (absent when not probed).
    pub https: Option<HttpsAnswer>,
    /// Why probes were skipped, if they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_skipped: Option<String>,
}

fn settings_complete(s: &Settings) -> bool {
    s.domain.is_some() && s.ssh_cidr.is_some()
}

/// Collects the status of the deployment.
pub async fn status(aws: &Aws, opts: &StatusOptions) -> anyhow::Result<StatusReport> {
    let names: &Names = &opts.provision.names;
    let deployment = names.deployment();
    let settings = &opts.provision.settings;
    let mut report = StatusReport {
        deployment: deployment.to_string(),
        region: aws.region.clone(),
        source: String::new(),
        resources: Vec::new(),
        instance: None,
        group: None,
        domain: settings.domain.clone(),
        dns: None,
        https: None,
        probe_skipped: None,
    };
    if settings_complete(settings) {
        // The drift check is the provision plan, made silently and applied never.
        let plan_opts = ProvisionOptions { dry_run: true, state_file: None, ..opts.provision.clone() };
        let summary = provision(aws, &plan_opts, &Reporter::silent()).await?;
        report.source = "settings".into();
        report.domain = Some(summary.domain.clone());
        for step in summary.steps {
            let (status, changes) = match step.change {
                Change::Create => (State::Missing, vec![]),
                Change::Update(c) => (State::Drifted, c),
                Change::Delete => (State::Drifted, vec!["no longer wanted".to_string()]),
                Change::Unchanged => (State::Ok, vec![]),
            };
            report.resources.push(ResourceStatus {
                resource: step.resource,
                name: step.name,
                status,
                changes,
            });
        }
    } else {
        let (items, _) = inventory(aws, names, settings, false).await?;
        report.source = "tags".into();
        for item in &items {
            report.resources.push(ResourceStatus {
                resource: item.kind().into(),
                name: item.name(),
                status: State::Present,
                changes: vec![],
            });
            if let super::teardown::Item::DnsRecord { domain, .. } = item {
                report.domain = Some(domain.clone());
            }
        }
    }
    report.group = group_status(aws, names).await?;
    let instances = match &settings.instance_id {
        Some(id) => instance::observe_id(aws, id).await?.into_iter().collect(),
        None => instance::find_tagged(aws, deployment).await?,
    };
    report.instance = instances
        .into_iter()
        .find(|o| o.auto_scaling_group().is_none())
        .map(|o| InstanceStatus { id: o.id, state: o.state, public_ip: o.public_ip });

    if !opts.probe {
        report.probe_skipped = Some("--no-probe".into());
    } else if aws.endpoint_override && opts.health_url.is_none() {
        report.probe_skipped =
            Some("AWS calls go to an endpoint override (an emulator?); --health-url probes anyway".into());
    } else if let Some(domain) = &report.domain {
        let target = match &opts.health_url {
            Some(url) => match Target::parse(url)? {
                target if target.tls => target,
                _ => {
                    return Err(crate::usage!(
                        "--health-url {url:?}: status probes HTTPS, give an https:// URL"
                    ));
                }
            },
            None => Target { tls: true, host: domain.clone(), port: 443, path: "/v2/".to_string() },
        };
        let roots = trust_roots(opts.ca_file.as_deref())?;
        let answer = probe::resolve(domain).await;
        let connect_to =
            if target.host == *domain { answer.clone() } else { probe::resolve(&target.host).await };
        if let Some(ip) = connect_to.addresses.iter().find_map(|a| a.parse::<std::net::IpAddr>().ok()) {
            report.https = Some(probe::https(&target, (ip, target.port).into(), roots).await);
        }
        report.dns = Some(answer);
    }
    Ok(report)
}

/// The deployment's Auto Scaling group and each instance's target health, if it has a group.
async fn group_status(aws: &Aws, names: &Names) -> anyhow::Result<Option<GroupStatus>> {
    let name = names.scaled();
    let Some(group) = auto_scaling::observe(aws, &name).await? else { return Ok(None) };
    if group.deployment.as_deref() != Some(names.deployment()) {
        return Ok(None);
    }
    let health = match target_group::observe(aws, &name).await? {
        Some(tg) => target_group::health(aws, &tg.arn).await?,
        None => vec![],
    };
    let instances = group
        .members
        .into_iter()
        .map(|member| {
            let target = health.iter().find(|h| h.id == member.id);
            MemberStatus {
                target_health: target.map(|h| h.state.clone()),
                reason: target.and_then(|h| h.reason.clone()),
                member,
            }
        })
        .collect();
    Ok(Some(GroupStatus { name, desired: group.sizes.2, status: group.status, instances }))
}
