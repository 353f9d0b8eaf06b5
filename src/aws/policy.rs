//! The customer-managed IAM policy that grants the registry its S3 access (rendered from
//! `policies/s3-bucket.json`).

use aws_sdk_iam::types::Tag;

use super::{AwsError, AwsResultExt, Change, Removed, TAG_DEPLOYMENT, not_found_as_none};

/// IAM keeps at most five versions of a managed policy.
const MAX_VERSIONS: usize = 5;

/// The policy as it should be.
#[derive(Debug, Clone)]
pub struct Desired {
    /// Policy name.
    pub name: String,
    /// Policy ARN (derived from the account and name).
    pub arn: String,
    /// The rendered JSON document.
    pub document: String,
    /// Deployment name, for the tag.
    pub deployment: String,
}

/// The policy as it is.
#[derive(Debug, Clone)]
pub struct Observed {
    document: String,
    tags: Vec<Tag>,
}

/// What `apply` will do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The summary.
    pub change: Change,
    create: bool,
    new_version: bool,
    tag: bool,
}

fn resource(name: &str) -> String {
    format!("IAM policy {name}")
}

/// The deployment tag in IAM's tag type.
pub(crate) fn deployment_tag(deployment: &str, resource: &str) -> Result<Tag, AwsError> {
    Tag::builder()
        .key(TAG_DEPLOYMENT)
        .value(deployment)
        .build()
        .map_err(|e| AwsError::local("iam:TagResource", resource, e.to_string()))
}

/// True when the tags carry `deployment`.
pub(crate) fn has_deployment_tag(tags: &[Tag], deployment: &str) -> bool {
    tags.iter().any(|t| t.key() == TAG_DEPLOYMENT && t.value() == deployment)
}

/// Parses a policy document as IAM returns it (URL-encoded JSON, or plain JSON from emulators).
pub(crate) fn parse_document(doc: &str) -> Option<serde_json::Value> {
    serde_json::from_str(doc)
        .ok()
        .or_else(|| serde_json::from_str(&percent_encoding::percent_decode_str(doc).decode_utf8_lossy()).ok())
}

