//! What the AWS commands (`provision`, `status`, `teardown`) share: the deployment name, the
//! recorded settings, the AWS connection, the runtime and JSON output.

use std::io::IsTerminal;

use anyhow::Context;
use serde::Serialize;

use crate::aws::{Aws, ConnectOptions, Names};
use crate::cli::{GlobalArgs, OutputFormat, StateArgs, TargetArgs};
use crate::ops::state::{Settings, StateFile};

/// The validated deployment name and its recorded settings.
pub fn load(global: &GlobalArgs, state: &StateArgs) -> anyhow::Result<(Names, Settings)> {
    let names = Names::new(&global.name).map_err(|e| crate::usage!("{e}"))?;
    let recorded =
        StateFile::load(&state.state_file)?.deployments.remove(names.deployment()).unwrap_or_default();
    Ok((names, recorded))
}

/// The settings the target flags give (unset flags stay `None`).
pub fn target_settings(global: &GlobalArgs, target: &TargetArgs) -> Settings {
    Settings {
        region: global.region.clone(),
        bucket: target.bucket.clone(),
        domain: target.domain.clone(),
        hosted_zone_id: target.hosted_zone_id.clone(),
        ..Settings::default()
    }
}

/// Connects to AWS in the region of the flags, else the recorded one, else the standard chain's.
pub async fn connect(global: &GlobalArgs, settings: &Settings) -> anyhow::Result<Aws> {
    Aws::connect(&ConnectOptions {
        profile: global.profile.clone(),
        region: settings.region.clone(),
        endpoint_url: global.endpoint_url.clone(),
    })
    .await
}

/// Runs `f` on a Tokio runtime.
pub fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
        .context("cannot start the async runtime")?;
    Ok(rt.block_on(f))
}

/// True with `--output json`.
pub fn json(global: &GlobalArgs) -> bool {
    global.output == OutputFormat::Json
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value).context("cannot serialise the summary")?);
    Ok(())
}

/// Asks `question` on the terminal (default no); `yes` (`--yes`) answers it. Without a terminal
/// to ask on, fails saying that `what` needs `--yes`.
pub fn confirm(question: &str, what: &str, yes: bool) -> anyhow::Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        anyhow::bail!("{what}: confirm with --yes (no terminal to ask on)");
    }
    Ok(dialoguer::Confirm::new().with_prompt(question).default(false).interact()?)
}
