//! The ACM certificate of a scaled deployment's load balancer: requested for the DNS name with
//! DNS validation, its validation CNAME written into the hosted zone, and waited for until ACM
//! issues it. AWS renews it (the CNAME stays), so no server holds certificate state.

use std::time::Duration;

use aws_sdk_acm::types::{CertificateStatus, Tag, ValidationMethod};

use super::{
    AwsError, AwsResultExt, Change, Removed, Retry, TAG_DEPLOYMENT, dns, not_found_as_none, wait_for,
};

/// The CNAME record ACM asks for to validate the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationRecord {
    /// Record name.
    pub name: String,
    /// Record value.
    pub value: String,
}

/// The certificate as it is.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Its ARN.
    pub arn: String,
    /// The name it is for.
    pub domain: String,
    /// `PENDING_VALIDATION`, `ISSUED`, `FAILED`, ...
    pub status: String,
    /// The validation record, once ACM has chosen it.
    pub validation: Option<ValidationRecord>,
}

impl Observed {
    fn usable(&self) -> bool {
        self.status == CertificateStatus::Issued.as_str()
            || self.status == CertificateStatus::PendingValidation.as_str()
    }
}

fn resource(domain: &str) -> String {
    format!("ACM certificate of {domain}")
}

/// Reads one certificate; `None` when it does not exist.
async fn describe(aws: &super::Aws, arn: &str) -> Result<Option<Observed>, AwsError> {
    let out = aws
        .acm
        .describe_certificate()
        .certificate_arn(arn)
        .send()
        .await
        .aws("acm:DescribeCertificate", &format!("ACM certificate {arn}"));
    let Some(out) = not_found_as_none(out, &["ResourceNotFoundException"])? else { return Ok(None) };
    Ok(out.certificate().map(|c| Observed {
        arn: arn.to_string(),
        domain: c.domain_name().unwrap_or_default().to_string(),
        status: c.status().map(|s| s.as_str().to_string()).unwrap_or_default(),
        validation: c.domain_validation_options().iter().find_map(|o| {
            o.resource_record()
                .map(|r| ValidationRecord { name: r.name().to_string(), value: r.value().to_string() })
        }),
    }))
}

/// The certificates tagged with `deployment`, in any state.
pub async fn find_tagged(aws: &super::Aws, deployment: &str) -> Result<Vec<Observed>, AwsError> {
    let res = format!("ACM certificates of {deployment}");
    let mut found = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = aws
            .acm
            .list_certificates()
            .set_next_token(token.clone())
            .send()
            .await
            .aws("acm:ListCertificates", &res)?;
        for arn in out.certificate_summary_list().iter().filter_map(|c| c.certificate_arn()) {
            let tags = aws
                .acm
                .list_tags_for_certificate()
                .certificate_arn(arn)
                .send()
                .await
                .aws("acm:ListTagsForCertificate", &res);
            let Some(tags) = not_found_as_none(tags, &["ResourceNotFoundException"])? else { continue };
            let ours = tags.tags().iter().any(|t| t.key() == TAG_DEPLOYMENT && t.value() == Some(deployment));
            if ours && let Some(o) = describe(aws, arn).await? {
                found.push(o);
            }
        }
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(found);
        }
    }
}

/// The deployment's certificate for `domain` that is issued or on its way (issued first).
pub async fn observe(aws: &super::Aws, domain: &str, deployment: &str) -> Result<Option<Observed>, AwsError> {
    let mut usable: Vec<Observed> = find_tagged(aws, deployment)
        .await?
        .into_iter()
        .filter(|c| c.usable() && dns::fqdn(&c.domain) == dns::fqdn(domain))
        .collect();
    usable.sort_by_key(|c| c.status != CertificateStatus::Issued.as_str());
    Ok(usable.into_iter().next())
}

/// Compares the certificate with an issued one for the name.
pub fn plan(observed: Option<&Observed>) -> Change {
    match observed {
        None => Change::Create,
        Some(o) if o.status == CertificateStatus::Issued.as_str() => Change::Unchanged,
        Some(o) => Change::Update(vec![format!("validate through DNS ({})", o.status)]),
    }
}

