//! Checks every number in `tables` against the C headers of the installed interpreters:
//! for each, compiles a program printing the `offsetof`/`sizeof` the table claims, runs it
//! and compares.
//!
//! Interpreters: every `$PYENV_ROOT/versions/3.X.Y` (default `/root/.pyenv`) with a table,
//! plus the executables listed in `GILSCOPE_PYTHONS` (colon-separated).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use gilscope::python::layout::{
    CodeLayout, DictKeysFormat, FrameKind, FrameLayout, FramePointer, GilLayout, Layout,
    LineTableFormat, LongFormat, ThreadLayout,
};
use gilscope::python::{Version, tables};

#[test]
fn tables_match_the_headers_of_installed_pythons() {
    let mut checked = Vec::new();
    let mut mismatches = Vec::new();
    for python in checkable_pythons() {
        let layout = tables::table(python.version).expect("only versions with a table are kept");
        let checks = checks(&layout);
        let probed = probe(&python, &checks);
        mismatches.extend(compare(python.version, &checks, &probed));
        println!("checked {} ({})", python.version, python.path.display());
        checked.push(python.version.to_string());
    }
    println!("versions checked: {}", checked.join(", "));
    assert!(
        mismatches.is_empty(),
        "tables disagree with the headers:\n{}",
        mismatches.join("\n")
    );
    assert!(
        !checked.is_empty(),
        "no CPython 3.8-3.12 with internal headers found to check"
    );
}

/// An interpreter as it reports itself.
struct Python {
    path: PathBuf,
    version: Version,
    include: PathBuf,
}

/// The interpreters that have a table and internal headers, one per include directory.
fn checkable_pythons() -> Vec<Python> {
    let mut seen_includes = BTreeSet::new();
    candidate_pythons()
        .iter()
        .filter_map(|path| describe(path))
        .filter(has_table_and_headers)
        .filter(|python| seen_includes.insert(python.include.clone()))
        .collect()
}

fn has_table_and_headers(python: &Python) -> bool {
    let skip_because = |why: String| {
        println!(
            "skipping {} ({}): {why}",
            python.path.display(),
            python.version
        );
        false
    };
    let internal = python.include.join("internal");
    if tables::table(python.version).is_none() {
        skip_because("no offset table for this version".into())
    } else if !internal.is_dir() {
        skip_because(format!("no internal headers in {}", internal.display()))
    } else {
        true
    }
}

fn candidate_pythons() -> Vec<PathBuf> {
    let mut pythons: Vec<PathBuf> = std::env::var("GILSCOPE_PYTHONS")
        .unwrap_or_default()
        .split(':')
        .filter(|entry| !entry.is_empty())
        .map(PathBuf::from)
        .collect();
    pythons.extend(pyenv_pythons());
    pythons
}

/// `versions/3.X.Y/bin/python3` for every pyenv version that has a table, oldest first.
fn pyenv_pythons() -> Vec<PathBuf> {
    let root = std::env::var("PYENV_ROOT").unwrap_or_else(|_| "/root/.pyenv".into());
    let Ok(entries) = std::fs::read_dir(Path::new(&root).join("versions")) else {
        return Vec::new();
    };
    let mut versions: Vec<(Version, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = Version::parse(&name).filter(|v| tables::table(*v).is_some())?;
            Some((version, entry.path().join("bin/python3")))
        })
        .collect();
    versions.sort();
    versions.into_iter().map(|(_, python)| python).collect()
}

/// Asks the interpreter for its version and include directory.
fn describe(python: &Path) -> Option<Python> {
    let script = "import sys, sysconfig\n\
                  print('%d.%d.%d' % tuple(sys.version_info[:3]))\n\
                  print(sysconfig.get_paths()['include'])";
    let output = Command::new(python).args(["-c", script]).output();
    let stdout = match output {
        Ok(output) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
        _ => {
            println!("skipping {}: it does not run", python.display());
            return None;
        }
    };
    let mut lines = stdout.lines();
    let version = Version::parse(lines.next()?)?;
    let include = PathBuf::from(lines.next()?);
    Some(Python {
        path: python.to_path_buf(),
        version,
        include,
    })
}

/// One number from a table and the C expression that computes it from the headers.
struct Check {
    c_expr: String,
    expected: u64,
}

#[derive(Default)]
struct Checks(Vec<Check>);

impl Checks {
    /// Nothing to check when the table says `None`.
    fn value(&mut self, c_expr: &str, expected: impl Into<Option<u64>>) {
        if let Some(expected) = expected.into() {
            self.0.push(Check {
                c_expr: c_expr.to_string(),
                expected,
            });
        }
    }

    fn of<'a>(&'a mut self, c_type: &'a str) -> TypeChecks<'a> {
        TypeChecks {
            checks: self,
            c_type,
        }
    }
}

