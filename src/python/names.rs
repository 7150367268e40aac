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
