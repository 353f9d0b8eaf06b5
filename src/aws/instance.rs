//! The EC2 instance: an existing one (`--instance-id`), adopted and tagged, or a new one launched
//! with a client token (so a retried launch cannot start a second instance), waited for until
//! running, with the security group attached.

use std::time::Duration;

use aws_sdk_ec2::types::{
    HttpTokensState, Instance, InstanceMetadataOptionsRequest, InstanceNetworkInterfaceSpecification,
    InstanceStateName, InstanceType, LocationType, ResourceType,
};

use super::{
    AwsError, AwsResultExt, Change, OnRetry, Removed, Retry, TAG_DEPLOYMENT, TAG_LAUNCHED, ec2_filter,
    ec2_missing_tags, ec2_tag_spec, ec2_tag_value, ec2_tags, not_found_as_none, wait_for,
};

/// Owner of the Amazon Linux AMIs: the alias, because the account behind it differs between
/// regions (opt-in regions have their own).
const AMAZON_LINUX_OWNER: &str = "amazon";
/// Name pattern of the current Amazon Linux 2023 AMIs (the full, not the minimal, image),
/// followed by the architecture.
const AMAZON_LINUX_NAME: &str = "al2023-ami-2023.*-";
/// States in which an instance still exists (not terminated or terminating).
const LIVE_STATES: [&str; 4] = ["pending", "running", "stopping", "stopped"];

/// Which instance the deployment runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Desired {
    /// An instance that already exists; regctl tags it but never terminates it.
    Existing {
        /// Its ID.
        id: String,
    },
    /// An instance regctl launches (and terminates on teardown).
    Launch(LaunchSpec),
}

/// How to launch a new instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    /// AMI; by default the newest Amazon Linux 2023 image of the region for the instance type's
    /// architecture.
    pub ami: Option<String>,
    /// Instance type.
    pub instance_type: String,
    /// EC2 key pair for SSH; `None` when the user brings their own access (`--no-ssh-key`).
    pub key_name: Option<String>,
    /// Subnet; by default a default subnet of the default VPC.
    pub subnet_id: Option<String>,
}

/// Where the instance is (or will be): its VPC and subnet.
#[derive(Debug, Clone)]
pub struct Placement {
    /// VPC ID.
    pub vpc_id: String,
    /// Subnet ID.
    pub subnet_id: Option<String>,
    /// Why this subnet, when regctl chose it.
    pub reason: Option<String>,
    /// True when the subnet gives new instances a public IPv4 address by itself
    /// (`MapPublicIpOnLaunch`); a launch elsewhere asks for one.
    pub public_ip_on_launch: bool,
    /// The architecture of a new instance's type, EC2's name (`x86_64`, `arm64`); `None` for an
    /// instance that exists.
    pub architecture: Option<String>,
}

/// The instance as it is.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Instance ID.
    pub id: String,
    /// `pending`, `running`, `stopped`, ...
    pub state: String,
    /// Public IPv4 address, if it has one.
    pub public_ip: Option<String>,
    /// VPC.
    pub vpc_id: Option<String>,
    /// Attached security groups.
    pub security_groups: Vec<String>,
    /// True when regctl launched it.
    pub launched: bool,
    /// The key pair it was launched with.
    pub key_name: Option<String>,
    tags: Vec<aws_sdk_ec2::types::Tag>,
}

impl Observed {
    /// The Auto Scaling group that launched it, if one did (such an instance is the group's to
    /// replace or terminate).
    pub fn auto_scaling_group(&self) -> Option<&str> {
        ec2_tag_value(&self.tags, "aws:autoscaling:groupName")
    }

    fn from(i: &Instance) -> Observed {
        Observed {
            id: i.instance_id().unwrap_or_default().to_string(),
            state: i.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()).unwrap_or_default(),
            public_ip: i.public_ip_address().map(str::to_string),
            vpc_id: i.vpc_id().map(str::to_string),
            // The instance's groups are its interfaces' (EC2 lists both; emulators may list only
            // the interfaces' for an instance launched with an interface specification).
            security_groups: {
                let mut groups: Vec<String> = i
                    .security_groups()
                    .iter()
                    .chain(i.network_interfaces().iter().flat_map(|n| n.groups()))
                    .filter_map(|g| g.group_id())
                    .map(str::to_string)
                    .collect();
                groups.sort();
                groups.dedup();
                groups
            },
            launched: ec2_tag_value(i.tags(), TAG_LAUNCHED) == Some("true"),
            key_name: i.key_name().map(str::to_string),
            tags: i.tags().to_vec(),
        }
    }
}