/// Checks on the members of one C type.
struct TypeChecks<'a> {
    checks: &'a mut Checks,
    c_type: &'a str,
}

impl TypeChecks<'_> {
    fn offset(&mut self, member: &str, expected: impl Into<Option<u64>>) {
        let c_expr = format!("offsetof({}, {member})", self.c_type);
        self.checks.value(&c_expr, expected);
    }

    fn size(&mut self, expected: u64) {
        let c_expr = format!("sizeof({})", self.c_type);
        self.checks.value(&c_expr, expected);
    }
}

/// Which C member to check follows the table's own variants (a wrong variant names a
/// member the headers lack, and the probe fails to compile).
fn checks(layout: &Layout) -> Vec<Check> {
    let mut checks = Checks::default();
    checks.value("PY_MINOR_VERSION", u64::from(layout.version.minor));
    runtime_checks(&mut checks, layout);
    gil_checks(&mut checks, &layout.gil);
    thread_checks(&mut checks, &layout.tstate);
    frame_checks(&mut checks, &layout.frame);
    code_checks(&mut checks, &layout.code);
    object_checks(&mut checks, layout);
    checks.0
}

fn runtime_checks(checks: &mut Checks, layout: &Layout) {
    let (runtime, interp) = (&layout.runtime, &layout.interp);
    let mut c = checks.of("_PyRuntimeState");
    c.offset("interpreters.head", runtime.interpreters_head);
    c.offset("ceval.gil", runtime.gil);

    let threads_head = if layout.version.at_least(11) {
        "threads.head"
    } else {
        "tstate_head"
    };
    let modules = if layout.version.at_least(12) {
        "imports.modules"
    } else {
        "modules"
    };
    let mut c = checks.of("PyInterpreterState");
    c.offset("id", interp.id);
    c.offset("next", interp.next);
    c.offset(threads_head, interp.threads_head);
    c.offset("ceval.gil", interp.gil_ptr);
    c.offset(modules, interp.modules);
}

fn gil_checks(checks: &mut Checks, gil: &GilLayout) {
    let mut c = checks.of("struct _gil_runtime_state");
    c.offset("enabled", gil.enabled);
    c.offset("interval", gil.interval);
    c.offset("last_holder", gil.last_holder);
    c.offset("locked", gil.locked);
    c.offset("switch_number", gil.switch_number);
    c.size(gil.size);
}

fn thread_checks(checks: &mut Checks, tstate: &ThreadLayout) {
    let mut c = checks.of("PyThreadState");
    c.offset("next", tstate.next);
    c.offset("interp", tstate.interp);
    c.offset("thread_id", tstate.thread_id);
    c.offset("native_thread_id", tstate.native_thread_id);
    match tstate.frame {
        FramePointer::Direct(frame) => c.offset("frame", frame),
        FramePointer::ViaCFrame {
            cframe,
            current_frame,
        } => {
            c.offset("cframe", cframe);
            checks
                .of("_PyCFrame")
                .offset("current_frame", current_frame);
        }
    }
}

fn frame_checks(checks: &mut Checks, frame: &FrameLayout) {
    let (c_type, previous, instr) = match frame.kind {
        FrameKind::Object { .. } => ("PyFrameObject", "f_back", "f_lasti"),
        FrameKind::Interpreter => ("_PyInterpreterFrame", "previous", "prev_instr"),
    };
    let mut c = checks.of(c_type);
    c.offset(previous, frame.previous);
    c.offset("f_code", frame.code);
    c.offset(instr, frame.instr);
    c.offset("owner", frame.owner);
    checks.value("FRAME_OWNED_BY_CSTACK", frame.owner_cstack.map(u64::from));
}

fn code_checks(checks: &mut Checks, code: &CodeLayout) {
    let linetable = match code.linetable_format {
        LineTableFormat::Lnotab => "co_lnotab",
        LineTableFormat::Linetable310 | LineTableFormat::Locations => "co_linetable",
    };
    let mut c = checks.of("PyCodeObject");
    c.offset("co_filename", code.filename);
    c.offset("co_name", code.name);
    c.offset("co_qualname", code.qualname);
    c.offset("co_firstlineno", code.firstlineno);
    c.offset(linetable, code.linetable);
    c.offset("co_code_adaptive", code.code_adaptive);
}

