//! AWS errors that keep the service's error code, so callers can treat "already exists" and
//! "not found" as the expected outcomes they are, and tell the operator what to do otherwise.

use std::fmt;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// A failed AWS call: which permission (action) on which resource, the AWS error code when the
/// service answered, and its message.
#[derive(Debug, Clone)]
pub struct AwsError {
    /// The IAM action of the call, e.g. `s3:CreateBucket`.
    pub action: &'static str,
    /// The resource the call was about, e.g. `S3 bucket my-registry`.
    pub resource: String,
    /// The AWS error code (`NoSuchEntity`, `AccessDenied`, ...); `None` when no service answered.
    pub code: Option<String>,
    /// The service's message, or a description of the transport failure.
    pub message: String,
    /// True when the failure came from an SDK call (so a generic remedy applies); false for
    /// regctl's own findings, whose message says what to do.
    pub from_sdk: bool,
}

impl AwsError {
    /// A failure that did not come from AWS itself (e.g. a wait that timed out).
    pub fn local(action: &'static str, resource: impl Into<String>, message: impl Into<String>) -> Self {
        AwsError { action, resource: resource.into(), code: None, message: message.into(), from_sdk: false }
    }

    /// True when AWS answered with this error code.
    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// True when AWS answered with one of these codes.
    pub fn is_any(&self, codes: &[&str]) -> bool {
        codes.iter().any(|c| self.is(c))
    }

    /// What the operator can do about this error.
    fn hint(&self) -> String {
        match self.code.as_deref() {
            Some(
                "AccessDenied"
                | "AccessDeniedException"
                | "UnauthorizedOperation"
                | "Forbidden"
                | "UnauthorizedAccess"
                | "AuthorizationError",
            ) => format!(
                "the credentials in use lack the `{}` permission: grant it to the IAM user or role \
                 (policies/operator.json lists every permission regctl needs), or pick other \
                 credentials with --profile",
                self.action
            ),
            Some("ExpiredToken" | "ExpiredTokenException" | "RequestExpired" | "TokenRefreshRequired") => {
                "the credentials have expired: refresh them (e.g. `aws sso login`) and run again".into()
            }
            Some(
                "InvalidClientTokenId"
                | "SignatureDoesNotMatch"
                | "AuthFailure"
                | "InvalidAccessKeyId"
                | "UnrecognizedClientException",
            ) => "the credentials are not valid: check AWS_ACCESS_KEY_ID / --profile".into(),
            Some("Throttling" | "ThrottlingException" | "RequestLimitExceeded" | "SlowDown") => {
                "AWS is throttling requests: wait a minute and run again (it is safe to re-run)".into()
            }
            Some("OptInRequired") => "the account is not subscribed to this service in this region".into(),
            Some(_) => "fix the cause above and run the command again; it is safe to re-run".into(),
            None => "check the network, --region and --endpoint-url, then run again (it is safe to \
                     re-run)"
                .into(),
        }
    }
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {} failed", self.action, self.resource)?;
        if let Some(code) = &self.code {
            write!(f, " ({code})")?;
        }
        write!(f, ": {}", self.message)?;
        if self.from_sdk || self.code.is_some() {
            write!(f, "; {}", self.hint())?;
        }
        Ok(())
    }
}

impl std::error::Error for AwsError {}

/// Turns an SDK result into one whose error keeps the AWS error code and names the resource.
pub trait AwsResultExt<T> {
    /// Maps the error to an [`AwsError`] for `action` on `resource`.
    fn aws(self, action: &'static str, resource: &str) -> Result<T, AwsError>;
}

impl<T, E, R> AwsResultExt<T> for Result<T, SdkError<E, R>>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    fn aws(self, action: &'static str, resource: &str) -> Result<T, AwsError> {
        self.map_err(|err| {
            let code = err.code().map(str::to_string);
            let message = match (&code, err.message()) {
                (Some(_), Some(m)) if !m.is_empty() => m.to_string(),
                _ => error_chain(&err),
            };
            AwsError { action, resource: resource.to_string(), code, message, from_sdk: true }
        })
    }
}

/// The error and its sources, joined by ": " (without the SDK's debug dump of the response),
/// plus the HTTP status when a service answered something the SDK could not read.
fn error_chain<E, R>(err: &SdkError<E, R>) -> String
where
    E: std::error::Error + 'static,
    R: fmt::Debug,
{
    let mut parts = vec![err.to_string()];
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        let text = s.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    if let SdkError::ServiceError(se) = err {
        parts.push(format!("HTTP answer: {:?}", se.raw()).chars().take(200).collect());
    }
    parts.join(": ")
}

/// Maps "not found" codes to `Ok(None)`: the expected answer when observing something that may
/// not exist yet.
pub fn not_found_as_none<T>(result: Result<T, AwsError>, codes: &[&str]) -> Result<Option<T>, AwsError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_any(codes) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_resource_code_and_remedy() {
        let e = AwsError {
            action: "iam:CreateRole",
            resource: "IAM role regctl-x-ec2".into(),
            code: Some("AccessDenied".into()),
            message: "not authorized".into(),
            from_sdk: true,
        };
        let s = e.to_string();
        assert!(s.contains("iam:CreateRole on IAM role regctl-x-ec2 failed (AccessDenied)"), "{s}");
        assert!(s.contains("lack the `iam:CreateRole` permission"), "{s}");
    }

    #[test]
    fn not_found_maps_to_none() {
        let e = AwsError::local("s3:HeadBucket", "b", "x");
        assert!(not_found_as_none::<()>(Err(e.clone()), &["NotFound"]).is_err());
        let nf = AwsError { code: Some("NotFound".into()), ..e };
        assert!(matches!(not_found_as_none::<()>(Err(nf), &["NotFound"]), Ok(None)));
    }
}