/// What `apply` will do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The summary.
    pub change: Change,
    start: bool,
    tags: Vec<aws_sdk_ec2::types::Tag>,
    attach_group: bool,
    /// Why the instance's key pair is not the wanted one, when it is not: EC2 sets the key pair
    /// only at launch, so `apply` cannot converge it.
    pub key_mismatch: Option<String>,
}

fn resource(id: &str) -> String {
    format!("instance {id}")
}

/// Reads one instance by ID; `None` when it does not exist (or is terminated).
pub async fn observe_id(aws: &super::Aws, id: &str) -> Result<Option<Observed>, AwsError> {
    let out = aws
        .ec2
        .describe_instances()
        .instance_ids(id)
        .send()
        .await
        .aws("ec2:DescribeInstances", &resource(id));
    let Some(out) = not_found_as_none(out, &["InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"])?
    else {
        return Ok(None);
    };
    Ok(out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(Observed::from)
        .find(|o| o.state != "terminated" && o.state != "shutting-down"))
}

/// The live instances tagged with `deployment` (launched or adopted).
pub async fn find_tagged(aws: &super::Aws, deployment: &str) -> Result<Vec<Observed>, AwsError> {
    let out = aws
        .ec2
        .describe_instances()
        .filters(ec2_filter(&format!("tag:{TAG_DEPLOYMENT}"), &[deployment]))
        .filters(ec2_filter("instance-state-name", &LIVE_STATES))
        .send()
        .await
        .aws("ec2:DescribeInstances", &format!("instances of {deployment}"))?;
    Ok(out.reservations().iter().flat_map(|r| r.instances()).map(Observed::from).collect())
}

/// Finds the instance of the deployment: the given one, or the one regctl launched before.
pub async fn observe(aws: &super::Aws, d: &Desired, deployment: &str) -> Result<Option<Observed>, AwsError> {
    match d {
        Desired::Existing { id } => match observe_id(aws, id).await? {
            Some(o) => Ok(Some(o)),
            None => Err(AwsError {
                code: Some("InvalidInstanceID.NotFound".into()),
                ..AwsError::local(
                    "ec2:DescribeInstances",
                    resource(id),
                    format!("no such live instance in {}: check --instance-id and --region", aws.region),
                )
            }),
        },
        Desired::Launch(_) => Ok(find_tagged(aws, deployment).await?.into_iter().find(|o| o.launched)),
    }
}

/// The VPC (and subnet) the instance is or will be in: the existing instance's, the given
/// subnet's, or the region's default VPC and one of its default subnets.
pub async fn placement(
    aws: &super::Aws,
    d: &Desired,
    existing: Option<&Observed>,
) -> Result<Placement, AwsError> {
    if let Some(vpc) = existing.and_then(|o| o.vpc_id.clone()) {
        return Ok(Placement {
            vpc_id: vpc,
            subnet_id: None,
            reason: None,
            public_ip_on_launch: true,
            architecture: None,
        });
    }
    let (subnet, instance_type) = match d {
        Desired::Existing { id } => {
            return Err(AwsError::local(
                "ec2:DescribeInstances",
                resource(id),
                "the instance is not in a VPC (EC2-Classic): use an instance in a VPC",
            ));
        }
        Desired::Launch(spec) => (spec.subnet_id.clone(), spec.instance_type.as_str()),
    };
    let architecture = Some(architecture(aws, instance_type).await?);
    if let Some(subnet) = subnet {
        let res = format!("subnet {subnet}");
        let out =
            aws.ec2.describe_subnets().subnet_ids(&subnet).send().await.aws("ec2:DescribeSubnets", &res)?;
        let found = out.subnets().first();
        let vpc = found.and_then(|s| s.vpc_id()).ok_or_else(|| {
            AwsError::local("ec2:DescribeSubnets", &res, "no such subnet: check --subnet-id and --region")
        })?;
        return Ok(Placement {
            vpc_id: vpc.to_string(),
            subnet_id: Some(subnet),
            reason: None,
            public_ip_on_launch: found.and_then(|s| s.map_public_ip_on_launch()).unwrap_or(false),
            architecture,
        });
    }
    let res = format!("the default VPC of {}", aws.region);
    let (vpc, subnets, offered) = default_subnets(aws, instance_type, &res).await?;
    let Some((subnet, zone, maps)) = subnets
        .first()
        .and_then(|s| Some((s.subnet_id()?, s.availability_zone()?, s.map_public_ip_on_launch())))
    else {
        return Err(AwsError::local(
            "ec2:DescribeInstanceTypeOfferings",
            &res,
            format!(
                "no default subnet is in a zone that offers {instance_type} (offered in: {}): pass another \
                 --instance-type, or --subnet-id",
                if offered.is_empty() { "none".to_string() } else { offered.join(", ") }
            ),
        ));
    };
    Ok(Placement {
        vpc_id: vpc,
        subnet_id: Some(subnet.to_string()),
        reason: Some(format!(
            "default subnet {subnet} in {zone}: the first zone of the default VPC that offers {instance_type}"
        )),
        public_ip_on_launch: maps.unwrap_or(false),
        architecture,
    })
}

