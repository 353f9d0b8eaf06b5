//! Options of the commands that manage a deployment on AWS: `provision`, `status`, `teardown`,
//! and the global options they share.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// Options every command accepts: where AWS is, which deployment, how to answer.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Named AWS profile from ~/.aws/config and ~/.aws/credentials [default: the standard
    /// chain: AWS_PROFILE, environment credentials, instance profile, ...].
    #[arg(long, global = true, value_name = "PROFILE")]
    pub profile: Option<String>,
    /// AWS region [default: the one in regctl.toml, else AWS_REGION or the profile's].
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,
    /// Send every AWS call to this endpoint (e.g. a local emulator); AWS_ENDPOINT_URL and the
    /// per-service AWS_ENDPOINT_URL_<SERVICE> variables work too.
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Deployment name: every AWS resource is named after it and tagged `regctl:deployment=NAME`.
    #[arg(long, global = true, value_name = "NAME", default_value = "registry")]
    pub name: String,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Answer yes to confirmations (needed without a terminal).
    #[arg(long, short = 'y', global = true)]
    pub yes: bool,
}

/// How commands report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Lines for people (a spinner per step on a terminal).
    Text,
    /// One JSON document on stdout, for scripts.
    Json,
}

/// Where the deployment's settings are recorded.
#[derive(Debug, Clone, Args)]
pub struct StateArgs {
    /// The local file recording each deployment's settings, so later commands need no flags
    /// (`status` and `teardown` also work without it, from tags).
    #[arg(long, value_name = "FILE", default_value = "regctl.toml")]
    pub state_file: PathBuf,
}

/// Names of resources that `status` and `teardown` take too.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// DNS name of the registry (an A record is made in the Route 53 zone that holds it).
    #[arg(long, value_name = "NAME")]
    pub domain: Option<String>,
    /// Route 53 hosted zone of --domain [default: found from the domain].
    #[arg(long, value_name = "ZONE_ID")]
    pub hosted_zone_id: Option<String>,
    /// S3 bucket for the images [default: regctl-NAME-ACCOUNT-REGION].
    #[arg(long, value_name = "BUCKET")]
    pub bucket: Option<String>,
}

/// Options of `regctl provision`.
#[derive(Debug, Clone, Args)]
pub struct ProvisionArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub state: StateArgs,
    /// Use this existing instance (tagged, never terminated by teardown) instead of launching one.
    #[arg(long, value_name = "ID")]
    pub instance_id: Option<String>,
    /// AMI of a launched instance [default: the newest Amazon Linux 2023 x86_64 image].
    #[arg(long, value_name = "AMI", conflicts_with = "instance_id")]
    pub ami: Option<String>,
    /// Instance type of a launched instance [default: t3.small].
    #[arg(long, value_name = "TYPE", conflicts_with = "instance_id")]
    pub instance_type: Option<String>,
    /// EC2 key pair of a launched instance, for SSH (`regctl deploy --identity` then takes its
    /// private key); required to launch one, unless --no-ssh-key.
    #[arg(long, value_name = "KEY_PAIR", conflicts_with = "instance_id")]
    pub key_name: Option<String>,
    /// Launch the instance without a key pair: you bring your own access (e.g. a key or a user
    /// from your own AMI); without either, nobody can log in to deploy.
    #[arg(long, conflicts_with_all = ["instance_id", "key_name"])]
    pub no_ssh_key: bool,
    /// Subnet of a launched instance [default: a default subnet of the default VPC].
    #[arg(long, value_name = "SUBNET_ID", conflicts_with = "instance_id")]
    pub subnet_id: Option<String>,
    /// Who may reach SSH (port 22), e.g. your address as 203.0.113.7/32; required the first time
    /// (find your address with `curl https://checkip.amazonaws.com`).
    #[arg(long, value_name = "CIDR")]
    pub ssh_cidr: Option<String>,
    /// Give the instance an Elastic IP, so its address survives a stop and start.
    #[arg(long, overrides_with = "no_elastic_ip")]
    pub elastic_ip: bool,
    /// Release the deployment's Elastic IP and use the instance's own public address.
    #[arg(long, overrides_with = "elastic_ip")]
    pub no_elastic_ip: bool,
    /// Run N instances behind an Application Load Balancer with an ACM certificate (N >= 2: an
    /// Auto Scaling group over two or more zones); 1 is the single instance [default: 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100), conflicts_with_all = ["instance_id", "elastic_ip"])]
    pub instances: Option<u32>,
    /// Days after which noncurrent object versions expire [default: 30].
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(i32).range(1..))]
    pub noncurrent_days: Option<i32>,
    /// Days after which incomplete multipart uploads are aborted [default: 7].
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(i32).range(1..))]
    pub abort_multipart_days: Option<i32>,
    /// How long to retry associating a new instance profile while IAM propagates it
    /// ("Invalid IAM Instance Profile").
    #[arg(long, value_name = "SECONDS", env = "REGCTL_IAM_WAIT", default_value_t = 120)]
    pub iam_wait: u64,
    /// How long to wait for ACM to issue a scaled deployment's certificate (DNS validation
    /// through the hosted zone usually takes a few minutes).
    #[arg(long, value_name = "SECONDS", env = "REGCTL_CERTIFICATE_WAIT", default_value_t = 1800)]
    pub certificate_wait: u64,
    /// Print the plan (create / update / unchanged per resource) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Options of `regctl status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub state: StateArgs,
    /// Do not resolve the DNS name nor connect to the registry over HTTPS (skipped anyway when
    /// an endpoint override points AWS calls at an emulator, whose addresses are not real).
    #[arg(long)]
    pub no_probe: bool,
    /// HTTPS URL to probe instead of https://DOMAIN/v2/ (a registry on another port, or behind a
    /// proxy); when given, the probe also runs while AWS calls go to an endpoint override.
    #[arg(long, value_name = "URL", conflicts_with = "no_probe")]
    pub health_url: Option<String>,
    /// Extra CA certificates (PEM) trusted, besides the system's, by the HTTPS probe (e.g. a
    /// private CA that issued the registry's certificate).
    #[arg(long, value_name = "FILE", conflicts_with = "no_probe")]
    pub ca_file: Option<PathBuf>,
}

/// Options of `regctl teardown`.
#[derive(Debug, Clone, Args)]
pub struct TeardownArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub state: StateArgs,
    /// Also delete the bucket, with every object version and delete marker in it (the images!).
    #[arg(long)]
    pub delete_bucket: bool,
    /// List what would be removed and remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}
