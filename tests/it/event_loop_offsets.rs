//! The offsets the event-loop reader uses (`LoopOffsets`), checked against the C headers
//! of every interpreter found that ships its internal headers, plus Debian's 3.13-3.15
//! under /opt/gilscope-pythons when present.

use gilscope::python::Version;
use gilscope::python::event_loop::LoopOffsets;
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
