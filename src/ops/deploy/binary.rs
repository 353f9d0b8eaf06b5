//! The local server binary: its size and SHA-256, the architecture and C library it needs, and
//! whether it can run on the instance.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use sha2::Digest as _;

use super::elf::Elf;
use super::instance::Facts;

/// The local binary to deploy: size, SHA-256, and what it needs to run.
#[derive(Debug)]
pub(crate) struct LocalBinary {
    /// Bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
    /// e.g. `x86_64, glibc ≥ 2.34`.
    pub target: String,
    /// `x86_64` or `aarch64`; `None` for any other machine.
    pub arch: Option<&'static str>,
    /// The C library it needs.
    pub libc: Libc,
}

/// The C library a binary needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Libc {
    /// None (static).
    Static,
    /// musl.
    Musl,
    /// glibc, at least this version.
    Glibc(Option<(u32, u32)>),
}

impl LocalBinary {
    /// Hashes and reads the binary at `path`.
    pub fn inspect(path: &Path) -> anyhow::Result<LocalBinary> {
        let mut file = std::fs::File::open(path).with_context(|| {
            format!("cannot open the server binary {}: pass it with --binary", path.display())
        })?;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        let elf = Elf::read(path)?;
        let arch = elf.arch();
        let libc = elf.libc();
        let target = format!(
            "{}, {}",
            arch.unwrap_or("unknown architecture"),
            match &libc {
                Libc::Static => "static".to_string(),
                Libc::Musl => "musl".to_string(),
                Libc::Glibc(Some((major, minor))) => format!("glibc ≥ {major}.{minor}"),
                Libc::Glibc(None) => "glibc".to_string(),
            }
        );
        Ok(LocalBinary { size, sha256: hex::encode(hasher.finalize()), target, arch, libc })
    }

    /// Fails with what to do when the binary cannot run on an instance with `facts`.
    pub(super) fn check_runs_on(&self, facts: &Facts) -> anyhow::Result<()> {
        let remote_arch = match facts.arch.as_str() {
            "arm64" => "aarch64",
            other => other,
        };
        let Some(arch) = self.arch else {
            bail!("the server binary is not an x86_64 or aarch64 Linux executable: pass one with --binary");
        };
        if arch != remote_arch {
            bail!(
                "the server binary is built for {arch} but the instance is {remote_arch}: {}",
                portable_build(remote_arch)
            );
        }
        match (&self.libc, facts.is_musl(), facts.glibc()) {
            (Libc::Static, _, _) | (Libc::Musl, true, _) => Ok(()),
            (Libc::Musl, false, _) => bail!(
                "the server binary needs musl's dynamic loader, which the instance ({}) lacks: use a static \
                 or glibc build (--binary)",
                facts.libc
            ),
            (Libc::Glibc(_), true, _) => {
                bail!("the server binary needs glibc but the instance uses musl: {}", portable_build(arch))
            }
            (Libc::Glibc(Some(need)), false, Some(have)) if have < *need => bail!(
                "the server binary needs glibc {}.{} but the instance has glibc {}.{}: {}",
                need.0,
                need.1,
                have.0,
                have.1,
                portable_build(arch)
            ),
            (Libc::Glibc(_), false, _) => Ok(()),
        }
    }
}

/// The C library of Amazon Linux 2023, the system of a scaled deployment's instances, as
/// `getconf GNU_LIBC_VERSION` prints it.
const AMAZON_LINUX_LIBC: &str = "glibc 2.34";

impl LocalBinary {
    /// Fails with what to do when the binary cannot run on Amazon Linux 2023 (its glibc; the
    /// CPU is the instance type's, not known here): published, it would fail on every instance.
    pub(crate) fn check_runs_on_amazon_linux(&self) -> anyhow::Result<()> {
        let facts = Facts {
            arch: self.arch.unwrap_or_default().to_string(),
            libc: AMAZON_LINUX_LIBC.to_string(),
            ..Facts::default()
        };
        self.check_runs_on(&facts)
    }
}

/// The way out when the binary cannot run on an `arch` instance: the static server build, which
/// runs on any Linux of that CPU (README, "A server binary that runs on the instance"); for
/// another CPU than this machine's, with a cross linker and C compiler for aws-lc.
fn portable_build(arch: &str) -> String {
    let target = format!("{arch}-unknown-linux-musl");
    let (tools, env) = if arch == std::env::consts::ARCH {
        ("musl-tools".to_string(), String::new())
    } else {
        let gcc = format!("{arch}-linux-gnu-gcc");
        let var = target.replace('-', "_");
        (
            format!("gcc-{arch}-linux-gnu"),
            format!("CARGO_TARGET_{}_LINKER={gcc} CC_{var}={gcc} ", var.to_ascii_uppercase()),
        )
    };
    format!(
        "build the server statically (apt-get install {tools}; rustup target add {target}; {env}cargo build \
         --release -p regctl-registry --target {target}) and deploy it with --binary \
         target/{target}/release/regctl-registry"
    )
}