/// The default VPC, its default subnets in the zones that offer `instance_type` (sorted by
/// zone), and those zones.
async fn default_subnets(
    aws: &super::Aws,
    instance_type: &str,
    res: &str,
) -> Result<(String, Vec<aws_sdk_ec2::types::Subnet>, Vec<String>), AwsError> {
    let vpcs = aws
        .ec2
        .describe_vpcs()
        .filters(ec2_filter("is-default", &["true"]))
        .send()
        .await
        .aws("ec2:DescribeVpcs", res)?;
    let vpc = vpcs.vpcs().first().and_then(|v| v.vpc_id()).map(str::to_string).ok_or_else(|| {
        AwsError::local("ec2:DescribeVpcs", res, "the region has no default VPC: pass --subnet-id")
    })?;
    let subnets = aws
        .ec2
        .describe_subnets()
        .filters(ec2_filter("vpc-id", &[&vpc]))
        .filters(ec2_filter("default-for-az", &["true"]))
        .send()
        .await
        .aws("ec2:DescribeSubnets", res)?;
    // Not every zone offers every type (t3 is missing in some), and zone names map to other
    // zones in each account: ask which zones offer the type here.
    let offered = offered_zones(aws, instance_type).await?;
    let mut subnets: Vec<_> = subnets
        .subnets()
        .iter()
        .filter(|s| s.availability_zone().is_some_and(|z| offered.iter().any(|o| o == z)))
        .cloned()
        .collect();
    subnets.sort_by_key(|s| s.availability_zone().unwrap_or_default().to_string());
    Ok((vpc, subnets, offered))
}

/// Where a scaled deployment's instances and load balancer go: the default subnets of the
/// default VPC in every zone that offers the instance type.
#[derive(Debug, Clone)]
pub struct Spread {
    /// VPC ID.
    pub vpc_id: String,
    /// Subnet IDs, one per zone, sorted by zone.
    pub subnets: Vec<String>,
    /// Their zones, in the same order.
    pub zones: Vec<String>,
    /// The instance type's architecture, EC2's name.
    pub architecture: String,
}

/// The default subnets of the zones that offer `instance_type`; fails unless there are at least
/// two (a load balancer needs two zones, and one zone is one failure away from an outage).
pub async fn spread(aws: &super::Aws, instance_type: &str) -> Result<Spread, AwsError> {
    let architecture = architecture(aws, instance_type).await?;
    let res = format!("the default VPC of {}", aws.region);
    let (vpc_id, subnets, offered) = default_subnets(aws, instance_type, &res).await?;
    let (subnets, zones): (Vec<String>, Vec<String>) = subnets
        .iter()
        .filter_map(|s| Some((s.subnet_id()?.to_string(), s.availability_zone()?.to_string())))
        .unzip();
    if subnets.len() < 2 {
        return Err(AwsError::local(
            "ec2:DescribeInstanceTypeOfferings",
            &res,
            format!(
                "a scaled deployment needs default subnets in at least 2 zones that offer {instance_type}; there                  are {} (zones offering it: {}): pass another --instance-type",
                subnets.len(),
                if offered.is_empty() { "none".to_string() } else { offered.join(", ") }
            ),
        ));
    }
    Ok(Spread { vpc_id, subnets, zones, architecture })
}

