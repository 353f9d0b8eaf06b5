//! Options of `regctl history` and `regctl restore`, which read the versions of the
//! registry's S3 bucket.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::Args;
use regctl_registry::oci::{Digest, RepoName, Tag};

use super::StateArgs;

/// Which bucket to read: the deployment's by default, else `--bucket`, or the server's
/// configuration as `regctl gc` reads it.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Bucket")]
pub struct BucketArgs {
    /// The registry's S3 bucket, reached with the global --region, --endpoint-url and --profile
    /// [default: the deployment's (--name): recorded in --state-file by provision, else the
    /// bucket tagged regctl:deployment=NAME in the region].
    #[arg(long, value_name = "BUCKET", conflicts_with_all = ["config", "root"])]
    pub bucket: Option<String>,
    /// Key prefix the registry's objects live under in the bucket: the server's
    /// [storage.s3] rootdirectory, e.g. /image-registry [default: none, as deploy configures
    /// servers].
    #[arg(long, value_name = "PREFIX", conflicts_with_all = ["config", "root"])]
    pub s3_root_directory: Option<String>,
    /// The server's TOML configuration file, whose [storage.s3] names the bucket; the
    /// REGISTRY_STORAGE_* variables apply over it (and alone, without the file), as for
    /// `regctl gc`.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Filesystem storage directory (as `regctl gc` takes it): refused, since a filesystem
    /// keeps no earlier versions.
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    pub root: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub state: StateArgs,
}

/// A repository, and maybe one of its tags: `REPO[:TAG]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoTag {
    /// The repository.
    pub repository: RepoName,
    /// The tag, when one is given.
    pub tag: Option<Tag>,
}

/// Options of `regctl history`.
#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// The repository (every tag it ever had, deleted ones too), or one tag of it: REPO[:TAG].
    #[arg(value_name = "REPO[:TAG]", value_parser = parse_repo_tag)]
    pub target: RepoTag,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub bucket: BucketArgs,
}

/// Options of `regctl restore`.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// The tag to put back (REPO:TAG), or a repository (REPO) to put back each of its deleted
    /// tags as it was last pushed.
    #[arg(value_name = "REPO[:TAG]", value_parser = parse_repo_tag)]
    pub target: RepoTag,
    /// Put the tag back to this digest (one it pointed at, as `regctl history` lists them)
    /// [default: the last digest pushed to it].
    #[arg(long, value_name = "DIGEST", value_parser = parse_digest, conflicts_with = "at")]
    pub to: Option<Digest>,
    /// Put the tag back as it was at this time: RFC 3339 (2026-12-04T09:30:00Z, UTC) or a
    /// duration ago (e.g. 2h, 3days).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub at: Option<SystemTime>,
    /// Show what would be restored, and restore nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub bucket: BucketArgs,
}

fn parse_repo_tag(s: &str) -> Result<RepoTag, String> {
    let (repo, tag) = match s.rsplit_once(':') {
        Some((repo, tag)) => (repo, Some(tag)),
        None => (s, None),
    };
    let repository = RepoName::parse(repo).ok_or_else(|| {
        format!("{repo:?} is not a repository name (lowercase letters, digits, separators, /)")
    })?;
    let tag = match tag {
        Some(t) => Some(Tag::parse(t).ok_or_else(|| format!("{t:?} is not a tag"))?),
        None => None,
    };
    Ok(RepoTag { repository, tag })
}

fn parse_digest(s: &str) -> Result<Digest, String> {
    s.parse().map_err(|e| format!("{e} (e.g. sha256:<64 hex digits>)"))
}

fn parse_time(s: &str) -> Result<SystemTime, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    let ago: Duration = humantime::parse_duration(s).map_err(|_| {
        format!("{s:?} is neither an RFC 3339 time (2026-12-04T09:30:00Z) nor a duration ago (2h)")
    })?;
    SystemTime::now().checked_sub(ago).ok_or_else(|| format!("{s} ago is before the epoch"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_and_tags_parse() {
        let t = parse_repo_tag("team/app:v1.2").expect("parses");
        assert_eq!((t.repository.as_str(), t.tag.as_ref().map(Tag::as_str)), ("team/app", Some("v1.2")));
        assert_eq!(parse_repo_tag("team/app").expect("parses").tag, None);
        assert!(parse_repo_tag("Team/App").is_err());
        assert!(parse_repo_tag("team/app:").is_err());
    }

    #[test]
    fn times_are_rfc3339_or_a_duration_ago() {
        let at = parse_time("2026-12-04T09:30:00Z").expect("RFC 3339");
        assert_eq!(humantime::format_rfc3339_seconds(at).to_string(), "2026-12-04T09:30:00Z");
        let ago = parse_time("2h").expect("a duration ago");
        let elapsed = SystemTime::now().duration_since(ago).expect("in the past");
        assert!(elapsed >= Duration::from_secs(7200) && elapsed < Duration::from_secs(7300));
        assert!(parse_time("yesterday-ish").is_err());
    }
}
