//! The association of the instance profile with the instance, retried while IAM propagates a
//! new profile ("Invalid IAM Instance Profile" for up to about two minutes).

use aws_sdk_ec2::types::IamInstanceProfileSpecification;

use super::{AwsError, AwsResultExt, Change, Removed, Retry, ec2_filter, not_found_as_none};

/// The association as it is.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Association ID.
    pub id: String,
    /// ARN of the associated instance profile.
    pub profile_arn: String,
}

/// What `apply` will do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The summary.
    pub change: Change,
    replace: Option<String>,
}

fn resource(instance: &str) -> String {
    format!("instance profile association of {instance}")
}

/// True for the error EC2 gives while a new instance profile has not propagated through IAM.
pub fn is_propagation_error(e: &AwsError) -> bool {
    e.is_any(&["InvalidParameterValue", "InvalidParameter"])
        && e.message.to_ascii_lowercase().contains("invalid iam instance profile")
}

/// The instance's current association, if any.
pub async fn observe(aws: &super::Aws, instance: &str) -> Result<Option<Observed>, AwsError> {
    let out = aws
        .ec2
        .describe_iam_instance_profile_associations()
        .filters(ec2_filter("instance-id", &[instance]))
        .send()
        .await
        .aws("ec2:DescribeIamInstanceProfileAssociations", &resource(instance))?;
    Ok(out
        .iam_instance_profile_associations()
        .iter()
        .filter(|a| a.state().is_some_and(|s| matches!(s.as_str(), "associated" | "associating")))
        .find_map(|a| {
            Some(Observed {
                id: a.association_id()?.to_string(),
                profile_arn: a.iam_instance_profile().and_then(|p| p.arn()).unwrap_or_default().to_string(),
            })
        }))
}

/// True when `arn` names the instance profile called `name`.
pub fn is_profile(arn: &str, name: &str) -> bool {
    arn.rsplit_once(":instance-profile/").is_some_and(|(_, path)| path.rsplit('/').next() == Some(name))
}

/// Compares the association with the wanted profile.
pub fn plan(observed: Option<&Observed>, profile: &str) -> Plan {
    match observed {
        None => Plan { change: Change::Create, replace: None },
        Some(o) if is_profile(&o.profile_arn, profile) => Plan { change: Change::Unchanged, replace: None },
        Some(o) => Plan {
            change: Change::Update(vec![format!("replace {} with {profile}", o.profile_arn)]),
            replace: Some(o.id.clone()),
        },
    }
}

/// Associates (or replaces the association with) the profile, retrying IAM propagation errors on
/// `retry`'s schedule. `on_retry` hears about each retry (for progress output).
pub async fn apply(
    aws: &super::Aws,
    instance: &str,
    profile: &str,
    plan: &Plan,
    retry: Retry,
    on_retry: impl FnMut(&AwsError, std::time::Duration),
) -> Result<(), AwsError> {
    if plan.change.is_unchanged() {
        return Ok(());
    }
    let res = resource(instance);
    let spec = IamInstanceProfileSpecification::builder().name(profile).build();
    let result = retry
        .run(is_propagation_error, on_retry, || async {
            match &plan.replace {
                Some(assoc) => aws
                    .ec2
                    .replace_iam_instance_profile_association()
                    .association_id(assoc)
                    .iam_instance_profile(spec.clone())
                    .send()
                    .await
                    .map(|_| ())
                    .aws("ec2:ReplaceIamInstanceProfileAssociation", &res),
                None => aws
                    .ec2
                    .associate_iam_instance_profile()
                    .instance_id(instance)
                    .iam_instance_profile(spec.clone())
                    .send()
                    .await
                    .map(|_| ())
                    .aws("ec2:AssociateIamInstanceProfile", &res),
            }
        })
        .await;
    result.map_err(|e| {
        if is_propagation_error(&e) {
            AwsError {
                message: format!(
                    "{} (still rejected after {}s: IAM has not propagated the new instance profile; \
                     run provision again in a few minutes, or raise --iam-wait)",
                    e.message,
                    retry.timeout.as_secs()
                ),
                ..e
            }
        } else {
            e
        }
    })
}

/// Removes the association if it is with `profile` (another profile's is left alone).
pub async fn destroy(aws: &super::Aws, instance: &str, profile: &str) -> Result<Removed, AwsError> {
    let Some(o) = observe(aws, instance).await? else { return Ok(Removed::Absent) };
    if !is_profile(&o.profile_arn, profile) {
        return Ok(Removed::Kept(format!("associated with {}, not regctl's profile", o.profile_arn)));
    }
    let r = aws
        .ec2
        .disassociate_iam_instance_profile()
        .association_id(&o.id)
        .send()
        .await
        .aws("ec2:DisassociateIamInstanceProfile", &resource(instance));
    Ok(not_found_as_none(r, &["InvalidAssociationID.NotFound"])?
        .map_or(Removed::Absent, |_| Removed::Deleted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagation_errors_are_recognised() {
        let e = AwsError {
            code: Some("InvalidParameterValue".into()),
            message:
                "Value (regctl-x) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance \
                      Profile name"
                    .into(),
            ..AwsError::local("ec2:AssociateIamInstanceProfile", "i-1", "")
        };
        assert!(is_propagation_error(&e));
        assert!(!is_propagation_error(&AwsError { code: Some("IncorrectState".into()), ..e }));
    }

    #[test]
    fn profile_arns_match_by_name() {
        assert!(is_profile("arn:aws:iam::123:instance-profile/regctl-registry", "regctl-registry"));
        assert!(is_profile("arn:aws:iam::123:instance-profile/path/regctl-registry", "regctl-registry"));
        assert!(!is_profile("arn:aws:iam::123:instance-profile/regctl-registry2", "regctl-registry"));
    }
}
