//! The target group of a scaled deployment: the instances serve plain HTTP on port 80 behind the
//! load balancer (which ends TLS), checked on `/health`, and drained for 30 s when they leave.

use std::collections::BTreeMap;

use aws_sdk_elasticloadbalancingv2::types::{Matcher, ProtocolEnum, TargetGroupAttribute, TargetTypeEnum};
use serde::Serialize;

use super::load_balancer::elb_tags;
use super::{AwsError, AwsResultExt, Change, Removed, Retry, not_found_as_none};

/// The port (and protocol: HTTP) the instances serve the balancer on.
pub const PORT: i32 = 80;
/// The path of the health check.
pub const HEALTH_PATH: &str = "/health";
/// Seconds a leaving instance keeps its open requests (AWS's default is 300: too long for a
/// rolling replacement, ample for registry requests, whose long uploads resume).
pub const DEREGISTRATION_DELAY_SECONDS: u32 = 30;

fn attributes() -> BTreeMap<String, String> {
    BTreeMap::from([(
        "deregistration_delay.timeout_seconds".to_string(),
        DEREGISTRATION_DELAY_SECONDS.to_string(),
    )])
}

/// The target group as it is.
#[derive(Debug, Clone)]
pub struct Observed {
    /// ARN.
    pub arn: String,
    health_path: String,
    attributes: BTreeMap<String, String>,
}

/// Seconds between two health checks of a target.
pub const HEALTH_CHECK_INTERVAL_SECONDS: i32 = 10;
/// Failed checks in a row after which a target is unhealthy and gets no more requests.
pub const UNHEALTHY_THRESHOLD: i32 = 3;

fn resource(name: &str) -> String {
    format!("target group {name}")
}

/// Finds the group by name; `None` when it does not exist.
pub async fn observe(aws: &super::Aws, name: &str) -> Result<Option<Observed>, AwsError> {
    let res = resource(name);
    let out = aws
        .elb
        .describe_target_groups()
        .names(name)
        .send()
        .await
        .aws("elasticloadbalancing:DescribeTargetGroups", &res);
    let Some(out) = not_found_as_none(out, &["TargetGroupNotFound"])? else { return Ok(None) };
    let Some(tg) = out.target_groups().first() else { return Ok(None) };
    let arn = tg.target_group_arn().unwrap_or_default().to_string();
    let attrs = aws
        .elb
        .describe_target_group_attributes()
        .target_group_arn(&arn)
        .send()
        .await
        .aws("elasticloadbalancing:DescribeTargetGroupAttributes", &res)?;
    Ok(Some(Observed {
        arn,
        health_path: tg.health_check_path().unwrap_or_default().to_string(),
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
    health: bool,
    attributes: Vec<(String, String)>,
}

/// Compares the group with what is wanted.
pub fn plan(observed: Option<&Observed>) -> Plan {
    let Some(o) = observed else {
        return Plan {
            change: Change::Create,
            health: false,
            attributes: attributes().into_iter().collect(),
        };
    };
    let mut changes = Vec::new();
    let health = o.health_path != HEALTH_PATH;
    if health {
        changes.push(format!("health check {} -> {HEALTH_PATH}", o.health_path));
    }
    let attributes: Vec<(String, String)> =
        attributes().into_iter().filter(|(k, v)| o.attributes.get(k) != Some(v)).collect();
    changes.extend(attributes.iter().map(|(k, v)| format!("{k}={v}")));
    Plan { change: Change::update_or_unchanged(changes), health, attributes }
}

/// Creates the group in `vpc_id` or converges it, as planned; returns its ARN.
pub async fn apply(
    aws: &super::Aws,
    name: &str,
    vpc_id: &str,
    deployment: &str,
    plan: &Plan,
    observed: Option<&Observed>,
) -> Result<String, AwsError> {
    let res = resource(name);
    let arn = match observed {
        Some(o) => o.arn.clone(),
        None => {
            // Creating a group that exists with the same settings returns it.
            let out = aws
                .elb
                .create_target_group()
                .name(name)
                .protocol(ProtocolEnum::Http)
                .port(PORT)
                .vpc_id(vpc_id)
                .target_type(TargetTypeEnum::Instance)
                .health_check_protocol(ProtocolEnum::Http)
                .health_check_path(HEALTH_PATH)
                .health_check_interval_seconds(HEALTH_CHECK_INTERVAL_SECONDS)
                .healthy_threshold_count(2)
                .unhealthy_threshold_count(UNHEALTHY_THRESHOLD)
                .matcher(Matcher::builder().http_code("200").build())
                .set_tags(Some(elb_tags(deployment)))
                .send()
                .await
                .aws("elasticloadbalancing:CreateTargetGroup", &res)?;
            out.target_groups().first().and_then(|t| t.target_group_arn()).map(str::to_string).ok_or_else(
                || AwsError::local("elasticloadbalancing:CreateTargetGroup", &res, "no ARN in the answer"),
            )?
        }
    };
    if plan.health {
        aws.elb
            .modify_target_group()
            .target_group_arn(&arn)
            .health_check_path(HEALTH_PATH)
            .send()
            .await
            .aws("elasticloadbalancing:ModifyTargetGroup", &res)?;
    }
    if !plan.attributes.is_empty() {
        let attrs =
            plan.attributes.iter().map(|(k, v)| TargetGroupAttribute::builder().key(k).value(v).build());
        aws.elb
            .modify_target_group_attributes()
            .target_group_arn(&arn)
            .set_attributes(Some(attrs.collect()))
            .send()
            .await
            .aws("elasticloadbalancing:ModifyTargetGroupAttributes", &res)?;
    }
    Ok(arn)
}

/// One target's health, as the load balancer sees it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetHealth {
    /// The instance.
    pub id: String,
    /// `healthy`, `unhealthy`, `initial`, `draining`, `unused`, ...
    pub state: String,
    /// Why, when not healthy (e.g. `Target.FailedHealthChecks`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The health of every registered target.
pub async fn health(aws: &super::Aws, arn: &str) -> Result<Vec<TargetHealth>, AwsError> {
    let out = aws
        .elb
        .describe_target_health()
        .target_group_arn(arn)
        .send()
        .await
        .aws("elasticloadbalancing:DescribeTargetHealth", &format!("target group {arn}"))?;
    let mut targets: Vec<TargetHealth> = out
        .target_health_descriptions()
        .iter()
        .map(|d| TargetHealth {
            id: d.target().and_then(|t| t.id()).unwrap_or_default().to_string(),
            state: d
                .target_health()
                .and_then(|h| h.state())
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            reason: d.target_health().and_then(|h| h.reason()).map(|r| r.as_str().to_string()),
        })
        .collect();
    targets.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(targets)
}

/// Deletes the group, retrying while the deleted balancer's listeners still hold it.
pub async fn destroy(aws: &super::Aws, name: &str, arn: &str, retry: Retry) -> Result<Removed, AwsError> {
    let res = resource(name);
    let deleted = retry
        .run(
            |e| e.is("ResourceInUse"),
            |_, _| {},
            || async {
                aws.elb
                    .delete_target_group()
                    .target_group_arn(arn)
                    .send()
                    .await
                    .aws("elasticloadbalancing:DeleteTargetGroup", &res)
            },
        )
        .await;
    Ok(not_found_as_none(deleted, &["TargetGroupNotFound"])?.map_or(Removed::Absent, |_| Removed::Deleted))
}
