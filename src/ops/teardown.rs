//! `teardown`: finds everything of a deployment (from the state file and from tags alone) and
//! removes it in reverse dependency order, going on past failures and reporting all of them.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::progress::Reporter;
use super::state::{Settings, StateFile};
use crate::aws::{
    Aws, AwsError, Names, Removed, Retry, association, auto_scaling, bucket, certificate, dns, elastic_ip,
    instance, instance_profile, launch_template, listener, load_balancer, policy, role, security_group,
    target_group,
};

/// How long teardown retries deleting a target group the deleted load balancer still holds.
const TARGET_GROUP_RELEASE: Duration = Duration::from_secs(120);

/// One resource of a deployment, as found by [`inventory`].
#[derive(Debug, Clone)]
pub enum Item {
    /// The Route 53 A record.
    DnsRecord {
        /// Hosted zone ID.
        zone: String,
        /// DNS name.
        domain: String,
        /// The deployment's addresses: the record is deleted only while it points at them.
        owned: Vec<String>,
    },
    /// A scaled deployment's Auto Scaling group (deleted with its instances).
    AutoScalingGroup(String),
    /// A scaled deployment's launch template.
    LaunchTemplate {
        /// Template ID.
        id: String,
        /// Template name.
        name: String,
    },
    /// A listener of the load balancer.
    Listener {
        /// Its ARN.
        arn: String,
        /// Its port.
        port: i32,
    },
    /// The load balancer.
    LoadBalancer {
        /// Its name.
        name: String,
        /// Its ARN.
        arn: String,
    },
    /// The target group.
    TargetGroup {
        /// Its name.
        name: String,
        /// Its ARN.
        arn: String,
    },
    /// The CNAME record that validates the certificate.
    CertificateRecord {
        /// Hosted zone ID.
        zone: String,
        /// Record name.
        name: String,
        /// Record value.
        value: String,
    },
    /// The ACM certificate.
    Certificate(certificate::Observed),
    /// The instance profile association of an instance.
    Association {
        /// The instance.
        instance: String,
    },
    /// An instance (terminated if regctl launched it, untagged otherwise).
    Instance(instance::Observed),
    /// The security group.
    SecurityGroup(security_group::Found),
    /// The instance profile.
    InstanceProfile(String),
    /// The role.
    Role(String),
    /// The S3 policy.
    Policy {
        /// Policy name.
        name: String,
        /// Policy ARN.
        arn: String,
    },
    /// The Elastic IP.
    ElasticIp(elastic_ip::Observed),
    /// The bucket (deleted only when asked).
    Bucket {
        /// Bucket name.
        name: String,
        /// True with `--delete-bucket`.
        delete: bool,
    },
}

impl Item {
    /// The kind of resource, as printed.
    pub fn kind(&self) -> &'static str {
        match self {
            Item::DnsRecord { .. } => "DNS record",
            Item::AutoScalingGroup(_) => "Auto Scaling group",
            Item::LaunchTemplate { .. } => "launch template",
            Item::Listener { .. } => "listener",
            Item::LoadBalancer { .. } => "load balancer",
            Item::TargetGroup { .. } => "target group",
            Item::CertificateRecord { .. } => "certificate validation record",
            Item::Certificate(_) => "ACM certificate",
            Item::Association { .. } => "instance profile association",
            Item::Instance(_) => "instance",
            Item::SecurityGroup(_) => "security group",
            Item::InstanceProfile(_) => "IAM instance profile",
            Item::Role(_) => "IAM role",
            Item::Policy { .. } => "IAM policy",
            Item::ElasticIp(_) => "Elastic IP",
            Item::Bucket { .. } => "S3 bucket",
        }
    }

    /// Its name or ID, as printed.
    pub fn name(&self) -> String {
        match self {
            Item::DnsRecord { zone, domain, .. } => format!("{domain} A (zone {zone})"),
            Item::AutoScalingGroup(name) => format!("{name} (with its instances)"),
            Item::LaunchTemplate { id, name } => format!("{name} ({id})"),
            Item::Listener { port, .. } => format!("port {port}"),
            Item::LoadBalancer { name, .. } | Item::TargetGroup { name, .. } => name.clone(),
            Item::CertificateRecord { zone, name, .. } => format!("{name} CNAME (zone {zone})"),
            Item::Certificate(c) => format!("{} ({})", c.domain, c.status),
            Item::Association { instance } => instance.clone(),
            Item::Instance(o) if o.launched => format!("{} (launched by regctl: terminate)", o.id),
            Item::Instance(o) => format!("{} (not launched by regctl: untag, keep)", o.id),
            Item::SecurityGroup(g) => format!("{} ({})", g.name, g.id),
            Item::InstanceProfile(n) | Item::Role(n) => n.clone(),
            Item::Policy { name, .. } => name.clone(),
            Item::ElasticIp(e) => format!("{} ({})", e.public_ip, e.allocation_id),
            Item::Bucket { name, .. } => name.clone(),
        }
    }

    /// What happens to it, when that is not plain removal.
    pub fn note(&self) -> &'static str {
        match self {
            Item::Bucket { delete: true, .. } => " (with every object version and delete marker)",
            Item::Bucket { delete: false, .. } => " (kept: pass --delete-bucket to delete it and its images)",
            _ => "",
        }
    }
}