/// The architecture of `instance_type` as EC2 names it (`x86_64` or `arm64`, e.g. for the
/// Graviton types `t4g`, `m7g`): the image and the server binary must match it.
async fn architecture(aws: &super::Aws, instance_type: &str) -> Result<String, AwsError> {
    let res = format!("instance type {instance_type}");
    let out = aws
        .ec2
        .describe_instance_types()
        .instance_types(InstanceType::from(instance_type))
        .send()
        .await
        .aws("ec2:DescribeInstanceTypes", &res)?;
    let supported: Vec<&str> = out
        .instance_types()
        .iter()
        .filter_map(|t| t.processor_info())
        .flat_map(|p| p.supported_architectures())
        .map(|a| a.as_str())
        .collect();
    // x86_64 first: a type that runs both (none today) gets the usual image.
    ["x86_64", "arm64"].into_iter().find(|a| supported.contains(a)).map(str::to_string).ok_or_else(|| {
        AwsError::local(
            "ec2:DescribeInstanceTypes",
            &res,
            if supported.is_empty() {
                "EC2 does not know this instance type here: check --instance-type and --region".to_string()
            } else {
                format!(
                    "its architecture ({}) has no Amazon Linux 2023 image: pass another --instance-type",
                    supported.join(", ")
                )
            },
        )
    })
}

/// Fails unless the EC2 key pair `name` exists in the region: RunInstances would refuse it
/// only after the bucket, IAM and security group are made.
pub async fn check_key_pair(aws: &super::Aws, name: &str) -> Result<(), AwsError> {
    let res = format!("the key pairs of {}", aws.region);
    let out = aws.ec2.describe_key_pairs().send().await.aws("ec2:DescribeKeyPairs", &res)?;
    let names: Vec<&str> = out.key_pairs().iter().filter_map(|k| k.key_name()).collect();
    if names.contains(&name) {
        return Ok(());
    }
    Err(AwsError::local(
        "ec2:DescribeKeyPairs",
        &res,
        format!(
            "key pair {name:?} does not exist in {} ({}): check --key-name and --region, or import your public \
             key there (`aws ec2 import-key-pair --key-name {name} --public-key-material fileb://KEY.pub`)",
            aws.region,
            if names.is_empty() {
                "it has none".to_string()
            } else {
                format!("it has: {}", names.join(", "))
            }
        ),
    ))
}

/// The availability zones of the region that offer `instance_type`.
async fn offered_zones(aws: &super::Aws, instance_type: &str) -> Result<Vec<String>, AwsError> {
    let out = aws
        .ec2
        .describe_instance_type_offerings()
        .location_type(LocationType::AvailabilityZone)
        .filters(ec2_filter("instance-type", &[instance_type]))
        .send()
        .await
        .aws("ec2:DescribeInstanceTypeOfferings", &format!("zones offering {instance_type}"))?;
    Ok(out.instance_type_offerings().iter().filter_map(|o| o.location()).map(str::to_string).collect())
}

/// Compares the instance with what is wanted. `group` is the security group's ID when it
/// exists already; `key` the key pair a launched instance should have (`Some(None)`: none),
/// `None` when it is not compared (an adopted instance, whose access is its owner's business).
pub fn plan(
    observed: Option<&Observed>,
    deployment: &str,
    group: Option<&str>,
    key: Option<Option<&str>>,
) -> Plan {
    let Some(o) = observed else {
        return Plan {
            change: Change::Create,
            start: false,
            tags: vec![],
            attach_group: false,
            key_mismatch: None,
        };
    };
    let mut changes = Vec::new();
    let start = matches!(o.state.as_str(), "stopped" | "stopping");
    if start {
        changes.push(format!("start ({})", o.state));
    }
    let tags = ec2_missing_tags(&o.tags, &ec2_tags(deployment, &[]));
    if !tags.is_empty() {
        changes.push(format!("tag {TAG_DEPLOYMENT}={deployment}"));
    }
    let attach_group = group.is_none_or(|g| !o.security_groups.iter().any(|s| s == g));
    if attach_group {
        changes.push("attach the security group".to_string());
    }
    let key_mismatch = key.filter(|k| *k != o.key_name.as_deref()).map(|k| {
        let name = |k: Option<&str>| k.map_or_else(|| "no key pair".to_string(), |k| format!("key pair {k}"));
        format!(
            "{} instead of {} (EC2 sets the key pair only at launch)",
            name(o.key_name.as_deref()),
            name(k)
        )
    });
    changes.extend(key_mismatch.clone());
    Plan { change: Change::update_or_unchanged(changes), start, tags, attach_group, key_mismatch }
}

