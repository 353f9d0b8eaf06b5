//! `regctl add-user`, `remove-user`, `list-users`: flags in, [`ops::users`](crate::ops::users)
//! out.

use super::deploy::remote_options;
use super::deployment::{block_on, json, print_json};
use crate::cli::{AddUserArgs, GlobalArgs, ListUsersArgs, RemoveUserArgs, UsersFileArgs};
use crate::ops::users::{self, AddUserOptions, PasswordSource, Target, UserChange, UserOutcome};

fn target(global: &GlobalArgs, args: &UsersFileArgs) -> anyhow::Result<Target> {
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
    let opts = AddUserOptions {
        target: target(global, &args.file)?,
        user: args.user_name,
        password: if args.password_stdin { PasswordSource::Stdin } else { PasswordSource::Prompt },
        cost: args.cost,
    };
    let change = block_on(users::add_user(&opts))??;
    report(global, &change)
}

/// Runs `regctl remove-user`.
pub fn remove(global: &GlobalArgs, args: RemoveUserArgs) -> anyhow::Result<()> {
    let target = target(global, &args.file)?;
    let change = block_on(users::remove_user(&target, &args.user_name))??;
    report(global, &change)
}

/// Runs `regctl list-users`.
pub fn list(global: &GlobalArgs, args: ListUsersArgs) -> anyhow::Result<()> {
    let target = target(global, &args.file)?;
    let names = block_on(users::list_users(&target))??;
    if json(global) {
        return print_json(&serde_json::json!({ "users": names }));
    }
    for name in names {
        println!("{name}");
    }
    Ok(())
}
