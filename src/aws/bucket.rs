//! The S3 bucket: versioned, public access blocked, default encryption, a lifecycle rule for
//! noncurrent versions, expired delete markers and abandoned multipart uploads, tagged with the
//! deployment.

use aws_sdk_s3::error::BuildError;
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketLocationConstraint,
    BucketVersioningStatus, CreateBucketConfiguration, Delete, ExpirationStatus, LifecycleExpiration,
    LifecycleRule, LifecycleRuleFilter, NoncurrentVersionExpiration, ObjectIdentifier,
    PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule, Tag, Tagging, VersioningConfiguration,
};

use super::{AwsError, AwsResultExt, Change, OnRetry, Removed, Retry, TAG_DEPLOYMENT, not_found_as_none};

/// The ID of the lifecycle rule regctl manages (other rules on the bucket are kept).
const LIFECYCLE_RULE_ID: &str = "regctl";
/// DeleteObjects takes at most this many keys per call.
const DELETE_BATCH: usize = 1000;

/// The bucket as it should be.
#[derive(Debug, Clone)]
pub struct Desired {
    /// Bucket name.
    pub name: String,
    /// Region to create it in.
    pub region: String,
    /// Deployment name, for the tag.
    pub deployment: String,
    /// Days after which a noncurrent object version expires.
    pub noncurrent_days: i32,
    /// Days after which an incomplete multipart upload is aborted.
    pub abort_multipart_days: i32,
}

/// The bucket as it is.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    versioning: Option<String>,
    public_access_blocked: bool,
    encryption: Option<String>,
    lifecycle_rules: Vec<LifecycleRule>,
    tags: Vec<Tag>,
}

impl Observed {
    /// The value of the deployment tag, if any.
    pub fn deployment_tag(&self) -> Option<&str> {
        self.tags.iter().find(|t| t.key() == TAG_DEPLOYMENT).map(|t| t.value())
    }
}

/// What `apply` will do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The summary.
    pub change: Change,
    create: bool,
    versioning: bool,
    public_access: bool,
    encryption: bool,
    lifecycle: Option<Vec<LifecycleRule>>,
    tags: Option<Vec<Tag>>,
}

fn resource(name: &str) -> String {
    format!("S3 bucket {name}")
}

fn built<T>(r: Result<T, BuildError>, action: &'static str, name: &str) -> Result<T, AwsError> {
    r.map_err(|e| AwsError::local(action, resource(name), e.to_string()))
}