/// The newest Amazon Linux 2023 AMI of the region for `architecture` (EC2's name).
pub async fn default_ami(aws: &super::Aws, architecture: &str) -> Result<String, AwsError> {
    let res = format!("Amazon Linux 2023 {architecture} images in {}", aws.region);
    let out = aws
        .ec2
        .describe_images()
        .owners(AMAZON_LINUX_OWNER)
        .filters(ec2_filter("name", &[&format!("{AMAZON_LINUX_NAME}{architecture}")]))
        .filters(ec2_filter("architecture", &[architecture]))
        .filters(ec2_filter("state", &["available"]))
        .send()
        .await
        .aws("ec2:DescribeImages", &res)?;
    let mut images: Vec<_> = out.images().iter().collect();
    // Newest first: by creation date, then by name (which embeds the release date).
    images.sort_by_key(|i| {
        std::cmp::Reverse((
            i.creation_date().unwrap_or_default().to_string(),
            i.name().unwrap_or_default().to_string(),
        ))
    });
    images
        .first()
        .and_then(|i| i.image_id())
        .map(str::to_string)
        .ok_or_else(|| AwsError::local("ec2:DescribeImages", &res, "no image found: pass --ami"))
}

/// Launches, starts, tags and attaches the security group as planned, waits until the instance
/// runs, and returns it as it is then. `on_retry` hears about waits for a new instance to be
/// visible.
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    aws: &super::Aws,
    d: &Desired,
    deployment: &str,
    plan: &Plan,
    observed: Option<&Observed>,
    placement: &Placement,
    group: &str,
    on_retry: OnRetry<'_>,
) -> Result<Observed, AwsError> {
    let id = match (observed, d) {
        (Some(o), _) => o.id.clone(),
        (None, Desired::Existing { id }) => id.clone(),
        (None, Desired::Launch(spec)) => {
            let id = launch(aws, spec, deployment, placement, group).await?;
            wait_visible(aws, &id, on_retry).await?;
            id
        }
    };
    let res = resource(&id);
    if plan.start {
        aws.ec2.start_instances().instance_ids(&id).send().await.aws("ec2:StartInstances", &res)?;
    }
    if !plan.tags.is_empty() {
        aws.ec2
            .create_tags()
            .resources(&id)
            .set_tags(Some(plan.tags.clone()))
            .send()
            .await
            .aws("ec2:CreateTags", &res)?;
    }
    if plan.attach_group
        && let Some(o) = observed
    {
        let mut groups = o.security_groups.clone();
        groups.push(group.to_string());
        aws.ec2
            .modify_instance_attribute()
            .instance_id(&id)
            .set_groups(Some(groups))
            .send()
            .await
            .aws("ec2:ModifyInstanceAttribute", &res)?;
    }
    wait_running(aws, &id).await
}

async fn launch(
    aws: &super::Aws,
    spec: &LaunchSpec,
    deployment: &str,
    placement: &Placement,
    group: &str,
) -> Result<String, AwsError> {
    let ami = match &spec.ami {
        Some(a) => a.clone(),
        None => default_ami(aws, placement.architecture.as_deref().unwrap_or("x86_64")).await?,
    };
    let res = format!("new instance of {deployment} ({ami}, {})", spec.instance_type);
    // Unique per launch, reused by the SDK's own retries of this request: AWS then answers with
    // the instance of the first attempt instead of starting another.
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let token = format!("regctl-{deployment}-{millis}");
    let tags = ec2_tags(deployment, &[(TAG_LAUNCHED, "true")]);
    let run = aws
        .ec2
        .run_instances()
        .image_id(&ami)
        .instance_type(InstanceType::from(spec.instance_type.as_str()))
        .min_count(1)
        .max_count(1)
        .set_key_name(spec.key_name.clone());
    // The registry is only of use at a public address (the DNS record, Let's Encrypt, SSH).
    // In a subnet that does not hand one out, ask for one on the instance's interface, as the
    // console's "auto-assign public IP" does, rather than refuse: the subnet-wide setting is
    // the account owner's, and the user chose this subnet for the instance to run in.
    // (The interface then carries the subnet and group, which EC2 refuses at the top level too.)
    let run = if placement.public_ip_on_launch {
        run.set_subnet_id(placement.subnet_id.clone()).security_group_ids(group)
    } else {
        run.network_interfaces(
            InstanceNetworkInterfaceSpecification::builder()
                .device_index(0)
                .set_subnet_id(placement.subnet_id.clone())
                .groups(group)
                .associate_public_ip_address(true)
                .delete_on_termination(true)
                .build(),
        )
    };
    let out = run
        .client_token(token)
        .metadata_options(
            InstanceMetadataOptionsRequest::builder().http_tokens(HttpTokensState::Required).build(),
        )
        .tag_specifications(ec2_tag_spec(ResourceType::Instance, &tags))
        .tag_specifications(ec2_tag_spec(ResourceType::Volume, &ec2_tags(deployment, &[])))
        .send()
        .await
        .aws("ec2:RunInstances", &res)?;
    out.instances()
        .first()
        .and_then(|i| i.instance_id())
        .map(str::to_string)
        .ok_or_else(|| AwsError::local("ec2:RunInstances", &res, "the answer names no instance"))
}