/// True when two policy documents mean the same (compared as JSON, not as text).
pub(crate) fn same_document(observed: &str, wanted: &str) -> bool {
    match (parse_document(observed), parse_document(wanted)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Reads the policy's default version and tags; `None` when it does not exist.
pub async fn observe(aws: &super::Aws, name: &str, arn: &str) -> Result<Option<Observed>, AwsError> {
    let res = resource(name);
    let got = aws.iam.get_policy().policy_arn(arn).send().await.aws("iam:GetPolicy", &res);
    let Some(got) = not_found_as_none(got, &["NoSuchEntity"])? else { return Ok(None) };
    let version = got.policy().and_then(|p| p.default_version_id()).unwrap_or("v1").to_string();
    let v = aws
        .iam
        .get_policy_version()
        .policy_arn(arn)
        .version_id(&version)
        .send()
        .await
        .aws("iam:GetPolicyVersion", &res)?;
    let document = v.policy_version().and_then(|p| p.document()).unwrap_or_default().to_string();
    let tags = aws.iam.list_policy_tags().policy_arn(arn).send().await.aws("iam:ListPolicyTags", &res)?;
    Ok(Some(Observed { document, tags: tags.tags().to_vec() }))
}

/// Compares the policy with what is wanted.
pub fn plan(observed: Option<&Observed>, d: &Desired) -> Plan {
    let Some(o) = observed else {
        return Plan { change: Change::Create, create: true, new_version: false, tag: false };
    };
    let mut changes = Vec::new();
    let new_version = !same_document(&o.document, &d.document);
    if new_version {
        changes.push("policy document (new default version)".to_string());
    }
    let tag = !has_deployment_tag(&o.tags, &d.deployment);
    if tag {
        changes.push(format!("tag {TAG_DEPLOYMENT}={}", d.deployment));
    }
    Plan { change: Change::update_or_unchanged(changes), create: false, new_version, tag }
}

/// Creates the policy or converges it, as planned.
pub async fn apply(aws: &super::Aws, d: &Desired, plan: &Plan) -> Result<(), AwsError> {
    let res = resource(&d.name);
    let tag = deployment_tag(&d.deployment, &res)?;
    if plan.create {
        let created = aws
            .iam
            .create_policy()
            .policy_name(&d.name)
            .policy_document(&d.document)
            .description("S3 access of the regctl registry to its bucket")
            .tags(tag.clone())
            .send()
            .await
            .aws("iam:CreatePolicy", &res);
        match created {
            Ok(_) => return Ok(()),
            // Made by an interrupted run in the meantime: converge it instead.
            Err(e) if e.is("EntityAlreadyExists") => {
                let observed = observe(aws, &d.name, &d.arn).await?;
                let again = plan_for_existing(observed.as_ref(), d);
                return Box::pin(apply(aws, d, &again)).await;
            }
            Err(e) => return Err(e),
        }
    }
    if plan.new_version {
        let versions = aws
            .iam
            .list_policy_versions()
            .policy_arn(&d.arn)
            .send()
            .await
            .aws("iam:ListPolicyVersions", &res)?;
        if versions.versions().len() >= MAX_VERSIONS {
            // Make room: the oldest non-default version goes.
            let oldest = versions
                .versions()
                .iter()
                .filter(|v| !v.is_default_version())
                .min_by_key(|v| v.create_date().map(|t| t.secs()).unwrap_or(0));
            if let Some(id) = oldest.and_then(|v| v.version_id()) {
                aws.iam
                    .delete_policy_version()
                    .policy_arn(&d.arn)
                    .version_id(id)
                    .send()
                    .await
                    .aws("iam:DeletePolicyVersion", &res)?;
            }
        }
        aws.iam
            .create_policy_version()
            .policy_arn(&d.arn)
            .policy_document(&d.document)
            .set_as_default(true)
            .send()
            .await
            .aws("iam:CreatePolicyVersion", &res)?;
    }
    if plan.tag {
        aws.iam.tag_policy().policy_arn(&d.arn).tags(tag).send().await.aws("iam:TagPolicy", &res)?;
    }
    Ok(())
}

fn plan_for_existing(observed: Option<&Observed>, d: &Desired) -> Plan {
    match observed {
        Some(_) => plan(observed, d),
        // Gone again between the two calls: nothing sensible to do but report it.
        None => Plan { change: Change::Unchanged, create: false, new_version: false, tag: false },
    }
}

/// Deletes the policy (after detaching it everywhere and deleting its non-default versions), if
/// it carries this deployment's tag.
pub async fn destroy(aws: &super::Aws, name: &str, arn: &str, deployment: &str) -> Result<Removed, AwsError> {
    let res = resource(name);
    let tags = aws.iam.list_policy_tags().policy_arn(arn).send().await.aws("iam:ListPolicyTags", &res);
    let Some(tags) = not_found_as_none(tags, &["NoSuchEntity"])? else { return Ok(Removed::Absent) };
    if !has_deployment_tag(tags.tags(), deployment) {
        return Ok(Removed::Kept(format!("not tagged {TAG_DEPLOYMENT}={deployment}, so not regctl's")));
    }
    let entities = aws
        .iam
        .list_entities_for_policy()
        .policy_arn(arn)
        .send()
        .await
        .aws("iam:ListEntitiesForPolicy", &res)?;
    for role in entities.policy_roles() {
        if let Some(role) = role.role_name() {
            let r = aws.iam.detach_role_policy().role_name(role).policy_arn(arn).send().await;
            not_found_as_none(r.aws("iam:DetachRolePolicy", &res), &["NoSuchEntity"])?;
        }
    }
    let versions =
        aws.iam.list_policy_versions().policy_arn(arn).send().await.aws("iam:ListPolicyVersions", &res)?;
    for v in versions.versions().iter().filter(|v| !v.is_default_version()) {
        if let Some(id) = v.version_id() {
            let r = aws.iam.delete_policy_version().policy_arn(arn).version_id(id).send().await;
            not_found_as_none(r.aws("iam:DeletePolicyVersion", &res), &["NoSuchEntity"])?;
        }
    }
    let r = aws.iam.delete_policy().policy_arn(arn).send().await.aws("iam:DeletePolicy", &res);
    Ok(not_found_as_none(r, &["NoSuchEntity"])?.map_or(Removed::Absent, |_| Removed::Deleted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoded_and_reformatted_documents_compare_equal() {
        let wanted = r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow"}]}"#;
        let encoded = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%7D%5D%7D";
        assert!(same_document(encoded, wanted));
        assert!(same_document(r#"{"Statement":[{"Effect":"Allow"}],"Version":"2012-10-17"}"#, wanted));
        assert!(!same_document(r#"{"Version":"2012-10-17","Statement":[]}"#, wanted));
    }

    #[test]
    fn a_changed_document_is_a_new_version() {
        let d = Desired {
            name: "p".into(),
            arn: "arn".into(),
            document: r#"{"a":1}"#.into(),
            deployment: "registry".into(),
        };
        let tags = vec![deployment_tag("registry", "p").expect("tag")];
        let same = Observed { document: r#"{"a": 1}"#.into(), tags: tags.clone() };
        assert_eq!(plan(Some(&same), &d).change, Change::Unchanged);
        let other = Observed { document: r#"{"a": 2}"#.into(), tags };
        assert!(plan(Some(&other), &d).new_version);
    }
}
