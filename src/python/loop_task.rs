//! The asyncio task an event loop is running, and its name.
//!
//! Where the running task is kept:
//! - 3.8 to 3.13: `_asyncio`'s `current_tasks` dict, `{loop: task}`, which `asyncio.tasks`
//!   imports as `_current_tasks` (a module-level static before 3.12, module state after; the
//!   same dict object either way). It is found through `sys.modules` and keyed by the loop
//!   object: the `self` of the thread's `_run_once` frame.
//! - 3.14 and later: the thread state (`_PyThreadStateImpl.asyncio_running_task`), which the
//!   `_asyncio` module describes in its `_Py_AsyncioModuleDebugOffsets`, an ELF section
//!   `.AsyncioDebug` written for out-of-process tools (CPython's own `profiling.sampling`
//!   reads it). gilscope reads that section from the `_asyncio` extension (or the executable
//!   that has it built in) and falls back to offsets compiled in here.
//!
//! The name: the C `Task`'s `task_name` field, a `str` (set by the program, or "Task-N"
//! before 3.12) or an `int` N, rendered "Task-N" as `Task.get_name()` does (3.12+ make the
//! name lazily), also in subclasses of the C `Task`. A pure-Python task
//! (`asyncio.tasks._PyTask`) keeps it in its `_name` attribute. Offsets per version are checked against live interpreters and
//! their headers by tests/it/event_loop_offsets.rs.

use super::attach::Runtime;
use super::dict::{
    KeyIndex, TPFLAGS_LONG_SUBCLASS, TPFLAGS_UNICODE_SUBCLASS, dict_get_str_indexed, instance_attr,
    read_dict_into, read_u64_int, skip_fault, type_flags,
};
use super::layout::Layout;
use super::strings::{read_c_string, read_unicode_into};
use super::version::Version;
use crate::mem::{MemError, MemoryExt, RemoteMemory};
use crate::process::ElfSymbols;
use crate::process::Process;
use rustc_hash::{FxHashMap, FxHashSet};
use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;

/// Where the running task and its name are, for one CPython version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskOffsets {
    /// `TaskObj.task_name` (Modules/_asynciomodule.c).
    pub task_name: u64,
    /// 3.14+: `_PyThreadStateImpl.asyncio_running_task`; `None` where the running task is
    /// kept in `_current_tasks`.
    pub running_task: Option<u64>,
    /// 3.14+: `_PyThreadStateImpl.asyncio_running_loop`.
    pub running_loop: Option<u64>,
    /// 3.8-3.12: `PyThreadState.dict`, where `_asyncio` keeps the running loop (under
    /// `__asyncio_running_event_loop__`: a `_RunningLoopHolder` before 3.12, the loop in
    /// 3.12). 3.13 moved it to `_PyThreadStateImpl`, at an offset that changed between
    /// 3.13 patch releases (304 in 3.13.0, 312 in 3.13.18): not read.
    pub thread_dict: Option<u64>,
}

impl TaskOffsets {
    /// Compiled-in offsets; `None` for builds not known here (free-threaded, after 3.15).
    pub fn for_version(version: Version, free_threaded: bool) -> Option<TaskOffsets> {
        if free_threaded || version.major != 3 {
            return None;
        }
        let (task_name, running_task, running_loop, thread_dict) = match version.minor {
            8 => (120, None, None, Some(152)),
            9 => (160, None, None, Some(152)),
            10 => (168, None, None, Some(152)),
            11 => (144, None, None, Some(128)),
            12 => (144, None, None, Some(112)),
            13 => (128, None, None, None),
            14 => (136, Some(872), Some(864), None),
            15 => (136, Some(1032), Some(1024), None),
            _ => return None,
        };
        Some(TaskOffsets {
            task_name,
            running_task,
            running_loop,
            thread_dict,
        })
    }
}

/// `_Py_AsyncioModuleDebugOffsets` (3.14+), the fields gilscope uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsyncioDebugOffsets {
    pub task_size: u64,
    pub task_name: u64,
    pub thread_state_size: u64,
    pub running_loop: u64,
    pub running_task: u64,
}

/// Bytes of `_Py_AsyncioModuleDebugOffsets` in 3.14 and 3.15: the task object's 7 words,
/// the interpreter state's 2, the thread state's 4.
pub const ASYNCIO_DEBUG_SIZE: usize = 13 * 8;