/// What teardown is asked to do.
#[derive(Debug, Clone)]
pub struct TeardownOptions {
    /// The deployment.
    pub names: Names,
    /// Recorded settings laid under the flags (may be empty: tags are enough).
    pub settings: Settings,
    /// Delete the bucket and all its versions too.
    pub delete_bucket: bool,
    /// Only list what would be removed.
    pub dry_run: bool,
    /// How long to wait for Route 53 changes.
    pub insync_timeout: Duration,
    /// How long to retry deleting a security group still in use.
    pub group_release: Retry,
    /// The state file, whose entry is removed once everything is gone.
    pub state_file: Option<PathBuf>,
}

/// What became of one resource (in JSON: `deleted`, `absent`, `kept`, `failed`, or `planned`
/// in a dry run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemResult {
    /// Removed.
    Deleted,
    /// Already gone.
    Absent,
    /// Left in place, on purpose (the bucket without `--delete-bucket`).
    Kept,
    /// The removal failed.
    Failed,
    /// Would be removed (a dry run).
    Planned,
}

/// The outcome for one resource.
#[derive(Debug, Clone, Serialize)]
pub struct ItemReport {
    /// Kind of resource.
    pub resource: String,
    /// Name or ID.
    pub name: String,
    /// What became of it.
    pub result: ItemResult,
    /// Why it was kept, or what failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Wall-clock time.
    pub seconds: f64,
}

/// The result of a teardown.
#[derive(Debug, Clone, Serialize)]
pub struct TeardownSummary {
    /// Deployment name.
    pub deployment: String,
    /// Region.
    pub region: String,
    /// True for a dry run.
    pub dry_run: bool,
    /// Each resource found.
    pub items: Vec<ItemReport>,
    /// Problems met while looking for resources (they may have left something behind).
    pub warnings: Vec<String>,
    /// How many removals failed.
    pub failures: usize,
}