/// Waits until a just-launched instance is known to DescribeInstances: for a while after
/// RunInstances EC2 may answer `InvalidInstanceID.NotFound`, which means "not yet" here, not
/// "gone".
async fn wait_visible(aws: &super::Aws, id: &str, on_retry: OnRetry<'_>) -> Result<(), AwsError> {
    Retry::EC2_CONSISTENCY
        .until_visible(&["InvalidInstanceID.NotFound"], on_retry, || async {
            aws.ec2
                .describe_instances()
                .instance_ids(id)
                .send()
                .await
                .map(|_| ())
                .aws("ec2:DescribeInstances", &resource(id))
        })
        .await
}

/// Waits until the instance is running (up to 10 minutes).
async fn wait_running(aws: &super::Aws, id: &str) -> Result<Observed, AwsError> {
    wait_for(
        "ec2:DescribeInstances",
        &resource(id),
        "the instance to run",
        Duration::from_secs(3),
        Duration::from_secs(600),
        || async {
            let o = observe_id(aws, id).await?.ok_or_else(|| {
                AwsError::local(
                    "ec2:DescribeInstances",
                    resource(id),
                    "the instance disappeared (terminated?)",
                )
            })?;
            Ok((o.state == InstanceStateName::Running.as_str()).then_some(o))
        },
    )
    .await
}

/// Terminates the instance if regctl launched it (and waits until it is gone, so the security
/// group can go next); an adopted instance only loses regctl's tags.
pub async fn destroy(aws: &super::Aws, o: &Observed) -> Result<Removed, AwsError> {
    let res = resource(&o.id);
    if !o.launched {
        let tags: Vec<_> = o
            .tags
            .iter()
            .filter(|t| t.key().is_some_and(|k| k.starts_with("regctl:")))
            .map(|t| aws_sdk_ec2::types::Tag::builder().set_key(t.key().map(str::to_string)).build())
            .collect();
        if !tags.is_empty() {
            aws.ec2
                .delete_tags()
                .resources(&o.id)
                .set_tags(Some(tags))
                .send()
                .await
                .aws("ec2:DeleteTags", &res)?;
        }
        return Ok(Removed::Kept("not launched by regctl: untagged, left running".into()));
    }
    let r =
        aws.ec2.terminate_instances().instance_ids(&o.id).send().await.aws("ec2:TerminateInstances", &res);
    if not_found_as_none(r, &["InvalidInstanceID.NotFound"])?.is_none() {
        return Ok(Removed::Absent);
    }
    wait_for(
        "ec2:DescribeInstances",
        &res,
        "the instance to terminate",
        Duration::from_secs(3),
        Duration::from_secs(600),
        || async {
            let out = aws
                .ec2
                .describe_instances()
                .instance_ids(&o.id)
                .send()
                .await
                .aws("ec2:DescribeInstances", &res);
            let Some(out) = not_found_as_none(out, &["InvalidInstanceID.NotFound"])? else {
                return Ok(Some(()));
            };
            let state = out
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .find_map(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()));
            Ok((state.as_deref().is_none_or(|s| s == "terminated")).then_some(()))
        },
    )
    .await?;
    Ok(Removed::Deleted)
}
