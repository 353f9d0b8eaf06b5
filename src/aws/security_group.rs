//! The security groups: the single instance's (443 and 80 from anywhere, 22 from the operator's
//! CIDR); in a scaled deployment the load balancer's (443 and 80 from anywhere, IPv4 and IPv6)
//! and the instances' (80 only from the load balancer's group, 22 from the operator's CIDR).
//! Default egress is kept (ACME and S3 need it). Rules are converged: a changed SSH CIDR replaces
//! the old rule.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_ec2::types::{IpPermission, IpRange, Ipv6Range, ResourceType, UserIdGroupPair};

use super::{
    AwsError, AwsResultExt, Change, OnRetry, Removed, Retry, TAG_DEPLOYMENT, TAG_DNS_VALUE, TAG_DOMAIN,
    TAG_ZONE, ec2_filter, ec2_missing_tags, ec2_tag_spec, ec2_tags, not_found_as_none,
};

/// The security group as it should be.
#[derive(Debug, Clone)]
pub struct Desired {
    /// Group name.
    pub name: String,
    /// VPC of the instance.
    pub vpc_id: String,
    /// Source of SSH (port 22).
    pub ssh_cidr: String,
    /// Deployment name, for the tags.
    pub deployment: String,
    /// DNS name of the deployment, kept in a tag so teardown finds the record from tags alone.
    pub domain: String,
    /// Route 53 zone of `domain`, when known.
    pub hosted_zone_id: Option<String>,
    /// Whose group it is, which decides its rules.
    pub role: Role,
}

/// Whose group it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The single instance's: 443 and 80 from anywhere, 22 from the SSH CIDR.
    Instance,
    /// A scaled deployment's load balancer's: 443 and 80 from anywhere, IPv4 and IPv6.
    Balancer,
    /// A scaled deployment's instances': 80 only from the load balancer's group (`None`: not made
    /// yet, in a dry run), 22 from the SSH CIDR.
    Behind {
        /// The load balancer's group ID.
        balancer_group: Option<String>,
    },
}

impl Desired {
    fn tags(&self) -> Vec<aws_sdk_ec2::types::Tag> {
        let mut extra = vec![(TAG_DOMAIN, self.domain.as_str())];
        if let Some(z) = &self.hosted_zone_id {
            extra.push((TAG_ZONE, z.as_str()));
        }
        ec2_tags(&self.deployment, &extra)
    }

    /// The ingress rules wanted.
    pub fn rules(&self) -> BTreeSet<Rule> {
        let ssh = (22, self.ssh_cidr.as_str());
        let sources: Vec<(i32, &str)> = match &self.role {
            Role::Instance => vec![ssh, (80, "0.0.0.0/0"), (443, "0.0.0.0/0")],
            Role::Balancer => vec![(80, "0.0.0.0/0"), (443, "0.0.0.0/0"), (80, "::/0"), (443, "::/0")],
            Role::Behind { balancer_group } => {
                vec![ssh, (80, balancer_group.as_deref().unwrap_or("(the load balancer's group)"))]
            }
        };
        sources
            .into_iter()
            .map(|(port, cidr)| Rule { protocol: "tcp".into(), from: port, to: port, cidr: cidr.into() })
            .collect()
    }
}

/// One ingress rule from a CIDR (IPv4 or IPv6).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    /// `tcp`, `udp`, `icmp` or `-1`.
    pub protocol: String,
    /// First port.
    pub from: i32,
    /// Last port.
    pub to: i32,
    /// Source CIDR, or the ID of a security group (`sg-...`) whose members may connect.
    pub cidr: String,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.from == self.to {
            write!(f, "{} {} from {}", self.protocol, self.from, self.cidr)
        } else {
            write!(f, "{} {}-{} from {}", self.protocol, self.from, self.to, self.cidr)
        }
    }
}

impl Rule {
    fn permission(&self) -> IpPermission {
        let b = IpPermission::builder().ip_protocol(&self.protocol).from_port(self.from).to_port(self.to);
        if self.cidr.starts_with("sg-") {
            b.user_id_group_pairs(
                UserIdGroupPair::builder().group_id(&self.cidr).description("regctl").build(),
            )
            .build()
        } else if self.cidr.contains(':') {
            b.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(&self.cidr).build()).build()
        } else {
            b.ip_ranges(IpRange::builder().cidr_ip(&self.cidr).description("regctl").build()).build()
        }
    }
}

/// The security group as it is.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Its ID.
    pub id: String,
    rules: BTreeSet<Rule>,
    tags: Vec<aws_sdk_ec2::types::Tag>,
}

