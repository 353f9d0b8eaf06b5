//! `regctl rotate-token-key`: a new key signs the registry's Bearer tokens; the old one keeps
//! verifying for a token lifetime (plus the servers' reload interval), so live sessions go on.
//! Works on the storage itself (a filesystem root, or the S3 bucket every server of a
//! deployment shares), so every server picks the new key up within seconds.

use anyhow::Context;
use regctl_registry::auth::keys;

use crate::cli::RotateTokenKeyArgs;

/// Runs `regctl rotate-token-key`.
pub fn run(args: RotateTokenKeyArgs) -> anyhow::Result<()> {
    let config = super::storage::config(args.config.as_deref(), args.root.as_ref())?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let grace = config.auth.token.lifetime + keys::RELOAD_INTERVAL;
    let ring = runtime.block_on(async {
        let storage = super::storage::open(&config, &keys::KEYS_PATH.join("/")).await?;
        anyhow::Ok(keys::rotate(storage.as_ref(), grace).await?)
    })?;
    println!(
        "token signing key rotated: new key {}; tokens of the previous key verify for {} s more",
        ring.current().id(),
        grace.as_secs()
    );
    Ok(())
}
