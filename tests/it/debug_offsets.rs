//! `_Py_DebugOffsets` read from real CPython binaries (no process needed), turned into a
//! `Layout`, and checked field by field against `offsetof()`/`sizeof()` printed by a C
//! program compiled against the same build's headers.
//!
//! Builds checked: the pyenv 3.13.0 install, plus every python executable listed in
//! `GILSCOPE_PYTHONS` (colon-separated) that is 3.13 or newer. At least one is required.

use gilscope::python::debug_offsets::{
    DEBUG_OFFSETS_READ_SIZE, DebugOffsets, debug_offsets_size, layout_from_debug_offsets,
};
use gilscope::python::layout::{DictKeysFormat, FlagField, FramePointer, Layout};
use goblin::elf::Elf;
use goblin::elf::program_header::PT_LOAD;
use goblin::elf::section_header::SHT_NOBITS;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const PYENV_313: &str = "/root/.pyenv/versions/3.13.0";

/// One CPython build: the ELF file holding `_PyRuntime` and its header directory.
#[derive(Debug)]
struct Build {
    label: String,
    elf: PathBuf,
    include: PathBuf,
}

fn builds() -> Vec<Build> {
    let mut builds = Vec::new();
    let prefix = Path::new(PYENV_313);
    let lib = prefix.join("lib/libpython3.13.so.1.0");
    let include = prefix.join("include/python3.13");
    if lib.is_file() && include.is_dir() {
        builds.push(Build {
            label: "pyenv 3.13.0".into(),
            elf: lib,
            include,
        });
    }
    if let Ok(list) = std::env::var("GILSCOPE_PYTHONS") {
        for exe in list.split(':').filter(|s| !s.is_empty()) {
            if let Some(build) = describe(exe) {
                builds.push(build);
            }
        }
    }
    // Debian unstable's static 3.13, 3.14 and 3.15, with their libpythonX.Y-dev headers.
    for exe in crate::support::debian_unstable_pythons() {
        let exe = exe.to_string_lossy().into_owned();
        if let Some(build) = describe(&exe)
            && !builds.iter().any(|b| b.elf == build.elf)
        {
            builds.push(build);
        }
    }
    builds
}

