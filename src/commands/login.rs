//! `regctl login`: configure this machine's container clients for the registry (see
//! `crate::ops::login`), after the registry has taken the credentials.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, FromArgMatches};
use regctl_registry::auth::access::Access;

use super::deploy::remote_options;
use super::deployment::{block_on, load};
use crate::cli::{GlobalArgs, LoginArgs, SshArgs};
use crate::ops::https::trust_roots;
use crate::ops::login::{self, ClientPaths, Stored};
use crate::ops::users::{self, AddTokenOptions, PasswordSource, Target, read_password, validate_user_name};
use crate::usage;

/// How long a new token may take to be accepted: the server re-reads the file every second.
const TOKEN_WAIT: Duration = Duration::from_secs(10);

/// Runs `regctl login`.
pub fn run(global: &GlobalArgs, args: LoginArgs) -> anyhow::Result<()> {
    validate_user_name(&args.user_name)?;
    let host = match &args.registry {
        Some(host) => host.clone(),
        None => load(global, &args.state)?.1.domain.ok_or_else(|| {
            usage!(
                "no registry to log in to: pass --registry HOST, or run `regctl provision --domain NAME` \
                 first so the domain is recorded in {}",
                args.state.state_file.display()
            )
        })?,
    };
    let source = if args.password_stdin { PasswordSource::Stdin } else { PasswordSource::Prompt };
    let secret = read_password(source, &args.user_name)?;
    let roots = Arc::new(trust_roots(args.ca.as_deref())?);
    block_on(login::verify(&host, roots.clone(), &args.user_name, &secret))??;
    eprintln!("the registry at {host} took the credentials of {}", args.user_name);
    if let Some(name) = &args.kubernetes_secret {
        let token = pull_token(global, &args, name)?;
        let deadline = Instant::now() + TOKEN_WAIT;
        // The server takes the new entry at its next reload of the file (every second); each
        // refusal until then counts against this address's failure budget, hence the pace.
        while let Err(e) = block_on(login::verify(&host, roots.clone(), name, &token))? {
            if Instant::now() >= deadline {
                return Err(e.context(format!("the new token {name} was not accepted within {TOKEN_WAIT:?}")));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        print!("{}", login::kubernetes_secret(name, &host, name, &token));
        return Ok(());
    }
    let paths = ClientPaths::from_env();
    if let Some(ca) = &args.ca {
        let pem = login::read_ca(ca)?;
        for file in login::install_ca(&paths, &host, &pem)? {
            eprintln!("trusted the registry's CA: {}", file.display());
        }
    }
    match login::store_credentials(&paths, &host, &args.user_name, &secret)? {
        Stored::Helper(helper) => {
            eprintln!("credentials of {} stored by docker-credential-{helper}", args.user_name);
        }
        Stored::PlainText(file) => eprintln!(
            "no docker credential helper is configured (credsStore/credHelpers): the credentials of \
             {} are written base64-encoded, not encrypted, in {}; configure a helper to keep them out \
             of the file",
            args.user_name,
            file.display()
        ),
    }
    Ok(())
}

/// A new pull-only token `name` (every repository, no expiry) in `--file`, else in the
/// instance's file over SSH with `regctl add-token`'s default SSH settings: its secret.
fn pull_token(global: &GlobalArgs, args: &LoginArgs, name: &str) -> anyhow::Result<String> {
    let target = match &args.file {
        Some(path) => Target::Local(path.clone()),
        None => {
            let mut ssh = SshArgs::from_arg_matches(
                &SshArgs::augment_args(clap::Command::new("ssh")).get_matches_from(["ssh"]),
            )?;
            ssh.state = args.state.clone();
            Target::Remote(remote_options(global, &ssh, None)?.0)
        }
    };
    let opts = AddTokenOptions {
        target,
        name: name.to_string(),
        access: Access::Pull,
        repos: Vec::new(),
        lifetime: None,
    };
    let (change, secret) = block_on(users::add_token(&opts))??;
    eprintln!(
        "Token {} {} in {} (pull access), for the Secret below; `regctl remove-user {}` revokes it.",
        change.user, change.outcome, change.file, change.user
    );
    Ok(secret)
}