fn object_checks(checks: &mut Checks, layout: &Layout) {
    let object = &layout.object;
    checks.of("PyObject").offset("ob_type", object.ob_type);

    let mut c = checks.of("PyTypeObject");
    c.offset("tp_name", object.tp_name);
    c.offset("tp_dictoffset", object.tp_dictoffset);
    c.offset("tp_basicsize", object.tp_basicsize);
    c.offset("tp_flags", object.tp_flags);
    checks
        .of("PyHeapTypeObject")
        .offset("ht_cached_keys", object.ht_cached_keys);

    let mut c = checks.of("PyASCIIObject");
    c.offset("state", object.unicode_state);
    c.offset("length", object.unicode_length);
    c.size(object.unicode_ascii_size);
    checks
        .of("PyCompactUnicodeObject")
        .size(object.unicode_compact_size);
    checks.value("unicode_kind_shift()", u64::from(object.unicode_kind_shift));

    let mut c = checks.of("PyBytesObject");
    c.offset("ob_base.ob_size", object.bytes_size);
    c.offset("ob_sval", object.bytes_data);

    let mut c = checks.of("PyDictObject");
    c.offset("ma_keys", object.dict_keys);
    c.offset("ma_values", object.dict_values);
    if let DictKeysFormat::Log2 { header } = object.dict_keys_format {
        checks.of("PyDictKeysObject").offset("dk_indices", header);
    }

    // Before 3.10 `PyModuleObject` is private to moduleobject.c.
    if layout.version.at_least(10) {
        checks
            .of("PyModuleObject")
            .offset("md_dict", object.module_dict);
    }

    let (size, digits) = match object.long_format {
        LongFormat::SignedSize => ("ob_base.ob_size", "ob_digit"),
        LongFormat::Tagged => ("long_value.lv_tag", "long_value.ob_digit"),
    };
    let mut c = checks.of("PyLongObject");
    c.offset(size, object.long_size);
    c.offset(digits, object.long_digits);
}

/// Headers for everything `checks` names, chosen by the headers' own version.
const C_PRELUDE: &str = r#"
#include "Python.h"
#include "frameobject.h"
#if PY_MINOR_VERSION <= 10
#include "longintrepr.h"
#endif
#include "pycore_pystate.h"
#if PY_MINOR_VERSION >= 9
#include "pycore_runtime.h"
#include "pycore_interp.h"
#endif
#if PY_MINOR_VERSION >= 10
#include "pycore_moduleobject.h"
#endif
#if PY_MINOR_VERSION >= 11
#include "pycore_frame.h"
#include "pycore_dict.h"
#endif
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* Bit fields cannot be offsetof'ed: set `kind` to 1 and see where the bit lands. */
static unsigned unicode_kind_shift(void) {
    PyASCIIObject s;
    unsigned word;
    memset(&s, 0, sizeof s);
    s.state.kind = 1;
    memcpy(&word, (char *)&s + offsetof(PyASCIIObject, state), sizeof word);
    return __builtin_ctz(word);
}

int main(void) {
"#;

fn c_program(checks: &[Check]) -> String {
    let mut program = String::from(C_PRELUDE);
    for Check { c_expr, .. } in checks {
        let line =
            format!("    printf(\"%s=%llu\\n\", \"{c_expr}\", (unsigned long long)({c_expr}));\n");
        program.push_str(&line);
    }
    program.push_str("    return 0;\n}\n");
    program
}

/// Compiles and runs the probe for `checks`; returns what it printed, by C expression.
fn probe(python: &Python, checks: &[Check]) -> BTreeMap<String, u64> {
    let dir = std::env::temp_dir().join(format!(
        "gilscope-offsets-{}-{}",
        std::process::id(),
        python.version
    ));
    std::fs::create_dir_all(&dir).expect("create the probe's temp dir");
    let source = dir.join("probe.c");
    let binary = dir.join("probe");
    std::fs::write(&source, c_program(checks)).expect("write probe.c");
    let include = &python.include;
    let compiled = Command::new("cc")
        .arg("-DPy_BUILD_CORE")
        .arg(format!("-I{}", include.display()))
        .arg(format!("-I{}", include.join("internal").display()))
        .arg(&source)
        .arg("-o")
        .arg(&binary)
        .output()
        .expect("run cc");
    assert!(
        compiled.status.success(),
        "probe for {} does not compile (kept in {}):\n{}",
        python.version,
        dir.display(),
        String::from_utf8_lossy(&compiled.stderr)
    );
    let ran = Command::new(&binary).output().expect("run the probe");
    assert!(ran.status.success(), "probe for {} failed", python.version);
    let _ = std::fs::remove_dir_all(&dir);
    parse_probe_output(&String::from_utf8_lossy(&ran.stdout))
}

/// `name=value` lines; names are C expressions, which may hold no `=` of their own.
fn parse_probe_output(stdout: &str) -> BTreeMap<String, u64> {
    stdout
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_string(), value.parse().expect("a number after '='")))
        .collect()
}

fn compare(version: Version, checks: &[Check], probed: &BTreeMap<String, u64>) -> Vec<String> {
    checks
        .iter()
        .filter_map(|Check { c_expr, expected }| match probed.get(c_expr) {
            Some(actual) if actual == expected => None,
            Some(actual) => Some(format!(
                "{version} {c_expr}: table says {expected}, headers say {actual}"
            )),
            None => Some(format!("{version} {c_expr}: the probe printed nothing")),
        })
        .collect()
}