/// Asks a python executable where its `_PyRuntime` lives (its shared libpython, or the
/// executable itself for a static build) and where its headers are. `None` before 3.13.
fn describe(exe: &str) -> Option<Build> {
    const SCRIPT: &str = r#"
import os, sys, sysconfig
v = sys.version_info
lib = os.path.join(sysconfig.get_config_var("LIBDIR") or "",
                   sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY") or "")
shared = sysconfig.get_config_var("Py_ENABLE_SHARED")
elf = lib if shared and os.path.isfile(lib) else os.path.realpath(sys.executable)
print(v.major, v.minor)
print(elf)
print(sysconfig.get_paths()["include"])
"#;
    let output = Command::new(exe)
        .args(["-I", "-c", SCRIPT])
        .output()
        .unwrap_or_else(|e| panic!("GILSCOPE_PYTHONS: cannot run {exe}: {e}"));
    assert!(
        output.status.success(),
        "{exe} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("utf-8 from python");
    let mut lines = text.lines();
    let version: Vec<u8> = lines
        .next()
        .expect("version line")
        .split_whitespace()
        .map(|n| n.parse().expect("version number"))
        .collect();
    if version[0] != 3 || version[1] < 13 {
        eprintln!(
            "skipping {exe}: {}.{} has no _Py_DebugOffsets",
            version[0], version[1]
        );
        return None;
    }
    Some(Build {
        label: format!("{exe} (3.{})", version[1]),
        elf: PathBuf::from(lines.next().expect("elf line")),
        include: PathBuf::from(lines.next().expect("include line")),
    })
}

/// The initialized bytes at the start of `_PyRuntime`, straight from the file: the symbol's
/// virtual address mapped to a file offset through the PT_LOAD segment (or, failing that,
/// the section) that holds it.
fn read_runtime_start(path: &Path) -> Vec<u8> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let elf = Elf::parse(&data).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    let dynamic = elf
        .dynsyms
        .iter()
        .find(|s| elf.dynstrtab.get_at(s.st_name) == Some("_PyRuntime"));
    let local = || {
        elf.syms
            .iter()
            .find(|s| elf.strtab.get_at(s.st_name) == Some("_PyRuntime"))
    };
    let symbol = dynamic
        .or_else(local)
        .unwrap_or_else(|| panic!("no _PyRuntime symbol in {}", path.display()));
    let vaddr = symbol.st_value;

    let from_segment = elf.program_headers.iter().find_map(|ph| {
        let inside =
            ph.p_type == PT_LOAD && vaddr >= ph.p_vaddr && vaddr < ph.p_vaddr + ph.p_filesz;
        inside.then(|| {
            (
                ph.p_offset + (vaddr - ph.p_vaddr),
                ph.p_vaddr + ph.p_filesz - vaddr,
            )
        })
    });
    let from_section = || {
        elf.section_headers.iter().find_map(|sh| {
            let inside =
                sh.sh_type != SHT_NOBITS && vaddr >= sh.sh_addr && vaddr < sh.sh_addr + sh.sh_size;
            inside.then(|| {
                (
                    sh.sh_offset + (vaddr - sh.sh_addr),
                    sh.sh_addr + sh.sh_size - vaddr,
                )
            })
        })
    };
    let (offset, available) = from_segment.or_else(from_section).unwrap_or_else(|| {
        panic!(
            "_PyRuntime at {vaddr:#x} is not in the file image of {}",
            path.display()
        )
    });
    let len = (DEBUG_OFFSETS_READ_SIZE as u64).min(available) as usize;
    let start = offset as usize;
    data[start..start + len].to_vec()
}

/// The C side: offsetof()/sizeof() of every field the Layout describes, for this build.
const PROBE: &str = r#"
#include "Python.h"
#include "internal/pycore_runtime.h"
#include "internal/pycore_interp.h"
#include "internal/pycore_dict.h"
#include "internal/pycore_moduleobject.h"
#include "internal/pycore_gil.h"
#if PY_VERSION_HEX >= 0x030e0000
#  include "internal/pycore_debug_offsets.h"
#  include "internal/pycore_interpframe_structs.h"
#  include "internal/pycore_stackref.h"
#else
#  include "internal/pycore_frame.h"
#endif
#include <stdio.h>
#include <stddef.h>
#include <string.h>

#define P(name, expr) printf("%s %llu\n", name, (unsigned long long)(expr))

int main(void) {
    P("debug_offsets.size", sizeof(_Py_DebugOffsets));
#ifdef Py_GIL_DISABLED
    P("free_threaded", 1);
    P("gil.enabled", offsetof(struct _gil_runtime_state, enabled));
#else
    P("free_threaded", 0);
#endif
    P("runtime.interpreters_head", offsetof(_PyRuntimeState, interpreters.head));
    P("interp.id", offsetof(PyInterpreterState, id));
    P("interp.next", offsetof(PyInterpreterState, next));
    P("interp.threads_head", offsetof(PyInterpreterState, threads.head));
    P("interp.ceval_gil", offsetof(PyInterpreterState, ceval.gil));
    P("interp.imports_modules", offsetof(PyInterpreterState, imports.modules));
    P("gil.size", sizeof(struct _gil_runtime_state));
    P("gil.interval", offsetof(struct _gil_runtime_state, interval));
    P("gil.last_holder", offsetof(struct _gil_runtime_state, last_holder));
    P("gil.locked", offsetof(struct _gil_runtime_state, locked));
    P("gil.switch_number", offsetof(struct _gil_runtime_state, switch_number));
    P("tstate.next", offsetof(PyThreadState, next));
    P("tstate.interp", offsetof(PyThreadState, interp));
    P("tstate.thread_id", offsetof(PyThreadState, thread_id));
    P("tstate.native_thread_id", offsetof(PyThreadState, native_thread_id));
    P("tstate.current_frame", offsetof(PyThreadState, current_frame));
#if PY_VERSION_HEX >= 0x030e0000
    P("tstate.holds_gil", offsetof(PyThreadState, holds_gil));
#else
    {
        /* 3.13: a bit of `_status`; find which by setting it alone. */
        PyThreadState t;
        unsigned int word;
        memset(&t, 0, sizeof t);
        t._status.holds_gil = 1;
        memcpy(&word, &t._status, sizeof word);
        P("tstate.holds_gil", offsetof(PyThreadState, _status));
        P("tstate.holds_gil_bit", __builtin_ctz(word));
    }
#endif
#if PY_VERSION_HEX >= 0x030f0000
    P("tstate.gil_requested", offsetof(PyThreadState, gil_requested));
#endif
    P("frame.previous", offsetof(_PyInterpreterFrame, previous));
    P("frame.f_executable", offsetof(_PyInterpreterFrame, f_executable));
    P("frame.instr_ptr", offsetof(_PyInterpreterFrame, instr_ptr));
    P("frame.owner", offsetof(_PyInterpreterFrame, owner));
#if PY_VERSION_HEX >= 0x030e0000
    P("frame.entry_owner", FRAME_OWNED_BY_INTERPRETER);
    P("frame.tag_bits", Py_TAG_BITS);
#else
    P("frame.entry_owner", FRAME_OWNED_BY_CSTACK);
    P("frame.tag_bits", 0);
#endif
#if PY_VERSION_HEX >= 0x030e0000 && defined(Py_GIL_DISABLED)
    P("frame.tlbc_index", offsetof(_PyInterpreterFrame, tlbc_index));
    P("code.co_tlbc", offsetof(PyCodeObject, co_tlbc));
#endif
    P("code.co_filename", offsetof(PyCodeObject, co_filename));
    P("code.co_name", offsetof(PyCodeObject, co_name));
    P("code.co_qualname", offsetof(PyCodeObject, co_qualname));
    P("code.co_firstlineno", offsetof(PyCodeObject, co_firstlineno));
    P("code.co_linetable", offsetof(PyCodeObject, co_linetable));
    P("code.co_code_adaptive", offsetof(PyCodeObject, co_code_adaptive));
    P("object.ob_type", offsetof(PyObject, ob_type));
    P("type.tp_name", offsetof(PyTypeObject, tp_name));
    P("type.tp_basicsize", offsetof(PyTypeObject, tp_basicsize));
    P("type.tp_dictoffset", offsetof(PyTypeObject, tp_dictoffset));
    P("type.tp_flags", offsetof(PyTypeObject, tp_flags));
    P("heaptype.ht_cached_keys", offsetof(PyHeapTypeObject, ht_cached_keys));
    P("unicode.state", offsetof(PyASCIIObject, state));
    P("unicode.length", offsetof(PyASCIIObject, length));
    P("unicode.ascii_size", sizeof(PyASCIIObject));
    P("unicode.compact_size", sizeof(PyCompactUnicodeObject));
    {
        PyASCIIObject probe;
        unsigned int word;
        memset(&probe, 0, sizeof probe);
        probe.state.kind = 1;
        memcpy(&word, (char *)&probe + offsetof(PyASCIIObject, state), sizeof word);
        P("unicode.kind_shift", __builtin_ctz(word));
    }
    P("bytes.ob_size", offsetof(PyBytesObject, ob_base.ob_size));
    P("bytes.ob_sval", offsetof(PyBytesObject, ob_sval));
    P("dict.ma_keys", offsetof(PyDictObject, ma_keys));
    P("dict.ma_values", offsetof(PyDictObject, ma_values));
    P("dictkeys.dk_indices", offsetof(PyDictKeysObject, dk_indices));
    P("module.md_dict", offsetof(PyModuleObject, md_dict));
    P("long.lv_tag", offsetof(PyLongObject, long_value.lv_tag));
    P("long.ob_digit", offsetof(PyLongObject, long_value.ob_digit));
    return 0;
}
"#;

/// Compiles `source` against `build`'s headers (`-I include -I include/internal`, and the
/// folder above `include` for Debian's multiarch `pyconfig.h`, plus `flags`), runs it and
/// returns its standard output.
fn compile_and_run(build: &Build, name: &str, source: &str, flags: &[&str]) -> Vec<u8> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("debug_offsets_probe");
    std::fs::create_dir_all(&dir).expect("probe dir");
    let source_path = dir.join(format!("{name}.c"));
    let binary = dir.join(name);
    std::fs::write(&source_path, source).expect("writing the probe");
    let compiled = Command::new("gcc")
        .arg("-DPy_BUILD_CORE")
        .args(flags)
        .arg("-I")
        .arg(&build.include)
        .arg("-I")
        .arg(build.include.join("internal"))
        .arg("-I")
        .arg(build.include.parent().unwrap_or(&build.include))
        .arg(&source_path)
        .arg("-o")
        .arg(&binary)
        .output()
        .expect("running gcc");
    assert!(
        compiled.status.success(),
        "{}: compiling {name} against {} failed:\n{}",
        build.label,
        build.include.display(),
        String::from_utf8_lossy(&compiled.stderr)
    );
    let run = Command::new(&binary).output().expect("running the probe");
    assert!(run.status.success(), "{}: {name} failed", build.label);
    run.stdout
}