/// Requests the certificate when there is none, writes its validation record into `zone`, and
/// waits up to `issue_timeout` until ACM issues it; returns its ARN.
pub async fn apply(
    aws: &super::Aws,
    domain: &str,
    deployment: &str,
    zone: &str,
    observed: Option<&Observed>,
    insync_timeout: Duration,
    issue_timeout: Duration,
) -> Result<String, AwsError> {
    let res = resource(domain);
    let arn = match observed {
        Some(o) => o.arn.clone(),
        None => {
            let tag = Tag::builder()
                .key(TAG_DEPLOYMENT)
                .value(deployment)
                .build()
                .map_err(|e| AwsError::local("acm:RequestCertificate", &res, e.to_string()))?;
            // The same token within the hour returns the same certificate: a request retried
            // after an interrupted run does not make a second one.
            let token: String =
                format!("regctl{deployment}").chars().filter(char::is_ascii_alphanumeric).collect();
            let out = aws
                .acm
                .request_certificate()
                .domain_name(domain)
                .validation_method(ValidationMethod::Dns)
                .idempotency_token(token)
                .tags(tag)
                .send()
                .await
                .aws("acm:RequestCertificate", &res)?;
            out.certificate_arn()
                .map(str::to_string)
                .ok_or_else(|| AwsError::local("acm:RequestCertificate", &res, "no ARN in the answer"))?
        }
    };
    // ACM names the validation record a few seconds after the request.
    let record = wait_for(
        "acm:DescribeCertificate",
        &res,
        "ACM to name the validation record",
        Duration::from_secs(2),
        Duration::from_secs(120),
        || async {
            let o = Retry::EC2_CONSISTENCY
                .until_visible(&["ResourceNotFoundException"], &|_, _| {}, || async {
                    describe(aws, &arn).await?.ok_or_else(|| AwsError {
                        code: Some("ResourceNotFoundException".into()),
                        ..AwsError::local(
                            "acm:DescribeCertificate",
                            &res,
                            "the new certificate is not visible",
                        )
                    })
                })
                .await?;
            Ok(o.validation)
        },
    )
    .await?;
    dns::set_cname(aws, zone, &record.name, &record.value, insync_timeout).await?;
    wait_for(
        "acm:DescribeCertificate",
        &res,
        "ACM to issue the certificate (DNS validation)",
        Duration::from_secs(2),
        issue_timeout,
        || async {
            let status = describe(aws, &arn).await?.map(|o| o.status).unwrap_or_default();
            if status == CertificateStatus::Issued.as_str() {
                return Ok(Some(()));
            }
            if status != CertificateStatus::PendingValidation.as_str() {
                return Err(AwsError::local(
                    "acm:DescribeCertificate",
                    &res,
                    format!(
                        "the certificate is {status}, not issued: check that the hosted zone is the one the \
                         domain's registrar delegates to, then delete it (`regctl teardown`) and provision again"
                    ),
                ));
            }
            Ok(None)
        },
    )
    .await?;
    Ok(arn)
}

/// How long teardown retries deleting a certificate that the deleted load balancer still holds
/// (ACM sees it released a little later).
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(120);

/// Deletes the certificate, retrying while ACM still sees it in use.
pub async fn destroy(aws: &super::Aws, arn: &str, retry: Retry) -> Result<Removed, AwsError> {
    let res = format!("ACM certificate {arn}");
    let deleted = retry
        .run(
            |e| e.is("ResourceInUseException"),
            |_, _| {},
            || async {
                aws.acm
                    .delete_certificate()
                    .certificate_arn(arn)
                    .send()
                    .await
                    .aws("acm:DeleteCertificate", &res)
            },
        )
        .await;
    Ok(not_found_as_none(deleted, &["ResourceNotFoundException"])?
        .map_or(Removed::Absent, |_| Removed::Deleted))
}
