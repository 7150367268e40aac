//! Thread names, as `threading` knows them: `sys.modules["threading"]._active` maps
//! `threading.get_ident()` (the `pthread_t`, also in each thread state) to the `Thread`,
//! whose `_name` is the name the program gave it and whose `_native_id` (3.8+) is its kernel
//! thread id.
//!
//! Names are keyed by the native id, not the ident: an ident is the address of glibc's
//! `struct pthread`, which glibc reuses for the next thread as soon as one ends, so under
//! thread churn one ident stands for many threads within milliseconds. Kernel thread ids are
//! not reused until the pid space wraps.

use super::attach::Runtime;
use super::dict::{
    KeyIndex, TPFLAGS_DICT_SUBCLASS, TPFLAGS_UNICODE_SUBCLASS, dict_get_str_indexed,
    instance_attr_indexed, read_dict, read_u64_int, skip_fault, type_flags,
};
use super::strings::{read_c_string, read_unicode};
use crate::mem::{MemError, MemoryExt, RemoteMemory};
use rustc_hash::{FxHashMap, FxHashSet};

/// More threads than this in `_active` are not named.
const MAX_NAMED_THREADS: usize = 8192;

/// One entry of `threading._active`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadName {
    /// `threading.get_ident()`, the key of `_active`.
    pub ident: u64,
    /// `Thread._native_id`: the kernel thread id (None while it is not set yet).
    pub native_id: Option<i32>,
    pub name: String,
}

/// Every thread in the `threading._active` of the interpreter at `interp`. Empty when
/// `threading` is not imported; entries that cannot be read (a thread starting or ending
/// mid-read) are left out.
pub fn read_thread_names(
    mem: &impl RemoteMemory,
    runtime: &Runtime,
    interp: u64,
) -> Result<Vec<ThreadName>, MemError> {
    NameReader::default().read(mem, runtime, interp)
}

/// Reads `threading._active` again and again at little cost: the dict's address is kept per
/// interpreter (`_active` is created once, when `threading` is imported, and only mutated),
/// and where `_name` and `_native_id` sit among a `Thread`'s attributes is kept in a
/// [`KeyIndex`]. Finding them from scratch means reading every key of `sys.modules` and of
/// the module's globals: milliseconds, too slow for a sample.
#[derive(Debug, Default)]
pub struct NameReader {
    active: FxHashMap<u64, u64>,
    index: KeyIndex,
}