/// Runs [`PROBE`] and parses its `name value` lines.
fn c_offsets(build: &Build, name: &str, flags: &[&str]) -> HashMap<String, u64> {
    String::from_utf8(compile_and_run(build, name, PROBE, flags))
        .expect("utf-8 probe output")
        .lines()
        .map(|line| {
            let (name, value) = line.split_once(' ').expect("name value");
            (name.to_string(), value.parse().expect("number"))
        })
        .collect()
}

/// Every Layout field against its C counterpart; returns the mismatches.
fn compare(layout: &Layout, c: &HashMap<String, u64>) -> Vec<String> {
    let get = |key: &str| -> u64 {
        *c.get(key)
            .unwrap_or_else(|| panic!("probe printed no {key}"))
    };
    let ft = get("free_threaded") == 1;
    let is_314 = layout.version.minor >= 14;
    let frame_current = match layout.tstate.frame {
        FramePointer::Direct(at) => Some(at),
        FramePointer::ViaCFrame { .. } => None,
    };
    let dict_header = match layout.object.dict_keys_format {
        DictKeysFormat::Log2 { header } => Some(header),
        DictKeysFormat::Sized => None,
    };
    let expect_some = |key: &str| Some(get(key));
    let checks: Vec<(&str, Option<u64>, Option<u64>)> = vec![
        (
            "free_threaded",
            Some(layout.free_threaded as u64),
            Some(ft as u64),
        ),
        (
            "runtime.interpreters_head",
            Some(layout.runtime.interpreters_head),
            expect_some("runtime.interpreters_head"),
        ),
        ("runtime.gil", layout.runtime.gil, None),
        (
            "interp.id",
            Some(layout.interp.id),
            expect_some("interp.id"),
        ),
        (
            "interp.next",
            Some(layout.interp.next),
            expect_some("interp.next"),
        ),
        (
            "interp.threads_head",
            Some(layout.interp.threads_head),
            expect_some("interp.threads_head"),
        ),
        (
            "interp.ceval_gil",
            layout.interp.gil_ptr,
            expect_some("interp.ceval_gil"),
        ),
        (
            "interp.imports_modules",
            Some(layout.interp.modules),
            expect_some("interp.imports_modules"),
        ),
        (
            "gil.enabled",
            layout.gil.enabled,
            ft.then(|| get("gil.enabled")),
        ),
        (
            "gil.interval",
            Some(layout.gil.interval),
            expect_some("gil.interval"),
        ),
        (
            "gil.last_holder",
            Some(layout.gil.last_holder),
            expect_some("gil.last_holder"),
        ),
        (
            "gil.locked",
            Some(layout.gil.locked),
            expect_some("gil.locked"),
        ),
        (
            "gil.switch_number",
            Some(layout.gil.switch_number),
            expect_some("gil.switch_number"),
        ),
        ("gil.size", Some(layout.gil.size), expect_some("gil.size")),
        (
            "tstate.next",
            Some(layout.tstate.next),
            expect_some("tstate.next"),
        ),
        (
            "tstate.interp",
            Some(layout.tstate.interp),
            expect_some("tstate.interp"),
        ),
        (
            "tstate.thread_id",
            Some(layout.tstate.thread_id),
            expect_some("tstate.thread_id"),
        ),
        (
            "tstate.native_thread_id",
            layout.tstate.native_thread_id,
            expect_some("tstate.native_thread_id"),
        ),
        (
            "tstate.current_frame",
            frame_current,
            expect_some("tstate.current_frame"),
        ),
        (
            "tstate.holds_gil",
            layout.tstate.gil_flags.map(|f| f.holds.word()),
            expect_some("tstate.holds_gil"),
        ),
        (
            "tstate.holds_gil_bit",
            match layout.tstate.gil_flags.map(|f| f.holds) {
                Some(FlagField::Bit { bit, .. }) => Some(u64::from(bit)),
                _ => None,
            },
            c.get("tstate.holds_gil_bit").copied(),
        ),
        (
            "tstate.gil_requested",
            layout.tstate.gil_flags.and_then(|f| f.requested),
            c.get("tstate.gil_requested").copied(),
        ),
        (
            "frame.previous",
            Some(layout.frame.previous),
            expect_some("frame.previous"),
        ),
        (
            "frame.f_executable",
            Some(layout.frame.code),
            expect_some("frame.f_executable"),
        ),
        (
            "frame.instr_ptr",
            Some(layout.frame.instr),
            expect_some("frame.instr_ptr"),
        ),
        (
            "frame.owner",
            layout.frame.owner,
            expect_some("frame.owner"),
        ),
        (
            "frame.entry_owner",
            layout.frame.owner_cstack.map(u64::from),
            expect_some("frame.entry_owner"),
        ),
        (
            "frame.tag_bits",
            Some(layout.frame.code_tag_mask),
            expect_some("frame.tag_bits"),
        ),
        (
            "frame.tlbc_index",
            layout.frame.tlbc_index,
            (is_314 && ft).then(|| get("frame.tlbc_index")),
        ),
        (
            "code.co_filename",
            Some(layout.code.filename),
            expect_some("code.co_filename"),
        ),
        (
            "code.co_name",
            Some(layout.code.name),
            expect_some("code.co_name"),
        ),
        (
            "code.co_qualname",
            layout.code.qualname,
            expect_some("code.co_qualname"),
        ),
        (
            "code.co_firstlineno",
            Some(layout.code.firstlineno),
            expect_some("code.co_firstlineno"),
        ),
        (
            "code.co_linetable",
            Some(layout.code.linetable),
            expect_some("code.co_linetable"),
        ),
        (
            "code.co_code_adaptive",
            layout.code.code_adaptive,
            expect_some("code.co_code_adaptive"),
        ),
        (
            "code.co_tlbc",
            layout.code.tlbc,
            (is_314 && ft).then(|| get("code.co_tlbc")),
        ),
        (
            "object.ob_type",
            Some(layout.object.ob_type),
            expect_some("object.ob_type"),
        ),
        (
            "type.tp_name",
            Some(layout.object.tp_name),
            expect_some("type.tp_name"),
        ),
        (
            "type.tp_basicsize",
            Some(layout.object.tp_basicsize),
            expect_some("type.tp_basicsize"),
        ),
        (
            "type.tp_dictoffset",
            Some(layout.object.tp_dictoffset),
            expect_some("type.tp_dictoffset"),
        ),
        (
            "type.tp_flags",
            Some(layout.object.tp_flags),
            expect_some("type.tp_flags"),
        ),
        (
            "heaptype.ht_cached_keys",
            layout.object.ht_cached_keys,
            expect_some("heaptype.ht_cached_keys"),
        ),
        (
            "unicode.state",
            Some(layout.object.unicode_state),
            expect_some("unicode.state"),
        ),
        (
            "unicode.length",
            Some(layout.object.unicode_length),
            expect_some("unicode.length"),
        ),
        (
            "unicode.ascii_size",
            Some(layout.object.unicode_ascii_size),
            expect_some("unicode.ascii_size"),
        ),
        (
            "unicode.compact_size",
            Some(layout.object.unicode_compact_size),
            expect_some("unicode.compact_size"),
        ),
        (
            "unicode.kind_shift",
            Some(u64::from(layout.object.unicode_kind_shift)),
            expect_some("unicode.kind_shift"),
        ),
        (
            "bytes.ob_size",
            Some(layout.object.bytes_size),
            expect_some("bytes.ob_size"),
        ),
        (
            "bytes.ob_sval",
            Some(layout.object.bytes_data),
            expect_some("bytes.ob_sval"),
        ),
        (
            "dict.ma_keys",
            Some(layout.object.dict_keys),
            expect_some("dict.ma_keys"),
        ),
        (
            "dict.ma_values",
            Some(layout.object.dict_values),
            expect_some("dict.ma_values"),
        ),
        (
            "dictkeys.dk_indices",
            dict_header,
            expect_some("dictkeys.dk_indices"),
        ),
        (
            "module.md_dict",
            Some(layout.object.module_dict),
            expect_some("module.md_dict"),
        ),
        (
            "long.lv_tag",
            Some(layout.object.long_size),
            expect_some("long.lv_tag"),
        ),
        (
            "long.ob_digit",
            Some(layout.object.long_digits),
            expect_some("long.ob_digit"),
        ),
    ];
    checks
        .into_iter()
        .filter(|(_, ours, theirs)| ours != theirs)
        .map(|(name, ours, theirs)| format!("{name}: gilscope {ours:?}, headers {theirs:?}"))
        .collect()
}

