//! Options of `regctl history`, which reads the versions of the
//! registry's S3 bucket.

use std::path::PathBuf;

use clap::Args;
use regctl_registry::oci::{RepoName, Tag};

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
}
