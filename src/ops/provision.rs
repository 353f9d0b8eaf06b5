//! `provision`: creates or converges every AWS resource of a deployment, in dependency order,
//! each step observing first and then creating, updating or leaving alone.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

use super::progress::{Reporter, StepReport};
use super::state::{Settings, StateFile};
use crate::aws::{
    Aws, AwsError, Change, Names, Retry, association, bucket, dns, elastic_ip, instance, instance_profile,
    policy, role, security_group,
};
use crate::policies;

/// Default instance type of a launched instance.
pub const DEFAULT_INSTANCE_TYPE: &str = "t3.small";
/// Default days until noncurrent object versions expire.
pub const DEFAULT_NONCURRENT_DAYS: i32 = 30;
/// Default days until incomplete multipart uploads are aborted.
pub const DEFAULT_ABORT_MULTIPART_DAYS: i32 = 7;

/// What `provision` is asked to do.
#[derive(Debug, Clone)]
pub struct ProvisionOptions {
    /// The deployment.
    pub names: Names,
    /// Its settings: flags laid over the recorded ones.
    pub settings: Settings,
    /// Only print the plan.
    pub dry_run: bool,
    /// Retry schedule for the instance profile association while IAM propagates.
    pub iam_retry: Retry,
    /// How long to wait for a DNS change to be INSYNC.
    pub insync_timeout: Duration,
    /// Where the settings are recorded (`None`: not recorded).
    pub state_file: Option<PathBuf>,
    /// Where the SSH CIDR came from, for the message saying what was chosen.
    pub ssh_cidr_origin: String,
    /// Point the DNS name at the deployment even when its A record points somewhere else now
    /// (`--yes`).
    pub replace_foreign_record: bool,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct ProvisionSummary {
    /// Deployment name.
    pub deployment: String,
    /// Region.
    pub region: String,
    /// True for a dry run (nothing was changed).
    pub dry_run: bool,
    /// True when any step made (or would make) a change.
    pub changed: bool,
    /// Each step.
    pub steps: Vec<StepReport>,
    /// The bucket.
    pub bucket: String,
    /// The DNS name.
    pub domain: String,
    /// The instance, once known.
    pub instance_id: Option<String>,
    /// The instance's state, once known.
    pub instance_state: Option<String>,
    /// The address the DNS name points at, once known.
    pub public_ip: Option<String>,
}

/// Checks an IPv4 CIDR (a bare address means /32) and returns it in the canonical form AWS
/// stores (host bits cleared), so the next run compares equal.
pub fn normalize_cidr(cidr: &str) -> Result<String, String> {
    let (addr, len) = cidr.split_once('/').unwrap_or((cidr, "32"));
    let addr: std::net::Ipv4Addr = addr
        .trim()
        .parse()
        .map_err(|_| format!("{cidr:?} is not an IPv4 address or CIDR, e.g. 203.0.113.7/32"))?;
    let len: u32 =
        len.trim().parse().ok().filter(|l| *l <= 32).ok_or_else(|| format!("{cidr:?}: bad prefix length"))?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Ok(format!("{}/{len}", std::net::Ipv4Addr::from(u32::from(addr) & mask)))
}

/// Checks a DNS name: dot-separated labels of letters, digits and `-`.
pub fn validate_domain(domain: &str) -> Result<String, String> {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if d.len() > 253 || !d.contains('.') || !d.split('.').all(label_ok) {
        return Err(format!("{domain:?} is not a DNS name like registry.example.com"));
    }
    Ok(d)
}

/// Creates or converges the deployment. Stops at the first failing step (later steps depend on
/// it); running again resumes where it stopped.
pub async fn provision(
    aws: &Aws,
    opts: &ProvisionOptions,
    rep: &Reporter,
) -> anyhow::Result<ProvisionSummary> {
    let names = &opts.names;
    let deployment = names.deployment();
    let s = &opts.settings;
    let dry = opts.dry_run;

    let domain = match &s.domain {
        Some(d) => validate_domain(d).map_err(anyhow::Error::msg)?,
        None => bail!(
            "provision needs the registry's DNS name: pass --domain (e.g. --domain registry.example.com)"
        ),
    };
    let ssh_cidr = match &s.ssh_cidr {
        Some(c) => normalize_cidr(c).map_err(anyhow::Error::msg)?,
        None => bail!(
            "provision needs the network allowed to reach SSH: pass --ssh-cidr YOUR.ADDRESS/32 (find your \
             address with `curl https://checkip.amazonaws.com`; 0.0.0.0/0 opens SSH to everyone)"
        ),
    };
    let caller = aws.caller().await?;
    let account = &caller.account;
    let bucket_name = s.bucket.clone().unwrap_or_else(|| names.default_bucket(account, &aws.region));
    let policy_doc =
        policies::s3_bucket_policy(&caller.partition, &bucket_name).map_err(anyhow::Error::msg)?;
    let (zone, found_zone) = match &s.hosted_zone_id {
        Some(z) => (z.trim_start_matches("/hostedzone/").to_string(), None),
        None => {
            let found = dns::find_zone(aws, &domain).await?;
            (found.id.clone(), Some(found))
        }
    };
    let mut instance_wanted = match &s.instance_id {
        Some(id) => instance::Desired::Existing { id: id.clone() },
        None => instance::Desired::Launch(instance::LaunchSpec {
            ami: s.ami.clone(),
            instance_type: s.instance_type.clone().unwrap_or_else(|| DEFAULT_INSTANCE_TYPE.into()),
            key_name: s.key_name.clone(),
            subnet_id: s.subnet_id.clone(),
        }),
    };
    let current_instance = instance::observe(aws, &instance_wanted, deployment).await?;
    // The key pair is how deploy logs in: an instance launched without one (and without access of
    // the user's own) can never be deployed to, and EC2 cannot add one later. An instance launched
    // before this was asked keeps the key it has (recorded now).
    let mut no_ssh_key = s.no_ssh_key == Some(true);
    if let instance::Desired::Launch(spec) = &mut instance_wanted
        && spec.key_name.is_none()
        && !no_ssh_key
    {
        match &current_instance {
            Some(o) => (spec.key_name, no_ssh_key) = (o.key_name.clone(), o.key_name.is_none()),
            None => bail!(
                "provision launches an instance that deploy logs in to over SSH with an EC2 key pair: pass \
                 --key-name NAME (a key pair of {} whose private key you have: `aws ec2 describe-key-pairs`), \
                 or --no-ssh-key if you bring your own access",
                aws.region
            ),
        }
    }
    let wanted_key = match &instance_wanted {
        instance::Desired::Launch(spec) => Some(spec.key_name.clone()),
        instance::Desired::Existing { .. } => None,
    };
    // A mistyped key name: EC2 would refuse it only at RunInstances, after the rest is made.
    if current_instance.is_none()
        && let instance::Desired::Launch(instance::LaunchSpec { key_name: Some(key), .. }) = &instance_wanted
    {
        instance::check_key_pair(aws, key).await?;
    }
    let want_eip = s.elastic_ip.unwrap_or(false);
    // What was just created may not be visible to the next call yet: say so while waiting.
    let not_yet = |e: &AwsError, delay: Duration| {
        rep.note(format!(
            "not visible yet ({}); retrying in {:.1}s",
            e.code.as_deref().unwrap_or("error"),
            delay.as_secs_f64()
        ))
    };

    rep.say(format!(
        "deployment {deployment} in {} (account {account}){}",
        aws.region,
        if dry { ": dry run, nothing is changed" } else { "" }
    ));
    rep.say(format!(
        "SSH (port 22) allowed from {ssh_cidr} (from {}); 80 and 443 from anywhere",
        opts.ssh_cidr_origin
    ));
    if ssh_cidr == "0.0.0.0/0" {
        rep.say("warning: SSH is open to the whole internet");
    }
    if let Some(found) = &found_zone {
        rep.say(format!("DNS name in hosted zone {} ({}), found from the name", found.id, found.name));
        if let Some(warning) = found.warning() {
            rep.say(format!("warning: {warning}"));
        }
    }

    if !dry && let Some(path) = &opts.state_file {
        // Recorded before the first change, so a teardown after an interrupted run knows it all.
        let recorded = Settings {
            region: Some(aws.region.clone()),
            bucket: Some(bucket_name.clone()),
            domain: Some(domain.clone()),
            hosted_zone_id: Some(zone.clone()),
            ssh_cidr: Some(ssh_cidr.clone()),
            elastic_ip: Some(want_eip),
            key_name: wanted_key.clone().flatten(),
            no_ssh_key: no_ssh_key.then_some(true),
            ..s.clone()
        };
        StateFile::record(path, deployment, &recorded)?;
    }

    // 1. Bucket.
    let bucket_desired = bucket::Desired {
        name: bucket_name.clone(),
        region: aws.region.clone(),
        deployment: deployment.to_string(),
        noncurrent_days: s.noncurrent_days.unwrap_or(DEFAULT_NONCURRENT_DAYS),
        abort_multipart_days: s.abort_multipart_days.unwrap_or(DEFAULT_ABORT_MULTIPART_DAYS),
    };
    rep.step("S3 bucket", &bucket_name, dry, async {
        let observed = bucket::observe(aws, &bucket_name).await?;
        if let Some(other) = observed.as_ref().and_then(|o| o.deployment_tag()).filter(|t| *t != deployment) {
            bail!(
                "S3 bucket {bucket_name} belongs to deployment {other:?}: pick another bucket with --bucket \
                 or that deployment with --name {other}"
            );
        }
        let plan = bucket::plan(observed.as_ref(), &bucket_desired)?;
        if !dry {
            bucket::apply(aws, &bucket_desired, &plan, &not_yet).await?;
        }
        Ok((plan.change, ()))
    })
    .await?;

    // 2. IAM policy, role, instance profile.
    let policy_desired = policy::Desired {
        name: names.policy(),
        arn: names.policy_arn(&caller),
        document: policy_doc,
        deployment: deployment.to_string(),
    };
    rep.step("IAM policy", &policy_desired.name, dry, async {
        let observed = policy::observe(aws, &policy_desired.name, &policy_desired.arn).await?;
        let plan = policy::plan(observed.as_ref(), &policy_desired);
        if !dry {
            policy::apply(aws, &policy_desired, &plan).await?;
        }
        Ok((plan.change, ()))
    })
    .await?;
    let role_desired = role::Desired {
        name: names.role(),
        trust: policies::EC2_TRUST.to_string(),
        policy_arn: policy_desired.arn.clone(),
        deployment: deployment.to_string(),
    };
    rep.step("IAM role", &role_desired.name, dry, async {
        let observed = role::observe(aws, &role_desired.name, deployment).await?;
        let plan = role::plan(observed.as_ref(), &role_desired);
        if !dry {
            role::apply(aws, &role_desired, &plan, &not_yet).await?;
        }
        Ok((plan.change, ()))
    })
    .await?;
    let profile_desired = instance_profile::Desired {
        name: names.instance_profile(),
        role: role_desired.name.clone(),
        deployment: deployment.to_string(),
    };
    rep.step("IAM instance profile", &profile_desired.name, dry, async {
        let observed = instance_profile::observe(aws, &profile_desired.name, deployment).await?;
        let plan = instance_profile::plan(observed.as_ref(), &profile_desired);
        if !dry {
            instance_profile::apply(aws, &profile_desired, &plan, &not_yet).await?;
        }
        Ok((plan.change, ()))
    })
    .await?;

    // 3. Security group, in the instance's VPC.
    let placement = instance::placement(aws, &instance_wanted, current_instance.as_ref()).await?;
    if current_instance.is_none()
        && let Some(reason) = &placement.reason
    {
        rep.say(format!("launching in {reason}"));
    }
    if current_instance.is_none()
        && let Some("arm64") = placement.architecture.as_deref()
    {
        rep.say(
            "the instance type is arm64 (Graviton): Amazon Linux 2023 for arm64, and deploy needs a server built \
             for aarch64-unknown-linux-musl (README, \"A server binary that runs on the instance\")",
        );
    }
    if current_instance.is_none() && !placement.public_ip_on_launch {
        rep.say(format!(
            "subnet {} does not give instances a public IPv4 address: the new instance's interface asks for one",
            placement.subnet_id.as_deref().unwrap_or("?")
        ));
    }
    let group_desired = security_group::Desired {
        name: names.security_group(),
        vpc_id: placement.vpc_id.clone(),
        ssh_cidr: ssh_cidr.clone(),
        deployment: deployment.to_string(),
        domain: domain.clone(),
        hosted_zone_id: Some(zone.clone()),
    };
    let group_id = rep
        .step("security group", &format!("{} in {}", group_desired.name, placement.vpc_id), dry, async {
            let observed = security_group::observe(aws, &group_desired.name, &placement.vpc_id).await?;
            let plan = security_group::plan(observed.as_ref(), &group_desired);
            // The record of an earlier DNS name goes once the new one is in place.
            let old_dns = observed
                .as_ref()
                .and_then(|o| o.recorded_dns())
                .filter(|(d, z)| dns::fqdn(d) != dns::fqdn(&domain) || *z != zone);
            let recorded_value = observed.as_ref().and_then(|o| o.recorded_dns_value());
            let id = if dry {
                observed.map(|o| o.id)
            } else {
                Some(security_group::apply(aws, &group_desired, &plan, &not_yet).await?)
            };
            Ok((plan.change, (id, old_dns, recorded_value)))
        })
        .await?;
    let (group_id, old_dns, recorded_value) = group_id;

    // 4. The instance.
    let instance_label = match (&instance_wanted, &current_instance) {
        (_, Some(o)) => o.id.clone(),
        (instance::Desired::Existing { id }, None) => id.clone(),
        (instance::Desired::Launch(spec), None) => format!("(new {})", spec.instance_type),
    };
    let running = rep
        .step("instance", &instance_label, dry, async {
            let plan = instance::plan(
                current_instance.as_ref(),
                deployment,
                group_id.as_deref(),
                wanted_key.as_ref().map(Option::as_deref),
            );
            if dry {
                return Ok((plan.change, current_instance.clone()));
            }
            // Replacing the instance would fix it, but also stop the registry, change its address
            // and need a new deploy and certificate: the user's call, not a side effect.
            if let (Some(mismatch), Some(o)) = (&plan.key_mismatch, &current_instance) {
                bail!(
                    "instance {} has {mismatch}. To launch one with the wanted key: `regctl teardown` \
                     (keeps the bucket and its images), then provision again; to keep this one, pass \
                     {}",
                    o.id,
                    o.key_name
                        .as_deref()
                        .map_or_else(|| "--no-ssh-key".to_string(), |k| format!("--key-name {k}"))
                );
            }
            let group = group_id.as_deref().context("the security group has no ID")?;
            let o = instance::apply(
                aws,
                &instance_wanted,
                deployment,
                &plan,
                current_instance.as_ref(),
                &placement,
                group,
                &not_yet,
            )
            .await?;
            Ok((plan.change, Some(o)))
        })
        .await?;
    let instance_id = running.as_ref().map(|o| o.id.clone());

    // 5. The instance profile on the instance.
    rep.step(
        "instance profile association",
        instance_id.as_deref().unwrap_or("(new instance)"),
        dry,
        async {
            let observed = match &instance_id {
                Some(id) => association::observe(aws, id).await?,
                None => None,
            };
            let plan = association::plan(observed.as_ref(), &profile_desired.name);
            if !dry && let Some(id) = &instance_id {
                association::apply(aws, id, &profile_desired.name, &plan, opts.iam_retry, |e, delay| {
                    rep.note(format!(
                        "IAM has not propagated the instance profile yet ({}); retrying in {:.1}s",
                        e.code.as_deref().unwrap_or("error"),
                        delay.as_secs_f64()
                    ))
                })
                .await?;
            }
            Ok((plan.change, ()))
        },
    )
    .await?;

    // 6. Elastic IP (or none), then the DNS record.
    let existing_eip = elastic_ip::observe(aws, deployment).await?;
    let mut public_ip = running.as_ref().and_then(|o| o.public_ip.clone());
    if want_eip || existing_eip.is_some() {
        let label = existing_eip.as_ref().map_or_else(|| "(new)".to_string(), |e| e.public_ip.clone());
        let eip = rep
            .step("Elastic IP", &label, dry, async {
                let plan = elastic_ip::plan(existing_eip.as_ref(), want_eip, instance_id.as_deref());
                let ip = match (&instance_id, dry) {
                    (Some(id), false) => {
                        elastic_ip::apply(aws, deployment, existing_eip.as_ref(), &plan, id).await?
                    }
                    _ => existing_eip.as_ref().filter(|_| want_eip).map(|e| e.public_ip.clone()),
                };
                Ok((plan.change, ip))
            })
            .await?;
        if want_eip {
            public_ip = eip;
        } else if !dry {
            // Releasing the Elastic IP gives the instance a new public address.
            if let Some(id) = &instance_id {
                public_ip = instance::observe_id(aws, id).await?.and_then(|o| o.public_ip);
            }
        }
    }
    if !dry && public_ip.is_none() {
        bail!(
            "instance {} has no public IPv4 address for {domain}: pass --elastic-ip, or launch it in a subnet \
             that assigns public addresses (--subnet-id)",
            instance_id.as_deref().unwrap_or("?")
        );
    }
    // The addresses that are the deployment's: a record at any other is someone else's.
    let owned: Vec<String> = [
        current_instance.as_ref().and_then(|o| o.public_ip.clone()),
        running.as_ref().and_then(|o| o.public_ip.clone()),
        existing_eip.as_ref().map(|e| e.public_ip.clone()),
        public_ip.clone(),
        recorded_value.clone(),
    ]
    .into_iter()
    .flatten()
    .collect();
    rep.step("DNS record", &format!("{domain} A (zone {zone})"), dry, async {
        let observed = dns::observe(aws, &zone, &domain).await?;
        let plan = dns::plan(observed.as_ref(), public_ip.as_deref(), &owned);
        if let Some(values) = &plan.foreign
            && !dry
            && !opts.replace_foreign_record
        {
            bail!(
                "the A record of {domain} points at {}, not at this deployment's instance or Elastic IP: \
                 it may serve something else. Check it, then run again with --yes to point it at {}",
                values.join(","),
                public_ip.as_deref().unwrap_or("the instance")
            );
        }
        if !dry && let Some(ip) = &public_ip {
            dns::apply(aws, &zone, &domain, ip, &plan, opts.insync_timeout).await?;
            if recorded_value.as_deref() != Some(ip.as_str())
                && let Some(group) = &group_id
            {
                security_group::record_dns_value(aws, group, ip).await?;
            }
        }
        let mut change = plan.change;
        if let Some((old_domain, old_zone)) = &old_dns
            && dns::observe(aws, old_zone, old_domain).await?.is_some()
        {
            if !dry {
                dns::destroy(aws, old_zone, old_domain, &owned, opts.insync_timeout).await?;
            }
            let note = format!("remove the record of the former name {old_domain}");
            change = match change {
                Change::Update(mut c) => {
                    c.push(note);
                    Change::Update(c)
                }
                Change::Unchanged => Change::Update(vec![note]),
                Change::Create | Change::Delete => Change::Update(vec![format!("new name {domain}"), note]),
            };
        }
        Ok((change, ()))
    })
    .await?;

    let steps = rep.steps();
    let changed = steps.iter().any(|s| !s.change.is_unchanged());
    Ok(ProvisionSummary {
        deployment: deployment.to_string(),
        region: aws.region.clone(),
        dry_run: dry,
        changed,
        steps,
        bucket: bucket_name,
        domain,
        instance_id,
        instance_state: running.map(|o| o.state),
        public_ip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_canonical() {
        assert_eq!(normalize_cidr("203.0.113.7").as_deref(), Ok("203.0.113.7/32"));
        assert_eq!(normalize_cidr("203.0.113.7/24").as_deref(), Ok("203.0.113.0/24"));
        assert_eq!(normalize_cidr("0.0.0.0/0").as_deref(), Ok("0.0.0.0/0"));
        assert!(normalize_cidr("203.0.113.7/33").is_err());
        assert!(normalize_cidr("example.com/32").is_err());
    }

    #[test]
    fn domains_are_checked() {
        assert_eq!(validate_domain("Registry.Example.com.").as_deref(), Ok("registry.example.com"));
        for bad in ["localhost", "a..b", "-a.b", "a_b.c"] {
            assert!(validate_domain(bad).is_err(), "{bad}");
        }
    }
}
