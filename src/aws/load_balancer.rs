//! The Application Load Balancer of a scaled deployment: internet-facing, in the instances'
//! zones, with its own security group, and an idle timeout long enough for slow uploads of large
//! blobs (a PATCH of hundreds of MB over a slow link sends nothing back for minutes).

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_elasticloadbalancingv2::types::{
    IpAddressType, LoadBalancerAttribute, LoadBalancerSchemeEnum, LoadBalancerTypeEnum, Tag,
};

use super::{AwsError, AwsResultExt, Change, Removed, TAG_DEPLOYMENT, not_found_as_none, wait_for};

/// Seconds the balancer keeps an idle connection open (AWS's default is 60).
pub const IDLE_TIMEOUT_SECONDS: u32 = 300;

/// The attributes regctl sets, as ELB names and shows them.
fn attributes() -> BTreeMap<String, String> {
    BTreeMap::from([("idle_timeout.timeout_seconds".to_string(), IDLE_TIMEOUT_SECONDS.to_string())])
}

/// The tags of every ELB resource of `deployment`.
pub(crate) fn elb_tags(deployment: &str) -> Vec<Tag> {
    vec![
        Tag::builder().key(TAG_DEPLOYMENT).value(deployment).build(),
        Tag::builder().key("Name").value(format!("regctl-{deployment}")).build(),
    ]
}

/// True when `arn` (a balancer, target group or listener) is tagged with `deployment`.
pub(crate) async fn is_tagged(aws: &super::Aws, arn: &str, deployment: &str) -> Result<bool, AwsError> {
    let out = aws
        .elb
        .describe_tags()
        .resource_arns(arn)
        .send()
        .await
        .aws("elasticloadbalancing:DescribeTags", arn)?;
    Ok(out
        .tag_descriptions()
        .iter()
        .flat_map(|d| d.tags())
        .any(|t| t.key() == Some(TAG_DEPLOYMENT) && t.value() == Some(deployment)))
}

/// The load balancer as it should be.
#[derive(Debug, Clone)]
pub struct Desired {
    /// Its name.
    pub name: String,
    /// Its subnets (one per zone).
    pub subnets: Vec<String>,
    /// Its security group.
    pub security_group: Option<String>,
    /// Deployment name, for the tags.
    pub deployment: String,
}

/// The load balancer as it is.
#[derive(Debug, Clone)]
pub struct Observed {
    /// ARN.
    pub arn: String,
    /// Its DNS name (what the alias record points at).
    pub dns_name: String,
    /// The hosted zone of its DNS name (for the alias record).
    pub canonical_zone: String,
    subnets: Vec<String>,
    security_groups: Vec<String>,
    attributes: BTreeMap<String, String>,
}

fn resource(name: &str) -> String {
    format!("load balancer {name}")
}

/// Finds the balancer by name; `None` when it does not exist.
pub async fn observe(aws: &super::Aws, name: &str) -> Result<Option<Observed>, AwsError> {
    let res = resource(name);
    let out = aws
        .elb
        .describe_load_balancers()
        .names(name)
        .send()
        .await
        .aws("elasticloadbalancing:DescribeLoadBalancers", &res);
    let Some(out) = not_found_as_none(out, &["LoadBalancerNotFound"])? else { return Ok(None) };
    let Some(lb) = out.load_balancers().first() else { return Ok(None) };
    let arn = lb.load_balancer_arn().unwrap_or_default().to_string();
    let attrs = aws
        .elb
        .describe_load_balancer_attributes()
        .load_balancer_arn(&arn)
        .send()
        .await
        .aws("elasticloadbalancing:DescribeLoadBalancerAttributes", &res)?;
    let mut subnets: Vec<String> =
        lb.availability_zones().iter().filter_map(|z| z.subnet_id()).map(str::to_string).collect();
    subnets.sort();
    let mut security_groups: Vec<String> = lb.security_groups().to_vec();
    security_groups.sort();
    Ok(Some(Observed {
        arn,
        dns_name: lb.dns_name().unwrap_or_default().to_string(),
        canonical_zone: lb.canonical_hosted_zone_id().unwrap_or_default().to_string(),
        subnets,
        security_groups,
        attributes: attrs
            .attributes()
            .iter()
            .filter_map(|a| Some((a.key()?.to_string(), a.value()?.to_string())))
            .collect(),
    }))
}