/// Reads the bucket's settings; `None` when it does not exist. A bucket owned by another
/// account, or in another region, is an error that says so.
pub async fn observe(aws: &super::Aws, name: &str) -> Result<Option<Observed>, AwsError> {
    let res = resource(name);
    let head = aws.s3.head_bucket().bucket(name).send().await;
    if let Err(err) = &head {
        let status = err.raw_response().map(|r| r.status().as_u16());
        match status {
            Some(404) => return Ok(None),
            Some(301) => {
                return Err(AwsError::local(
                    "s3:ListBucket",
                    &res,
                    format!(
                        "the bucket exists in another region than {}: pass that region with --region, \
                         or another name with --bucket",
                        aws.region
                    ),
                ));
            }
            Some(403) => {
                return Err(AwsError {
                    code: Some("AccessDenied".into()),
                    ..AwsError::local(
                        "s3:ListBucket",
                        &res,
                        "the bucket is not accessible: either it belongs to another account (choose \
                         another name with --bucket) or the credentials may not read it",
                    )
                });
            }
            _ => {}
        }
    }
    head.aws("s3:ListBucket", &res)?;

    let versioning =
        aws.s3.get_bucket_versioning().bucket(name).send().await.aws("s3:GetBucketVersioning", &res)?;
    let pab = not_found_as_none(
        aws.s3.get_public_access_block().bucket(name).send().await.aws("s3:GetBucketPublicAccessBlock", &res),
        &["NoSuchPublicAccessBlockConfiguration"],
    )?;
    let public_access_blocked =
        pab.as_ref().and_then(|o| o.public_access_block_configuration()).is_some_and(|c| {
            [
                c.block_public_acls(),
                c.ignore_public_acls(),
                c.block_public_policy(),
                c.restrict_public_buckets(),
            ]
            .iter()
            .all(|v| *v == Some(true))
        });
    let enc = not_found_as_none(
        aws.s3.get_bucket_encryption().bucket(name).send().await.aws("s3:GetEncryptionConfiguration", &res),
        &["ServerSideEncryptionConfigurationNotFoundError"],
    )?;
    let encryption = enc
        .as_ref()
        .and_then(|o| o.server_side_encryption_configuration())
        .and_then(|c| c.rules().first())
        .and_then(|r| r.apply_server_side_encryption_by_default())
        .map(|d| d.sse_algorithm().as_str().to_string());
    let lifecycle = not_found_as_none(
        aws.s3
            .get_bucket_lifecycle_configuration()
            .bucket(name)
            .send()
            .await
            .aws("s3:GetLifecycleConfiguration", &res),
        &["NoSuchLifecycleConfiguration"],
    )?;
    let tagging = not_found_as_none(
        aws.s3.get_bucket_tagging().bucket(name).send().await.aws("s3:GetBucketTagging", &res),
        &["NoSuchTagSet", "NoSuchTagSetError"],
    )?;
    Ok(Some(Observed {
        versioning: versioning.status().map(|s| s.as_str().to_string()),
        public_access_blocked,
        encryption,
        lifecycle_rules: lifecycle.map(|l| l.rules().to_vec()).unwrap_or_default(),
        tags: tagging.map(|t| t.tag_set().to_vec()).unwrap_or_default(),
    }))
}

fn desired_rule(d: &Desired) -> Result<LifecycleRule, AwsError> {
    built(
        LifecycleRule::builder()
            .id(LIFECYCLE_RULE_ID)
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix("").build())
            .noncurrent_version_expiration(
                NoncurrentVersionExpiration::builder().noncurrent_days(d.noncurrent_days).build(),
            )
            // The registry deletes small objects all the time: each leaves a delete marker that,
            // once its noncurrent versions have expired, is alone and would stay forever.
            .expiration(LifecycleExpiration::builder().expired_object_delete_marker(true).build())
            .abort_incomplete_multipart_upload(
                AbortIncompleteMultipartUpload::builder()
                    .days_after_initiation(d.abort_multipart_days)
                    .build(),
            )
            .build(),
        "s3:PutLifecycleConfiguration",
        &d.name,
    )
}

/// True when `rule` is regctl's rule with the wanted settings.
fn rule_matches(rule: &LifecycleRule, d: &Desired) -> bool {
    rule.status() == &ExpirationStatus::Enabled
        && rule.noncurrent_version_expiration().and_then(|n| n.noncurrent_days()) == Some(d.noncurrent_days)
        && rule.expiration().and_then(|e| e.expired_object_delete_marker()) == Some(true)
        && rule.abort_incomplete_multipart_upload().and_then(|a| a.days_after_initiation())
            == Some(d.abort_multipart_days)
}