/// Finds the deployment's resources, in the order they are removed: from the recorded settings
/// where there are some, from tags and derived names otherwise.
pub async fn inventory(
    aws: &Aws,
    names: &Names,
    settings: &Settings,
    delete_bucket: bool,
) -> Result<(Vec<Item>, Vec<String>), AwsError> {
    let deployment = names.deployment();
    let mut items = Vec::new();
    let mut warnings = Vec::new();
    let caller = aws.caller().await?;

    let mut groups = security_group::find_tagged(aws, deployment).await?;
    // The instances' group first: its rule names the load balancer's group, which cannot go before.
    groups.sort_by_key(|g| g.name == names.balancer_security_group());
    let mut instances = instance::find_tagged(aws, deployment).await?;
    // A scaled deployment's instances go with their Auto Scaling group.
    instances.retain(|i| i.auto_scaling_group().is_none());
    let scaled = names.scaled();
    let balancer = match load_balancer::observe(aws, &scaled).await? {
        Some(b) if load_balancer::is_tagged(aws, &b.arn, deployment).await? => Some(b),
        _ => None,
    };
    if let Some(id) = &settings.instance_id
        && !instances.iter().any(|i| &i.id == id)
        && let Some(o) = instance::observe_id(aws, id).await?
    {
        instances.push(o);
    }
    let eip = elastic_ip::observe(aws, deployment).await?;
    let owned: Vec<String> = instances
        .iter()
        .filter_map(|i| i.public_ip.clone())
        .chain(eip.as_ref().map(|e| e.public_ip.clone()))
        .chain(groups.iter().filter_map(|g| g.dns_value.clone()))
        .chain(balancer.iter().map(|b| dns::alias_name(&b.dns_name)))
        .collect();
    let domain = settings.domain.clone().or_else(|| groups.iter().find_map(|g| g.domain.clone()));
    let zone =
        settings.hosted_zone_id.clone().or_else(|| groups.iter().find_map(|g| g.hosted_zone_id.clone()));
    let mut record_zone = None;
    if let Some(domain) = &domain {
        let zone = match zone {
            Some(z) => Some(z),
            None => match dns::find_zone(aws, domain).await {
                Ok(z) => {
                    warnings.extend(z.warning());
                    Some(z.id)
                }
                Err(e) => {
                    warnings.push(format!("cannot look for the DNS record of {domain}: {e}"));
                    None
                }
            },
        };
        if let Some(zone) = &zone
            && dns::observe(aws, zone, domain).await?.is_some()
        {
            items.push(Item::DnsRecord { zone: zone.clone(), domain: domain.clone(), owned });
        }
        record_zone = zone;
    }

    if let Some(g) = auto_scaling::observe(aws, &scaled).await?
        && g.deployment.as_deref() == Some(deployment)
    {
        items.push(Item::AutoScalingGroup(scaled.clone()));
    }
    items.extend(
        launch_template::find_tagged(aws, deployment)
            .await?
            .into_iter()
            .map(|(id, name)| Item::LaunchTemplate { id, name }),
    );
    if let Some(b) = balancer {
        for l in listener::observe(aws, &b.arn).await? {
            items.push(Item::Listener { arn: l.arn, port: l.port });
        }
        items.push(Item::LoadBalancer { name: scaled.clone(), arn: b.arn });
    }
    if let Some(tg) = target_group::observe(aws, &scaled).await?
        && load_balancer::is_tagged(aws, &tg.arn, deployment).await?
    {
        items.push(Item::TargetGroup { name: scaled.clone(), arn: tg.arn });
    }
    for c in certificate::find_tagged(aws, deployment).await? {
        if let (Some(zone), Some(v)) = (&record_zone, &c.validation) {
            items.push(Item::CertificateRecord {
                zone: zone.clone(),
                name: v.name.clone(),
                value: v.value.clone(),
            });
        }
        items.push(Item::Certificate(c));
    }

    for i in &instances {
        if let Some(a) = association::observe(aws, &i.id).await?
            && association::is_profile(&a.profile_arn, &names.instance_profile())
        {
            items.push(Item::Association { instance: i.id.clone() });
        }
    }
    items.extend(instances.into_iter().map(Item::Instance));
    items.extend(groups.into_iter().map(Item::SecurityGroup));

    if instance_profile::observe(aws, &names.instance_profile(), deployment).await?.is_some() {
        items.push(Item::InstanceProfile(names.instance_profile()));
    }
    if role::observe(aws, &names.role(), deployment).await?.is_some() {
        items.push(Item::Role(names.role()));
    }
    let arn = names.policy_arn(&caller);
    if policy::observe(aws, &names.policy(), &arn).await?.is_some() {
        items.push(Item::Policy { name: names.policy(), arn });
    }
    if let Some(eip) = eip {
        items.push(Item::ElasticIp(eip));
    }

    let mut buckets = bucket::find_tagged(aws, deployment).await?;
    if let Some(b) = &settings.bucket
        && !buckets.contains(b)
    {
        match bucket::observe(aws, b).await {
            Ok(Some(o)) if o.deployment_tag() == Some(deployment) => buckets.push(b.clone()),
            Ok(Some(_)) => warnings.push(format!(
                "S3 bucket {b} is recorded for this deployment but not tagged {}={deployment}: left alone",
                crate::aws::TAG_DEPLOYMENT
            )),
            Ok(None) => {}
            Err(e) => warnings.push(format!("cannot inspect S3 bucket {b}: {e}")),
        }
    }
    items.extend(buckets.into_iter().map(|name| Item::Bucket { name, delete: delete_bucket }));
    Ok((items, warnings))
}