/// The `(major, minor)` at the start of `s` (`2.34`, `2.41-1`), ignoring a non-digit tail.
pub(super) fn parse_version(s: &str) -> Option<(u32, u32)> {
    let s = s.trim_end_matches(|c: char| !c.is_ascii_digit());
    let (major, rest) = s.split_once('.')?;
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_facts_decide_whether_the_binary_runs() {
        let facts = Facts::parse(
            "arch=x86_64\nlibc=glibc 2.34\nuser=no\nenabled=\nactive=inactive\nsha256:/usr/local/bin/regctl-registry=\
             0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
        );
        assert_eq!(facts.glibc(), Some((2, 34)));
        assert!(facts.sha256("/usr/local/bin/regctl-registry").is_some());
        let binary =
            |arch, libc| LocalBinary { size: 1, sha256: String::new(), target: String::new(), arch, libc };
        assert!(binary(Some("x86_64"), Libc::Glibc(Some((2, 34)))).check_runs_on(&facts).is_ok());
        let too_new =
            binary(Some("x86_64"), Libc::Glibc(Some((2, 39)))).check_runs_on(&facts).expect_err("too new");
        assert!(too_new.to_string().contains("glibc 2.39"), "{too_new}");
        // The way out: the server (not the CLI) built for musl, and where the build lands.
        for needed in [
            "cargo build --release -p regctl-registry --target x86_64-unknown-linux-musl",
            "--binary target/x86_64-unknown-linux-musl/release/regctl-registry",
        ] {
            assert!(too_new.to_string().contains(needed), "{too_new}");
        }
        assert!(binary(Some("aarch64"), Libc::Static).check_runs_on(&facts).is_err());
        // An x86_64 build for a Graviton instance: refused, naming the aarch64 build to make.
        let graviton = Facts::parse("arch=aarch64\nlibc=ldd (GNU libc) 2.34\n");
        let wrong_cpu =
            binary(Some("x86_64"), Libc::Static).check_runs_on(&graviton).expect_err("x86_64 on aarch64");
        for needed in [
            "built for x86_64 but the instance is aarch64",
            "rustup target add aarch64-unknown-linux-musl",
            "--target aarch64-unknown-linux-musl",
            "--binary target/aarch64-unknown-linux-musl/release/regctl-registry",
        ] {
            assert!(wrong_cpu.to_string().contains(needed), "{wrong_cpu}");
        }
        if std::env::consts::ARCH == "x86_64" {
            // A cross build: the linker and C compiler for aws-lc are named.
            let cross = "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc \
                         CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc cargo build";
            assert!(wrong_cpu.to_string().contains(cross), "{wrong_cpu}");
        }
        assert!(binary(Some("aarch64"), Libc::Static).check_runs_on(&graviton).is_ok());
        assert!(binary(Some("x86_64"), Libc::Static).check_runs_on(&facts).is_ok());
        let musl = Facts::parse("arch=aarch64\nlibc=musl libc (aarch64)\n");
        assert!(binary(Some("aarch64"), Libc::Glibc(None)).check_runs_on(&musl).is_err());
        assert!(binary(Some("aarch64"), Libc::Musl).check_runs_on(&musl).is_ok());
        assert_eq!(Facts::parse("libc=ldd (GNU libc) 2.41\n").glibc(), Some((2, 41)));
        // A release for Amazon Linux 2023: glibc 2.34 at most.
        assert!(binary(Some("x86_64"), Libc::Glibc(Some((2, 34)))).check_runs_on_amazon_linux().is_ok());
        assert!(binary(Some("aarch64"), Libc::Static).check_runs_on_amazon_linux().is_ok());
        let newer = binary(Some("x86_64"), Libc::Glibc(Some((2, 38)))).check_runs_on_amazon_linux();
        assert!(
            newer
                .expect_err("too new")
                .to_string()
                .contains("needs glibc 2.38 but the instance has glibc 2.34")
        );
        assert!(binary(None, Libc::Static).check_runs_on_amazon_linux().is_err());
    }
}
