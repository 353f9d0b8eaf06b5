//! `regctl deploy`: flags and the recorded settings in, [`ops::deploy`](crate::ops::deploy) out.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow};

use super::deployment::{block_on, connect, json, load, print_json};
use crate::aws::{Names, instance};
use crate::cli::{DeployArgs, GlobalArgs, SshArgs, StorageKind};
use crate::ops::deploy::{DeployOptions, FirstUser, Storage, Tls, deploy};
use crate::ops::progress::Reporter;
use crate::ops::remote::{Layout, RemoteOptions};
use crate::ops::rollout::{RolloutOptions, rollout};
use crate::ops::state::Settings;
use crate::ops::users::PasswordSource;
use crate::ssh::{SshOptions, console_fingerprints, is_known};
use crate::usage;

/// The SSH target of the SSH flags and the recorded settings (whose domain is the default host),
/// and those settings.
pub fn remote_options(
    global: &GlobalArgs,
    ssh: &SshArgs,
    domain: Option<&str>,
) -> anyhow::Result<(RemoteOptions, Settings)> {
    let (names, recorded) = load(global, &ssh.state)?;
    let host = ssh
        .host
        .clone()
        .or_else(|| domain.map(str::to_string))
        .or_else(|| recorded.domain.clone())
        .ok_or_else(|| {
            usage!(
                "no instance to connect to: pass --host (the instance's public address or DNS name), or \
                 run `regctl provision --domain NAME` first so the domain is recorded in {}",
                ssh.state.state_file.display()
            )
        })?;
    let known_hosts = match &ssh.known_hosts {
        Some(path) => path.clone(),
        None => std::env::home_dir()
            .map(|home| home.join(".ssh").join("known_hosts"))
            .context("no home directory for ~/.ssh/known_hosts: pass --known-hosts FILE")?,
    };
    let mut expected_fingerprints = ssh.host_key_fingerprints.clone();
    // The deployment's own instance, met for the first time: its console output has the
    // fingerprints of its host keys, a better anchor than trust on first use.
    if ssh.host.is_none() && expected_fingerprints.is_empty() && !is_known(&known_hosts, &host, ssh.port) {
        let lookup = block_on(async {
            tokio::time::timeout(
                CONSOLE_WAIT + Duration::from_secs(30),
                from_console(global, &names, &recorded),
            )
            .await
        })?;
        match lookup {
            Ok(Ok(Some((found, waited)))) if !found.is_empty() => {
                eprintln!(
                    "The instance printed {} host key fingerprint(s) to its console (read after {} s): the \
                     key of {host} must match one.",
                    found.len(),
                    waited.as_secs()
                );
                expected_fingerprints = found;
            }
            Ok(Ok(Some(_))) => eprintln!(
                "No host key fingerprints in the instance's console output after {} s: the host key will \
                 be trusted on first use.",
                CONSOLE_WAIT.as_secs()
            ),
            Ok(Ok(None)) => eprintln!(
                "No running instance of the deployment to read the console of: the host key will be \
                 trusted on first use."
            ),
            Ok(Err(e)) => eprintln!(
                "Cannot read the instance's console output ({e:#}): the host key will be trusted on first use."
            ),
            Err(_) => eprintln!(
                "No answer from EC2 about the console output in time: the host key will be trusted on \
                 first use."
            ),
        }
    }
    let opts = RemoteOptions {
        ssh: SshOptions {
            host,
            port: ssh.port,
            user: ssh.user.clone(),
            identity: ssh.identity.clone(),
            known_hosts,
            expected_fingerprints,
            connect_wait: Duration::from_secs(ssh.connect_wait),
        },
        layout: Layout::new(&ssh.remote_root)?,
        sudo: !ssh.no_sudo,
        service_user: ssh.service_user.clone(),
    };
    Ok((opts, recorded))
}

/// How long deploy keeps reading a new instance's console output for its host-key block.
const CONSOLE_WAIT: Duration = Duration::from_secs(120);
/// The pause between two reads of the console output.
const CONSOLE_POLL: Duration = Duration::from_secs(5);