#[test]
fn debug_offsets_match_the_headers_of_real_builds() {
    let builds = builds();
    assert!(
        !builds.is_empty(),
        "no CPython 3.13+ found: install {PYENV_313} or list python executables in \
         GILSCOPE_PYTHONS (colon-separated)"
    );
    let mut failures = Vec::new();
    for (index, build) in builds.iter().enumerate() {
        let bytes = read_runtime_start(&build.elf);
        let parsed = DebugOffsets::parse(&bytes)
            .unwrap_or_else(|e| panic!("{}: {}: {e}", build.label, build.elf.display()));
        let layout = layout_from_debug_offsets(&bytes)
            .unwrap_or_else(|e| panic!("{}: {}: {e}", build.label, build.elf.display()));
        let c = c_offsets(build, &format!("probe{index}"), &[]);
        assert_eq!(
            debug_offsets_size(parsed.version.minor).map(|s| s as u64),
            c.get("debug_offsets.size").copied(),
            "{}: sizeof(_Py_DebugOffsets)",
            build.label
        );
        eprintln!(
            "{}: CPython {}{} from {}",
            build.label,
            layout.version,
            if layout.free_threaded {
                " (free-threaded)"
            } else {
                ""
            },
            build.elf.display()
        );
        for mismatch in compare(&layout, &c) {
            failures.push(format!("{}: {mismatch}", build.label));
        }
    }
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

/// `_PyRuntime`'s initializer as the interpreter itself compiles it
/// (`_PyRuntimeState_INIT`), dumped as the first `sizeof(_Py_DebugOffsets)` bytes. Only the
/// debug offsets (plain constants) are read, so the other members' references to
/// interpreter symbols are left unresolved.
const RUNTIME_IMAGE: &str = r#"
#include "Python.h"
#include "internal/pycore_ceval.h"
#include "internal/pycore_runtime.h"
#include "internal/pycore_runtime_init.h"
#include <stdio.h>

static _PyRuntimeState runtime = _PyRuntimeState_INIT(runtime, _Py_Debug_Cookie);

int main(void) {
    fwrite(&runtime.debug_offsets, 1, sizeof(_Py_DebugOffsets), stdout);
    return 0;
}
"#;

/// The same comparison on `_Py_DebugOffsets` images built from each build's headers, once
/// as configured and once with `Py_GIL_DISABLED` defined: that covers the free-threaded
/// derivations (GIL `enabled`, the bigger object header, ...) even where no free-threaded
/// interpreter is installed.
#[test]
fn debug_offsets_built_from_the_headers_give_the_header_layout() {
    let builds = builds();
    assert!(!builds.is_empty(), "no CPython 3.13+ found");
    let mut failures = Vec::new();
    for (index, build) in builds.iter().enumerate() {
        for (variant, flags) in [
            ("as-configured", &[][..]),
            ("gil-disabled", &["-DPy_GIL_DISABLED"][..]),
        ] {
            let label = format!("{} [{variant}]", build.label);
            let mut link = flags.to_vec();
            link.extend(["-no-pie", "-Wl,--unresolved-symbols=ignore-all"]);
            let image = compile_and_run(
                build,
                &format!("image{index}-{variant}"),
                RUNTIME_IMAGE,
                &link,
            );
            let layout =
                layout_from_debug_offsets(&image).unwrap_or_else(|e| panic!("{label}: {e}"));
            let c = c_offsets(build, &format!("probe{index}-{variant}"), flags);
            assert_eq!(
                debug_offsets_size(layout.version.minor).map(|s| s as u64),
                Some(image.len() as u64),
                "{label}: sizeof(_Py_DebugOffsets)"
            );
            if variant == "gil-disabled" {
                assert!(layout.free_threaded, "{label}: not free-threaded");
            }
            for mismatch in compare(&layout, &c) {
                failures.push(format!("{label}: {mismatch}"));
            }
        }
    }
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}
