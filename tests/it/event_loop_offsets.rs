//! The offsets the event-loop reader uses (`LoopOffsets`, `TaskOffsets`), checked against
//! the C headers of every interpreter found that ships its internal headers, plus Debian's
//! 3.13-3.15 under /opt/gilscope-pythons when present; and the asyncio task offsets, which
//! live in a C file rather than a header, against every interpreter found, from inside it
//! (fixtures/asyncio_task_probe.py), and against the `.AsyncioDebug` section 3.14+ export.

use crate::support::{self, Child};
use gilscope::mem::LiveMemory;
use gilscope::python::Version;
use gilscope::python::event_loop::LoopOffsets;
use gilscope::python::loop_task::{
    ASYNCIO_DEBUG_SIZE, AsyncioDebugOffsets, TP_BASE, TaskOffsets, find_asyncio_debug,
};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian's unpacked interpreters keep their headers: `DIR/usr/include/python3.X`.
const DEBIAN_PYTHONS: &str = "/opt/gilscope-pythons";

const PROBE: &str = r#"
#include <Python.h>
#include <stddef.h>
#if PY_VERSION_HEX >= 0x030B0000
#include "internal/pycore_frame.h"
#include "internal/pycore_code.h"
#endif
#if PY_VERSION_HEX >= 0x030E0000
#include "internal/pycore_interpframe_structs.h"
#include "internal/pycore_tstate.h"
#endif
#if PY_VERSION_HEX < 0x030B0000
#include "frameobject.h"
#endif
int main(void) {
#if PY_VERSION_HEX >= 0x030B0000
    printf("frame_locals=%zu\n", offsetof(_PyInterpreterFrame, localsplus));
    printf("code_local_names=%zu\n", offsetof(PyCodeObject, co_localsplusnames));
#else
    printf("frame_locals=%zu\n", offsetof(PyFrameObject, f_localsplus));
    printf("code_local_names=%zu\n", offsetof(PyCodeObject, co_varnames));
#endif
    printf("var_size=%zu\n", offsetof(PyVarObject, ob_size));
    printf("tuple_items=%zu\n", offsetof(PyTupleObject, ob_item));
    printf("float_value=%zu\n", offsetof(PyFloatObject, ob_fval));
#if PY_VERSION_HEX >= 0x030E0000
    printf("running_task=%zu\n", offsetof(_PyThreadStateImpl, asyncio_running_task));
    printf("running_loop=%zu\n", offsetof(_PyThreadStateImpl, asyncio_running_loop));
#endif
#if PY_VERSION_HEX < 0x030D0000
    printf("thread_dict=%zu\n", offsetof(PyThreadState, dict));
#endif
    printf("tp_base=%zu\n", offsetof(PyTypeObject, tp_base));
    return 0;
}
"#;

