//! `provision`: creates or converges every AWS resource of a deployment, in dependency order,
//! each step observing first and then creating, updating or leaving alone.

mod scaled;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

use super::progress::{Reporter, StepReport};
use super::state::{Settings, StateFile};
use crate::aws::{
    Aws, AwsError, Caller, Change, Names, Retry, association, auto_scaling, bucket, dns, elastic_ip,
    instance, instance_profile, policy, role, security_group,
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
    /// How long to wait for ACM to issue a scaled deployment's certificate.
    pub certificate_timeout: Duration,
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
    /// A scaled deployment's load balancer's DNS name (what the DNS name is an alias of), once
    /// known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<String>,
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
///
/// Every step has one shape: observe what exists, plan the change against what is wanted, and
/// apply the plan unless this is a dry run ([`converge`] for the steps that return nothing).
pub async fn provision(
    aws: &Aws,
    opts: &ProvisionOptions,
    rep: &Reporter,
) -> anyhow::Result<ProvisionSummary> {
    let target = Target::resolve(aws, opts).await?;
    let run = Run { aws, opts, rep, target: &target, dry: opts.dry_run };
    run.announce();
    run.record_settings()?;

    run.bucket().await?;
    let profile = run.iam().await?;
    if let Some(size) = target.scaled {
        let load_balancer = run.scaled(size, &profile).await?;
        return Ok(run.summary(None, None, None, load_balancer));
    }
    let placement =
        instance::placement(aws, &target.instance_wanted, target.current_instance.as_ref()).await?;
    run.announce_placement(&placement);
    let group = run.security_group(&placement).await?;
    let running = run.instance(&placement, &group).await?;
    let instance_id = running.as_ref().map(|o| o.id.clone());
    run.association(instance_id.as_deref(), &profile).await?;
    let (public_ip, eip) = run.address(running.as_ref(), instance_id.as_deref()).await?;
    // The addresses that are the deployment's: a record at any other is someone else's.
    let owned: Vec<String> = [
        target.current_instance.as_ref().and_then(|o| o.public_ip.clone()),
        running.as_ref().and_then(|o| o.public_ip.clone()),
        eip.as_ref().map(|e| e.public_ip.clone()),
        public_ip.clone(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let want = public_ip.clone().map(dns::Value::Address);
    run.dns(&group, want.as_ref(), owned).await?;
    Ok(run.summary(instance_id, running.map(|o| o.state), public_ip, None))
}

/// What a run converges to: the request, checked and completed with what AWS says (the caller,
/// the hosted zone, the instance there is and the key pair it needs).
struct Target {
    domain: String,
    ssh_cidr: String,
    caller: Caller,
    bucket_name: String,
    /// The instance role's policy: access to this bucket only.
    policy_doc: String,
    zone: String,
    /// The zone when it was found from the name (not given), for the message saying so.
    found_zone: Option<dns::FoundZone>,
    instance_wanted: instance::Desired,
    current_instance: Option<instance::Observed>,
    /// The key pair a launched instance has (`Some(None)`: none, by `--no-ssh-key`); `None`
    /// for an existing instance of the user's.
    wanted_key: Option<Option<String>>,
    no_ssh_key: bool,
    want_eip: bool,
    /// The number of instances of a scaled deployment (2 or more); `None` for a single instance.
    scaled: Option<i32>,
}

impl Target {
    /// Checks the options and reads what the plan starts from; changes nothing.
    async fn resolve(aws: &Aws, opts: &ProvisionOptions) -> anyhow::Result<Self> {
        let s = &opts.settings;
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
        let bucket_name =
            s.bucket.clone().unwrap_or_else(|| opts.names.default_bucket(&caller.account, &aws.region));
        let policy_doc =
            policies::s3_bucket_policy(&caller.partition, &bucket_name).map_err(anyhow::Error::msg)?;
        let (zone, found_zone) = match &s.hosted_zone_id {
            Some(z) => (z.trim_start_matches("/hostedzone/").to_string(), None),
            None => {
                let found = dns::find_zone(aws, &domain).await?;
                (found.id.clone(), Some(found))
            }
        };
        let deployment = opts.names.deployment();
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
        if s.instances.is_none_or(|n| n < 2)
            && let Some(group) = auto_scaling::observe(aws, &opts.names.scaled()).await?
            && group.deployment.as_deref() == Some(deployment)
        {
            bail!(
                "deployment {deployment} runs {} instances in Auto Scaling group {}: to run a single instance, \
                 `regctl teardown` (keeps the bucket and its images), then provision again; to keep the group, pass \
                 --instances {}",
                group.sizes.2,
                opts.names.scaled(),
                group.sizes.2.max(2)
            );
        }
        if s.instances.is_some_and(|n| n >= 2) {
            if s.instance_id.is_some() || s.elastic_ip == Some(true) || s.subnet_id.is_some() {
                bail!(
                    "--instances N (2 or more) launches its own instances behind a load balancer, in the default \
                     subnets of two or more zones: drop --instance-id, --elastic-ip and --subnet-id"
                );
            }
            if let Some(o) = &current_instance {
                bail!(
                    "deployment {deployment} runs on the single instance {}: to scale it out, `regctl teardown` (keeps \
                     the bucket and its images), then provision again with --instances",
                    o.id
                );
            }
        }
        // The key pair is how deploy logs in: an instance launched without one (and without access
        // of the user's own) can never be deployed to, and EC2 cannot add one later. An instance
        // launched before this was asked keeps the key it has (recorded now).
        let mut no_ssh_key = s.no_ssh_key == Some(true);
        if let instance::Desired::Launch(spec) = &mut instance_wanted
            && spec.key_name.is_none()
            && !no_ssh_key
        {
            match &current_instance {
                Some(o) => (spec.key_name, no_ssh_key) = (o.key_name.clone(), o.key_name.is_none()),
                None => bail!(
                    "provision launches an instance that deploy logs in to over SSH with an EC2 key pair: pass \
                     --key-name NAME (a key pair of {} whose private key you have: `aws ec2 \
                     describe-key-pairs`), or --no-ssh-key if you bring your own access",
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
            && let instance::Desired::Launch(instance::LaunchSpec { key_name: Some(key), .. }) =
                &instance_wanted
        {
            instance::check_key_pair(aws, key).await?;
        }
        Ok(Target {
            domain,
            ssh_cidr,
            caller,
            bucket_name,
            policy_doc,
            zone,
            found_zone,
            instance_wanted,
            current_instance,
            wanted_key,
            no_ssh_key,
            want_eip: s.elastic_ip.unwrap_or(false),
            scaled: s.instances.filter(|n| *n >= 2).map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
        })
    }
}

/// The security group's step result: its ID, the DNS name an earlier run recorded on it when
/// that name is not the one wanted now, and the address recorded as the record's value.
struct Group {
    id: Option<String>,
    old_dns: Option<(String, String)>,
    recorded_value: Option<String>,
}

/// One run's context, shared by its steps.
struct Run<'a> {
    aws: &'a Aws,
    opts: &'a ProvisionOptions,
    rep: &'a Reporter,
    target: &'a Target,
    dry: bool,
}

impl Run<'_> {
    fn deployment(&self) -> &str {
        self.opts.names.deployment()
    }

    /// The result of the run, from the steps reported.
    fn summary(
        &self,
        instance_id: Option<String>,
        instance_state: Option<String>,
        public_ip: Option<String>,
        load_balancer: Option<String>,
    ) -> ProvisionSummary {
        let steps = self.rep.steps();
        let changed = steps.iter().any(|s| !s.change.is_unchanged());
        ProvisionSummary {
            deployment: self.deployment().to_string(),
            region: self.aws.region.clone(),
            dry_run: self.dry,
            changed,
            steps,
            bucket: self.target.bucket_name.clone(),
            domain: self.target.domain.clone(),
            instance_id,
            instance_state,
            public_ip,
            load_balancer,
        }
    }

    /// Says what is about to be converged, and where.
    fn announce(&self) {
        let (rep, t) = (self.rep, self.target);
        rep.say(format!(
            "deployment {} in {} (account {}){}",
            self.deployment(),
            self.aws.region,
            t.caller.account,
            if self.dry { ": dry run, nothing is changed" } else { "" }
        ));
        rep.say(format!(
            "SSH (port 22) allowed from {} (from {}); 80 and 443 from anywhere",
            t.ssh_cidr, self.opts.ssh_cidr_origin
        ));
        if t.ssh_cidr == "0.0.0.0/0" {
            rep.say("warning: SSH is open to the whole internet");
        }
        if let Some(found) = &t.found_zone {
            rep.say(format!("DNS name in hosted zone {} ({}), found from the name", found.id, found.name));
            if let Some(warning) = found.warning() {
                rep.say(format!("warning: {warning}"));
            }
        }
    }

    /// Records the settings before the first change, so a teardown after an interrupted run
    /// knows it all.
    fn record_settings(&self) -> anyhow::Result<()> {
        let Some(path) = self.opts.state_file.as_ref().filter(|_| !self.dry) else { return Ok(()) };
        let t = self.target;
        let recorded = Settings {
            region: Some(self.aws.region.clone()),
            bucket: Some(t.bucket_name.clone()),
            domain: Some(t.domain.clone()),
            hosted_zone_id: Some(t.zone.clone()),
            ssh_cidr: Some(t.ssh_cidr.clone()),
            elastic_ip: Some(t.want_eip),
            instances: t.scaled.and_then(|n| u32::try_from(n).ok()),
            key_name: t.wanted_key.clone().flatten(),
            no_ssh_key: t.no_ssh_key.then_some(true),
            ..self.opts.settings.clone()
        };
        StateFile::record(path, self.deployment(), &recorded)?;
        Ok(())
    }

    /// Says while waiting that what was just created is not visible to the next call yet.
    fn not_yet(&self) -> impl Fn(&AwsError, Duration) + '_ {
        |e: &AwsError, delay: Duration| {
            self.rep.note(format!(
                "not visible yet ({}); retrying in {:.1}s",
                e.code.as_deref().unwrap_or("error"),
                delay.as_secs_f64()
            ))
        }
    }

    /// Step 1: the bucket, refused when another deployment's tag is on it.
    async fn bucket(&self) -> anyhow::Result<()> {
        let (aws, t, deployment) = (self.aws, self.target, self.deployment());
        let s = &self.opts.settings;
        let desired = bucket::Desired {
            name: t.bucket_name.clone(),
            region: aws.region.clone(),
            deployment: deployment.to_string(),
            noncurrent_days: s.noncurrent_days.unwrap_or(DEFAULT_NONCURRENT_DAYS),
            abort_multipart_days: s.abort_multipart_days.unwrap_or(DEFAULT_ABORT_MULTIPART_DAYS),
        };
        let observe = async {
            let observed = bucket::observe(aws, &desired.name).await?;
            if let Some(other) =
                observed.as_ref().and_then(|o| o.deployment_tag()).filter(|t| *t != deployment)
            {
                bail!(
                    "S3 bucket {} belongs to deployment {other:?}: pick another bucket with --bucket or that \
                     deployment with --name {other}",
                    desired.name
                );
            }
            Ok(observed)
        };
        let not_yet = self.not_yet();
        converge(
            self,
            "S3 bucket",
            &desired.name,
            observe,
            |o| Ok(bucket::plan(o, &desired)?),
            async |plan: &bucket::Plan| Ok(bucket::apply(aws, &desired, plan, &not_yet).await?),
        )
        .await
    }

    /// Step 2: the IAM policy, the role with it and the instance profile with the role; returns the
    /// profile's name.
    async fn iam(&self) -> anyhow::Result<String> {
        let (aws, names, deployment) = (self.aws, &self.opts.names, self.deployment());
        let not_yet = self.not_yet();
        let policy = policy::Desired {
            name: names.policy(),
            arn: names.policy_arn(&self.target.caller),
            document: self.target.policy_doc.clone(),
            deployment: deployment.to_string(),
        };
        converge(
            self,
            "IAM policy",
            &policy.name,
            async { Ok(policy::observe(aws, &policy.name, &policy.arn).await?) },
            |o| Ok(policy::plan(o, &policy)),
            async |plan: &policy::Plan| Ok(policy::apply(aws, &policy, plan).await?),
        )
        .await?;
        let role = role::Desired {
            name: names.role(),
            trust: policies::EC2_TRUST.to_string(),
            policy_arn: policy.arn.clone(),
            deployment: deployment.to_string(),
        };
        converge(
            self,
            "IAM role",
            &role.name,
            async { Ok(role::observe(aws, &role.name, deployment).await?) },
            |o| Ok(role::plan(o, &role)),
            async |plan: &role::Plan| Ok(role::apply(aws, &role, plan, &not_yet).await?),
        )
        .await?;
        let profile = instance_profile::Desired {
            name: names.instance_profile(),
            role: role.name.clone(),
            deployment: deployment.to_string(),
        };
        converge(
            self,
            "IAM instance profile",
            &profile.name,
            async { Ok(instance_profile::observe(aws, &profile.name, deployment).await?) },
            |o| Ok(instance_profile::plan(o, &profile)),
            async |plan: &instance_profile::Plan| {
                Ok(instance_profile::apply(aws, &profile, plan, &not_yet).await?)
            },
        )
        .await?;
        Ok(profile.name)
    }

    /// Says where a new instance goes, and what that means for it.
    fn announce_placement(&self, placement: &instance::Placement) {
        if self.target.current_instance.is_some() {
            return;
        }
        let rep = self.rep;
        if let Some(reason) = &placement.reason {
            rep.say(format!("launching in {reason}"));
        }
        if let Some("arm64") = placement.architecture.as_deref() {
            rep.say(
                "the instance type is arm64 (Graviton): Amazon Linux 2023 for arm64, and deploy needs a server \
                 built for aarch64-unknown-linux-musl (README, \"A server binary that runs on the instance\")",
            );
        }
        if !placement.public_ip_on_launch {
            rep.say(format!(
                "subnet {} does not give instances a public IPv4 address: the new instance's interface asks for \
                 one",
                placement.subnet_id.as_deref().unwrap_or("?")
            ));
        }
    }

    /// Step 3: the security group, in the instance's VPC.
    async fn security_group(&self, placement: &instance::Placement) -> anyhow::Result<Group> {
        let name = self.opts.names.security_group();
        self.group(name, &placement.vpc_id, security_group::Role::Instance).await
    }

    /// A security group `name` in `vpc_id` with the rules of `role`, recording the DNS name.
    async fn group(&self, name: String, vpc_id: &str, role: security_group::Role) -> anyhow::Result<Group> {
        let (aws, t) = (self.aws, self.target);
        let desired = security_group::Desired {
            name,
            vpc_id: vpc_id.to_string(),
            ssh_cidr: t.ssh_cidr.clone(),
            deployment: self.deployment().to_string(),
            domain: t.domain.clone(),
            hosted_zone_id: Some(t.zone.clone()),
            role,
        };
        let label = format!("{} in {vpc_id}", desired.name);
        self.rep
            .step("security group", &label, self.dry, async {
                let observed = security_group::observe(aws, &desired.name, vpc_id).await?;
                let plan = security_group::plan(observed.as_ref(), &desired);
                // The record of an earlier DNS name goes once the new one is in place.
                let old_dns = observed
                    .as_ref()
                    .and_then(|o| o.recorded_dns())
                    .filter(|(d, z)| dns::fqdn(d) != dns::fqdn(&t.domain) || *z != t.zone);
                let recorded_value = observed.as_ref().and_then(|o| o.recorded_dns_value());
                let id = if self.dry {
                    observed.map(|o| o.id)
                } else {
                    Some(security_group::apply(aws, &desired, &plan, &self.not_yet()).await?)
                };
                Ok((plan.change, Group { id, old_dns, recorded_value }))
            })
            .await
    }

    /// Step 4: the instance: launched, or the user's own tagged and put in the group; returns it
    /// running (`None` in a dry run that would launch one).
    async fn instance(
        &self,
        placement: &instance::Placement,
        group: &Group,
    ) -> anyhow::Result<Option<instance::Observed>> {
        let t = self.target;
        let label = match (&t.instance_wanted, &t.current_instance) {
            (_, Some(o)) => o.id.clone(),
            (instance::Desired::Existing { id }, None) => id.clone(),
            (instance::Desired::Launch(spec), None) => format!("(new {})", spec.instance_type),
        };
        self.rep
            .step("instance", &label, self.dry, async {
                let plan = instance::plan(
                    t.current_instance.as_ref(),
                    self.deployment(),
                    group.id.as_deref(),
                    t.wanted_key.as_ref().map(Option::as_deref),
                );
                if self.dry {
                    return Ok((plan.change, t.current_instance.clone()));
                }
                // Replacing the instance would fix it, but also stop the registry, change its
                // address and need a new deploy and certificate: the user's call, not a side effect.
                if let (Some(mismatch), Some(o)) = (&plan.key_mismatch, &t.current_instance) {
                    bail!(
                        "instance {} has {mismatch}. To launch one with the wanted key: `regctl teardown` \
                         (keeps the bucket and its images), then provision again; to keep this one, pass {}",
                        o.id,
                        o.key_name
                            .as_deref()
                            .map_or_else(|| "--no-ssh-key".to_string(), |k| format!("--key-name {k}"))
                    );
                }
                let group = group.id.as_deref().context("the security group has no ID")?;
                let o = instance::apply(
                    self.aws,
                    &t.instance_wanted,
                    self.deployment(),
                    &plan,
                    t.current_instance.as_ref(),
                    placement,
                    group,
                    &self.not_yet(),
                )
                .await?;
                Ok((plan.change, Some(o)))
            })
            .await
    }

    /// Step 5: the instance profile on the instance, retried while IAM propagates it.
    async fn association(&self, instance_id: Option<&str>, profile: &str) -> anyhow::Result<()> {
        let aws = self.aws;
        let observe = async {
            match instance_id {
                Some(id) => Ok(association::observe(aws, id).await?),
                None => Ok(None),
            }
        };
        let apply = async |plan: &association::Plan| {
            let Some(id) = instance_id else { return Ok(()) };
            association::apply(aws, id, profile, plan, self.opts.iam_retry, |e, delay| {
                self.rep.note(format!(
                    "IAM has not propagated the instance profile yet ({}); retrying in {:.1}s",
                    e.code.as_deref().unwrap_or("error"),
                    delay.as_secs_f64()
                ))
            })
            .await?;
            Ok(())
        };
        let label = instance_id.unwrap_or("(new instance)");
        converge(
            self,
            "instance profile association",
            label,
            observe,
            |o| Ok(association::plan(o, profile)),
            apply,
        )
        .await
    }

    /// Step 6: the Elastic IP when wanted (or released when no longer); returns the address the DNS
    /// name is to point at, and the Elastic IP there was.
    async fn address(
        &self,
        running: Option<&instance::Observed>,
        instance_id: Option<&str>,
    ) -> anyhow::Result<(Option<String>, Option<elastic_ip::Observed>)> {
        let (aws, deployment, dry, want) = (self.aws, self.deployment(), self.dry, self.target.want_eip);
        let existing = elastic_ip::observe(aws, deployment).await?;
        let mut public_ip = running.and_then(|o| o.public_ip.clone());
        if want || existing.is_some() {
            let label = existing.as_ref().map_or_else(|| "(new)".to_string(), |e| e.public_ip.clone());
            let eip = self
                .rep
                .step("Elastic IP", &label, dry, async {
                    let plan = elastic_ip::plan(existing.as_ref(), want, instance_id);
                    let ip = match (instance_id, dry) {
                        (Some(id), false) => {
                            elastic_ip::apply(aws, deployment, existing.as_ref(), &plan, id).await?
                        }
                        _ => existing.as_ref().filter(|_| want).map(|e| e.public_ip.clone()),
                    };
                    Ok((plan.change, ip))
                })
                .await?;
            if want {
                public_ip = eip;
            } else if !dry && let Some(id) = instance_id {
                // Releasing the Elastic IP gives the instance a new public address.
                public_ip = instance::observe_id(aws, id).await?.and_then(|o| o.public_ip);
            }
        }
        if !dry && public_ip.is_none() {
            bail!(
                "instance {} has no public IPv4 address for {}: pass --elastic-ip, or launch it in a subnet that \
                 assigns public addresses (--subnet-id)",
                instance_id.unwrap_or("?"),
                self.target.domain
            );
        }
        Ok((public_ip, existing))
    }

    /// Step 7: the DNS record: points the name at the deployment (`want`; `None` in a dry run
    /// before it exists), never over someone else's record unless asked, and removes the record of
    /// a former name. `owned` are the deployment's addresses (or load balancer).
    async fn dns(
        &self,
        group: &Group,
        want: Option<&dns::Value>,
        mut owned: Vec<String>,
    ) -> anyhow::Result<()> {
        let (aws, t, dry, opts) = (self.aws, self.target, self.dry, self.opts);
        let (domain, zone) = (&t.domain, &t.zone);
        owned.extend(group.recorded_value.clone());
        self.rep
            .step("DNS record", &format!("{domain} A (zone {zone})"), dry, async {
                let observed = dns::observe(aws, zone, domain).await?;
                let plan = dns::plan(observed.as_ref(), want, &owned);
                if let Some(values) = &plan.foreign
                    && !dry
                    && !opts.replace_foreign_record
                {
                    bail!(
                        "the A record of {domain} points at {}, not at this deployment's instance, Elastic IP or \
                         load balancer: it may serve something else. Check it, then run again with --yes to point it \
                         at {}",
                        values.join(","),
                        want.map_or_else(|| "the deployment".to_string(), dns::Value::shown)
                    );
                }
                if !dry && let Some(want) = want {
                    dns::apply(aws, zone, domain, want, &plan, opts.insync_timeout).await?;
                    let value = want.shown();
                    if group.recorded_value.as_deref() != Some(value.as_str())
                        && let Some(id) = &group.id
                    {
                        security_group::record_dns_value(aws, id, &value).await?;
                    }
                }
                let mut change = plan.change;
                if let Some((old_domain, old_zone)) = &group.old_dns
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
                        Change::Create | Change::Delete => {
                            Change::Update(vec![format!("new name {domain}"), note])
                        }
                    };
                }
                Ok((change, ()))
            })
            .await
    }
}

/// A plan of one step: the change it makes.
trait Planned {
    fn change(&self) -> Change;
}

macro_rules! planned {
    ($($module:ident),*) => {
        $(impl Planned for $module::Plan {
            fn change(&self) -> Change {
                self.change.clone()
            }
        })*
    };
}
planned!(bucket, policy, role, instance_profile, association);

/// One step in the shared shape: observe what exists, plan the change, apply the plan unless
/// this is a dry run, and report the change.
async fn converge<O, P: Planned>(
    run: &Run<'_>,
    resource: &str,
    name: &str,
    observe: impl Future<Output = anyhow::Result<Option<O>>>,
    plan: impl FnOnce(Option<&O>) -> anyhow::Result<P>,
    apply: impl AsyncFnOnce(&P) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    run.rep
        .step(resource, name, run.dry, async {
            let observed = observe.await?;
            let plan = plan(observed.as_ref())?;
            if !run.dry {
                apply(&plan).await?;
            }
            Ok((plan.change(), ()))
        })
        .await
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
