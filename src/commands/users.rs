//! `regctl add-user`, `add-token`, `remove-user`, `list-users`: flags in,
//! [`ops::users`](crate::ops::users) out.

use regctl_registry::config::S3Config;

use super::deploy::remote_options;
use super::deployment::{block_on, json, print_json};
use crate::cli::{AddTokenArgs, AddUserArgs, GlobalArgs, ListUsersArgs, RemoveUserArgs, UsersFileArgs};
use crate::ops::users::{
    self, AddTokenOptions, AddUserOptions, PasswordSource, Target, UserChange, UserOutcome,
};

fn target(global: &GlobalArgs, args: &UsersFileArgs) -> anyhow::Result<Target> {
    if let Some(bucket) = &args.bucket {
        let mut config = S3Config::for_bucket(bucket.clone());
        config.region.clone_from(&global.region);
        if let Some(endpoint) = &global.endpoint_url {
            // Emulators and most S3-compatible stores want the bucket in the path.
            config.regionendpoint = Some(endpoint.clone());
            config.forcepathstyle = true;
        }
        if let Some(prefix) = &args.root_directory {
            config.rootdirectory.clone_from(prefix);
        }
        return Ok(Target::Bucket(config));
    }
    Ok(match &args.file {
        Some(path) => Target::Local(path.clone()),
        None => Target::Remote(remote_options(global, &args.ssh, None)?.0),
    })
}

fn report(global: &GlobalArgs, change: &UserChange) -> anyhow::Result<()> {
    if json(global) {
        return print_json(change);
    }
    match change.outcome {
        UserOutcome::Absent => {
            println!("User {} does not exist in {}: nothing to remove.", change.user, change.file)
        }
        outcome => println!("User {} {outcome} in {}.", change.user, change.file),
    }
    Ok(())
}

/// Runs `regctl add-user`.
pub fn add(global: &GlobalArgs, args: AddUserArgs) -> anyhow::Result<()> {
    let grant = (args.access.is_some() || !args.repos.is_empty())
        .then(|| users::grant_of(args.access, args.repos.clone(), users::default_user_grant().access));
    let opts = AddUserOptions {
        target: target(global, &args.file)?,
        user: args.user_name,
        password: if args.password_stdin { PasswordSource::Stdin } else { PasswordSource::Prompt },
        cost: args.cost,
        grant,
    };
    let change = block_on(users::add_user(&opts))??;
    report(global, &change)
}

/// Runs `regctl add-token`: the secret alone on stdout (so `$(regctl add-token ...)` takes
/// it whole), what was done on stderr.
pub fn add_token(global: &GlobalArgs, args: AddTokenArgs) -> anyhow::Result<()> {
    let opts = AddTokenOptions {
        target: target(global, &args.file)?,
        name: args.name,
        access: args.access,
        repos: args.repos,
        lifetime: args.expires,
    };
    let (change, secret) = block_on(users::add_token(&opts))??;
    let expiry = match opts.lifetime {
        Some(lifetime) => format!(", expires in {}", humantime::format_duration(lifetime)),
        None => String::new(),
    };
    eprintln!(
        "Token {} {} in {} ({} access{expiry}). Its secret, shown only now:",
        change.user, change.outcome, change.file, opts.access
    );
    println!("{secret}");
    Ok(())
}

/// Runs `regctl remove-user`.
pub fn remove(global: &GlobalArgs, args: RemoveUserArgs) -> anyhow::Result<()> {
    let target = target(global, &args.file)?;
    let change = block_on(users::remove_user(&target, &args.user_name))??;
    report(global, &change)
}

/// Runs `regctl list-users`: a table (name, kind, access, repositories, expiry), or with
/// `--output json` `{"users": [{name, kind, access, repos, expires, expired}]}`.
pub fn list(global: &GlobalArgs, args: ListUsersArgs) -> anyhow::Result<()> {
    let target = target(global, &args.file)?;
    let infos = block_on(users::list_users(&target))??;
    if json(global) {
        return print_json(&serde_json::json!({ "users": infos }));
    }
    let width = infos.iter().map(|u| u.name.len()).max().unwrap_or(0);
    for user in infos {
        let expires = match (&user.expires, user.expired) {
            (Some(at), true) => format!("expired {at}"),
            (Some(at), false) => format!("expires {at}"),
            (None, _) => "never expires".to_string(),
        };
        println!(
            "{:width$}  {:5}  {:6}  {}  {expires}",
            user.name,
            user.kind,
            user.access,
            user.repos.join(",")
        );
    }
    Ok(())
}
