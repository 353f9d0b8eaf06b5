//! The work behind the commands, free of any command-line parsing: each op takes a plain
//! options struct (and an [`Aws`](crate::aws::Aws) or an SSH target) and returns a
//! serialisable summary.

pub mod deploy;
pub mod history;
pub mod https;
pub mod login;
pub mod probe;
pub mod progress;
pub mod provision;
pub mod release;
pub mod remote;
pub mod restore;
pub mod rollout;
pub mod state;
pub mod status;
pub mod teardown;
pub mod users;
pub mod versions;