impl AsyncioDebugOffsets {
    /// Parses the section's bytes; `None` if they do not look like one.
    pub fn parse(bytes: &[u8]) -> Option<AsyncioDebugOffsets> {
        let word = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(
                bytes.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        let o = AsyncioDebugOffsets {
            task_size: word(0)?,
            task_name: word(1)?,
            thread_state_size: word(9)?,
            running_loop: word(10)?,
            running_task: word(11)?,
        };
        let sane = (64..4096).contains(&o.task_size)
            && o.task_name < o.task_size
            && (256..16384).contains(&o.thread_state_size)
            && o.running_task < o.thread_state_size
            && o.running_loop < o.thread_state_size;
        sane.then_some(o)
    }
}

/// How many loop samples go by between two looks for the `.AsyncioDebug` section while
/// `_asyncio` is not loaded yet.
const DEBUG_SECTION_RETRY: u32 = 500;
/// Looks for the section before settling for the compiled-in offsets.
const DEBUG_SECTION_LOOKS: u32 = 20;
/// `PyTypeObject.tp_base`, the same from 3.8 to 3.15 (checked against the headers).
pub const TP_BASE: u64 = 256;
/// Types looked at from an object's type up through its bases.
const MAX_BASES: usize = 6;
/// `_RunningLoopHolder.rl_loop` (3.8-3.11): right after the object header.
const RUNNING_LOOP_HOLDER_LOOP: u64 = 16;
/// Characters of a task name kept.
const MAX_NAME: usize = 200;

/// Reads the running task's name; keeps what it found (dicts, types, offsets).
#[derive(Debug)]
pub struct TaskReader {
    pid: i32,
    python_path: std::path::PathBuf,
    layout: Layout,
    offsets: Option<TaskOffsets>,
    /// 3.14+: the exported offsets, once read; how many looks are left, and a countdown.
    exported: Option<AsyncioDebugOffsets>,
    looks_left: u32,
    countdown: u32,
    /// `_current_tasks` per interpreter (3.8-3.13).
    current_tasks: FxHashMap<u64, u64>,
    index: KeyIndex,
    /// Type address -> is it the C `Task` (else: read `_name`).
    c_task_types: FxHashMap<u64, bool>,
    /// The task names read so far, each shared by every sample that reads it, and the
    /// buffers a name (and the dict that leads to it) is read through: a name seen before
    /// costs no allocation.
    names: FxHashSet<Arc<str>>,
    raw: Vec<u8>,
    text: String,
    /// The entries of `_current_tasks`, read through `raw`.
    entries: Vec<(u64, u64)>,
}

/// Task names kept at most; past this the set starts over (a server may name each
/// request's task apart).
const MAX_NAMES_KEPT: usize = 4096;

impl TaskReader {
    pub fn new(runtime: &Runtime) -> Self {
        let layout = &runtime.layout;
        let offsets = TaskOffsets::for_version(layout.version, layout.free_threaded);
        let exported_wanted = offsets.is_some_and(|o| o.running_task.is_some());
        TaskReader {
            pid: runtime.pid,
            python_path: runtime.binary.path.clone(),
            layout: layout.clone(),
            offsets,
            exported: None,
            looks_left: if exported_wanted {
                DEBUG_SECTION_LOOKS
            } else {
                0
            },
            countdown: 0,
            current_tasks: FxHashMap::default(),
            index: KeyIndex::default(),
            c_task_types: FxHashMap::default(),
            names: FxHashSet::default(),
            raw: Vec::new(),
            text: String::new(),
            entries: Vec::new(),
        }
    }

    /// The name of the task the loop `event_loop` (an object, or 0 if unknown) runs on the
    /// thread whose state is at `tstate`, of the interpreter at `interp`; `None` when it runs
    /// no task (a plain callback) or the name cannot be read.
    pub fn running_task_name(
        &mut self,
        mem: &impl RemoteMemory,
        interp: u64,
        tstate: u64,
        event_loop: u64,
    ) -> Option<Arc<str>> {
        let task = self.running_task(mem, interp, tstate, event_loop).ok()??;
        self.task_name(mem, task).ok()?
    }

    fn running_task(
        &mut self,
        mem: &impl RemoteMemory,
        interp: u64,
        tstate: u64,
        event_loop: u64,
    ) -> Result<Option<u64>, MemError> {
        let Some(offsets) = self.offsets else {
            return Ok(None);
        };
        if offsets.running_task.is_some() {
            self.look_for_exported_offsets(mem);
            let (running_task, running_loop) = match self.exported {
                Some(e) => (e.running_task, Some(e.running_loop)),
                None => (offsets.running_task.unwrap_or_default(), None),
            };
            // The thread's running loop must be the loop seen on its stack.
            if let Some(at) = running_loop
                && event_loop != 0
                && mem.read_u64(tstate.wrapping_add(at))? != event_loop
            {
                return Ok(None);
            }
            let task = mem.read_u64(tstate.wrapping_add(running_task))?;
            return Ok((task != 0).then_some(task));
        }
        if event_loop == 0 {
            return Ok(None);
        }
        let Some(dict) = self.current_tasks(mem, interp)? else {
            return Ok(None);
        };
        if let Err(e) = read_dict_into(mem, &self.layout, dict, &mut self.raw, &mut self.entries) {
            self.current_tasks.remove(&interp);
            return Err(e);
        }
        Ok(self
            .entries
            .iter()
            .find(|&&(key, _)| key == event_loop)
            .map(|&(_, task)| task))
    }