impl Observed {
    /// The DNS name and hosted zone recorded in the group's tags by an earlier run.
    pub fn recorded_dns(&self) -> Option<(String, String)> {
        let domain = super::ec2_tag_value(&self.tags, TAG_DOMAIN)?;
        let zone = super::ec2_tag_value(&self.tags, TAG_ZONE)?;
        Some((domain.to_string(), zone.to_string()))
    }

    /// The address the DNS record was last pointed at, as recorded in the group's tags.
    pub fn recorded_dns_value(&self) -> Option<String> {
        super::ec2_tag_value(&self.tags, TAG_DNS_VALUE).map(str::to_string)
    }
}

/// Records in the group's tags the address the DNS record now points at.
pub async fn record_dns_value(aws: &super::Aws, group_id: &str, ip: &str) -> Result<(), AwsError> {
    let tag = aws_sdk_ec2::types::Tag::builder().key(TAG_DNS_VALUE).value(ip).build();
    aws.ec2
        .create_tags()
        .resources(group_id)
        .tags(tag)
        .send()
        .await
        .map(|_| ())
        .aws("ec2:CreateTags", &format!("security group {group_id}"))
}

/// What `apply` will do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The summary.
    pub change: Change,
    id: Option<String>,
    add: Vec<Rule>,
    revoke: Vec<Rule>,
    tags: Vec<aws_sdk_ec2::types::Tag>,
}

fn resource(name: &str) -> String {
    format!("security group {name}")
}

fn observed_from(g: &aws_sdk_ec2::types::SecurityGroup) -> Observed {
    let mut rules = BTreeSet::new();
    for p in g.ip_permissions() {
        let protocol = p.ip_protocol().unwrap_or("-1").to_string();
        let (from, to) = (p.from_port().unwrap_or(-1), p.to_port().unwrap_or(-1));
        let cidrs = p
            .ip_ranges()
            .iter()
            .filter_map(|r| r.cidr_ip())
            .chain(p.ipv6_ranges().iter().filter_map(|r| r.cidr_ipv6()))
            .chain(p.user_id_group_pairs().iter().filter_map(|g| g.group_id()));
        for cidr in cidrs {
            rules.insert(Rule { protocol: protocol.clone(), from, to, cidr: cidr.to_string() });
        }
    }
    Observed { id: g.group_id().unwrap_or_default().to_string(), rules, tags: g.tags().to_vec() }
}

/// Finds the group by name in the VPC; `None` when it does not exist.
pub async fn observe(aws: &super::Aws, name: &str, vpc_id: &str) -> Result<Option<Observed>, AwsError> {
    let out = aws
        .ec2
        .describe_security_groups()
        .filters(ec2_filter("group-name", &[name]))
        .filters(ec2_filter("vpc-id", &[vpc_id]))
        .send()
        .await
        .aws("ec2:DescribeSecurityGroups", &resource(name))?;
    Ok(out.security_groups().first().map(observed_from))
}

/// Compares the group with what is wanted.
pub fn plan(observed: Option<&Observed>, d: &Desired) -> Plan {
    let wanted = d.rules();
    let Some(o) = observed else {
        return Plan {
            change: Change::Create,
            id: None,
            add: wanted.into_iter().collect(),
            revoke: vec![],
            tags: vec![],
        };
    };
    let add: Vec<Rule> = wanted.difference(&o.rules).cloned().collect();
    let revoke: Vec<Rule> = o.rules.difference(&wanted).cloned().collect();
    let tags = ec2_missing_tags(&o.tags, &d.tags());
    let mut changes: Vec<String> = add.iter().map(|r| format!("allow {r}")).collect();
    changes.extend(revoke.iter().map(|r| format!("revoke {r}")));
    changes.extend(tags.iter().map(|t| format!("tag {}={}", t.key().unwrap_or(""), t.value().unwrap_or(""))));
    Plan { change: Change::update_or_unchanged(changes), id: Some(o.id.clone()), add, revoke, tags }
}

