//! How a failure becomes regctl's exit status: the error decides. Code that knows what kind of
//! failure it has marks the error with a [`Failure`] (the message stays the same); an AWS error
//! code anywhere in the chain means AWS refused; anything else is 1.

use std::fmt;

use crate::aws::AwsError;

/// The kinds of failure with an exit status of their own (README, "Exit status"; `--help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 2: the command line (or the recorded settings it relies on) does not make a valid
    /// request; clap's own status for a command line it cannot parse.
    Usage,
    /// 3: AWS answered a call with an error (permissions, limits, a resource in the way).
    AwsRefused,
    /// 4: the instance or the registry on it failed: SSH, a command there, the health check.
    Remote,
    /// 5: `status` found resources missing or drifted from the recorded settings.
    Drift,
}

/// The text of `--help`'s "Exit status" section (README, "Exit status", says the same).
pub const HELP: &str = "Exit status: 0 success; 1 any other failure; 2 usage error (bad or missing \
                        options); 3 AWS refused a call; 4 remote failure (SSH, a command on the \
                        instance, the health check); 5 `status` found resources missing or drifted.";

impl Failure {
    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Failure::Usage => 2,
            Failure::AwsRefused => 3,
            Failure::Remote => 4,
            Failure::Drift => 5,
        }
    }

    /// `error` marked as this kind of failure, unless it already has a kind.
    pub fn mark(self, error: anyhow::Error) -> anyhow::Error {
        if Failure::of(&error).is_some() {
            return error;
        }
        anyhow::Error::new(Marked { failure: self, error })
    }

    /// The kind of `error`: the outermost mark; else [`Failure::AwsRefused`] when AWS answered
    /// with an error code; else `None`.
    pub fn of(error: &anyhow::Error) -> Option<Failure> {
        let chain = || error.chain();
        chain().find_map(|cause| cause.downcast_ref::<Marked>().map(|m| m.failure)).or_else(|| {
            chain()
                .any(|cause| cause.downcast_ref::<AwsError>().is_some_and(|e| e.code.is_some()))
                .then_some(Failure::AwsRefused)
        })
    }
}

/// A usage error ([`Failure::Usage`]): `anyhow!`'s arguments, exit status 2.
#[macro_export]
macro_rules! usage {
    ($($arg:tt)*) => { $crate::exit::Failure::Usage.mark(anyhow::anyhow!($($arg)*)) };
}

/// The exit status for `error`.
pub fn code(error: &anyhow::Error) -> u8 {
    Failure::of(error).map_or(1, Failure::code)
}

/// An error with its kind: displays as the error itself, and continues the chain with the
/// error's own causes, so reports read as they did before the mark.
#[derive(Debug)]
struct Marked {
    failure: Failure,
    error: anyhow::Error,
}

impl fmt::Display for Marked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for Marked {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_decides_the_exit_status() {
        let plain = anyhow::anyhow!("disk full");
        assert_eq!(code(&plain), 1);
        let usage = Failure::Usage.mark(anyhow::anyhow!("no domain: pass --domain"));
        assert_eq!(usage.to_string(), "no domain: pass --domain", "the message is unchanged");
        assert_eq!(code(&usage.context("deploy")), 2, "a context keeps the kind");
        let refused = AwsError {
            action: "s3:CreateBucket",
            resource: "S3 bucket b".into(),
            code: Some("AccessDenied".into()),
            message: "denied".into(),
            from_sdk: true,
        };
        assert_eq!(code(&anyhow::Error::new(refused.clone()).context("provision")), 3);
        let offline = AwsError { code: None, ..refused };
        assert_eq!(code(&anyhow::Error::new(offline)), 1, "no answer from AWS is not a refusal");
        let remote = Failure::Remote.mark(anyhow::anyhow!("ssh: connection refused"));
        assert_eq!(code(&Failure::Usage.mark(remote)), 4, "the first kind found stays");
    }
}
