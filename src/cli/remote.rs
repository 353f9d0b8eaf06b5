//! Options of the commands that work on the instance over SSH: `deploy`, `add-user`,
//! `add-token`, `remove-user`, `list-users`, `logs`.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::NonEmptyStringValueParser;
use clap::{Args, ValueEnum};
use regctl_registry::auth::access::{Access, RepoGlob, RuleError};

use regctl_registry::cli::AcmeClientArgs;

use super::StateArgs;

/// How to reach the instance over SSH and where regctl's files are on it.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "SSH")]
pub struct SshArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub state: StateArgs,
    /// Address or name of the instance [default: the deployment's domain].
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// SSH port.
    #[arg(long, value_name = "PORT", default_value_t = 22)]
    pub port: u16,
    /// SSH user: ec2-user on Amazon Linux (the default AMI), ubuntu on Ubuntu, admin on Debian.
    #[arg(long, value_name = "USER", default_value = "ec2-user")]
    pub user: String,
    /// Private key to log in with (an encrypted key asks for its passphrase) [default: the SSH
    /// agent's keys, then ~/.ssh/id_ed25519, id_ecdsa, id_rsa].
    #[arg(long, short = 'i', value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// known_hosts file checked for the instance's host key, and where a new one is recorded
    /// [default: ~/.ssh/known_hosts].
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Expected SHA-256 fingerprint of the instance's host key (`SHA256:...`, as printed to the
    /// EC2 console output); a key seen for the first time must match. Repeatable. Without it and
    /// without --host, a new key is checked against the fingerprints the deployment's instance
    /// printed to its EC2 console output, when they can be read; otherwise it is trusted on
    /// first use (shown and recorded).
    #[arg(long = "host-key-fingerprint", value_name = "SHA256:...")]
    pub host_key_fingerprints: Vec<String>,
    /// How long to keep trying while the instance refuses or drops SSH connections (its sshd is
    /// still starting after a launch or reboot); other failures are reported at once.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub connect_wait: u64,
    /// Directory on the instance that regctl's paths (/usr/local/bin/regctl-registry, /etc/regctl,
    /// /var/lib/regctl, /etc/systemd/system) are placed under.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub remote_root: String,
    /// Run commands as the SSH user even when it is not root (otherwise through `sudo -n`): for a
    /// --remote-root the user owns.
    #[arg(long)]
    pub no_sudo: bool,
    /// Account the server runs as on the instance (created by deploy when missing); owns the
    /// htpasswd file and the state directory.
    #[arg(long, value_name = "USER", default_value = "regctl")]
    pub service_user: String,
}

/// Where the images are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StorageKind {
    /// The deployment's S3 bucket (credentials from the instance profile).
    S3,
    /// The instance's disk (/var/lib/regctl/data).
    Filesystem,
}

/// Options of `regctl deploy`.
#[derive(Debug, Clone, Args)]
pub struct DeployArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub ssh: SshArgs,
    /// DNS name of the registry [default: the one recorded by provision].
    #[arg(long, value_name = "NAME")]
    pub domain: Option<String>,
    /// S3 bucket of the images [default: the one recorded by provision]; the region is the
    /// global --region (or the recorded one).
    #[arg(long, value_name = "BUCKET")]
    pub bucket: Option<String>,
    /// Where the images are stored.
    #[arg(long, value_enum, default_value_t = StorageKind::S3)]
    pub storage: StorageKind,
    /// An S3-compatible endpoint instead of AWS's (path-style addressing), e.g. MinIO.
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// Server executable to install [default: regctl-registry beside this regctl, else this
    /// regctl].
    #[arg(long, value_name = "FILE")]
    pub binary: Option<PathBuf>,
    /// Tags that cannot be overwritten or deleted once pushed, by pattern (`*`, `?`), e.g.
    /// 'v*'; repeatable.
    #[arg(long = "immutable-tag", value_name = "PATTERN", value_parser = NonEmptyStringValueParser::new())]
    pub immutable_tags: Vec<String>,
    /// An exception to --immutable-tag; repeatable (`--immutable-tag '*' --mutable-tag latest`:
    /// every tag but latest).
    #[arg(long = "mutable-tag", value_name = "PATTERN", requires = "immutable_tags", value_parser = NonEmptyStringValueParser::new())]
    pub mutable_tags: Vec<String>,
    /// Address the registry listens on, on the instance.
    #[arg(long, value_name = "HOST:PORT", default_value = "0.0.0.0:443")]
    pub listen: String,
    /// ACME: the account, the CA and the challenges (as `regctl serve` takes them).
    #[command(flatten)]
    pub acme: AcmeClientArgs,
    /// Plain-HTTP listener for ACME HTTP-01 challenges and redirects to HTTPS [default:
    /// 0.0.0.0:80].
    #[arg(long, value_name = "HOST:PORT")]
    pub http_addr: Option<String>,
    /// Serve this certificate chain (PEM) instead of getting one by ACME; uploaded with the rest.
    #[arg(long, value_name = "FILE", requires = "tls_key", conflicts_with_all = ["acme_email", "acme_directory", "acme_staging", "acme_ca_roots", "acme_challenges", "http_addr"])]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// URL that must answer 401 with a login challenge once the registry is up [default:
    /// https://DOMAIN/v2/, with the port of --listen when not 443]. http:// URLs are accepted,
    /// e.g. for a registry behind a TLS-terminating proxy.
    #[arg(long, value_name = "URL")]
    pub health_url: Option<String>,
    /// Extra CA certificates (PEM) trusted, besides the system's, when checking the registry's
    /// certificate (e.g. a private CA that issued --tls-cert).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Seconds to wait for the health URL (getting a first certificate takes a while).
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub wait: u64,
    /// Let anyone pull without credentials (auth.anonymous = "pull" in the server's config);
    /// pushing and deleting still need a user with that access.
    #[arg(long)]
    pub anonymous_pull: bool,
    /// Name of the first registry user, created when the instance has none; it gets delete
    /// on every repository.
    #[arg(long, value_name = "NAME", default_value = "admin")]
    pub first_user: String,
    /// Read the first user's password from stdin instead of a prompt.
    #[arg(long)]
    pub password_stdin: bool,
    /// bcrypt cost of the first user's password.
    #[arg(long, value_name = "COST", default_value_t = 10, value_parser = clap::value_parser!(u32).range(10..=31))]
    pub cost: u32,
}

