//! Thread names, as `threading` knows them: `sys.modules["threading"]._active` maps
//! `threading.get_ident()` (the `pthread_t`, also in each thread state) to the `Thread`,
//! whose `_name` is the name the program gave it.

use super::attach::Runtime;
use super::dict::{
    TPFLAGS_UNICODE_SUBCLASS, dict_get_str, instance_attr, read_dict, read_u64_int, skip_fault,
    type_flags,
};
use super::strings::{read_c_string, read_unicode};
use crate::mem::{MemError, MemoryExt, RemoteMemory};
use std::collections::HashMap;

/// More threads than this in `_active` are not named.
const MAX_NAMED_THREADS: usize = 8192;

/// `ident -> name` for every thread in the `threading._active` of the interpreter at
/// `interp`. Empty when `threading` is not imported; entries that cannot be read (a thread
/// starting or ending mid-read) are left out.
pub fn read_thread_names(
    mem: &impl RemoteMemory,
    runtime: &Runtime,
    interp: u64,
) -> Result<HashMap<u64, String>, MemError> {
    let layout = &runtime.layout;
    let ol = &layout.object;
    let mut names = HashMap::new();
    let modules_at = interp
        .checked_add(layout.interp.modules)
        .ok_or(MemError::Fault { addr: interp })?;
    let modules = mem.read_u64(modules_at)?;
    if modules == 0 {
        return Ok(names);
    }
    let Some(threading) = dict_get_str(mem, layout, modules, "threading")? else {
        return Ok(names);
    };
    // Anything may sit in sys.modules; only a real module has `md_dict` where we look.
    let ty = mem.read_u64(threading.wrapping_add(ol.ob_type))?;
    let tp_name = mem.read_u64(ty.wrapping_add(ol.tp_name))?;
    if read_c_string(mem, tp_name, 16)? != "module" {
        return Ok(names);
    }
    let md_dict = mem.read_u64(threading.wrapping_add(ol.module_dict))?;
    if md_dict == 0 {
        return Ok(names);
    }
    let Some(active) = dict_get_str(mem, layout, md_dict, "_active")? else {
        return Ok(names);
    };
    for (key, thread) in read_dict(mem, layout, active)?
        .into_iter()
        .take(MAX_NAMED_THREADS)
    {
        let Some(Some(ident)) = skip_fault(read_u64_int(mem, ol, key))? else {
            continue;
        };
        let Some(Some(name)) = skip_fault(instance_attr(mem, layout, thread, "_name"))? else {
            continue;
        };
        let is_str = skip_fault(type_flags(mem, ol, name))?
            .is_some_and(|flags| flags & TPFLAGS_UNICODE_SUBCLASS != 0);
        if !is_str {
            continue;
        }
        if let Some(name) = skip_fault(read_unicode(mem, ol, name))? {
            names.insert(ident, name);
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::super::attach::{Build, PythonBinary};
    use super::super::dict::fake::{Fake, layout};
    use super::*;
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

    /// An interpreter whose `sys.modules["threading"]._active` is `threads`.
    fn interpreter(f: &mut Fake, threads: &[(u64, u64)]) -> u64 {
        let thread_type = f.new_type("Thread", 0, None);
        f.mem
            .write_u64(thread_type + f.layout.object.tp_dictoffset, 16);
        let mut active = Vec::new();
        for &(ident, name) in threads {
            let attrs = f.str_dict(&[("_target", 0x1234), ("_name", name)]);
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
    fn names_threads_by_ident() {
        for minor in [8, 10, 12] {
            let mut f = Fake::new(layout(minor));
            let (main, worker) = (f.str("MainThread"), f.str("worker-1"));
            let not_a_str = f.int(5);
            let threads = [
                (0x7f00_dead_beef, main),
                (0x7f00_0000_1000, worker),
                (3, not_a_str),
            ];
            let interp = interpreter(&mut f, &threads);
            let names = read_thread_names(&f.mem, &runtime(&f), interp).unwrap();
            let expected = HashMap::from([
                (0x7f00_dead_beef, "MainThread".to_string()),
                (0x7f00_0000_1000, "worker-1".to_string()),
            ]);
            assert_eq!(names, expected, "3.{minor}");
        }
    }

    #[test]
    fn no_threading_module_means_no_names() {
        let mut f = Fake::new(layout(12));
        let interp = interpreter(&mut f, &[]);
        let rt = runtime(&f);
        assert_eq!(read_thread_names(&f.mem, &rt, interp), Ok(HashMap::new()));
        let modules = f.str_dict(&[("sys", 0x1234)]);
        f.mem.write_u64(interp + f.layout.interp.modules, modules);
        assert_eq!(read_thread_names(&f.mem, &rt, interp), Ok(HashMap::new()));
        f.mem.write_u64(interp + f.layout.interp.modules, 0);
        assert_eq!(read_thread_names(&f.mem, &rt, interp), Ok(HashMap::new()));
        assert!(read_thread_names(&f.mem, &rt, 0x7000_0000).is_err());
    }
}