    /// `sys.modules["asyncio.tasks"]._current_tasks`, kept per interpreter once found.
    fn current_tasks(
        &mut self,
        mem: &impl RemoteMemory,
        interp: u64,
    ) -> Result<Option<u64>, MemError> {
        if let Some(&dict) = self.current_tasks.get(&interp) {
            return Ok(Some(dict));
        }
        let layout = &self.layout;
        let ol = &layout.object;
        let modules = mem.read_u64(interp.wrapping_add(layout.interp.modules))?;
        if modules == 0 {
            return Ok(None);
        }
        let Some(module) =
            dict_get_str_indexed(mem, layout, modules, "asyncio.tasks", &mut self.index)?
        else {
            return Ok(None);
        };
        let ty = mem.read_u64(module.wrapping_add(ol.ob_type))?;
        let tp_name = mem.read_u64(ty.wrapping_add(ol.tp_name))?;
        if read_c_string(mem, tp_name, 16)? != "module" {
            return Ok(None);
        }
        let globals = mem.read_u64(module.wrapping_add(ol.module_dict))?;
        if globals == 0 {
            return Ok(None);
        }
        let found = dict_get_str_indexed(mem, layout, globals, "_current_tasks", &mut self.index)?;
        if let Some(dict) = found {
            self.current_tasks.insert(interp, dict);
        }
        Ok(found)
    }

    /// Reads `.AsyncioDebug` once `_asyncio` is loaded, looking again now and then until
    /// found or out of looks.
    fn look_for_exported_offsets(&mut self, mem: &impl RemoteMemory) {
        if self.exported.is_some() || self.looks_left == 0 {
            return;
        }
        if self.countdown > 0 {
            self.countdown -= 1;
            return;
        }
        self.looks_left -= 1;
        self.countdown = DEBUG_SECTION_RETRY;
        self.exported = find_asyncio_debug(self.pid, &self.python_path, mem);
        if self.exported.is_some() {
            self.looks_left = 0;
        }
    }

    /// The loop running on the thread whose state is at `tstate` (`asyncio.get_running_loop()`
    /// there), and the names of its type and bases; `None` if none runs or it cannot be read
    /// here.
    pub fn running_loop(
        &mut self,
        mem: &impl RemoteMemory,
        tstate: u64,
    ) -> Result<Option<(u64, Vec<String>)>, MemError> {
        let Some(offsets) = self.offsets else {
            return Ok(None);
        };
        let event_loop = if let Some(table) = offsets.running_loop {
            self.look_for_exported_offsets(mem);
            let at = self.exported.map_or(table, |e| e.running_loop);
            mem.read_u64(tstate.wrapping_add(at))?
        } else if let Some(at) = offsets.thread_dict {
            let dict = mem.read_u64(tstate.wrapping_add(at))?;
            if dict == 0 {
                return Ok(None);
            }
            let key = "__asyncio_running_event_loop__";
            let Some(value) = dict_get_str_indexed(mem, &self.layout, dict, key, &mut self.index)?
            else {
                return Ok(None);
            };
            if self.layout.version.minor < 12 {
                if !self.type_name(mem, value)?.ends_with("_RunningLoopHolder") {
                    return Ok(None);
                }
                mem.read_u64(value.wrapping_add(RUNNING_LOOP_HOLDER_LOOP))?
            } else {
                value
            }
        } else {
            return Ok(None);
        };
        if event_loop == 0 {
            return Ok(None);
        }
        let names = self.type_names(mem, event_loop)?;
        Ok(Some((event_loop, names)))
    }

    fn type_name(&self, mem: &impl RemoteMemory, object: u64) -> Result<String, MemError> {
        let ol = &self.layout.object;
        let ty = mem.read_u64(object.wrapping_add(ol.ob_type))?;
        let tp_name = mem.read_u64(ty.wrapping_add(ol.tp_name))?;
        read_c_string(mem, tp_name, 64)
    }

    /// The names of the object's type and its bases (`tp_base`, a few levels): a Python
    /// subclass of a C type is named by its class name alone ("Loop" for `uvloop.Loop`).
    pub fn type_names(
        &self,
        mem: &impl RemoteMemory,
        object: u64,
    ) -> Result<Vec<String>, MemError> {
        let ol = &self.layout.object;
        let mut ty = mem.read_u64(object.wrapping_add(ol.ob_type))?;
        let mut names = Vec::new();
        while ty != 0 && names.len() < MAX_BASES {
            let tp_name = mem.read_u64(ty.wrapping_add(ol.tp_name))?;
            names.push(read_c_string(mem, tp_name, 64)?);
            ty = mem.read_u64(ty.wrapping_add(TP_BASE))?;
        }
        Ok(names)
    }

