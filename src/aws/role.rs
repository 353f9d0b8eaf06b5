//! The IAM role the instance assumes (trust policy from `policies/ec2-trust.json`), with the
//! registry's S3 policy attached.

use super::policy::{deployment_tag, has_deployment_tag, same_document};
use super::{AwsError, AwsResultExt, Change, OnRetry, Removed, Retry, TAG_DEPLOYMENT, not_found_as_none};

/// The role as it should be.
#[derive(Debug, Clone)]
pub struct Desired {
    /// Role name.
    pub name: String,
    /// The trust policy document.
    pub trust: String,
    /// The ARN of the managed policy to attach.
    pub policy_arn: String,
    /// Deployment name, for the tag.
    pub deployment: String,
}

/// The role as it is.
#[derive(Debug, Clone)]
pub struct Observed {
    trust: String,
    attached: Vec<String>,
    tagged: bool,
}

/// What `apply` will do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The summary.
    pub change: Change,
    create: bool,
    trust: bool,
    attach: bool,
    tag: bool,
}

fn resource(name: &str) -> String {
    format!("IAM role {name}")
}

/// Reads the role's trust policy, attached policies and tags; `None` when it does not exist.
pub async fn observe(aws: &super::Aws, name: &str, deployment: &str) -> Result<Option<Observed>, AwsError> {
    let res = resource(name);
    let got = aws.iam.get_role().role_name(name).send().await.aws("iam:GetRole", &res);
    let Some(got) = not_found_as_none(got, &["NoSuchEntity"])? else { return Ok(None) };
    let trust = got.role().and_then(|r| r.assume_role_policy_document()).unwrap_or_default().to_string();
    let attached = aws
        .iam
        .list_attached_role_policies()
        .role_name(name)
        .send()
        .await
        .aws("iam:ListAttachedRolePolicies", &res)?;
    let tags = aws.iam.list_role_tags().role_name(name).send().await.aws("iam:ListRoleTags", &res)?;
    Ok(Some(Observed {
        trust,
        attached: attached
            .attached_policies()
            .iter()
            .filter_map(|p| p.policy_arn())
            .map(str::to_string)
            .collect(),
        tagged: has_deployment_tag(tags.tags(), deployment),
    }))
}

/// Compares the role with what is wanted.
pub fn plan(observed: Option<&Observed>, d: &Desired) -> Plan {
    let Some(o) = observed else {
        return Plan { change: Change::Create, create: true, trust: false, attach: true, tag: false };
    };
    let mut changes = Vec::new();
    let trust = !same_document(&o.trust, &d.trust);
    if trust {
        changes.push("trust policy".to_string());
    }
    let attach = !o.attached.contains(&d.policy_arn);
    if attach {
        changes.push(format!("attach {}", d.policy_arn));
    }
    let tag = !o.tagged;
    if tag {
        changes.push(format!("tag {TAG_DEPLOYMENT}={}", d.deployment));
    }
    Plan { change: Change::update_or_unchanged(changes), create: false, trust, attach, tag }
}

/// Creates the role or converges it, as planned. `on_retry` hears about waits for the role or
/// the policy to be visible.
pub async fn apply(
    aws: &super::Aws,
    d: &Desired,
    plan: &Plan,
    on_retry: OnRetry<'_>,
) -> Result<(), AwsError> {
    let res = resource(&d.name);
    let tag = deployment_tag(&d.deployment, &res)?;
    let mut trust = plan.trust;
    let mut tag_it = plan.tag;
    if plan.create {
        let created = aws
            .iam
            .create_role()
            .role_name(&d.name)
            .assume_role_policy_document(&d.trust)
            .description("Assumed by the regctl registry's EC2 instance")
            .tags(tag.clone())
            .send()
            .await
            .aws("iam:CreateRole", &res);
        match created {
            Ok(_) => {}
            // Made by an interrupted run: make sure it is as wanted.
            Err(e) if e.is("EntityAlreadyExists") => {
                trust = true;
                tag_it = true;
            }
            Err(e) => return Err(e),
        }
    }
    if trust {
        aws.iam
            .update_assume_role_policy()
            .role_name(&d.name)
            .policy_document(&d.trust)
            .send()
            .await
            .aws("iam:UpdateAssumeRolePolicy", &res)?;
    }
    if plan.attach {
        // Provision makes the policy and the role just before: NoSuchEntity here means IAM does
        // not show one of them everywhere yet.
        Retry::AFTER_CREATE
            .until_visible(&["NoSuchEntity"], on_retry, || async {
                aws.iam
                    .attach_role_policy()
                    .role_name(&d.name)
                    .policy_arn(&d.policy_arn)
                    .send()
                    .await
                    .aws("iam:AttachRolePolicy", &res)
            })
            .await?;
    }
    if tag_it {
        aws.iam.tag_role().role_name(&d.name).tags(tag).send().await.aws("iam:TagRole", &res)?;
    }
    Ok(())
}

/// Deletes the role, if it carries this deployment's tag: first out of every instance profile,
/// then its managed policies detached and inline policies deleted.
pub async fn destroy(aws: &super::Aws, name: &str, deployment: &str) -> Result<Removed, AwsError> {
    let res = resource(name);
    let tags = aws.iam.list_role_tags().role_name(name).send().await.aws("iam:ListRoleTags", &res);
    let Some(tags) = not_found_as_none(tags, &["NoSuchEntity"])? else { return Ok(Removed::Absent) };
    if !has_deployment_tag(tags.tags(), deployment) {
        return Ok(Removed::Kept(format!("not tagged {TAG_DEPLOYMENT}={deployment}, so not regctl's")));
    }
    let profiles = aws
        .iam
        .list_instance_profiles_for_role()
        .role_name(name)
        .send()
        .await
        .aws("iam:ListInstanceProfilesForRole", &res)?;
    for p in profiles.instance_profiles() {
        let r = aws
            .iam
            .remove_role_from_instance_profile()
            .instance_profile_name(p.instance_profile_name())
            .role_name(name)
            .send()
            .await;
        not_found_as_none(r.aws("iam:RemoveRoleFromInstanceProfile", &res), &["NoSuchEntity"])?;
    }
    let attached = aws
        .iam
        .list_attached_role_policies()
        .role_name(name)
        .send()
        .await
        .aws("iam:ListAttachedRolePolicies", &res)?;
    for p in attached.attached_policies() {
        if let Some(arn) = p.policy_arn() {
            let r = aws.iam.detach_role_policy().role_name(name).policy_arn(arn).send().await;
            not_found_as_none(r.aws("iam:DetachRolePolicy", &res), &["NoSuchEntity"])?;
        }
    }
    let inline =
        aws.iam.list_role_policies().role_name(name).send().await.aws("iam:ListRolePolicies", &res)?;
    for p in inline.policy_names() {
        let r = aws.iam.delete_role_policy().role_name(name).policy_name(p).send().await;
        not_found_as_none(r.aws("iam:DeleteRolePolicy", &res), &["NoSuchEntity"])?;
    }
    let r = aws.iam.delete_role().role_name(name).send().await.aws("iam:DeleteRole", &res);
    Ok(not_found_as_none(r, &["NoSuchEntity"])?.map_or(Removed::Absent, |_| Removed::Deleted))
}
