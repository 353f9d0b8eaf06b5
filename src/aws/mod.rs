//! The AWS side of a deployment: one module per resource, each with the same four verbs.
//!
//! - `observe`: read-only calls that say whether the resource exists and how it is set up;
//! - `plan`: compares what was observed with what is wanted and lists the changes;
//! - `apply`: makes those changes (and only those);
//! - `destroy`: removes the resource, treating "not found" as already done.
//!
//! Every resource is tagged with [`TAG_DEPLOYMENT`] and its name derives from the deployment
//! name ([`Names`]), so `status` and `teardown` can find everything from tags alone.

pub mod association;
pub mod auto_scaling;
pub mod bucket;
pub mod certificate;
pub mod dns;
pub mod elastic_ip;
mod error;
pub mod instance;
pub mod instance_profile;
pub mod launch_template;
pub mod listener;
pub mod load_balancer;
pub mod policy;
pub mod role;
pub mod security_group;
pub mod target_group;

use std::future::Future;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_sts::config::ProvideCredentials;
use serde::Serialize;

pub use error::{AwsError, AwsResultExt, not_found_as_none};

/// Tag key holding the deployment name, on every resource regctl creates.
pub const TAG_DEPLOYMENT: &str = "regctl:deployment";
/// Tag key set to `true` on an instance regctl launched (only those are terminated on teardown).
pub const TAG_LAUNCHED: &str = "regctl:launched";
/// Tag key on the security group recording the DNS name of the deployment.
pub const TAG_DOMAIN: &str = "regctl:domain";
/// Tag key on the security group recording the Route 53 hosted zone of the DNS name.
pub const TAG_ZONE: &str = "regctl:hosted-zone-id";
/// Tag key on the security group recording the address the DNS record was last pointed at, so a
/// record left at a former address of the deployment (a stop and start) is still known as its own.
pub const TAG_DNS_VALUE: &str = "regctl:dns-value";

/// How to reach AWS: the standard aws-config chain, adjusted by the global flags.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Named profile from the shared config files (`--profile`).
    pub profile: Option<String>,
    /// Region (`--region`); otherwise the chain's (AWS_REGION, profile).
    pub region: Option<String>,
    /// One endpoint for every service (`--endpoint-url`); `AWS_ENDPOINT_URL*` also work.
    pub endpoint_url: Option<String>,
}

/// The service clients of one region.
#[derive(Debug, Clone)]
pub struct Aws {
    /// S3 (path-style when an endpoint override is in use: emulators need it).
    pub s3: aws_sdk_s3::Client,
    /// EC2.
    pub ec2: aws_sdk_ec2::Client,
    /// IAM.
    pub iam: aws_sdk_iam::Client,
    /// Route 53.
    pub route53: aws_sdk_route53::Client,
    /// STS (for the account ID).
    pub sts: aws_sdk_sts::Client,
    /// ACM (a scaled deployment's certificate).
    pub acm: aws_sdk_acm::Client,
    /// Auto Scaling (a scaled deployment's instances).
    pub autoscaling: aws_sdk_autoscaling::Client,
    /// Elastic Load Balancing v2 (a scaled deployment's load balancer).
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    /// The region every regional call goes to.
    pub region: String,
    /// True when calls go to an endpoint override (an emulator such as moto), whose addresses are
    /// not real: `status` then does not probe DNS or HTTPS.
    pub endpoint_override: bool,
}