/// Creates the group or converges its rules and tags, as planned; returns its ID. `on_retry`
/// hears about waits for a new group to be visible.
pub async fn apply(
    aws: &super::Aws,
    d: &Desired,
    plan: &Plan,
    on_retry: OnRetry<'_>,
) -> Result<String, AwsError> {
    let res = resource(&d.name);
    // A group made by this call may be "not found" by the next ones for a while.
    let (id, schedule) = match &plan.id {
        Some(id) => (id.clone(), Retry::ONCE),
        None => {
            let created = aws
                .ec2
                .create_security_group()
                .group_name(&d.name)
                .description(match d.role {
                    Role::Instance => format!("regctl registry {}: HTTPS, HTTP (ACME) and SSH", d.deployment),
                    Role::Balancer => {
                        format!("regctl registry {}: load balancer, HTTPS and HTTP", d.deployment)
                    }
                    Role::Behind { .. } => {
                        format!("regctl registry {}: HTTP from the load balancer, and SSH", d.deployment)
                    }
                })
                .vpc_id(&d.vpc_id)
                .tag_specifications(ec2_tag_spec(ResourceType::SecurityGroup, &d.tags()))
                .send()
                .await
                .aws("ec2:CreateSecurityGroup", &res);
            match created {
                Ok(out) => (out.group_id().unwrap_or_default().to_string(), Retry::EC2_CONSISTENCY),
                // Created by an interrupted run: converge that one.
                Err(e) if e.is("InvalidGroup.Duplicate") => {
                    let Some(o) = observe(aws, &d.name, &d.vpc_id).await? else { return Err(e) };
                    let again = self::plan(Some(&o), d);
                    return Box::pin(apply(aws, d, &again, on_retry)).await;
                }
                Err(e) => return Err(e),
            }
        }
    };
    if !plan.revoke.is_empty() {
        let r = aws
            .ec2
            .revoke_security_group_ingress()
            .group_id(&id)
            .set_ip_permissions(Some(plan.revoke.iter().map(Rule::permission).collect()))
            .send()
            .await
            .aws("ec2:RevokeSecurityGroupIngress", &res);
        not_found_as_none(r, &["InvalidPermission.NotFound"])?;
    }
    if !plan.add.is_empty() {
        let authorize = |rules: &[Rule]| {
            let permissions: Vec<IpPermission> = rules.iter().map(Rule::permission).collect();
            schedule.until_visible(&["InvalidGroup.NotFound"], on_retry, {
                let (id, res) = (&id, &res);
                move || {
                    let call = aws.ec2.authorize_security_group_ingress().group_id(id);
                    let call = call.set_ip_permissions(Some(permissions.clone()));
                    async move { call.send().await.map(|_| ()).aws("ec2:AuthorizeSecurityGroupIngress", res) }
                }
            })
        };
        match authorize(&plan.add).await {
            // The call is atomic: one rule already there (a read that lagged behind a write, or
            // another run) rejects the whole batch and adds none. Add them one by one then; a
            // duplicate among those is a rule already in place.
            Err(e) if e.is("InvalidPermission.Duplicate") && plan.add.len() > 1 => {
                for rule in &plan.add {
                    not_found_as_none(
                        authorize(std::slice::from_ref(rule)).await,
                        &["InvalidPermission.Duplicate"],
                    )?;
                }
            }
            r => {
                not_found_as_none(r, &["InvalidPermission.Duplicate"])?;
            }
        }
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
    Ok(id)
}

/// A tagged group found by [`find_tagged`].
#[derive(Debug, Clone)]
pub struct Found {
    /// Group ID.
    pub id: String,
    /// Group name.
    pub name: String,
    /// VPC.
    pub vpc_id: String,
    /// The DNS name recorded in its tags.
    pub domain: Option<String>,
    /// The hosted zone recorded in its tags.
    pub hosted_zone_id: Option<String>,
    /// The address the DNS record was last pointed at, recorded in its tags.
    pub dns_value: Option<String>,
}

/// The groups tagged with `deployment`.
pub async fn find_tagged(aws: &super::Aws, deployment: &str) -> Result<Vec<Found>, AwsError> {
    let out = aws
        .ec2
        .describe_security_groups()
        .filters(ec2_filter(&format!("tag:{TAG_DEPLOYMENT}"), &[deployment]))
        .send()
        .await
        .aws("ec2:DescribeSecurityGroups", &format!("security groups of {deployment}"))?;
    Ok(out
        .security_groups()
        .iter()
        .map(|g| Found {
            id: g.group_id().unwrap_or_default().to_string(),
            name: g.group_name().unwrap_or_default().to_string(),
            vpc_id: g.vpc_id().unwrap_or_default().to_string(),
            domain: super::ec2_tag_value(g.tags(), TAG_DOMAIN).map(str::to_string),
            hosted_zone_id: super::ec2_tag_value(g.tags(), TAG_ZONE).map(str::to_string),
            dns_value: super::ec2_tag_value(g.tags(), TAG_DNS_VALUE).map(str::to_string),
        })
        .collect())
}

/// Detaches the group from every instance still using it (putting the VPC's default group in
/// its place when it was the only one), then deletes it, retrying `DependencyViolation` while
/// network interfaces let go of it (e.g. a terminating instance).
pub async fn destroy(aws: &super::Aws, group: &Found, retry: Retry) -> Result<Removed, AwsError> {
    let res = resource(&group.name);
    let users = aws
        .ec2
        .describe_instances()
        .filters(ec2_filter("instance.group-id", &[&group.id]))
        .filters(ec2_filter("instance-state-name", &["pending", "running", "stopping", "stopped"]))
        .send()
        .await
        .aws("ec2:DescribeInstances", &res)?;
    for inst in users.reservations().iter().flat_map(|r| r.instances()) {
        let Some(instance_id) = inst.instance_id() else { continue };
        let mut groups: Vec<String> = inst
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id())
            .filter(|g| *g != group.id)
            .map(str::to_string)
            .collect();
        if groups.is_empty() {
            groups.push(default_group(aws, &group.vpc_id, &res).await?);
        }
        aws.ec2
            .modify_instance_attribute()
            .instance_id(instance_id)
            .set_groups(Some(groups))
            .send()
            .await
            .aws("ec2:ModifyInstanceAttribute", &format!("instance {instance_id}"))?;
    }
    let deleted = retry
        .run(
            |e| e.is("DependencyViolation"),
            |_, _| {},
            || async {
                aws.ec2
                    .delete_security_group()
                    .group_id(&group.id)
                    .send()
                    .await
                    .aws("ec2:DeleteSecurityGroup", &res)
            },
        )
        .await;
    Ok(not_found_as_none(deleted, &["InvalidGroup.NotFound"])?.map_or(Removed::Absent, |_| Removed::Deleted))
}