/// Compares the bucket with what is wanted.
pub fn plan(observed: Option<&Observed>, d: &Desired) -> Result<Plan, AwsError> {
    let empty = Observed::default();
    let o = observed.unwrap_or(&empty);
    let mut changes = Vec::new();
    let versioning = o.versioning.as_deref() != Some("Enabled");
    if versioning && observed.is_some() {
        changes.push(format!("versioning {} -> Enabled", o.versioning.as_deref().unwrap_or("off")));
    }
    let public_access = !o.public_access_blocked;
    if public_access && observed.is_some() {
        changes.push("block all public access".to_string());
    }
    let encryption = o.encryption.is_none();
    if encryption && observed.is_some() {
        changes.push("default encryption AES256".to_string());
    }
    let ours = o.lifecycle_rules.iter().find(|r| r.id() == Some(LIFECYCLE_RULE_ID));
    let lifecycle = if ours.is_some_and(|r| rule_matches(r, d)) {
        None
    } else {
        if observed.is_some() {
            changes.push(format!(
                "lifecycle: noncurrent versions expire after {} days, expired delete markers are removed, \
                 incomplete uploads aborted after {} days",
                d.noncurrent_days, d.abort_multipart_days
            ));
        }
        let mut rules: Vec<LifecycleRule> =
            o.lifecycle_rules.iter().filter(|r| r.id() != Some(LIFECYCLE_RULE_ID)).cloned().collect();
        rules.push(desired_rule(d)?);
        Some(rules)
    };
    let tags = if o.deployment_tag() == Some(d.deployment.as_str()) {
        None
    } else {
        if observed.is_some() {
            changes.push(format!("tag {TAG_DEPLOYMENT}={}", d.deployment));
        }
        let mut tags: Vec<Tag> = o.tags.iter().filter(|t| t.key() != TAG_DEPLOYMENT).cloned().collect();
        tags.push(built(
            Tag::builder().key(TAG_DEPLOYMENT).value(&d.deployment).build(),
            "s3:PutBucketTagging",
            &d.name,
        )?);
        Some(tags)
    };
    let change = if observed.is_none() { Change::Create } else { Change::update_or_unchanged(changes) };
    Ok(Plan { change, create: observed.is_none(), versioning, public_access, encryption, lifecycle, tags })
}

/// Creates the bucket and converges its settings, as planned. `on_retry` hears about waits for a
/// new bucket to be visible.
pub async fn apply(
    aws: &super::Aws,
    d: &Desired,
    plan: &Plan,
    on_retry: OnRetry<'_>,
) -> Result<(), AwsError> {
    let res = resource(&d.name);
    let s3 = &aws.s3;
    // Right after CreateBucket, the configuration calls can answer NoSuchBucket for a while.
    let schedule = if plan.create { Retry::AFTER_CREATE } else { Retry::ONCE };
    let visible = &["NoSuchBucket"];
    if plan.create {
        let mut req = s3.create_bucket().bucket(&d.name);
        if d.region != "us-east-1" {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(d.region.as_str()))
                    .build(),
            );
        }
        match req.send().await.aws("s3:CreateBucket", &res) {
            Ok(_) => {}
            // Created by a concurrent or interrupted run of ours: carry on converging it.
            Err(e) if e.is("BucketAlreadyOwnedByYou") => {}
            Err(e) if e.is("BucketAlreadyExists") => {
                return Err(AwsError {
                    message: "the name is taken by another AWS account (bucket names are global): \
                              choose another with --bucket"
                        .into(),
                    ..e
                });
            }
            Err(e) => return Err(e),
        }
    }
    if plan.versioning {
        schedule
            .until_visible(visible, on_retry, || async {
                s3.put_bucket_versioning()
                    .bucket(&d.name)
                    .versioning_configuration(
                        VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build(),
                    )
                    .send()
                    .await
                    .aws("s3:PutBucketVersioning", &res)
            })
            .await?;
    }
    if plan.public_access {
        schedule
            .until_visible(visible, on_retry, || async {
                s3.put_public_access_block()
                    .bucket(&d.name)
                    .public_access_block_configuration(
                        PublicAccessBlockConfiguration::builder()
                            .block_public_acls(true)
                            .ignore_public_acls(true)
                            .block_public_policy(true)
                            .restrict_public_buckets(true)
                            .build(),
                    )
                    .send()
                    .await
                    .aws("s3:PutBucketPublicAccessBlock", &res)
            })
            .await?;
    }
    if plan.encryption {
        let by_default = built(
            ServerSideEncryptionByDefault::builder().sse_algorithm(ServerSideEncryption::Aes256).build(),
            "s3:PutEncryptionConfiguration",
            &d.name,
        )?;
        let config = built(
            ServerSideEncryptionConfiguration::builder()
                .rules(
                    ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(by_default)
                        .build(),
                )
                .build(),
            "s3:PutEncryptionConfiguration",
            &d.name,
        )?;
        schedule
            .until_visible(visible, on_retry, || async {
                s3.put_bucket_encryption()
                    .bucket(&d.name)
                    .server_side_encryption_configuration(config.clone())
                    .send()
                    .await
                    .aws("s3:PutEncryptionConfiguration", &res)
            })
            .await?;
    }
    if let Some(rules) = &plan.lifecycle {
        let config = built(
            BucketLifecycleConfiguration::builder().set_rules(Some(rules.clone())).build(),
            "s3:PutLifecycleConfiguration",
            &d.name,
        )?;
        schedule
            .until_visible(visible, on_retry, || async {
                s3.put_bucket_lifecycle_configuration()
                    .bucket(&d.name)
                    .lifecycle_configuration(config.clone())
                    .send()
                    .await
                    .aws("s3:PutLifecycleConfiguration", &res)
            })
            .await?;
    }
    if let Some(tags) = &plan.tags {
        let tagging = built(
            Tagging::builder().set_tag_set(Some(tags.clone())).build(),
            "s3:PutBucketTagging",
            &d.name,
        )?;
        schedule
            .until_visible(visible, on_retry, || async {
                s3.put_bucket_tagging()
                    .bucket(&d.name)
                    .tagging(tagging.clone())
                    .send()
                    .await
                    .aws("s3:PutBucketTagging", &res)
            })
            .await?;
    }
    Ok(())
}

