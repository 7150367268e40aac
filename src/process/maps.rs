//! A target process: existence and permission checks, its memory map, its threads.

use crate::error::Error;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// One line of /proc/PID/maps that is backed by a file.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Process {
    pub pid: i32,
    pub maps: Vec<Mapping>,
    /// The executable's path as the target sees it.
    pub exe: PathBuf,
}

impl Process {
    /// Opens a process by pid, turning the kernel's answers into the errors a user can act on.
    pub fn open(pid: i32) -> Result<Process> {
        if pid <= 0 {
            return Err(Error::NoSuchProcess { pid }.into());
        }
        let proc = procfs::process::Process::new(pid).map_err(|e| proc_error(pid, e))?;
        // A zombie has exited: no memory is left, only its parent's wait.
        if !is_alive(pid) {
            return Err(Error::NoSuchProcess { pid }.into());
        }
        let maps = proc
            .maps()
            .map_err(|e| proc_error(pid, e))
            .context("reading the memory map")?;
        let maps: Vec<Mapping> = maps.into_iter().filter_map(file_mapping).collect();
        if maps.is_empty() {
            let why = "it has no mapped files (a kernel thread?)".to_string();
            return Err(Error::NotPython { pid, why }.into());
        }
        let exe = proc.exe().map_err(|e| proc_error(pid, e))?;
        Ok(Process { pid, maps, exe })
    }

    /// A path in the target's own filesystem view, reachable from here (containers, deleted files).
    pub fn host_path(&self, path: &Path) -> PathBuf {
        let relative = path.strip_prefix("/").unwrap_or(path);
        PathBuf::from(format!("/proc/{}/root", self.pid)).join(relative)
    }

    /// Kernel thread ids of the process, in no particular order.
    pub fn thread_ids(&self) -> Result<Vec<i32>> {
        list_tids(self.pid)
    }

    pub fn is_alive(&self) -> bool {
        is_alive(self.pid)
    }
}

pub fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie has exited; only its parent's wait remains.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

pub fn list_tids(pid: i32) -> Result<Vec<i32>> {
    let proc = procfs::process::Process::new(pid).map_err(|e| proc_error(pid, e))?;
    let tasks = proc.tasks().map_err(|e| proc_error(pid, e))?;
    Ok(tasks.filter_map(|task| Some(task.ok()?.tid)).collect())
}

/// The CPUs some thread of `pid` may run on: the union of its threads' affinity masks.
pub fn allowed_cpus(pid: i32) -> Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for tid in list_tids(pid)? {
        // A thread gone since the listing has no mask to add.
        if let Ok(set) = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(tid)) {
            cpus.extend(cpus_in(&set));
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// The CPUs in an affinity mask.
pub fn cpus_in(set: &nix::sched::CpuSet) -> impl Iterator<Item = usize> + '_ {
    (0..nix::sched::CpuSet::count()).filter(|&cpu| set.is_set(cpu).unwrap_or(false))
}

fn proc_error(pid: i32, e: procfs::ProcError) -> anyhow::Error {
    match e {
        procfs::ProcError::NotFound(_) => Error::NoSuchProcess { pid }.into(),
        procfs::ProcError::PermissionDenied(_) => Error::PermissionDenied { pid }.into(),
        other => anyhow::Error::new(other),
    }
}

fn file_mapping(map: procfs::process::MemoryMap) -> Option<Mapping> {
    match map.pathname {
        procfs::process::MMapPath::Path(path) => Some(Mapping {
            start: map.address.0,
            end: map.address.1,
            offset: map.offset,
            path: strip_deleted(path),
        }),
        _ => None,
    }
}

fn strip_deleted(path: PathBuf) -> PathBuf {
    match path.to_str().and_then(|p| p.strip_suffix(" (deleted)")) {
        Some(p) => PathBuf::from(p),
        None => path,
    }
}

/// The program image a process runs, told apart by its auxiliary vector (/proc/PID/auxv):
/// exec() gives a process a new one (new random bytes and stack, new loader base) even when
/// it runs the same binary again. With address randomization off, the same binary exec'd
/// again gets the same vector, and the exec is not seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramImage {
    auxv: Vec<u8>,
}

impl ProgramImage {
    /// The image `pid` runs now; `None` if it is gone (or has no memory left: a zombie), or
    /// in the middle of an exec (the new vector is still zeros).
    pub fn of(pid: i32) -> Option<ProgramImage> {
        use std::io::Read;
        // One read of a buffer larger than any auxiliary vector (about 20 entries of 16
        // bytes): three syscalls, where `fs::read` makes five.
        let mut buf = [0u8; 2048];
        let n = std::fs::File::open(format!("/proc/{pid}/auxv"))
            .and_then(|mut f| f.read(&mut buf))
            .ok()?;
        let auxv = &buf[..n];
        auxv.iter().any(|&b| b != 0).then(|| ProgramImage {
            auxv: auxv.to_vec(),
        })
    }

    /// Whether `pid` is alive and runs another image than this one: it called exec().
    pub fn replaced_in(&self, pid: i32) -> bool {
        ProgramImage::of(pid).is_some_and(|now| now != *self)
    }
}

/// The path of the program `pid` runs, for messages ("another program" if unreadable).
pub fn program_path(pid: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "another program".to_string())
}
