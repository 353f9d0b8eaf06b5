//! The IAM instance profile that carries the role to the instance.

use super::policy::{deployment_tag, has_deployment_tag};
use super::{AwsError, AwsResultExt, Change, OnRetry, Removed, Retry, TAG_DEPLOYMENT, not_found_as_none};

/// The instance profile as it should be.
#[derive(Debug, Clone)]
pub struct Desired {
    /// Instance profile name.
    pub name: String,
    /// The one role it holds.
    pub role: String,
    /// Deployment name, for the tag.
    pub deployment: String,
}

/// The instance profile as it is.
#[derive(Debug, Clone)]
pub struct Observed {
    roles: Vec<String>,
    tagged: bool,
}

/// What `apply` will do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The summary.
    pub change: Change,
    create: bool,
    remove_roles: Vec<String>,
    add_role: bool,
    tag: bool,
}

fn resource(name: &str) -> String {
    format!("IAM instance profile {name}")
}

/// Reads the instance profile's roles and tags; `None` when it does not exist.
pub async fn observe(aws: &super::Aws, name: &str, deployment: &str) -> Result<Option<Observed>, AwsError> {
    let res = resource(name);
    let got = aws
        .iam
        .get_instance_profile()
        .instance_profile_name(name)
        .send()
        .await
        .aws("iam:GetInstanceProfile", &res);
    let Some(got) = not_found_as_none(got, &["NoSuchEntity"])? else { return Ok(None) };
    let Some(profile) = got.instance_profile() else { return Ok(None) };
    Ok(Some(Observed {
        roles: profile.roles().iter().map(|r| r.role_name().to_string()).collect(),
        tagged: has_deployment_tag(profile.tags(), deployment),
    }))
}

/// Compares the instance profile with what is wanted.
pub fn plan(observed: Option<&Observed>, d: &Desired) -> Plan {
    let Some(o) = observed else {
        return Plan {
            change: Change::Create,
            create: true,
            remove_roles: vec![],
            add_role: true,
            tag: false,
        };
    };
    let mut changes = Vec::new();
    let remove_roles: Vec<String> = o.roles.iter().filter(|r| **r != d.role).cloned().collect();
    for r in &remove_roles {
        changes.push(format!("remove role {r}"));
    }
    let add_role = !o.roles.contains(&d.role);
    if add_role {
        changes.push(format!("add role {}", d.role));
    }
    let tag = !o.tagged;
    if tag {
        changes.push(format!("tag {TAG_DEPLOYMENT}={}", d.deployment));
    }
    Plan { change: Change::update_or_unchanged(changes), create: false, remove_roles, add_role, tag }
}

/// Creates the instance profile or converges it, as planned. `on_retry` hears about waits for
/// the profile or the role to be visible.
pub async fn apply(
    aws: &super::Aws,
    d: &Desired,
    plan: &Plan,
    on_retry: OnRetry<'_>,
) -> Result<(), AwsError> {
    let res = resource(&d.name);
    let tag = deployment_tag(&d.deployment, &res)?;
    let mut tag_it = plan.tag;
    if plan.create {
        let created = aws
            .iam
            .create_instance_profile()
            .instance_profile_name(&d.name)
            .tags(tag.clone())
            .send()
            .await
            .aws("iam:CreateInstanceProfile", &res);
        match created {
            Ok(_) => {}
            Err(e) if e.is("EntityAlreadyExists") => tag_it = true,
            Err(e) => return Err(e),
        }
    }
    for r in &plan.remove_roles {
        aws.iam
            .remove_role_from_instance_profile()
            .instance_profile_name(&d.name)
            .role_name(r)
            .send()
            .await
            .aws("iam:RemoveRoleFromInstanceProfile", &res)?;
    }
    if plan.add_role {
        // Provision makes the role and the profile just before: NoSuchEntity here means IAM
        // does not show one of them everywhere yet.
        let added = Retry::AFTER_CREATE
            .until_visible(&["NoSuchEntity"], on_retry, || async {
                aws.iam
                    .add_role_to_instance_profile()
                    .instance_profile_name(&d.name)
                    .role_name(&d.role)
                    .send()
                    .await
                    .aws("iam:AddRoleToInstanceProfile", &res)
            })
            .await;
        // An interrupted run may have added it already (a profile holds one role at most).
        not_found_as_none(added, &["LimitExceeded", "EntityAlreadyExists"])?;
    }
    if tag_it {
        aws.iam
            .tag_instance_profile()
            .instance_profile_name(&d.name)
            .tags(tag)
            .send()
            .await
            .aws("iam:TagInstanceProfile", &res)?;
    }
    Ok(())
}

/// Deletes the instance profile (after taking its roles out), if it carries this deployment's
/// tag.
pub async fn destroy(aws: &super::Aws, name: &str, deployment: &str) -> Result<Removed, AwsError> {
    let res = resource(name);
    let Some(o) = observe(aws, name, deployment).await? else { return Ok(Removed::Absent) };
    if !o.tagged {
        return Ok(Removed::Kept(format!("not tagged {TAG_DEPLOYMENT}={deployment}, so not regctl's")));
    }
    for r in &o.roles {
        let removed = aws
            .iam
            .remove_role_from_instance_profile()
            .instance_profile_name(name)
            .role_name(r)
            .send()
            .await
            .aws("iam:RemoveRoleFromInstanceProfile", &res);
        not_found_as_none(removed, &["NoSuchEntity"])?;
    }
    let r = aws
        .iam
        .delete_instance_profile()
        .instance_profile_name(name)
        .send()
        .await
        .aws("iam:DeleteInstanceProfile", &res);
    Ok(not_found_as_none(r, &["NoSuchEntity"])?.map_or(Removed::Absent, |_| Removed::Deleted))
}
