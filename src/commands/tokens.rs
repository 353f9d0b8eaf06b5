//! `regctl rotate-token-key`: a new key signs the registry's Bearer tokens; the old one keeps
//! verifying for a token lifetime (plus the servers' reload interval), so live sessions go on.
//! Works on the storage itself (a filesystem root, or the S3 bucket every server of a
//! deployment shares), so every server picks the new key up within seconds; with `--instance`,
//! on the deployed instance's storage, found in its configuration over SSH.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use regctl_registry::auth::keys::{self, KeyRing};
use regctl_registry::config::Config;
use regctl_registry::storage::{S3Storage, Storage};

use super::deploy::remote_options;
use super::deployment::block_on;
use crate::cli::{GlobalArgs, RotateTokenKeyArgs};
use crate::ops::remote::Remote;

/// Runs `regctl rotate-token-key`.
pub fn run(global: &GlobalArgs, args: RotateTokenKeyArgs) -> anyhow::Result<()> {
    let (ring, grace) = if args.instance {
        let (opts, _) = remote_options(global, &args.ssh, None)?;
        block_on(async {
            let remote = Remote::connect(&opts).await?;
            let rotated = on_instance(&remote).await;
            remote.close().await;
            rotated
        })??
    } else {
        let config = super::storage::config(args.config.as_deref(), args.root.as_ref())?;
        let grace = grace(&config);
        let ring = block_on(async {
            let storage = super::storage::open(&config, &keys::KEYS_PATH.join("/")).await?;
            anyhow::Ok(keys::rotate(storage.as_ref(), grace).await?)
        })??;
        (ring, grace)
    };
    println!(
        "token signing key rotated: new key {}; tokens of the previous key verify for {} s more",
        ring.current().id(),
        grace.as_secs()
    );
    Ok(())
}

/// How long the previous key keeps verifying: an access token's lifetime, plus the time
/// servers take to read the new ring.
fn grace(config: &Config) -> Duration {
    config.auth.token.lifetime + keys::RELOAD_INTERVAL
}

/// Rotates the key of the instance behind `remote`, as its configuration file says: the ring
/// on its disk (read and replaced over SSH, 0600, owned by the service user), or the ring in
/// its bucket (through S3 from here).
async fn on_instance(remote: &Remote) -> anyhow::Result<(KeyRing, Duration)> {
    let path = remote.layout.config();
    let text = remote
        .read_file(&path)
        .await?
        .with_context(|| format!("{}: no {path}: deploy the registry first", remote.session().target()))?;
    let text = String::from_utf8(text).with_context(|| format!("{path} is not UTF-8"))?;
    let config: Config = toml::from_str(&text).with_context(|| format!("{path} is not a configuration"))?;
    let grace = grace(&config);
    if let Some(s3) = &config.storage.s3 {
        let storage: Arc<dyn Storage> = Arc::new(S3Storage::new(s3).await);
        return Ok((keys::rotate(storage.as_ref(), grace).await?, grace));
    }
    let file = config.storage.filesystem.rootdirectory.join(keys::KEYS_PATH.join("/"));
    let file = file.to_str().with_context(|| format!("{} is not UTF-8", file.display()))?;
    let stored = remote.read_file(file).await?;
    let (ring, data) = keys::rotated(stored.as_deref(), grace)?;
    let owner = remote.service_user.clone();
    remote.write_file(file, "0600", Some(&owner), None, data.as_slice(), |_| {}).await?;
    Ok((ring, grace))
}
