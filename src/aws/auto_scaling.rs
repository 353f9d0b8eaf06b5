//! The Auto Scaling group of a scaled deployment: a fixed number of instances from the launch
//! template, spread over the zones' subnets, registered in the target group, replaced when the
//! load balancer finds them unhealthy, and tagged with the deployment at launch.

use std::time::Duration;

use aws_sdk_autoscaling::types::{
    InstanceRefreshStatus, LaunchTemplateSpecification, RefreshPreferences, Tag,
};
use serde::Serialize;

use super::{AwsError, AwsResultExt, Change, Removed, TAG_DEPLOYMENT, wait_for};

/// Seconds a new instance has to boot and pass the health check before the group replaces it.
pub const HEALTH_CHECK_GRACE_SECONDS: i32 = 300;
/// The template version the group launches: the latest, so an instance refresh after a new
/// version replaces every instance with it.
const TEMPLATE_VERSION: &str = "$Latest";

/// The group as it should be.
#[derive(Debug, Clone)]
pub struct Desired {
    /// Group name.
    pub name: String,
    /// Launch template name.
    pub launch_template: String,
    /// Number of instances (min = max = desired).
    pub size: i32,
    /// Subnets, one per zone.
    pub subnets: Vec<String>,
    /// The target group (`None`: not made yet, in a dry run).
    pub target_group: Option<String>,
    /// Deployment name, for the tags.
    pub deployment: String,
}

/// One instance of the group.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// Instance ID.
    pub id: String,
    /// Its zone.
    pub zone: String,
    /// `Pending`, `InService`, `Terminating`, ...
    pub lifecycle: String,
    /// `Healthy` or `Unhealthy`, as the group sees it.
    pub health: String,
}

/// The group as it is.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Its sizes: (min, max, desired).
    pub sizes: (i32, i32, i32),
    /// Its instances.
    pub members: Vec<Member>,
    /// Set while the group is being deleted.
    pub status: Option<String>,
    /// The value of its deployment tag.
    pub deployment: Option<String>,
    subnets: Vec<String>,
    target_groups: Vec<String>,
    health_check_type: Option<String>,
    launch_template: Option<String>,
}