async fn remove(
    aws: &Aws,
    item: &Item,
    opts: &TeardownOptions,
) -> Result<(Removed, Option<String>), AwsError> {
    let names = &opts.names;
    let deployment = names.deployment();
    let removed = match item {
        Item::DnsRecord { zone, domain, owned } => {
            dns::destroy(aws, zone, domain, owned, opts.insync_timeout).await?
        }
        Item::AutoScalingGroup(name) => {
            auto_scaling::destroy(aws, name, auto_scaling::DELETE_TIMEOUT).await?
        }
        Item::LaunchTemplate { id, name } => launch_template::destroy(aws, id, name).await?,
        Item::Listener { arn, .. } => listener::destroy(aws, arn).await?,
        Item::LoadBalancer { name, arn } => load_balancer::destroy(aws, name, arn).await?,
        Item::TargetGroup { name, arn } => {
            target_group::destroy(aws, name, arn, Retry::with_timeout(TARGET_GROUP_RELEASE)).await?
        }
        Item::CertificateRecord { zone, name, value } => {
            dns::delete_cname(aws, zone, name, value, opts.insync_timeout).await?
        }
        Item::Certificate(c) => {
            certificate::destroy(aws, &c.arn, Retry::with_timeout(certificate::RELEASE_TIMEOUT)).await?
        }
        Item::Association { instance } => {
            association::destroy(aws, instance, &names.instance_profile()).await?
        }
        Item::Instance(o) => instance::destroy(aws, o).await?,
        Item::SecurityGroup(g) => security_group::destroy(aws, g, opts.group_release).await?,
        Item::InstanceProfile(n) => instance_profile::destroy(aws, n, deployment).await?,
        Item::Role(n) => role::destroy(aws, n, deployment).await?,
        Item::Policy { name, arn } => policy::destroy(aws, name, arn, deployment).await?,
        Item::ElasticIp(_) => elastic_ip::destroy(aws, deployment).await?,
        Item::Bucket { delete: false, .. } => {
            Removed::Kept("holds the images; delete it with teardown --delete-bucket".into())
        }
        Item::Bucket { name, delete: true } => {
            let (removed, emptied) = bucket::destroy(aws, name).await?;
            let detail = format!(
                "{} object versions, {} delete markers, {} incomplete uploads deleted",
                emptied.versions, emptied.delete_markers, emptied.uploads
            );
            return Ok((removed, Some(detail)));
        }
    };
    Ok((removed, None))
}

/// Removes what [`inventory`] found, after `confirm` agrees (it sees the list). Goes on past a
/// failure and reports all of them; the state entry is forgotten once nothing is left.
pub async fn teardown(
    aws: &Aws,
    opts: &TeardownOptions,
    rep: &Reporter,
    confirm: impl FnOnce(&[Item]) -> anyhow::Result<bool>,
) -> anyhow::Result<TeardownSummary> {
    let deployment = opts.names.deployment();
    let (items, warnings) = inventory(aws, &opts.names, &opts.settings, opts.delete_bucket).await?;
    let mut summary = TeardownSummary {
        deployment: deployment.to_string(),
        region: aws.region.clone(),
        dry_run: opts.dry_run,
        items: Vec::new(),
        warnings: warnings.clone(),
        failures: 0,
    };
    for w in &warnings {
        rep.say(format!("warning: {w}"));
    }
    if items.is_empty() {
        rep.say(format!("nothing of deployment {deployment} found in {}", aws.region));
        if !opts.dry_run
            && let Some(path) = &opts.state_file
        {
            StateFile::forget(path, deployment)?;
        }
        return Ok(summary);
    }
    rep.say(format!("deployment {deployment} in {}: {} resources", aws.region, items.len()));
    for item in &items {
        rep.say(format!("  {} {}{}", item.kind(), item.name(), item.note()));
    }
    if opts.dry_run {
        summary.items = items
            .iter()
            .map(|i| ItemReport {
                resource: i.kind().into(),
                name: i.name(),
                result: ItemResult::Planned,
                detail: None,
                seconds: 0.0,
            })
            .collect();
        return Ok(summary);
    }
    if !confirm(&items)? {
        anyhow::bail!("teardown cancelled: nothing was removed");
    }
    let mut kept_bucket = false;
    for item in &items {
        let (seconds, result) = rep
            .task(item.kind(), &item.name(), async {
                let (removed, detail) = remove(aws, item, opts).await?;
                let outcome = match (&removed, &detail) {
                    (Removed::Deleted, Some(d)) => format!("removed ({d})"),
                    (Removed::Deleted, None) => "removed".to_string(),
                    (Removed::Absent, _) => "already gone".to_string(),
                    (Removed::Kept(why), _) => format!("kept: {why}"),
                };
                Ok((outcome, (removed, detail)))
            })
            .await;
        let (result, detail) = match result {
            Ok((Removed::Deleted, d)) => (ItemResult::Deleted, d),
            Ok((Removed::Absent, d)) => (ItemResult::Absent, d),
            Ok((Removed::Kept(why), _)) => {
                kept_bucket |= matches!(item, Item::Bucket { .. });
                (ItemResult::Kept, Some(why))
            }
            Err(e) => {
                summary.failures += 1;
                (ItemResult::Failed, Some(format!("{e:#}")))
            }
        };
        summary.items.push(ItemReport {
            resource: item.kind().into(),
            name: item.name(),
            result,
            detail,
            seconds,
        });
    }
    if summary.failures == 0
        && !kept_bucket
        && let Some(path) = &opts.state_file
    {
        StateFile::forget(path, deployment)?;
    }
    Ok(summary)
}
