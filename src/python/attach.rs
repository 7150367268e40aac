//! Attaching: find the binary that holds the interpreter, its version, `_PyRuntime`, and
//! the layout to read it with.

use super::debug_offsets::{DEBUG_OFFSETS_READ_SIZE, layout_from_debug_offsets};
use super::layout::Layout;
use super::tables;
use super::version::{SUPPORTED, Version, find_version_string, minor_from_file_name};
use crate::error::Error;
use crate::mem::{MemError, MemoryExt, RemoteMemory};

use crate::model::python::Build;
use crate::model::python::{GilMode, PythonInfo};
use crate::process::{ElfSymbols, Process};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct PythonBinary {
    pub version: Version,
    pub build: Build,
    pub free_threaded: bool,
    pub path: PathBuf,
}

/// An interpreter ready to be read: where its runtime is and how it is laid out.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub pid: i32,
    pub binary: PythonBinary,
    pub layout: Layout,
    /// Address of `_PyRuntime` in the target.
    pub address: u64,
    /// Address of `PyCode_Type`, used to reject frames whose code pointer is not code.
    pub code_type: Option<u64>,
}

impl Runtime {
    /// How reports describe this interpreter; `gil` is the mode of the main GIL as sampled
    /// (`None`: not sampled, taken as enabled).
    pub fn python_info(&self, gil: Option<GilMode>) -> PythonInfo {
        let b = &self.binary;
        PythonInfo {
            version: b.version.to_string(),
            build: b.build,
            free_threaded: b.free_threaded,
            gil: gil.unwrap_or(GilMode::Enabled).name().to_string(),
            binary: b.path.display().to_string(),
        }
    }
}

/// Finds the Python runtime in `process` and picks the layout for its version.
pub fn attach(process: &Process, mem: &impl RemoteMemory) -> Result<Runtime> {
    let pid = process.pid;
    let (elf, build) = find_python_binary(process)?;
    let version = detect_version(&elf, mem)
        .map_err(|e| map_mem(pid, e))?
        .ok_or_else(|| Error::NotPython {
            pid,
            why: format!("no CPython version found in {}", elf.path.display()),
        })?;
    if !version.is_supported() {
        return Err(Error::UnsupportedVersion {
            version: version.to_string(),
            supported: SUPPORTED,
        }
        .into());
    }
    let address = runtime_address(&elf).ok_or_else(|| Error::NotPython {
        pid,
        why: format!("{} has no _PyRuntime symbol", elf.path.display()),
    })?;
    let layout = read_layout(version, address, mem).map_err(|e| map_mem_any(pid, e))?;
    let binary = PythonBinary {
        version: layout.version,
        build,
        free_threaded: layout.free_threaded,
        path: elf.path.clone(),
    };
    Ok(Runtime {
        pid,
        binary,
        layout,
        address,
        code_type: elf.symbol("PyCode_Type"),
    })
}

/// libpython if one is mapped (shared build), else the executable (static build).
fn find_python_binary(process: &Process) -> Result<(ElfSymbols, Build)> {
    let pid = process.pid;
    let libpython = process
        .maps
        .iter()
        .map(|m| m.path.as_path())
        .find(|p| file_name(p).starts_with("libpython"));
    if let Some(path) = libpython {
        let elf = ElfSymbols::load(process, path)
            .with_context(|| format!("loading {}", path.display()))?;
        return Ok((elf, Build::Shared));
    }
    let elf = ElfSymbols::load(process, &process.exe).map_err(|e| Error::NotPython {
        pid,
        why: format!("cannot read its executable {}: {e}", process.exe.display()),
    })?;
    let looks_like_python =
        runtime_address(&elf).is_some() || file_name(&process.exe).starts_with("python");
    if !looks_like_python {
        let why = format!(
            "{} has no Python runtime and no libpython is loaded",
            process.exe.display()
        );
        return Err(Error::NotPython { pid, why }.into());
    }
    Ok((elf, Build::Static))
}

fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

fn runtime_address(elf: &ElfSymbols) -> Option<u64> {
    elf.symbol("_PyRuntime")
        .or_else(|| elf.section(".PyRuntime").map(|(addr, _)| addr))
}

/// `Py_Version` (3.11+), else the `PY_VERSION` string in .rodata, else the file name.
fn detect_version(elf: &ElfSymbols, mem: &impl RemoteMemory) -> Result<Option<Version>, MemError> {
    if let Some(addr) = elf.symbol("Py_Version") {
        return Ok(Some(Version::from_hex(u64::from(mem.read_u32(addr)?))));
    }
    let minor = minor_from_file_name(file_name(&elf.path));
    let from_rodata = find_version_string(&elf.rodata, minor);
    Ok(from_rodata.or_else(|| minor.map(|m| Version::new(3, m, 0))))
}

fn read_layout(version: Version, runtime: u64, mem: &impl RemoteMemory) -> Result<Layout> {
    if let Some(layout) = tables::table(version) {
        return Ok(layout);
    }
    let bytes = mem.read_vec(runtime, DEBUG_OFFSETS_READ_SIZE)?;
    layout_from_debug_offsets(&bytes).context("reading _Py_DebugOffsets")
}

fn map_mem(pid: i32, e: MemError) -> anyhow::Error {
    match e {
        MemError::PermissionDenied => Error::PermissionDenied { pid }.into(),
        MemError::ProcessGone => Error::ProcessExited { pid }.into(),
        MemError::Fault { .. } => anyhow::Error::new(e),
    }
}

fn map_mem_any(pid: i32, e: anyhow::Error) -> anyhow::Error {
    match e.downcast_ref::<MemError>() {
        Some(mem_err) => map_mem(pid, *mem_err),
        None => e,
    }
}