fn resource(name: &str) -> String {
    format!("Auto Scaling group {name}")
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Finds the group by name; `None` when it does not exist.
pub async fn observe(aws: &super::Aws, name: &str) -> Result<Option<Observed>, AwsError> {
    let out = aws
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .aws("autoscaling:DescribeAutoScalingGroups", &resource(name))?;
    Ok(out.auto_scaling_groups().first().map(|g| {
        let mut members: Vec<Member> = g
            .instances()
            .iter()
            .map(|i| Member {
                id: i.instance_id().unwrap_or_default().to_string(),
                zone: i.availability_zone().unwrap_or_default().to_string(),
                lifecycle: i.lifecycle_state().map(|l| l.as_str().to_string()).unwrap_or_default(),
                health: i.health_status().unwrap_or_default().to_string(),
            })
            .collect();
        members.sort_by(|a, b| a.id.cmp(&b.id));
        Observed {
            sizes: (
                g.min_size().unwrap_or_default(),
                g.max_size().unwrap_or_default(),
                g.desired_capacity().unwrap_or_default(),
            ),
            members,
            status: g.status().map(str::to_string),
            deployment: g
                .tags()
                .iter()
                .find(|t| t.key() == Some(TAG_DEPLOYMENT))
                .and_then(|t| t.value())
                .map(str::to_string),
            subnets: sorted(
                g.vpc_zone_identifier()
                    .unwrap_or_default()
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
            target_groups: sorted(g.target_group_arns().to_vec()),
            health_check_type: g.health_check_type().map(str::to_string),
            launch_template: g.launch_template().and_then(|t| t.launch_template_name()).map(str::to_string),
        }
    }))
}

/// What `apply` will do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The summary.
    pub change: Change,
    update: bool,
}

/// Compares the group with what is wanted.
pub fn plan(observed: Option<&Observed>, d: &Desired) -> Plan {
    let Some(o) = observed else { return Plan { change: Change::Create, update: false } };
    let mut changes = Vec::new();
    if let Some(status) = &o.status {
        changes.push(format!("wait: the group is {status}"));
    }
    let n = d.size;
    if o.sizes != (n, n, n) {
        changes
            .push(format!("size min/max/desired {}/{}/{} -> {n}/{n}/{n}", o.sizes.0, o.sizes.1, o.sizes.2));
    }
    let subnets = sorted(d.subnets.clone());
    if o.subnets != subnets {
        changes.push(format!("subnets {} -> {}", o.subnets.join(","), subnets.join(",")));
    }
    let targets: Vec<String> = d.target_group.iter().cloned().collect();
    if o.target_groups != targets {
        changes.push("attach the target group".to_string());
    }
    if o.health_check_type.as_deref() != Some("ELB") {
        changes.push("health checks by the load balancer".to_string());
    }
    if o.launch_template.as_deref() != Some(d.launch_template.as_str()) {
        changes.push(format!("launch template {}", d.launch_template));
    }
    let update = !changes.is_empty();
    Plan { change: Change::update_or_unchanged(changes), update }
}

fn template(d: &Desired) -> LaunchTemplateSpecification {
    LaunchTemplateSpecification::builder()
        .launch_template_name(&d.launch_template)
        .version(TEMPLATE_VERSION)
        .build()
}

/// Creates the group or converges it, as planned.
pub async fn apply(aws: &super::Aws, d: &Desired, plan: &Plan) -> Result<(), AwsError> {
    let res = resource(&d.name);
    let tag = |key: &str, value: &str| {
        Tag::builder()
            .resource_id(&d.name)
            .resource_type("auto-scaling-group")
            .key(key)
            .value(value)
            .propagate_at_launch(true)
            .build()
    };
    if plan.change == Change::Create {
        let created = aws
            .autoscaling
            .create_auto_scaling_group()
            .auto_scaling_group_name(&d.name)
            .launch_template(template(d))
            .min_size(d.size)
            .max_size(d.size)
            .desired_capacity(d.size)
            .vpc_zone_identifier(d.subnets.join(","))
            .set_target_group_arns(Some(d.target_group.iter().cloned().collect()))
            .health_check_type("ELB")
            .health_check_grace_period(HEALTH_CHECK_GRACE_SECONDS)
            .tags(tag(TAG_DEPLOYMENT, &d.deployment))
            .tags(tag("Name", &format!("regctl-{}", d.deployment)))
            .send()
            .await
            .aws("autoscaling:CreateAutoScalingGroup", &res);
        return match created {
            Ok(_) => Ok(()),
            // Made by an interrupted run: converge that one.
            Err(e) if e.is("AlreadyExists") => {
                let again = self::plan(observe(aws, &d.name).await?.as_ref(), d);
                Box::pin(apply(aws, d, &again)).await
            }
            Err(e) => Err(e),
        };
    }
    if !plan.update {
        return Ok(());
    }
    aws.autoscaling
        .update_auto_scaling_group()
        .auto_scaling_group_name(&d.name)
        .launch_template(template(d))
        .min_size(d.size)
        .max_size(d.size)
        .desired_capacity(d.size)
        .vpc_zone_identifier(d.subnets.join(","))
        .health_check_type("ELB")
        .health_check_grace_period(HEALTH_CHECK_GRACE_SECONDS)
        .send()
        .await
        .aws("autoscaling:UpdateAutoScalingGroup", &res)?;
    if let Some(tg) = &d.target_group {
        aws.autoscaling
            .attach_load_balancer_target_groups()
            .auto_scaling_group_name(&d.name)
            .target_group_arns(tg)
            .send()
            .await
            .aws("autoscaling:AttachLoadBalancerTargetGroups", &res)?;
    }
    Ok(())
}

/// Deletes the group with its instances and waits until they are terminated and the group is
/// gone (its instances hold the security group until then).
pub async fn destroy(aws: &super::Aws, name: &str, timeout: Duration) -> Result<Removed, AwsError> {
    let res = resource(name);
    if observe(aws, name).await?.is_none() {
        return Ok(Removed::Absent);
    }
    let r = aws
        .autoscaling
        .delete_auto_scaling_group()
        .auto_scaling_group_name(name)
        .force_delete(true)
        .send()
        .await
        .aws("autoscaling:DeleteAutoScalingGroup", &res);
    match r {
        Ok(_) => {}
        // Already being deleted (an interrupted teardown): wait for that.
        Err(e) if e.is_any(&["ScalingActivityInProgress", "ResourceInUse"]) => {}
        Err(e) => return Err(e),
    }
    wait_for(
        "autoscaling:DescribeAutoScalingGroups",
        &res,
        "the group and its instances to be deleted",
        Duration::from_secs(5),
        timeout,
        || async { Ok(observe(aws, name).await?.is_none().then_some(())) },
    )
    .await?;
    Ok(Removed::Deleted)
}

/// How long teardown waits for the group's instances to terminate.
pub const DELETE_TIMEOUT: Duration = Duration::from_secs(900);

/// How long a refresh of every instance may take before regctl stops waiting (AWS goes on).
pub const REFRESH_TIMEOUT: Duration = Duration::from_secs(3600);

/// Which instances a refresh replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Those not launched from the launch template's latest version (a changed template).
    Outdated,
    /// Every one (the same template, a new release in the bucket that instances install at boot).
    All,
}