impl Aws {
    /// Loads credentials and region from the standard chain and builds the clients.
    pub async fn connect(opts: &ConnectOptions) -> anyhow::Result<Aws> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(profile) = &opts.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(region) = &opts.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &opts.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let config = loader.load().await;
        // Resolved now, so a profile that cannot give credentials (an SSO session never logged
        // in or expired, a typo) is reported as that, naming the remedy, instead of as the
        // failure of whichever call comes first.
        if let Some(provider) = config.credentials_provider()
            && let Err(e) = provider.provide_credentials().await
        {
            let profile = opts
                .profile
                .clone()
                .or_else(|| std::env::var("AWS_PROFILE").ok())
                .unwrap_or_else(|| "default".to_string());
            // The provider chain repeats its own wrapper message: each distinct cause once.
            let mut causes: Vec<String> = Vec::new();
            for cause in anyhow::Error::new(e).chain().map(ToString::to_string) {
                if causes.last() != Some(&cause) {
                    causes.push(cause);
                }
            }
            anyhow::bail!(
                "cannot load AWS credentials for profile {profile}: {}. For an SSO profile, sign in with \
                 `aws sso login --profile {profile}`; for access keys, set them with `aws configure --profile \
                 {profile}` (or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY); or pick another profile with \
                 --profile",
                causes.join(": ")
            );
        }
        let Some(region) = config.region().map(|r| r.to_string()) else {
            anyhow::bail!(
                "no AWS region configured: pass --region, set AWS_REGION, or set a region in the \
                 profile (~/.aws/config)"
            );
        };
        let endpoint_override = opts.endpoint_url.is_some()
            || std::env::vars_os().any(|(k, _)| k.to_string_lossy().starts_with("AWS_ENDPOINT_URL"));
        let s3_config =
            aws_sdk_s3::config::Builder::from(&config).force_path_style(endpoint_override).build();
        Ok(Aws {
            s3: aws_sdk_s3::Client::from_conf(s3_config),
            ec2: aws_sdk_ec2::Client::new(&config),
            iam: aws_sdk_iam::Client::new(&config),
            route53: aws_sdk_route53::Client::new(&config),
            sts: aws_sdk_sts::Client::new(&config),
            acm: aws_sdk_acm::Client::new(&config),
            autoscaling: aws_sdk_autoscaling::Client::new(&config),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&config),
            region,
            endpoint_override,
        })
    }

    /// The account and partition the credentials belong to (`sts:GetCallerIdentity`, which needs
    /// no permission).
    pub async fn caller(&self) -> Result<Caller, AwsError> {
        let out = self.sts.get_caller_identity().send().await.aws("sts:GetCallerIdentity", "the caller")?;
        let missing = |what: &str| {
            AwsError::local("sts:GetCallerIdentity", "the caller", format!("no {what} in the answer"))
        };
        let account = out.account().ok_or_else(|| missing("account"))?.to_string();
        // China and GovCloud regions have partitions of their own (`aws-cn`, `aws-us-gov`).
        let partition = out.arn().and_then(arn_partition).ok_or_else(|| missing("ARN"))?.to_string();
        Ok(Caller { account, partition })
    }
}

/// Who the credentials belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The account ID.
    pub account: String,
    /// The ARN partition: `aws`, `aws-cn`, `aws-us-gov`, ...
    pub partition: String,
}

/// The partition of an ARN (`arn:PARTITION:service:region:account:resource`).
pub fn arn_partition(arn: &str) -> Option<&str> {
    let mut parts = arn.split(':');
    (parts.next() == Some("arn")).then(|| parts.next()).flatten().filter(|p| !p.is_empty())
}

/// The names of a deployment's resources, all derived from the deployment name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    deployment: String,
}

impl Names {
    /// Longest deployment name: the derived bucket name must fit S3's 63 characters.
    pub const MAX_LEN: usize = 20;

    /// Validates a deployment name: 1 to 20 lowercase letters, digits and `-`, starting with a
    /// letter (it becomes part of bucket, role and group names).
    pub fn new(deployment: &str) -> Result<Names, String> {
        let ok_chars = deployment.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        let starts = deployment.chars().next().is_some_and(|c| c.is_ascii_lowercase());
        if !ok_chars || !starts || deployment.len() > Self::MAX_LEN || deployment.ends_with('-') {
            return Err(format!(
                "invalid deployment name {deployment:?}: use 1 to {} lowercase letters, digits and \
                 '-', starting with a letter and not ending with '-'",
                Self::MAX_LEN
            ));
        }
        Ok(Names { deployment: deployment.to_string() })
    }

    /// The deployment name itself (the value of the [`TAG_DEPLOYMENT`] tag).
    pub fn deployment(&self) -> &str {
        &self.deployment
    }

    /// The customer-managed IAM policy granting the registry its S3 access.
    pub fn policy(&self) -> String {
        format!("regctl-{}-s3", self.deployment)
    }

    /// The ARN of [`Names::policy`] in the caller's account and partition.
    pub fn policy_arn(&self, caller: &Caller) -> String {
        format!("arn:{}:iam::{}:policy/{}", caller.partition, caller.account, self.policy())
    }

    /// The IAM role the instance assumes.
    pub fn role(&self) -> String {
        format!("regctl-{}-ec2", self.deployment)
    }

    /// The instance profile holding [`Names::role`].
    pub fn instance_profile(&self) -> String {
        format!("regctl-{}", self.deployment)
    }

    /// The security group (of the instance, or of a scaled deployment's instances).
    pub fn security_group(&self) -> String {
        format!("regctl-{}", self.deployment)
    }