/// The host key fingerprints cloud-init printed to the console of the deployment's running
/// instance (found by its tags), and how long it took to see them; read until they appear, for
/// [`CONSOLE_WAIT`] at most (then empty). `None` when there is no such instance.
async fn from_console(
    global: &GlobalArgs,
    names: &Names,
    recorded: &Settings,
) -> anyhow::Result<Option<(Vec<String>, Duration)>> {
    use base64::Engine;
    let aws = connect(global, recorded).await?;
    let instances = instance::find_tagged(&aws, names.deployment()).await?;
    let Some(running) = instances.iter().find(|i| i.state == "running") else {
        return Ok(None);
    };
    let start = tokio::time::Instant::now();
    loop {
        // Without `latest`, EC2 answers the output buffered at the last instance state change,
        // often empty for minutes on Nitro instances; the latest output has cloud-init's block
        // as soon as it is printed.
        let out =
            aws.ec2.get_console_output().instance_id(&running.id).latest(true).send().await.map_err(|e| {
                anyhow!("ec2:GetConsoleOutput: {}", aws_sdk_ec2::error::DisplayErrorContext(&e))
            })?;
        let found = match out.output() {
            Some(encoded) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .map_err(|e| anyhow!("the console output is not base64: {e}"))?;
                console_fingerprints(&String::from_utf8_lossy(&bytes))
            }
            None => Vec::new(),
        };
        if !found.is_empty() || start.elapsed() + CONSOLE_POLL > CONSOLE_WAIT {
            return Ok(Some((found, start.elapsed())));
        }
        tokio::time::sleep(CONSOLE_POLL).await;
    }
}

/// Runs `regctl deploy`.
pub fn run(global: &GlobalArgs, args: DeployArgs) -> anyhow::Result<()> {
    let (names, recorded) = load(global, &args.ssh.state)?;
    let domain = args.domain.clone().or(recorded.domain.clone()).ok_or_else(|| {
        usage!("no domain: pass --domain (the registry's DNS name), or record one with `regctl provision --domain NAME`")
    })?;
    if recorded.instances.is_some_and(|n| n >= 2) {
        return run_scaled(global, &args, &names, recorded, &domain);
    }
    let (remote, recorded) = remote_options(global, &args.ssh, Some(&domain))?;
    let storage = match args.storage {
        StorageKind::S3 => {
            let bucket = args.bucket.clone().or(recorded.bucket.clone()).ok_or_else(|| {
                usage!("no bucket: pass --bucket, run `regctl provision` first, or use --storage filesystem")
            })?;
            let region = global.region.clone().or(recorded.region.clone()).ok_or_else(|| {
                usage!("no region for the bucket: pass --region, or run `regctl provision` first")
            })?;
            Storage::S3 { bucket, region, endpoint: args.s3_endpoint.clone() }
        }
        StorageKind::Filesystem => {
            if args.s3_endpoint.is_some() || args.bucket.is_some() {
                return Err(usage!("--bucket and --s3-endpoint are for --storage s3"));
            }
            Storage::Filesystem
        }
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Tls::Files { cert: cert.clone(), key: key.clone() },
        _ => {
            let acme = args.acme.clone();
            if !acme.acme_ca_roots.is_empty() && acme.acme_directory.is_none() {
                return Err(usage!("--acme-ca-root is for a private ACME CA: give its --acme-directory too"));
            }
            Tls::Acme {
                email: acme.acme_email,
                directory: acme.acme_directory,
                staging: acme.acme_staging,
                ca_roots: acme.acme_ca_roots,
                challenges: acme.acme_challenges,
                http_addr: args.http_addr.clone(),
            }
        }
    };
    let binary = match &args.binary {
        Some(path) => path.clone(),
        None => default_server_binary()?,
    };
    let health_url =
        args.health_url.clone().unwrap_or_else(|| match args.listen.rsplit_once(':').map(|(_, port)| port) {
            Some("443") | None => format!("https://{domain}/v2/"),
            Some(port) => format!("https://{domain}:{port}/v2/"),
        });
    let opts = DeployOptions {
        remote,
        binary,
        domain,
        listen: args.listen.clone(),
        storage,
        tls,
        realm: regctl_registry::config::default_realm(),
        immutable_tags: args.immutable_tags.clone(),
        mutable_tags: args.mutable_tags.clone(),
        first_user: FirstUser {
            name: args.first_user.clone(),
            password: if args.password_stdin { PasswordSource::Stdin } else { PasswordSource::Prompt },
            cost: args.cost,
        },
        anonymous_pull: args.anonymous_pull,
        health_url,
        ca_file: args.ca_file.clone(),
        wait: Duration::from_secs(args.wait),
    };
    let json = json(global);
    let reporter = Reporter::new(json);
    let summary = block_on(deploy(&opts, &reporter))??;
    if json {
        return print_json(&summary);
    }
    if summary.changed.is_empty() && !summary.restarted {
        println!("Nothing to change: {} already runs this build and configuration.", summary.host);
    } else {
        println!(
            "Deployed to {}: {} file(s) changed{}.",
            summary.host,
            summary.changed.len(),
            if summary.restarted { ", service restarted" } else { ", no restart needed" }
        );
    }
    if let Some(rate) = summary.upload_mb_per_s() {
        println!(
            "Upload: {} bytes in {:.2}s = {rate:.1} MB/s.",
            summary.binary_bytes, summary.upload_seconds
        );
    }
    println!("The registry answers at {}.", summary.health_url);
    Ok(())
}