/// Replaces the group's instances (`which`) with ones from its launch template's latest version,
/// launching each new instance before terminating an old one (healthy capacity never below
/// 100 %, at most 200 %); joins a refresh already in progress. Waits up to `timeout` until it
/// succeeds, telling `on_progress` its status and percentage on the way.
pub async fn refresh_instances(
    aws: &super::Aws,
    name: &str,
    which: Replace,
    timeout: Duration,
    on_progress: &(dyn Fn(&str, i32) + Sync),
) -> Result<(), AwsError> {
    let res = resource(name);
    let started = aws
        .autoscaling
        .start_instance_refresh()
        .auto_scaling_group_name(name)
        .preferences(
            RefreshPreferences::builder()
                .min_healthy_percentage(100)
                .max_healthy_percentage(200)
                .instance_warmup(HEALTH_CHECK_GRACE_SECONDS)
                .skip_matching(which == Replace::Outdated)
                .build(),
        )
        .send()
        .await
        .aws("autoscaling:StartInstanceRefresh", &res);
    let id = match started {
        Ok(out) => out.instance_refresh_id().map(str::to_string),
        // One at a time per group: wait for the one running (an interrupted run's).
        Err(e) if e.is("InstanceRefreshInProgress") => None,
        Err(e) => return Err(e),
    };
    wait_for(
        "autoscaling:DescribeInstanceRefreshes",
        &res,
        "the instance refresh to finish",
        Duration::from_secs(5),
        timeout,
        || async {
            let out = aws
                .autoscaling
                .describe_instance_refreshes()
                .auto_scaling_group_name(name)
                .set_instance_refresh_ids(id.clone().map(|i| vec![i]))
                .send()
                .await
                .aws("autoscaling:DescribeInstanceRefreshes", &res)?;
            // Newest first: without an ID, the one in progress.
            let Some(refresh) = out.instance_refreshes().first() else {
                return Err(AwsError::local(
                    "autoscaling:DescribeInstanceRefreshes",
                    &res,
                    "no instance refresh found",
                ));
            };
            let status = refresh.status().cloned().unwrap_or(InstanceRefreshStatus::Pending);
            match status {
                InstanceRefreshStatus::Successful => Ok(Some(())),
                InstanceRefreshStatus::Pending
                | InstanceRefreshStatus::InProgress
                | InstanceRefreshStatus::Baking
                | InstanceRefreshStatus::Cancelling
                | InstanceRefreshStatus::RollbackInProgress => {
                    on_progress(status.as_str(), refresh.percentage_complete().unwrap_or(0));
                    Ok(None)
                }
                other => Err(AwsError::local(
                    "autoscaling:DescribeInstanceRefreshes",
                    &res,
                    format!(
                        "the instance refresh ended {}{}: the group keeps the instances it has",
                        other.as_str(),
                        refresh.status_reason().map(|r| format!(" ({r})")).unwrap_or_default()
                    ),
                )),
            }
        },
    )
    .await
}