#[test]
fn event_loop_offsets_match_the_headers() {
    let mut checked = Vec::new();
    let mut mismatches = Vec::new();
    for (version, include, base) in header_dirs() {
        let Some(expected) = LoopOffsets::for_version(version, false) else {
            println!("{version}: no event-loop offsets (not read)");
            continue;
        };
        let probed = probe(&version, &include, &base);
        let tasks = TaskOffsets::for_version(version, false);
        let optional = [
            ("running_task", tasks.and_then(|t| t.running_task)),
            ("running_loop", tasks.and_then(|t| t.running_loop)),
            ("thread_dict", tasks.and_then(|t| t.thread_dict)),
            ("tp_base", Some(TP_BASE)),
        ];
        for (name, value) in optional {
            let got = probed.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
            if got != value {
                mismatches.push(format!(
                    "{version}: {name} is {value:?}, headers say {got:?}"
                ));
            }
        }
        let want = [
            ("frame_locals", expected.frame_locals),
            ("code_local_names", expected.code_local_names),
            ("var_size", expected.var_size),
            ("tuple_items", expected.tuple_items),
            ("float_value", expected.float_value),
        ];
        for (name, value) in want {
            let got = probed.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
            if got != Some(value) {
                mismatches.push(format!("{version}: {name} is {value}, headers say {got:?}"));
            }
        }
        println!("checked {version} ({})", include.display());
        checked.push(version.to_string());
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    assert!(
        !checked.is_empty(),
        "no interpreter with internal headers found"
    );
}

/// (version, include dir, dir of `x86_64-linux-gnu/python3.X/pyconfig.h` for Debian).
fn header_dirs() -> Vec<(Version, PathBuf, PathBuf)> {
    let mut dirs = Vec::new();
    for python in crate::support::discover_python_paths() {
        let script = "import sys, sysconfig\n\
                      print('%d.%d.%d' % tuple(sys.version_info[:3]))\n\
                      print(sysconfig.get_paths()['include'])";
        let Ok(out) = Command::new(&python).args(["-c", script]).output() else {
            continue;
        };
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines();
        let (Some(version), Some(include)) = (lines.next().and_then(Version::parse), lines.next())
        else {
            continue;
        };
        let include = PathBuf::from(include);
        if include.join("internal").is_dir() {
            let base = include.parent().unwrap_or(Path::new("/")).to_path_buf();
            dirs.push((version, include, base));
        }
    }
    for minor in 13..=15 {
        let base = PathBuf::from(format!("{DEBIAN_PYTHONS}/3.{minor}/usr/include"));
        let include = base.join(format!("python3.{minor}"));
        if include.join("internal").is_dir() {
            dirs.push((Version::new(3, minor, 0), include, base));
        }
    }
    dirs
}

fn probe(version: &Version, include: &Path, base: &Path) -> Vec<(String, u64)> {
    let dir = std::env::temp_dir().join(format!(
        "gilscope-loop-offsets-{}-{version}-{}",
        std::process::id(),
        include.display().to_string().len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join("probe.c");
    let binary = dir.join("probe");
    std::fs::write(&source, PROBE).unwrap();
    let compiled = Command::new("cc")
        .arg("-DPy_BUILD_CORE")
        .arg(format!("-I{}", include.display()))
        .arg(format!("-I{}", base.display()))
        .arg(&source)
        .arg("-o")
        .arg(&binary)
        .output()
        .expect("run cc");
    assert!(
        compiled.status.success(),
        "the probe for {version} does not compile:\n{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    let ran = Command::new(&binary).output().expect("run the probe");
    let _ = std::fs::remove_dir_all(&dir);
    String::from_utf8_lossy(&ran.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(n, v)| (n.to_string(), v.trim().parse().unwrap()))
        .collect()
}

/// The task's name and the running task where gilscope reads them, against where a live
/// interpreter keeps them; on 3.14+ also against the `.AsyncioDebug` section, in its file
/// and as gilscope finds it in the running process.
#[test]
fn asyncio_task_offsets_match_live_interpreters() {
    let mut checked = Vec::new();
    let mut mismatches = Vec::new();
    for python in support::pythons() {
        let version = Version::parse(&python.version).expect("a version");
        let Some(table) = TaskOffsets::for_version(version, python.free_threaded) else {
            println!("{}: no task offsets (not read)", python.label());
            continue;
        };
        let child = Child::fixture(&python, "asyncio_task_probe.py", &[]);
        let found = child.ready().clone();
        let label = python.label();
        let offsets = |key: &str| -> Vec<u64> {
            found[key]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
                .unwrap_or_default()
        };
        if found["task_type"] != "_asyncio.Task" {
            mismatches.push(format!("{label}: the task is a {}", found["task_type"]));
        }
        if offsets("task_name") != [table.task_name] {
            mismatches.push(format!(
                "{label}: task_name is {}, the live task has its name at {:?}",
                table.task_name,
                offsets("task_name")
            ));
        }
        let running: Vec<u64> = table.running_task.into_iter().collect();
        if offsets("running_task") != running {
            mismatches.push(format!(
                "{label}: asyncio_running_task is {:?}, the live thread state has the task at {:?}",
                table.running_task,
                offsets("running_task")
            ));
        }
        if version.minor >= 14 {
            let file = found["asyncio_file"].as_str().unwrap_or_default();
            let in_file = section_in_file(file);
            let in_process =
                find_asyncio_debug(child.pid(), &python.path, &LiveMemory::new(child.pid()));
            for (what, o) in [("file", in_file), ("process", in_process)] {
                let agrees = o.is_some_and(|o| {
                    o.task_name == table.task_name
                        && Some(o.running_task) == table.running_task
                        && Some(o.running_loop) == table.running_loop
                });
                if !agrees {
                    mismatches.push(format!(
                        "{label}: .AsyncioDebug of {file} ({what}) is {o:?}, the table {table:?}"
                    ));
                }
            }
        }
        checked.push(label);
    }
    println!("checked: {checked:?}");
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    assert!(!checked.is_empty(), "no interpreter found");
}

/// `.AsyncioDebug` as the ELF file at `path` has it.
fn section_in_file(path: &str) -> Option<AsyncioDebugOffsets> {
    let bytes = std::fs::read(path).ok()?;
    let elf = goblin::elf::Elf::parse(&bytes).ok()?;
    let header = elf
        .section_headers
        .iter()
        .find(|h| elf.shdr_strtab.get_at(h.sh_name) == Some(".AsyncioDebug"))?;
    let start = header.sh_offset as usize;
    AsyncioDebugOffsets::parse(bytes.get(start..start + ASYNCIO_DEBUG_SIZE)?)
}