/// `deploy` of a scaled deployment: the release through the bucket and an instance refresh, no
/// SSH (the name points at the load balancer, and instances install the release at boot).
fn run_scaled(
    global: &GlobalArgs,
    args: &DeployArgs,
    names: &Names,
    recorded: Settings,
    domain: &str,
) -> anyhow::Result<()> {
    if args.storage != StorageKind::S3 || args.tls_cert.is_some() || args.ssh.host.is_some() {
        return Err(usage!(
            "this deployment is scaled (provision --instances {}): its servers keep everything in the \
             bucket and the load balancer holds the certificate, so --storage filesystem, --tls-cert and \
             --host do not apply",
            recorded.instances.unwrap_or_default()
        ));
    }
    let bucket = args.bucket.clone().or(recorded.bucket.clone()).ok_or_else(|| {
        usage!(
            "no bucket recorded for this scaled deployment: pass --bucket, or run `regctl provision` first"
        )
    })?;
    let region =
        global.region.clone().or(recorded.region.clone()).ok_or_else(|| {
            usage!("no region for the bucket: pass --region, or run `regctl provision` first")
        })?;
    let mut users = regctl_registry::config::S3Config::for_bucket(bucket.clone());
    users.region = Some(region.clone());
    if let Some(endpoint) = &global.endpoint_url {
        users.regionendpoint = Some(endpoint.clone());
        users.forcepathstyle = true;
    }
    let opts = RolloutOptions {
        release: super::release::release_options(
            args.binary.clone(),
            bucket,
            region.clone(),
            args.anonymous_pull,
            args.immutable_tags.clone(),
            args.mutable_tags.clone(),
        )?,
        group: names.scaled(),
        users,
        first_user: FirstUser {
            name: args.first_user.clone(),
            password: if args.password_stdin { PasswordSource::Stdin } else { PasswordSource::Prompt },
            cost: args.cost,
        },
        health_url: args.health_url.clone().unwrap_or_else(|| format!("https://{domain}/v2/")),
        ca_file: args.ca_file.clone(),
        wait: Duration::from_secs(args.wait),
    };
    let json = json(global);
    let reporter = Reporter::new(json);
    let settings = Settings { region: Some(region), ..recorded };
    let summary = block_on(async {
        let aws = connect(global, &settings).await?;
        rollout(&aws, &opts, &reporter).await
    })??;
    if json {
        return print_json(&summary);
    }
    if summary.refreshed {
        println!(
            "Deployed: the new release is in s3://{} and every instance of {} was replaced by one running it.",
            summary.published.bucket, summary.group
        );
    } else {
        println!(
            "Nothing to change: s3://{} already names this release, which the instances of {} run.",
            summary.published.bucket, summary.group
        );
    }
    println!("The registry answers at {}.", summary.health_url);
    Ok(())
}

/// The server to install when `--binary` is not given: `regctl-registry` beside this
/// executable when it is there (the server alone: a smaller upload and less memory on the
/// instance), else this executable, whose `serve` is the same server.
pub(super) fn default_server_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this executable: pass --binary FILE")?;
    let server = exe.with_file_name(SERVER_BINARY);
    Ok(if server.is_file() { server } else { exe })
}

/// The file name of the server-only binary (the `regctl-registry` crate's).
const SERVER_BINARY: &str = "regctl-registry";
