//! One module per subcommand; each turns its arguments into options and does the work.

mod deploy;
mod deployment;
mod gc;
mod history;
mod login;
mod logs;
mod provision;
mod release;
mod restore;
mod serve;
mod status;
mod storage;
mod teardown;
mod tokens;
mod users;
mod versioned;

use crate::cli::{Cli, Command};

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Provision(args) => provision::run(&cli.global, args),
        Command::Status(args) => status::run(&cli.global, args),
        Command::Teardown(args) => teardown::run(&cli.global, args),
        Command::Deploy(args) => deploy::run(&cli.global, *args),
        Command::AddUser(args) => users::add(&cli.global, args),
        Command::AddToken(args) => users::add_token(&cli.global, args),
        Command::RemoveUser(args) => users::remove(&cli.global, args),
        Command::ListUsers(args) => users::list(&cli.global, args),
        Command::Logs(args) => logs::run(&cli.global, args),
        Command::Gc(args) => gc::run(&cli.global, args),
        Command::RotateTokenKey(args) => tokens::run(&cli.global, args),
        Command::Login(args) => login::run(&cli.global, args),
        Command::History(args) => history::run(&cli.global, args),
        Command::Restore(args) => restore::run(&cli.global, args),
        Command::Release(args) => release::run(&cli.global, args),
    }
}