/// Options of `regctl add-user`.
#[derive(Debug, Clone, Args)]
pub struct AddUserArgs {
    /// User name (an existing user gets the new password).
    #[arg(value_name = "NAME")]
    pub user_name: String,
    /// What the user may do: pull, push (and pull) or delete (and push) [default for a new
    /// user: push; an existing user keeps its access unless --access or --repo is given].
    #[arg(long, value_name = "LEVEL", value_parser = parse_access)]
    pub access: Option<Access>,
    /// Limit the access to repositories matching GLOB (`*` within a path component, `**`
    /// across them, e.g. `team/*`); repeatable [default: every repository].
    #[arg(long = "repo", value_name = "GLOB", value_parser = parse_glob)]
    pub repos: Vec<RepoGlob>,
    /// Read the password from stdin (without its final newline) instead of a prompt.
    #[arg(long)]
    pub password_stdin: bool,
    /// bcrypt cost (each step doubles the work of checking a password).
    #[arg(long, value_name = "COST", default_value_t = 10, value_parser = clap::value_parser!(u32).range(10..=31))]
    pub cost: u32,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub file: UsersFileArgs,
}

/// Options of `regctl add-token`.
#[derive(Debug, Clone, Args)]
pub struct AddTokenArgs {
    /// The token's name, used as the user name with the secret as password (an existing
    /// token of that name is replaced: its old secret stops working).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// What the token may do: pull, push (and pull) or delete (and push).
    #[arg(long, value_name = "LEVEL", value_parser = parse_access, default_value = "pull")]
    pub access: Access,
    /// Limit the access to repositories matching GLOB (`*` within a path component, `**`
    /// across them, e.g. `team/*`); repeatable [default: every repository].
    #[arg(long = "repo", value_name = "GLOB", value_parser = parse_glob)]
    pub repos: Vec<RepoGlob>,
    /// Stop working after this long, e.g. 30s, 1h, 90d [default: never].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub expires: Option<Duration>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub file: UsersFileArgs,
}

fn parse_access(s: &str) -> Result<Access, String> {
    s.parse().map_err(|e: RuleError| e.to_string())
}

fn parse_glob(s: &str) -> Result<RepoGlob, String> {
    s.parse().map_err(|e: RuleError| e.to_string())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("a token that expires at once is of no use".to_string()),
        Err(e) => Err(format!("{e} (e.g. 30s, 1h, 90d)")),
    }
}

/// Options of `regctl remove-user`.
#[derive(Debug, Clone, Args)]
pub struct RemoveUserArgs {
    /// User name.
    #[arg(value_name = "NAME")]
    pub user_name: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub file: UsersFileArgs,
}

/// Options of `regctl list-users` (`--output json` for a list of objects).
#[derive(Debug, Clone, Args)]
pub struct ListUsersArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub file: UsersFileArgs,
}

/// Which htpasswd file the user commands edit: a local one, the users kept in a bucket, or the
/// instance's over SSH.
#[derive(Debug, Clone, Args)]
pub struct UsersFileArgs {
    /// Edit this local htpasswd file (e.g. for `regctl serve --htpasswd FILE`) instead of the
    /// instance's.
    #[arg(long, value_name = "FILE", conflicts_with = "bucket")]
    pub file: Option<PathBuf>,
    /// Edit the users kept in this S3 bucket, which every server on it with
    /// `--users-in-storage` (config `auth.htpasswd.instorage`) reads within a second or two.
    /// AWS credentials from the standard chain; --region and --endpoint-url apply.
    #[arg(long, value_name = "BUCKET")]
    pub bucket: Option<String>,
    /// The servers' key prefix in --bucket (their `rootdirectory`) [default: none].
    #[arg(long, value_name = "PREFIX", requires = "bucket")]
    pub root_directory: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub ssh: SshArgs,
}

/// Options of `regctl logs`.
#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// Keep printing new lines as they come (Ctrl-C to stop).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Number of recent lines to show.
    #[arg(long, short = 'n', value_name = "LINES", default_value_t = 100)]
    pub lines: u32,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub ssh: SshArgs,
}
