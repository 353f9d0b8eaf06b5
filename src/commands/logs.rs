//! `regctl logs`: the registry server's journal on the instance, over SSH.

use super::deploy::remote_options;
use super::deployment::block_on;
use crate::cli::{GlobalArgs, LogsArgs};
use crate::ops::remote::{Remote, SERVICE};

/// Runs `regctl logs`.
pub fn run(global: &GlobalArgs, args: LogsArgs) -> anyhow::Result<()> {
    let (opts, _) = remote_options(global, &args.ssh, None)?;
    block_on(async {
        let remote = Remote::connect(&opts).await?;
        let follow = if args.follow { " -f" } else { "" };
        let command =
            remote.command(&format!("exec journalctl -u {SERVICE} -n {} --no-pager{follow}", args.lines));
        let status = remote.session().stream(&command).await;
        remote.close().await;
        match status? {
            Some(0) => Ok(()),
            Some(code) => Err(anyhow::anyhow!(
                "journalctl on the instance failed (exit status {code}): is the registry deployed (regctl deploy)?"
            )),
            None => Ok(()),
        }
    })?
}