async fn default_group(aws: &super::Aws, vpc_id: &str, res: &str) -> Result<String, AwsError> {
    let out = aws
        .ec2
        .describe_security_groups()
        .filters(ec2_filter("group-name", &["default"]))
        .filters(ec2_filter("vpc-id", &[vpc_id]))
        .send()
        .await
        .aws("ec2:DescribeSecurityGroups", res)?;
    out.security_groups().first().and_then(|g| g.group_id()).map(str::to_string).ok_or_else(|| {
        AwsError::local("ec2:DescribeSecurityGroups", res, format!("VPC {vpc_id} has no default group"))
    })
}

/// How long teardown waits for a security group to be released by network interfaces.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(cidr: &str) -> Desired {
        Desired {
            name: "regctl-registry".into(),
            vpc_id: "vpc-1".into(),
            ssh_cidr: cidr.into(),
            deployment: "registry".into(),
            domain: "r.example.com".into(),
            hosted_zone_id: None,
            role: Role::Instance,
        }
    }

    #[test]
    fn a_changed_ssh_cidr_replaces_the_old_rule() {
        let old = desired("198.51.100.7/32");
        let observed = Observed { id: "sg-1".into(), rules: old.rules(), tags: old.tags() };
        assert_eq!(plan(Some(&observed), &old).change, Change::Unchanged);
        let new = desired("203.0.113.0/24");
        let p = plan(Some(&observed), &new);
        assert_eq!(p.add.len(), 1);
        assert_eq!(p.add[0].cidr, "203.0.113.0/24");
        assert_eq!(p.revoke.len(), 1);
        assert_eq!(p.revoke[0].cidr, "198.51.100.7/32");
    }

    #[test]
    fn the_instances_behind_a_balancer_take_http_only_from_its_group() {
        let behind = Desired {
            role: Role::Behind { balancer_group: Some("sg-lb".into()) },
            ..desired("198.51.100.7/32")
        };
        let rules: Vec<String> = behind.rules().iter().map(ToString::to_string).collect();
        assert_eq!(rules, ["tcp 22 from 198.51.100.7/32", "tcp 80 from sg-lb"]);
        // The group is a source group on the wire, not a CIDR.
        let http = behind.rules().into_iter().find(|r| r.from == 80).expect("the HTTP rule");
        let permission = http.permission();
        assert!(permission.ip_ranges().is_empty(), "{permission:?}");
        assert_eq!(permission.user_id_group_pairs()[0].group_id(), Some("sg-lb"));
        // Read back as moto and EC2 show it, it is the same rule: nothing to converge.
        let observed = observed_from(
            &aws_sdk_ec2::types::SecurityGroup::builder()
                .group_id("sg-1")
                .set_ip_permissions(Some(behind.rules().iter().map(Rule::permission).collect()))
                .set_tags(Some(behind.tags()))
                .build(),
        );
        assert_eq!(plan(Some(&observed), &behind).change, Change::Unchanged);

        let front = Desired { role: Role::Balancer, ..desired("198.51.100.7/32") };
        let sources: Vec<String> = front.rules().iter().map(|r| r.cidr.clone()).collect();
        assert!(sources.contains(&"::/0".to_string()) && !sources.contains(&"198.51.100.7/32".to_string()));
    }
}