    /// A scaled deployment's load balancer's security group.
    pub fn balancer_security_group(&self) -> String {
        format!("regctl-{}-lb", self.deployment)
    }

    /// A scaled deployment's load balancer, target group, launch template and Auto Scaling
    /// group: each of a kind of its own, so one name (ELB names are at most 32 characters).
    pub fn scaled(&self) -> String {
        format!("regctl-{}", self.deployment)
    }

    /// The default bucket name: globally unique through the account ID and region.
    pub fn default_bucket(&self, account: &str, region: &str) -> String {
        format!("regctl-{}-{account}-{region}", self.deployment)
    }
}

/// What a step does (or, in a plan, would do) to one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", content = "changes", rename_all = "snake_case")]
pub enum Change {
    /// The resource does not exist and is created.
    Create,
    /// The resource exists; these settings differ and are converged.
    Update(Vec<String>),
    /// The resource exists but is no longer wanted and is removed.
    Delete,
    /// The resource exists as wanted.
    Unchanged,
}

impl Change {
    /// `Update(changes)` when there are changes, `Unchanged` otherwise.
    pub fn update_or_unchanged(changes: Vec<String>) -> Change {
        if changes.is_empty() { Change::Unchanged } else { Change::Update(changes) }
    }

    /// True when applying this changes nothing.
    pub fn is_unchanged(&self) -> bool {
        matches!(self, Change::Unchanged)
    }
}

/// What `destroy` did to one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Removed {
    /// It existed and is gone now.
    Deleted,
    /// It was not there (already removed, or never created).
    Absent,
    /// It exists and was deliberately left in place (with the reason).
    Kept(String),
}

/// Hears about each retry of a call (for progress output): the error and the delay before the
/// next attempt.
pub type OnRetry<'a> = &'a (dyn Fn(&AwsError, Duration) + Sync);

/// A retry schedule: exponential back-off from `first_delay`, capped at `max_delay`, for at most
/// `timeout` in total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Total time to keep retrying.
    pub timeout: Duration,
    /// Delay before the first retry.
    pub first_delay: Duration,
    /// Longest delay between two attempts.
    pub max_delay: Duration,
}

impl Retry {
    /// IAM propagation: a new instance profile can be rejected for about two minutes (Terraform
    /// retries for two minutes too).
    pub const IAM_PROPAGATION: Retry = Retry {
        timeout: Duration::from_secs(120),
        first_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(10),
    };

    /// EC2's eventual consistency: a resource this run has just created can be "not found" by
    /// the next calls for a while (EC2 developer guide, "Eventual consistency"); AWS advises
    /// backing off, here for up to a minute.
    pub const EC2_CONSISTENCY: Retry = Retry {
        timeout: Duration::from_secs(60),
        first_delay: Duration::from_millis(500),
        max_delay: Duration::from_secs(8),
    };

    /// S3 and IAM right after a create: a new bucket, role or policy can be "not found" by the
    /// calls that configure or attach it for a while (Terraform's AWS provider retries these for
    /// two minutes as well).
    pub const AFTER_CREATE: Retry = Retry::IAM_PROPAGATION;

    /// No retry: one attempt.
    pub const ONCE: Retry =
        Retry { timeout: Duration::ZERO, first_delay: Duration::from_secs(1), max_delay: Duration::ZERO };

    /// A schedule of `timeout` with the default back-off.
    pub fn with_timeout(timeout: Duration) -> Retry {
        Retry { timeout, first_delay: Duration::from_millis(500), max_delay: Duration::from_secs(10) }
    }

    /// Runs `attempt` until it succeeds, fails with an error `retryable` rejects, or the
    /// schedule runs out (then the last error is returned). `on_retry` hears about each retry.
    pub async fn run<T, F, Fut>(
        &self,
        retryable: impl Fn(&AwsError) -> bool,
        mut on_retry: impl FnMut(&AwsError, Duration),
        mut attempt: F,
    ) -> Result<T, AwsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AwsError>>,
    {
        let start = tokio::time::Instant::now();
        let mut delay = self.first_delay;
        loop {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) if retryable(&e) && start.elapsed() + delay <= self.timeout => {
                    on_retry(&e, delay);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.max_delay);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Retry {
    /// Runs `attempt`, retrying while it fails with one of the "not found" `codes`: for calls on
    /// a resource this run has just created, which AWS may not show everywhere yet.
    pub async fn until_visible<T, F, Fut>(
        &self,
        codes: &[&str],
        on_retry: OnRetry<'_>,
        attempt: F,
    ) -> Result<T, AwsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AwsError>>,
    {
        self.run(|e| e.is_any(codes), |e, delay| on_retry(e, delay), attempt).await
    }
}

/// Polls `check` every `interval` until it returns `Some`, for at most `timeout`.
pub async fn wait_for<T, F, Fut>(
    action: &'static str,
    resource: &str,
    what: &str,
    interval: Duration,
    timeout: Duration,
    mut check: F,
) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, AwsError>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            return Err(AwsError::local(
                action,
                resource,
                format!(
                    "gave up waiting after {}s for {what}; run the command again later",
                    timeout.as_secs()
                ),
            ));
        }
        tokio::time::sleep(interval).await;
    }
}