/// The buckets tagged with `deployment` (in any region the credentials can read tags from).
pub async fn find_tagged(aws: &super::Aws, deployment: &str) -> Result<Vec<String>, AwsError> {
    let mut found = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = aws
            .s3
            .list_buckets()
            // Without a filter S3 answers no region, and every bucket of the account would be
            // asked for its tags; with it, only this region's buckets are listed.
            .bucket_region(&aws.region)
            .set_continuation_token(token.clone())
            .send()
            .await
            .aws("s3:ListAllMyBuckets", "the account's buckets")?;
        for b in out.buckets() {
            let Some(name) = b.name() else { continue };
            if b.bucket_region().is_some_and(|r| r != aws.region) {
                continue;
            }
            // Buckets in other regions or without tags answer with errors: not ours here.
            let Ok(tagging) = aws.s3.get_bucket_tagging().bucket(name).send().await else { continue };
            if tagging.tag_set().iter().any(|t| t.key() == TAG_DEPLOYMENT && t.value() == deployment) {
                found.push(name.to_string());
            }
        }
        token = out.continuation_token().map(str::to_string);
        if token.is_none() {
            return Ok(found);
        }
    }
}

/// What was removed from a bucket by [`destroy`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Emptied {
    /// Object versions deleted.
    pub versions: usize,
    /// Delete markers deleted.
    pub delete_markers: usize,
    /// Incomplete multipart uploads aborted.
    pub uploads: usize,
}

