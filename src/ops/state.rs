//! The local state file (`regctl.toml` by default): each deployment's settings, so later
//! commands need no flags. AWS tags stay the source of truth for what exists.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The settings of one deployment, as given by flags or recorded from an earlier run. Every
/// field is optional: `None` means "not given", so flags can be laid over recorded values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// AWS region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// S3 bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// DNS name of the registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Route 53 hosted zone of the DNS name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosted_zone_id: Option<String>,
    /// CIDR allowed to reach SSH.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_cidr: Option<String>,
    /// An existing instance the deployment runs on (absent when regctl launched one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// AMI of a launched instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ami: Option<String>,
    /// Instance type of a launched instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// Key pair of a launched instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// True when a launched instance has no key pair on purpose (`--no-ssh-key`: the user brings
    /// their own access).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_ssh_key: Option<bool>,
    /// Subnet of a launched instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    /// Whether the deployment has an Elastic IP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elastic_ip: Option<bool>,
    /// Days until noncurrent object versions expire.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noncurrent_days: Option<i32>,
    /// Days until incomplete multipart uploads are aborted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort_multipart_days: Option<i32>,
    /// Number of instances of a scaled deployment (2 or more: an Auto Scaling group behind a load
    /// balancer); absent for a single instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<u32>,
}

impl Settings {
    /// `self` with every field that `over` sets replaced by `over`'s value.
    pub fn overlay(self, over: &Settings) -> Settings {
        fn pick<T: Clone>(base: Option<T>, over: &Option<T>) -> Option<T> {
            over.clone().or(base)
        }
        Settings {
            region: pick(self.region, &over.region),
            bucket: pick(self.bucket, &over.bucket),
            domain: pick(self.domain, &over.domain),
            hosted_zone_id: pick(self.hosted_zone_id, &over.hosted_zone_id),
            ssh_cidr: pick(self.ssh_cidr, &over.ssh_cidr),
            instance_id: pick(self.instance_id, &over.instance_id),
            ami: pick(self.ami, &over.ami),
            instance_type: pick(self.instance_type, &over.instance_type),
            key_name: pick(self.key_name, &over.key_name),
            no_ssh_key: pick(self.no_ssh_key, &over.no_ssh_key),
            subnet_id: pick(self.subnet_id, &over.subnet_id),
            elastic_ip: pick(self.elastic_ip, &over.elastic_ip),
            noncurrent_days: pick(self.noncurrent_days, &over.noncurrent_days),
            abort_multipart_days: pick(self.abort_multipart_days, &over.abort_multipart_days),
            instances: pick(self.instances, &over.instances),
        }
    }
}

/// The whole state file: settings per deployment name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    /// Settings by deployment name.
    #[serde(default)]
    pub deployments: BTreeMap<String, Settings>,
}

impl StateFile {
    /// Reads the file; a missing file is an empty state.
    pub fn load(path: &Path) -> anyhow::Result<StateFile> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).with_context(|| {
                format!("{} is not a valid regctl state file: fix or remove it", path.display())
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StateFile::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the file atomically (a temporary file renamed over it).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = toml::to_string_pretty(self).context("cannot serialise the state")?;
        let text = format!(
            "# Written by regctl: the settings of each deployment, so later commands need no flags.\n{text}"
        );
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
    }

    /// Records `settings` for `name` and saves the file.
    pub fn record(path: &Path, name: &str, settings: &Settings) -> anyhow::Result<()> {
        let mut state = StateFile::load(path)?;
        if state.deployments.get(name) != Some(settings) {
            state.deployments.insert(name.to_string(), settings.clone());
            state.save(path)?;
        }
        Ok(())
    }

    /// Forgets `name` and saves the file (removing it when no deployment is left).
    pub fn forget(path: &Path, name: &str) -> anyhow::Result<()> {
        let mut state = StateFile::load(path)?;
        if state.deployments.remove(name).is_none() {
            return Ok(());
        }
        if state.deployments.is_empty() {
            return std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()));
        }
        state.save(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_recorded_settings() {
        let recorded =
            Settings { region: Some("eu-west-1".into()), ssh_cidr: Some("a".into()), ..Default::default() };
        let flags = Settings { ssh_cidr: Some("b".into()), ..Default::default() };
        let merged = recorded.overlay(&flags);
        assert_eq!(merged.region.as_deref(), Some("eu-west-1"));
        assert_eq!(merged.ssh_cidr.as_deref(), Some("b"));
    }

    #[test]
    fn the_file_round_trips_and_is_removed_with_the_last_deployment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("regctl.toml");
        assert_eq!(StateFile::load(&path).expect("empty"), StateFile::default());
        let s =
            Settings { domain: Some("r.example.com".into()), elastic_ip: Some(true), ..Default::default() };
        StateFile::record(&path, "registry", &s).expect("record");
        assert_eq!(StateFile::load(&path).expect("load").deployments["registry"], s);
        StateFile::forget(&path, "registry").expect("forget");
        assert!(!path.exists());
    }
}