/// An EC2 `Filter` with one or more values.
pub(crate) fn ec2_filter(name: &str, values: &[&str]) -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
        .build()
}

/// The EC2 tags every resource of `deployment` gets: the deployment tag and a `Name`.
pub(crate) fn ec2_tags(deployment: &str, extra: &[(&str, &str)]) -> Vec<aws_sdk_ec2::types::Tag> {
    let mut tags = vec![
        aws_sdk_ec2::types::Tag::builder().key(TAG_DEPLOYMENT).value(deployment).build(),
        aws_sdk_ec2::types::Tag::builder().key("Name").value(format!("regctl-{deployment}")).build(),
    ];
    tags.extend(extra.iter().map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(*k).value(*v).build()));
    tags
}

/// Tags to set at creation time for a resource of `kind`.
pub(crate) fn ec2_tag_spec(
    kind: aws_sdk_ec2::types::ResourceType,
    tags: &[aws_sdk_ec2::types::Tag],
) -> aws_sdk_ec2::types::TagSpecification {
    aws_sdk_ec2::types::TagSpecification::builder().resource_type(kind).set_tags(Some(tags.to_vec())).build()
}

/// The value of tag `key` in an EC2 tag list.
pub(crate) fn ec2_tag_value<'a>(tags: &'a [aws_sdk_ec2::types::Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

/// The tags of `wanted` that `current` lacks or has with another value.
pub(crate) fn ec2_missing_tags(
    current: &[aws_sdk_ec2::types::Tag],
    wanted: &[aws_sdk_ec2::types::Tag],
) -> Vec<aws_sdk_ec2::types::Tag> {
    wanted
        .iter()
        .filter(|w| w.key().is_some_and(|k| ec2_tag_value(current, k) != w.value()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_the_deployment() {
        let n = Names::new("registry").expect("valid");
        assert_eq!(n.policy(), "regctl-registry-s3");
        assert_eq!(n.role(), "regctl-registry-ec2");
        assert_eq!(n.instance_profile(), "regctl-registry");
        let caller = Caller { account: "123456789012".into(), partition: "aws-cn".into() };
        assert_eq!(n.policy_arn(&caller), "arn:aws-cn:iam::123456789012:policy/regctl-registry-s3");
        let longest = Names::new(&"a".repeat(Names::MAX_LEN)).expect("valid");
        assert!(longest.default_bucket("123456789012", "ap-southeast-2").len() <= 63);
    }

    #[test]
    fn the_partition_comes_from_the_callers_arn() {
        assert_eq!(arn_partition("arn:aws:sts::123456789012:assumed-role/a/b"), Some("aws"));
        assert_eq!(arn_partition("arn:aws-us-gov:iam::123456789012:user/x"), Some("aws-us-gov"));
        assert_eq!(arn_partition("arn:aws-cn:iam::123456789012:root"), Some("aws-cn"));
        assert_eq!(arn_partition("not-an-arn"), None);
        assert_eq!(arn_partition("arn::iam::1:root"), None);
    }

    #[test]
    fn bad_names_are_rejected() {
        for bad in ["", "Registry", "1reg", "reg_x", "reg-", &"a".repeat(21)] {
            assert!(Names::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[tokio::test]
    async fn retry_stops_at_the_timeout_and_returns_the_last_error() {
        let retry = Retry {
            timeout: Duration::from_millis(100),
            first_delay: Duration::from_millis(10),
            max_delay: Duration::from_secs(1),
        };
        let mut attempts = 0;
        let result: Result<(), AwsError> = retry
            .run(
                |_| true,
                |_, _| {},
                || {
                    attempts += 1;
                    async { Err(AwsError::local("ec2:X", "r", "no")) }
                },
            )
            .await;
        assert!(result.is_err());
        // 10 + 20 + 40 = 70 ms of delays fit in 100 ms; the next (80 ms) does not.
        assert_eq!(attempts, 4);
    }
}