/// Deletes every object version, delete marker and incomplete upload of the bucket, in batches,
/// then the bucket itself. A versioned bucket cannot be deleted any other way.
pub async fn destroy(aws: &super::Aws, name: &str) -> Result<(Removed, Emptied), AwsError> {
    let res = resource(name);
    let s3 = &aws.s3;
    let mut emptied = Emptied::default();
    loop {
        // Always list from the start: what was deleted is gone, so this terminates, and an
        // interrupted teardown resumes naturally.
        let listed = s3.list_object_versions().bucket(name).send().await.aws("s3:ListBucketVersions", &res);
        let listed = match not_found_as_none(listed, &["NoSuchBucket"])? {
            Some(l) => l,
            None => return Ok((Removed::Absent, emptied)),
        };
        let mut ids = Vec::new();
        for v in listed.versions() {
            if let Some(key) = v.key() {
                ids.push(object_id(key, v.version_id(), name)?);
                emptied.versions += 1;
            }
        }
        for m in listed.delete_markers() {
            if let Some(key) = m.key() {
                ids.push(object_id(key, m.version_id(), name)?);
                emptied.delete_markers += 1;
            }
        }
        if ids.is_empty() {
            break;
        }
        for batch in ids.chunks(DELETE_BATCH) {
            let delete = built(
                Delete::builder().set_objects(Some(batch.to_vec())).quiet(true).build(),
                "s3:DeleteObjectVersion",
                name,
            )?;
            let out = s3
                .delete_objects()
                .bucket(name)
                .delete(delete)
                .send()
                .await
                .aws("s3:DeleteObjectVersion", &res)?;
            if let Some(first) = out.errors().first() {
                return Err(AwsError {
                    code: first.code().map(str::to_string),
                    ..AwsError::local(
                        "s3:DeleteObjectVersion",
                        &res,
                        format!(
                            "{} of {} object versions could not be deleted, e.g. {}: {}",
                            out.errors().len(),
                            batch.len(),
                            first.key().unwrap_or("?"),
                            first.message().unwrap_or("no message")
                        ),
                    )
                });
            }
        }
    }
    // At most 1000 uploads per answer: follow the markers through every page.
    let (mut key_marker, mut id_marker) = (None, None);
    loop {
        let uploads = s3
            .list_multipart_uploads()
            .bucket(name)
            .set_key_marker(key_marker.take())
            .set_upload_id_marker(id_marker.take())
            .send()
            .await
            .aws("s3:ListBucketMultipartUploads", &res)?;
        for u in uploads.uploads() {
            if let (Some(key), Some(id)) = (u.key(), u.upload_id()) {
                s3.abort_multipart_upload()
                    .bucket(name)
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await
                    .aws("s3:AbortMultipartUpload", &res)?;
                emptied.uploads += 1;
            }
        }
        key_marker = uploads.next_key_marker().map(str::to_string);
        id_marker = uploads.next_upload_id_marker().map(str::to_string);
        if uploads.is_truncated() != Some(true) || key_marker.is_none() {
            break;
        }
    }
    match s3.delete_bucket().bucket(name).send().await.aws("s3:DeleteBucket", &res) {
        Ok(_) => Ok((Removed::Deleted, emptied)),
        Err(e) if e.is("NoSuchBucket") => Ok((Removed::Absent, emptied)),
        Err(e) => Err(e),
    }
}

fn object_id(key: &str, version: Option<&str>, bucket: &str) -> Result<ObjectIdentifier, AwsError> {
    built(
        ObjectIdentifier::builder().key(key).set_version_id(version.map(str::to_string)).build(),
        "s3:DeleteObjectVersion",
        bucket,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired() -> Desired {
        Desired {
            name: "b".into(),
            region: "eu-west-1".into(),
            deployment: "registry".into(),
            noncurrent_days: 30,
            abort_multipart_days: 7,
        }
    }

    #[test]
    fn a_missing_bucket_is_created_with_every_setting() {
        let p = plan(None, &desired()).expect("plan");
        assert_eq!(p.change, Change::Create);
        assert!(p.versioning && p.public_access && p.encryption && p.lifecycle.is_some() && p.tags.is_some());
    }

    #[test]
    fn a_converged_bucket_is_unchanged_and_a_changed_setting_is_an_update() {
        let d = desired();
        let observed = Observed {
            versioning: Some("Enabled".into()),
            public_access_blocked: true,
            encryption: Some("AES256".into()),
            lifecycle_rules: vec![desired_rule(&d).expect("rule")],
            tags: vec![Tag::builder().key(TAG_DEPLOYMENT).value("registry").build().expect("tag")],
        };
        assert_eq!(plan(Some(&observed), &d).expect("plan").change, Change::Unchanged);
        let d2 = Desired { noncurrent_days: 90, ..d };
        let p = plan(Some(&observed), &d2).expect("plan");
        assert!(matches!(&p.change, Change::Update(c) if c.len() == 1 && c[0].contains("90 days")), "{p:?}");
    }

    #[test]
    fn a_rule_that_keeps_expired_delete_markers_is_drift() {
        let d = desired();
        let mut rule = desired_rule(&d).expect("rule");
        assert!(rule_matches(&rule, &d));
        rule.expiration = None;
        assert!(!rule_matches(&rule, &d));
    }
}