    fn task_name(
        &mut self,
        mem: &impl RemoteMemory,
        task: u64,
    ) -> Result<Option<Arc<str>>, MemError> {
        let ol = &self.layout.object;
        let ty = mem.read_u64(task.wrapping_add(ol.ob_type))?;
        let is_c_task = match self.c_task_types.get(&ty) {
            Some(&known) => known,
            None => {
                let known = self
                    .type_names(mem, task)?
                    .iter()
                    .any(|n| n == "_asyncio.Task");
                self.c_task_types.insert(ty, known);
                known
            }
        };
        let name = if is_c_task {
            let at = match self.exported {
                Some(e) => e.task_name,
                None => self.offsets.map_or(0, |o| o.task_name),
            };
            mem.read_u64(task.wrapping_add(at))?
        } else {
            match skip_fault(instance_attr(mem, &self.layout, task, "_name"))? {
                Some(Some(name)) => name,
                _ => return Ok(None),
            }
        };
        if name == 0 {
            return Ok(None);
        }
        let flags = type_flags(mem, ol, name)?;
        if flags & TPFLAGS_UNICODE_SUBCLASS != 0 {
            read_unicode_into(mem, ol, name, &mut self.raw, &mut self.text)?;
            if let Some((cut, _)) = self.text.char_indices().nth(MAX_NAME) {
                self.text.truncate(cut);
            }
        } else if flags & TPFLAGS_LONG_SUBCLASS != 0 {
            let Some(n) = read_u64_int(mem, ol, name)? else {
                return Ok(None);
            };
            self.text.clear();
            // Writing to a String cannot fail.
            let _ = write!(self.text, "Task-{n}");
        } else {
            return Ok(None);
        }
        Ok(Some(self.interned_text()))
    }

    /// The name in `self.text`, shared with earlier reads of the same name.
    fn interned_text(&mut self) -> Arc<str> {
        if let Some(known) = self.names.get(self.text.as_str()) {
            return known.clone();
        }
        if self.names.len() >= MAX_NAMES_KEPT {
            self.names.clear();
        }
        let name: Arc<str> = Arc::from(self.text.as_str());
        self.names.insert(name.clone());
        name
    }
}

/// `_Py_AsyncioModuleDebugOffsets` from the `.AsyncioDebug` section of the `_asyncio`
/// extension mapped into `pid`, or of the Python binary (where `_asyncio` is built in).
pub fn find_asyncio_debug(
    pid: i32,
    python: &Path,
    mem: &impl RemoteMemory,
) -> Option<AsyncioDebugOffsets> {
    let process = Process::open(pid).ok()?;
    let extension = process
        .maps
        .iter()
        .find(|m| {
            m.path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("_asyncio.") && n.ends_with(".so"))
        })
        .map(|m| m.path.clone());
    let candidates = extension.into_iter().chain([python.to_path_buf()]);
    for path in candidates {
        let Ok(elf) = ElfSymbols::load(&process, &path) else {
            continue;
        };
        let Some((addr, size)) = elf.section(".AsyncioDebug") else {
            continue;
        };
        if (size as usize) < ASYNCIO_DEBUG_SIZE {
            continue;
        }
        let bytes = mem.read_vec(addr, ASYNCIO_DEBUG_SIZE).ok()?;
        return AsyncioDebugOffsets::parse(&bytes);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asyncio_debug_offsets_parse_as_3_15_writes_them() {
        // The words of Debian's 3.15.2 `.AsyncioDebug` section.
        let words: [u64; 13] = [
            168, 136, 96, 108, 109, 128, 152, 226240, 10856, 1104, 1024, 1032, 1048,
        ];
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let o = AsyncioDebugOffsets::parse(&bytes).unwrap();
        assert_eq!(o.task_name, 136);
        assert_eq!(o.running_task, 1032);
        assert_eq!(o.running_loop, 1024);
        let table = TaskOffsets::for_version(Version::new(3, 15, 0), false).unwrap();
        assert_eq!(Some(o.running_task), table.running_task);
        assert_eq!(o.task_name, table.task_name);
    }

    #[test]
    fn garbage_is_no_asyncio_debug_offsets() {
        assert_eq!(
            AsyncioDebugOffsets::parse(&[0xff; ASYNCIO_DEBUG_SIZE]),
            None
        );
        assert_eq!(AsyncioDebugOffsets::parse(&[0; 16]), None);
    }
}
