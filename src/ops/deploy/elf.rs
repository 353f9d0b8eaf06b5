//! What an ELF executable needs to run: its machine, its interpreter (none when static) and the
//! glibc versions its dynamic symbols name, read with the `object` crate.

use std::path::Path;

use anyhow::{Context, anyhow};
use object::read::elf::{ElfFile64, FileHeader as _, ProgramHeader as _};
use object::{Endianness, Object as _, ObjectSection as _, ReadCache};

use super::binary::{Libc, parse_version};

/// The parts of a 64-bit ELF file that say where it can run.
pub(super) struct Elf {
    machine: u16,
    interpreter: Option<String>,
    /// The dynamic string table, which names the `GLIBC_x.y` versions needed.
    dynstr: Vec<u8>,
}

impl Elf {
    /// Reads the headers of the ELF file at `path`.
    pub fn read(path: &Path) -> anyhow::Result<Elf> {
        let not_elf =
            |_| anyhow!("{} is not a 64-bit Linux executable: pass one with --binary", path.display());
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        // Read on demand: a debug build is hundreds of MB, of which only the headers matter.
        let cache = ReadCache::new(file);
        let elf = ElfFile64::<Endianness, _>::parse(&cache).map_err(not_elf)?;
        let endian = elf.endian();
        let mut interpreter = None;
        for header in elf.elf_program_headers() {
            if let Some(path) = header.interpreter(endian, &cache).map_err(not_elf)? {
                interpreter = Some(String::from_utf8_lossy(path).into_owned());
            }
        }
        let dynstr = match elf.section_by_name(".dynstr") {
            Some(section) => section.data().map_err(not_elf)?.to_vec(),
            None => Vec::new(),
        };
        Ok(Elf { machine: elf.elf_header().e_machine(endian), interpreter, dynstr })
    }

    /// `x86_64` or `aarch64`, from the machine field.
    pub fn arch(&self) -> Option<&'static str> {
        match self.machine {
            object::elf::EM_X86_64 => Some("x86_64"),
            object::elf::EM_AARCH64 => Some("aarch64"),
            _ => None,
        }
    }

    /// The C library: none without an interpreter, musl by its loader's name, else glibc with
    /// the newest `GLIBC_x.y` symbol version named.
    pub fn libc(&self) -> Libc {
        match &self.interpreter {
            None => Libc::Static,
            Some(interp) if interp.contains("musl") => Libc::Musl,
            Some(_) => Libc::Glibc(
                self.dynstr
                    .split(|b| *b == 0)
                    .filter_map(|s| s.strip_prefix(b"GLIBC_"))
                    .filter_map(|v| std::str::from_utf8(v).ok())
                    .filter_map(parse_version)
                    .max(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_executable_is_understood() {
        let exe = std::env::current_exe().expect("current exe");
        let elf = Elf::read(&exe).expect("an ELF file");
        assert_eq!(elf.arch(), Some(std::env::consts::ARCH));
        match elf.libc() {
            Libc::Glibc(Some((2, minor))) => assert!(minor >= 2),
            other => assert!(cfg!(target_env = "musl") || matches!(other, Libc::Static), "{other:?}"),
        }
    }
}