/// What `apply` will do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The summary.
    pub change: Change,
    subnets: bool,
    security_groups: bool,
    attributes: Vec<(String, String)>,
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

/// Compares the balancer with what is wanted.
pub fn plan(observed: Option<&Observed>, d: &Desired) -> Plan {
    let Some(o) = observed else {
        return Plan {
            change: Change::Create,
            subnets: false,
            security_groups: false,
            attributes: attributes().into_iter().collect(),
        };
    };
    let mut changes = Vec::new();
    let subnets = o.subnets != sorted(&d.subnets);
    if subnets {
        changes.push(format!("subnets {} -> {}", o.subnets.join(","), sorted(&d.subnets).join(",")));
    }
    let groups: Vec<String> = d.security_group.iter().cloned().collect();
    let security_groups = o.security_groups != groups;
    if security_groups {
        changes.push(format!("security groups {} -> {}", o.security_groups.join(","), groups.join(",")));
    }
    let attributes: Vec<(String, String)> =
        attributes().into_iter().filter(|(k, v)| o.attributes.get(k) != Some(v)).collect();
    changes.extend(attributes.iter().map(|(k, v)| format!("{k}={v}")));
    Plan { change: Change::update_or_unchanged(changes), subnets, security_groups, attributes }
}

/// Creates the balancer or converges it, as planned; returns it as it is then.
pub async fn apply(aws: &super::Aws, d: &Desired, plan: &Plan) -> Result<Observed, AwsError> {
    let res = resource(&d.name);
    if plan.change == Change::Create {
        // Creating a balancer that exists with the same settings returns it: safe after an
        // interrupted run.
        aws.elb
            .create_load_balancer()
            .name(&d.name)
            .set_subnets(Some(d.subnets.clone()))
            .set_security_groups(Some(d.security_group.iter().cloned().collect()))
            .scheme(LoadBalancerSchemeEnum::InternetFacing)
            .r#type(LoadBalancerTypeEnum::Application)
            .ip_address_type(IpAddressType::Ipv4)
            .set_tags(Some(elb_tags(&d.deployment)))
            .send()
            .await
            .aws("elasticloadbalancing:CreateLoadBalancer", &res)?;
    }
    let o = observe(aws, &d.name).await?.ok_or_else(|| {
        AwsError::local("elasticloadbalancing:DescribeLoadBalancers", &res, "not found after create")
    })?;
    if plan.subnets {
        aws.elb
            .set_subnets()
            .load_balancer_arn(&o.arn)
            .set_subnets(Some(d.subnets.clone()))
            .send()
            .await
            .aws("elasticloadbalancing:SetSubnets", &res)?;
    }
    if plan.security_groups {
        aws.elb
            .set_security_groups()
            .load_balancer_arn(&o.arn)
            .set_security_groups(Some(d.security_group.iter().cloned().collect()))
            .send()
            .await
            .aws("elasticloadbalancing:SetSecurityGroups", &res)?;
    }
    if !plan.attributes.is_empty() {
        let attrs =
            plan.attributes.iter().map(|(k, v)| LoadBalancerAttribute::builder().key(k).value(v).build());
        aws.elb
            .modify_load_balancer_attributes()
            .load_balancer_arn(&o.arn)
            .set_attributes(Some(attrs.collect()))
            .send()
            .await
            .aws("elasticloadbalancing:ModifyLoadBalancerAttributes", &res)?;
    }
    Ok(o)
}

/// Deletes the balancer (with its listeners) and waits until it is gone, so its security group
/// and target group can go next.
pub async fn destroy(aws: &super::Aws, name: &str, arn: &str) -> Result<Removed, AwsError> {
    let res = resource(name);
    let r = aws
        .elb
        .delete_load_balancer()
        .load_balancer_arn(arn)
        .send()
        .await
        .aws("elasticloadbalancing:DeleteLoadBalancer", &res);
    if not_found_as_none(r, &["LoadBalancerNotFound"])?.is_none() {
        return Ok(Removed::Absent);
    }
    wait_for(
        "elasticloadbalancing:DescribeLoadBalancers",
        &res,
        "the load balancer to be deleted",
        Duration::from_secs(3),
        Duration::from_secs(300),
        || async { Ok(observe(aws, name).await?.is_none().then_some(())) },
    )
    .await?;
    Ok(Removed::Deleted)
}