impl NameReader {
    pub fn read(
        &mut self,
        mem: &impl RemoteMemory,
        runtime: &Runtime,
        interp: u64,
    ) -> Result<Vec<ThreadName>, MemError> {
        let mut names = Vec::new();
        for (key, thread) in self.entries(mem, runtime, interp)? {
            if let Some(name) = self.thread(mem, runtime, key, thread)? {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// The `(ident, Thread)` object pairs of `_active`: a few reads.
    pub fn entries(
        &mut self,
        mem: &impl RemoteMemory,
        runtime: &Runtime,
        interp: u64,
    ) -> Result<Vec<(u64, u64)>, MemError> {
        let layout = &runtime.layout;
        let cached = self.active.get(&interp).copied().filter(|&dict| {
            type_flags(mem, &layout.object, dict).is_ok_and(|f| f & TPFLAGS_DICT_SUBCLASS != 0)
        });
        let active = match cached {
            Some(dict) => dict,
            None => match self.find_active(mem, runtime, interp)? {
                Some(dict) => {
                    self.active.insert(interp, dict);
                    dict
                }
                None => {
                    self.active.remove(&interp);
                    return Ok(Vec::new());
                }
            },
        };
        let mut entries = read_dict(mem, layout, active)?;
        entries.truncate(MAX_NAMED_THREADS);
        Ok(entries)
    }

    /// The name and native id of one `Thread` of `_active` (`key` is its ident object);
    /// `None` if it cannot be read (a thread ending while it is read).
    pub fn thread(
        &mut self,
        mem: &impl RemoteMemory,
        runtime: &Runtime,
        key: u64,
        thread: u64,
    ) -> Result<Option<ThreadName>, MemError> {
        let layout = &runtime.layout;
        let ol = &layout.object;
        let Some(Some(ident)) = skip_fault(read_u64_int(mem, ol, key))? else {
            return Ok(None);
        };
        let mut attr = |name| {
            skip_fault(instance_attr_indexed(
                mem,
                layout,
                thread,
                name,
                &mut self.index,
            ))
        };
        let Some(Some(name)) = attr("_name")? else {
            return Ok(None);
        };
        let native_id = match attr("_native_id")? {
            Some(Some(id)) => skip_fault(read_u64_int(mem, ol, id))?
                .flatten()
                .and_then(|id| i32::try_from(id).ok())
                .filter(|&id| id > 0),
            _ => None,
        };
        let is_str = skip_fault(type_flags(mem, ol, name))?
            .is_some_and(|flags| flags & TPFLAGS_UNICODE_SUBCLASS != 0);
        if !is_str {
            return Ok(None);
        }
        let Some(name) = skip_fault(read_unicode(mem, ol, name))? else {
            return Ok(None);
        };
        Ok(Some(ThreadName {
            ident,
            native_id,
            name,
        }))
    }

    /// `sys.modules["threading"]._active`, if `threading` is imported.
    fn find_active(
        &mut self,
        mem: &impl RemoteMemory,
        runtime: &Runtime,
        interp: u64,
    ) -> Result<Option<u64>, MemError> {
        let layout = &runtime.layout;
        let ol = &layout.object;
        let modules_at = interp
            .checked_add(layout.interp.modules)
            .ok_or(MemError::Fault { addr: interp })?;
        let modules = mem.read_u64(modules_at)?;
        if modules == 0 {
            return Ok(None);
        }
        let Some(threading) =
            dict_get_str_indexed(mem, layout, modules, "threading", &mut self.index)?
        else {
            return Ok(None);
        };
        // Anything may sit in sys.modules; only a real module has `md_dict` where we look.
        let ty = mem.read_u64(threading.wrapping_add(ol.ob_type))?;
        let tp_name = mem.read_u64(ty.wrapping_add(ol.tp_name))?;
        if read_c_string(mem, tp_name, 16)? != "module" {
            return Ok(None);
        }
        let md_dict = mem.read_u64(threading.wrapping_add(ol.module_dict))?;
        if md_dict == 0 {
            return Ok(None);
        }
        dict_get_str_indexed(mem, layout, md_dict, "_active", &mut self.index)
    }
}

/// How many reads of `_active` a thread that stays unnamed may cause (a thread state exists
/// a moment before `threading` registers its thread; threads started by C code never are).
const NAME_ATTEMPTS: u8 = 3;

/// A thread of the target as the latest walk saw it.
#[derive(Debug, Clone, Copy)]
pub struct LiveThread {
    pub tid: i32,
    pub tstate: u64,
    pub ident: u64,
    /// Address of its `PyInterpreterState`.
    pub interpreter: u64,
}

#[derive(Debug, Clone)]
struct KnownName {
    name: String,
    /// The thread state the name was read for: another one on that tid is another thread.
    tstate: u64,
    /// Its `Thread` object, not read again while the thread lives.
    object: u64,
}

/// A `Thread` of `_active` read while it was registered there.
#[derive(Debug, Clone)]
struct Registered {
    interpreter: u64,
    object: u64,
    entry: ThreadName,
}

/// The names of a target's threads by kernel tid, kept right as threads come and go.
///
/// A thread is named in the sample it first appears in: a thread of a thread-per-request
/// server may live for one sample only, and its ident (a reused pthread address) says
/// nothing once it has ended. So `_active` is read after a sample that brings an unnamed
/// thread and, while threads keep coming (the latest sample brought one), right before the
/// walk as well ([`ThreadNames::read_ahead`]): together they name every thread that lived
/// across either read. Only `Thread`s still registered after they were read count: one that
/// left `_active` may be freed and its memory reused while it is read.
#[derive(Debug, Default)]
pub struct ThreadNames {
    known: FxHashMap<i32, KnownName>,
    /// Read by the latest read ahead, by native id.
    ahead: FxHashMap<i32, Registered>,
    attempts: FxHashMap<i32, u8>,
    /// The interpreters of the latest sample, whether it brought a thread to name, and the
    /// `Thread` objects of its named threads (not read again).
    interpreters: Vec<u64>,
    wanted: bool,
    named_objects: FxHashSet<u64>,
    reader: NameReader,
}

impl ThreadNames {
    pub fn get(&self, tid: i32) -> Option<&str> {
        self.known.get(&tid).map(|k| k.name.as_str())
    }

    /// Before a walk: reads `_active` now if the latest sample brought a thread to name.
    pub fn read_ahead(&mut self, mem: &impl RemoteMemory, runtime: &Runtime) {
        self.ahead.clear();
        if !self.wanted {
            return;
        }
        let interpreters = self.interpreters.clone();
        let skip = std::mem::take(&mut self.named_objects);
        for found in self.read_registered(mem, runtime, &interpreters, &skip) {
            if let Some(tid) = found.entry.native_id {
                self.ahead.insert(tid, found);
            }
        }
        self.named_objects = skip;
    }

    /// After a sample of `threads`: forgets names of tids whose thread changed, and names
    /// new threads from the read ahead, else from `_active` now.
    pub fn update(&mut self, mem: &impl RemoteMemory, runtime: &Runtime, threads: &[LiveThread]) {
        self.forget_changed(threads);
        let arrived = self.unnamed(threads);
        let ahead: Vec<Registered> = std::mem::take(&mut self.ahead).into_values().collect();
        self.name_from(threads, ahead);
        if self.unnamed(threads) {
            self.read(mem, runtime, threads);
        }
        self.wanted = arrived;
        self.interpreters.clear();
        self.interpreters
            .extend(threads.iter().map(|t| t.interpreter));
        self.interpreters.sort_unstable();
        self.interpreters.dedup();
        self.named_objects.clear();
        let known = &self.known;
        self.named_objects.extend(
            threads
                .iter()
                .filter_map(|t| known.get(&t.tid).map(|k| k.object)),
        );
    }

    /// Forgets the name of a tid that now has another thread state: the kernel reused the
    /// tid for a new thread, which has a name of its own.
    pub fn forget_changed(&mut self, threads: &[LiveThread]) {
        for t in threads {
            if self.known.get(&t.tid).is_some_and(|k| k.tstate != t.tstate) {
                self.known.remove(&t.tid);
                self.attempts.remove(&t.tid);
            }
        }
    }

    /// Whether some thread is unnamed and may still be named by reading `_active` again.
    fn unnamed(&self, threads: &[LiveThread]) -> bool {
        threads.iter().any(|t| {
            !self.known.contains_key(&t.tid)
                && self.attempts.get(&t.tid).copied().unwrap_or(0) < NAME_ATTEMPTS
        })
    }

    /// Reads `threading._active` of every interpreter of `threads` now and names them.
    pub fn read(&mut self, mem: &impl RemoteMemory, runtime: &Runtime, threads: &[LiveThread]) {
        let mut interpreters: Vec<u64> = threads.iter().map(|t| t.interpreter).collect();
        interpreters.sort_unstable();
        interpreters.dedup();
        for t in threads.iter().filter(|t| !self.known.contains_key(&t.tid)) {
            *self.attempts.entry(t.tid).or_default() += 1;
        }
        let skip: FxHashSet<u64> = threads
            .iter()
            .filter_map(|t| self.known.get(&t.tid).map(|k| k.object))
            .collect();
        let found = self.read_registered(mem, runtime, &interpreters, &skip);
        self.name_from(threads, found);
    }

    /// The `Thread`s of `_active` (but those in `skip`), each read while registered: its
    /// `(ident, object)` pair is listed again after the reads.
    fn read_registered(
        &mut self,
        mem: &impl RemoteMemory,
        runtime: &Runtime,
        interpreters: &[u64],
        skip: &FxHashSet<u64>,
    ) -> Vec<Registered> {
        let mut found = Vec::new();
        for &interp in interpreters {
            let Ok(listed) = self.reader.entries(mem, runtime, interp) else {
                continue;
            };
            let mut read = Vec::new();
            for &(key, object) in listed.iter().filter(|(_, o)| !skip.contains(o)) {
                if let Ok(Some(entry)) = self.reader.thread(mem, runtime, key, object) {
                    read.push((key, object, entry));
                }
            }
            if read.is_empty() {
                continue;
            }
            let again = self
                .reader
                .entries(mem, runtime, interp)
                .unwrap_or_default();
            for (key, object, entry) in read {
                // Read twice, registered before and after: a `Thread` being freed or built
                // at that address while it is read does not pass for another.
                let twice = self
                    .reader
                    .thread(mem, runtime, key, object)
                    .is_ok_and(|second| second.as_ref() == Some(&entry));
                if twice && again.contains(&(key, object)) {
                    found.push(Registered {
                        interpreter: interp,
                        object,
                        entry,
                    });
                }
            }
        }
        found
    }

    /// Names each unnamed thread whose `Thread._native_id` is its tid among `found` (by
    /// ident, when the native id is not set); ident and interpreter must agree too.
    fn name_from(&mut self, threads: &[LiveThread], found: Vec<Registered>) {
        let mut by_tid: FxHashMap<i32, &LiveThread> = FxHashMap::default();
        let mut by_ident: FxHashMap<u64, &LiveThread> = FxHashMap::default();
        for t in threads.iter().filter(|t| !self.known.contains_key(&t.tid)) {
            by_tid.insert(t.tid, t);
            by_ident.insert(t.ident, t);
        }
        for f in found {
            let thread = match f.entry.native_id {
                Some(tid) => by_tid.get(&tid),
                None => by_ident.get(&f.entry.ident),
            };
            let Some(&&thread) =
                thread.filter(|t| t.interpreter == f.interpreter && t.ident == f.entry.ident)
            else {
                continue;
            };
            by_tid.remove(&thread.tid);
            self.attempts.remove(&thread.tid);
            let name = KnownName {
                name: f.entry.name,
                tstate: thread.tstate,
                object: f.object,
            };
            self.known.insert(thread.tid, name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::attach::PythonBinary;
    use super::super::dict::fake::{Fake, layout};
    use super::*;
    use crate::model::python::Build;
    use std::collections::HashMap;
    use std::path::PathBuf;

    fn runtime(f: &Fake) -> Runtime {
        let layout = f.layout.clone();
        let binary = PythonBinary {
            version: layout.version,
            build: Build::Shared,
            free_threaded: false,
            path: PathBuf::from("libpython3.so"),
        };
        Runtime {
            pid: 1,
            binary,
            layout,
            address: 0,
            code_type: None,
        }
    }

    /// An interpreter whose `sys.modules["threading"]._active` is `threads`: (ident, name,
    /// native id).
    fn interpreter(f: &mut Fake, threads: &[(u64, u64, u64)]) -> u64 {
        let thread_type = f.new_type("Thread", 0, None);
        f.mem
            .write_u64(thread_type + f.layout.object.tp_dictoffset, 16);
        let mut active = Vec::new();
        for &(ident, name, native_id) in threads {
            let attrs = f.str_dict(&[
                ("_target", 0x1234),
                ("_name", name),
                ("_native_id", native_id),
            ]);
            let thread = f.object(thread_type, 24);
            f.mem.write_u64(thread + 16, attrs);
            active.push((f.int(ident), thread));
        }
        let keys = f.keys(&active, true, false);
        let active = f.dict(keys, 0);
        let md_dict = f.str_dict(&[("__name__", 0x1234), ("_active", active)]);
        let module_type = f.new_type("module", 0, None);
        let threading = f.object(module_type, 64);
        f.mem
            .write_u64(threading + f.layout.object.module_dict, md_dict);
        let sys = f.object(module_type, 64);
        let modules = f.str_dict(&[("sys", sys), ("threading", threading)]);
        let interp = f.alloc(4096);
        f.mem.write_u64(interp + f.layout.interp.modules, modules);
        interp
    }

    #[test]
    fn names_threads_with_their_native_ids() {
        for minor in [8, 10, 12] {
            let mut f = Fake::new(layout(minor));
            let (main, worker) = (f.str("MainThread"), f.str("worker-1"));
            let not_a_str = f.int(5);
            let (main_tid, worker_tid) = (f.int(4242), f.int(4250));
            let none = f.str("None");
            let threads = [
                (0x7f00_dead_beef, main, main_tid),
                (0x7f00_0000_1000, worker, worker_tid),
                (0x7f00_0000_2000, worker, none),
                (3, not_a_str, main_tid),
            ];
            let interp = interpreter(&mut f, &threads);
            let names: HashMap<u64, (Option<i32>, String)> =
                read_thread_names(&f.mem, &runtime(&f), interp)
                    .unwrap()
                    .into_iter()
                    .map(|t| (t.ident, (t.native_id, t.name)))
                    .collect();
            let expected = HashMap::from([
                (0x7f00_dead_beef, (Some(4242), "MainThread".to_string())),
                (0x7f00_0000_1000, (Some(4250), "worker-1".to_string())),
                (0x7f00_0000_2000, (None, "worker-1".to_string())),
            ]);
            assert_eq!(names, expected, "3.{minor}");
        }
    }

    #[test]
    fn no_threading_module_means_no_names() {
        let mut f = Fake::new(layout(12));
        let interp = interpreter(&mut f, &[]);
        let rt = runtime(&f);
        assert_eq!(read_thread_names(&f.mem, &rt, interp), Ok(Vec::new()));
        let modules = f.str_dict(&[("sys", 0x1234)]);
        f.mem.write_u64(interp + f.layout.interp.modules, modules);
        assert_eq!(read_thread_names(&f.mem, &rt, interp), Ok(Vec::new()));
        f.mem.write_u64(interp + f.layout.interp.modules, 0);
        assert_eq!(read_thread_names(&f.mem, &rt, interp), Ok(Vec::new()));
        assert!(read_thread_names(&f.mem, &rt, 0x7000_0000).is_err());
    }
}
