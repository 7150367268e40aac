//! Builds gilscope cannot run here (3.13 free-threaded, 3.14 with and without the GIL),
//! read end to end from synthetic memory: the layout comes from the `_Py_DebugOffsets` at
//! `_PyRuntime`, then the real walker reads three interpreters (one with a GIL of its own,
//! one sharing the main GIL), their GILs, six threads and their stacks, and names threads
//! through `threading._active`.

use super::builder::{Builder, Code, CodeSpec, FrameSpec, GilSpec};
use super::flavors::{DEFAULT_314, FT_313, FT_314, FT_315, Flavor};
use super::locations::Loc;
use gilscope::model::python::FrameInfo;
use gilscope::profile::Aggregator;
use gilscope::python::names::read_thread_names;
use gilscope::python::walker::{GilState, Walker};
use gilscope::sample::Sample;
use std::collections::HashMap;

const MAIN_PY: &str = "/srv/app/main.py";
const NAIVE_PY: &str = "/srv/app/naïve.py";
const SHIM: &str = "SHIM_MUST_BE_SKIPPED";

/// `pthread_t` of the threads of the main interpreter, by tid.
const PTHREADS: [(i32, u64); 4] = [
    (1001, 0x7f3a_9c00_0740),
    (1002, 0x7f3a_9b7f_f6c0),
    (1003, 0x7f3a_9aff_e6c0),
    (1004, 0x7f3a_9a7f_d6c0),
];
const SHARED_TID: i32 = 3001;
const SUB_TID: i32 = 2001;

/// A synthetic process: the image, and the addresses the expectations refer to.
pub struct World {
    pub builder: Builder,
    pub main: u64,
    pub shared: u64,
    pub sub: u64,
    pub main_gil: u64,
    pub sub_gil: u64,
    /// `PyThreadState` address by tid.
    pub tstates: HashMap<i32, u64>,
}

fn py(code: Code, unit: u64) -> FrameSpec {
    FrameSpec::Python {
        code,
        unit,
        owner: 0,
        tagged: false,
        tlbc: false,
    }
}

fn tagged(code: Code, unit: u64) -> FrameSpec {
    FrameSpec::Python {
        code,
        unit,
        owner: 0,
        tagged: true,
        tlbc: false,
    }
}

/// The process every synthetic test reads; `enabled` is the main GIL's `enabled` field
/// (free-threaded builds only).
pub fn world(flavor: &'static Flavor, enabled: i32) -> World {
    let mut b = Builder::new(flavor);
    let module = b.code(&CodeSpec {
        name: "<module>",
        qualname: "<module>",
        file: MAIN_PY,
        first_line: 1,
        // Units 0: line 1; 1-8: 12; 9-12: 12.
        locations: &[
            Loc::NoColumn { units: 1, delta: 0 },
            Loc::Long {
                units: 8,
                delta: 11,
            },
            Loc::Short { units: 4, col: 8 },
        ],
    });
    let outer = b.code(&CodeSpec {
        name: "outer",
        qualname: "Worker.outer",
        file: MAIN_PY,
        first_line: 20,
        // Units 0: 20; 1-2: 21; 3-6: 23; 7-9: 23.
        locations: &[
            Loc::NoColumn { units: 1, delta: 0 },
            Loc::OneLine { units: 2, delta: 1 },
            Loc::OneLine { units: 4, delta: 2 },
            Loc::Short { units: 3, col: 12 },
        ],
    });
    let inner = b.code(&CodeSpec {
        name: "inner",
        qualname: "inner",
        file: MAIN_PY,
        first_line: 40,
        // Units 0: 40; 1-3: 41; 4-9: 43; 10: none; 11-12: 40; 13-20: 170 (a two-byte
        // varint).
        locations: &[
            Loc::NoColumn { units: 1, delta: 0 },
            Loc::OneLine { units: 3, delta: 1 },
            Loc::Long { units: 4, delta: 2 },
            Loc::Short { units: 2, col: 0 },
            Loc::None { units: 1 },
            Loc::NoColumn {
                units: 2,
                delta: -3,
            },
            Loc::Long {
                units: 8,
                delta: 130,
            },
        ],
    });
    let non_ascii = b.code(&CodeSpec {
        name: "berechne_Ω",
        qualname: "Größe.berechne_Ω",
        file: NAIVE_PY,
        first_line: 7,
        // Units 0: 7; 1-8: 1007.
        locations: &[
            Loc::NoColumn { units: 1, delta: 0 },
            Loc::Long {
                units: 8,
                delta: 1000,
            },
        ],
    });
    let snake = b.code(&CodeSpec {
        name: "snake_🐍",
        qualname: "snake_🐍",
        file: MAIN_PY,
        first_line: 60,
        // Units 0-1: 60; 2-3: 61.
        locations: &[
            Loc::OneLine { units: 2, delta: 0 },
            Loc::OneLine { units: 2, delta: 1 },
        ],
    });
    let sub_main = b.code(&CodeSpec {
        name: "sub_main",
        qualname: "sub_main",
        file: "<string>",
        first_line: 1,
        // Units 0: 1; 1-3: 3.
        locations: &[
            Loc::NoColumn { units: 1, delta: 0 },
            Loc::NoColumn { units: 3, delta: 2 },
        ],
    });
    let shim = b.code(&CodeSpec {
        name: SHIM,
        qualname: SHIM,
        file: MAIN_PY,
        first_line: 1,
        locations: &[Loc::NoColumn { units: 1, delta: 0 }],
    });
    let entry = FrameSpec::Entry { code: shim };

    // Interpreters are pushed on the runtime's list: the newest is read first.
    let main = b.interpreter(0);
    let shared = b.interpreter(1);
    let sub = b.interpreter(2);
    let main_gil = b.own_gil(main);
    let sub_gil = b.own_gil(sub);
    b.share_gil(shared, main_gil);

    let stacks: [Vec<FrameSpec>; 4] = [
        vec![py(snake, 2), entry, tagged(module, 5)],
        vec![
            tagged(inner, 9),
            FrameSpec::Python {
                code: outer,
                unit: 3,
                owner: 2, // FRAME_OWNED_BY_FRAME_OBJECT
                tagged: true,
                tlbc: false,
            },
            entry,
            py(non_ascii, 5),
        ],
        vec![
            FrameSpec::Python {
                code: inner,
                unit: 13,
                owner: 0,
                tagged: true,
                tlbc: true,
            },
            FrameSpec::Python {
                code: inner,
                unit: 12,
                owner: 1, // FRAME_OWNED_BY_GENERATOR
                tagged: false,
                tlbc: false,
            },
            FrameSpec::Python {
                code: outer,
                unit: 1,
                owner: 0,
                tagged: true,
                tlbc: true,
            },
        ],
        vec![entry],
    ];
    let mut tstates = HashMap::new();
    for (&(tid, pthread), stack) in PTHREADS.iter().zip(&stacks) {
        let top = b.stack(stack);
        tstates.insert(tid, b.thread(main, tid, pthread, top));
    }
    tstates.insert(
        SHARED_TID,
        b.thread(shared, SHARED_TID, 0x7f3a_8000_0700, 0),
    );
    let top = b.stack(&[tagged(sub_main, 2)]);
    tstates.insert(SUB_TID, b.thread(sub, SUB_TID, 0x7f3a_7000_0700, top));

    b.write_gil(
        main_gil,
        &GilSpec {
            enabled,
            interval: 5000,
            last_holder: tstates[&1002],
            // Locked even when disabled: `enabled == 0` alone must mean nobody holds it.
            locked: 1,
            switch_number: 123_456_789,
        },
    );
    b.write_gil(
        sub_gil,
        &GilSpec {
            enabled: i32::MAX,
            interval: 2000,
            last_holder: tstates[&SUB_TID],
            locked: 0,
            switch_number: 42,
        },
    );

    // sys.modules["threading"]._active = {ident: Thread}, each with its `_name`.
    let mut active = Vec::new();
    for (pthread, name) in [(PTHREADS[0].1, "MainThread"), (PTHREADS[1].1, "wörker-Ω")] {
        let name = b.str(name);
        let ident = b.int(pthread);
        let attributes = b.str_dict(&[("_target", 0), ("_name", name), ("_ident", ident)]);
        let thread = b.thread_object(attributes);
        active.push((b.int(pthread), thread));
    }
    let active = b.dict(&active, false);
    let module_name = b.str("threading");
    let md_dict = b.str_dict(&[("__name__", module_name), ("_active", active)]);
    let threading = b.module(md_dict);
    let sys_dict = b.str_dict(&[]);
    let sys = b.module(sys_dict);
    let modules = b.str_dict(&[("sys", sys), ("threading", threading)]);
    b.set_modules(main, modules);

    World {
        builder: b,
        main,
        shared,
        sub,
        main_gil,
        sub_gil,
        tstates,
    }
}

type Expected = (&'static str, &'static str, &'static str, u32);

/// Each thread's stack, innermost first, as (function, qualname, file, line), in the order
/// the walker meets the threads (interpreters newest first, threads newest first).
fn expected_threads() -> Vec<(i32, i64, Vec<Expected>)> {
    vec![
        (SUB_TID, 2, vec![("sub_main", "sub_main", "<string>", 3)]),
        (SHARED_TID, 1, vec![]),
        (1004, 0, vec![]),
        (
            1003,
            0,
            vec![
                ("inner", "inner", MAIN_PY, 170),
                ("inner", "inner", MAIN_PY, 40),
                ("outer", "Worker.outer", MAIN_PY, 21),
            ],
        ),
        (
            1002,
            0,
            vec![
                ("inner", "inner", MAIN_PY, 43),
                ("outer", "Worker.outer", MAIN_PY, 23),
                ("berechne_Ω", "Größe.berechne_Ω", NAIVE_PY, 1007),
            ],
        ),
        (
            1001,
            0,
            vec![
                ("snake_🐍", "snake_🐍", MAIN_PY, 61),
                ("<module>", "<module>", MAIN_PY, 12),
            ],
        ),
    ]
}

/// `sizeof(struct _gil_runtime_state)` on this platform.
fn gil_size(free_threaded: bool) -> u64 {
    let cond = std::mem::size_of::<libc::pthread_cond_t>() as u64;
    let mutex = std::mem::size_of::<libc::pthread_mutex_t>() as u64;
    (if free_threaded { 40 } else { 32 }) + 2 * cond + 2 * mutex
}

/// Walks the world and checks everything against what was laid out.
fn check(flavor: &'static Flavor, enabled: i32, mode: &str) {
    let label = format!("{} enabled={enabled}", flavor.label);
    let w = world(flavor, enabled);
    let runtime = w.builder.runtime();
    let ft = flavor.free_threaded;
    assert_eq!(runtime.layout.free_threaded, ft, "{label}");
    let mut walker = Walker::new(&w.builder.image, runtime);
    let state = walker.read(true).unwrap_or_else(|e| panic!("{label}: {e}"));

    let interps: Vec<(u64, i64)> = state
        .interpreters
        .iter()
        .map(|i| (i.address, i.id))
        .collect();
    assert_eq!(interps, [(w.sub, 2), (w.shared, 1), (w.main, 0)], "{label}");
    let [sub, shared, main] = [0, 1, 2].map(|i| state.interpreters[i].gil);
    assert_eq!(
        sub,
        GilState {
            address: w.sub_gil,
            size: gil_size(ft),
            locked: false,
            last_holder: w.tstates[&SUB_TID],
            switch_number: 42,
            interval_us: 2000,
            enabled: ft.then_some(i32::MAX),
        },
        "{label}: subinterpreter's own GIL"
    );
    assert_eq!(sub.holder(), None, "{label}");
    assert_eq!(
        main,
        GilState {
            address: w.main_gil,
            size: gil_size(ft),
            locked: true,
            last_holder: w.tstates[&1002],
            switch_number: 123_456_789,
            interval_us: 5000,
            enabled: ft.then_some(enabled),
        },
        "{label}: main GIL"
    );
    let holder = (!ft || enabled != 0).then_some(w.tstates[&1002]);
    assert_eq!(main.holder(), holder, "{label}");
    assert_eq!(
        shared, main,
        "{label}: a shared GIL is read through ceval.gil"
    );

    let got: Vec<(i32, i64, Vec<FrameInfo>)> = state
        .threads
        .iter()
        .map(|t| {
            assert!(!t.truncated, "{label}");
            assert_eq!(t.tstate, w.tstates[&t.tid.unwrap()], "{label}");
            let frames = t
                .frames
                .iter()
                .map(|f| walker.codes.frame_info(f))
                .collect();
            (t.tid.unwrap(), state.interpreters[t.interpreter].id, frames)
        })
        .collect();
    let expected: Vec<(i32, i64, Vec<FrameInfo>)> = expected_threads()
        .into_iter()
        .map(|(tid, interp, frames)| {
            let frames = frames
                .into_iter()
                .map(|(function, qualname, file, line)| FrameInfo {
                    function: function.into(),
                    qualname: Some(qualname.into()),
                    file: file.into(),
                    line,
                })
                .collect();
            (tid, interp, frames)
        })
        .collect();
    assert_eq!(got, expected, "{label}: threads and stacks");
    let pthreads: HashMap<i32, u64> = state
        .threads
        .iter()
        .map(|t| (t.tid.unwrap(), t.pthread_id))
        .collect();
    for (tid, pthread) in PTHREADS {
        assert_eq!(pthreads[&tid], pthread, "{label}");
    }
    // Entry frames are skipped by their owner, before their code object is even read.
    assert_eq!(walker.codes.len(), 6, "{label}: code objects read");
    for id in 0..walker.codes.len() as u32 {
        assert_ne!(walker.codes.info(id).name, SHIM, "{label}");
    }

    let info = walker.runtime.python_info(Some(main.mode()));
    assert_eq!(info.gil, mode, "{label}");
    // What `record` and `top` report: the mode most samples saw, as the aggregator counts.
    let mut aggregator = Aggregator::default();
    for _ in 0..3 {
        aggregator.add(&Sample {
            interpreters: state.interpreters.clone(),
            threads: Vec::new(),
            target_stopped: false,
            time: std::time::Instant::now(),
            gil_read_at: std::time::Instant::now(),
            flag_check: None,
            gil_waiters: Vec::new(),
            gil_mutex_owners: Vec::new(),
        });
    }
    let recorded = walker
        .runtime
        .python_info(aggregator.gil().modes.most_seen());
    assert_eq!(recorded.gil, mode, "{label}: the mode a recording reports");
    assert_eq!(info.free_threaded, ft, "{label}");
    let version = format!("3.{}.0", flavor.minor());
    assert_eq!(info.version, version, "{label}");

    let again = walker.reread_gils(&state.interpreters).unwrap();
    let gils: Vec<GilState> = again.iter().map(|i| i.gil).collect();
    assert_eq!(gils, [sub, shared, main], "{label}");

    let names: HashMap<u64, String> = read_thread_names(&w.builder.image, &walker.runtime, w.main)
        .unwrap_or_else(|e| panic!("{label}: thread names: {e}"))
        .into_iter()
        .map(|t| (t.ident, t.name))
        .collect();
    let expected_names = HashMap::from([
        (PTHREADS[0].1, "MainThread".to_string()),
        (PTHREADS[1].1, "wörker-Ω".to_string()),
    ]);
    assert_eq!(names, expected_names, "{label}");
    let none = read_thread_names(&w.builder.image, &walker.runtime, w.sub).unwrap();
    assert!(none.is_empty(), "{label}: no sys.modules, no names");
}

#[test]
fn synthetic_tables_have_the_declared_shape() {
    for flavor in [&FT_313, &DEFAULT_314, &FT_314, &FT_315] {
        flavor.check_table_shape();
    }
}

#[test]
fn free_threaded_315() {
    check(&FT_315, 0, "disabled");
    check(&FT_315, i32::MAX, "enabled");
    check(&FT_315, 1, "transient");
}

#[test]
fn free_threaded_313() {
    check(&FT_313, 0, "disabled");
    check(&FT_313, i32::MAX, "enabled");
    check(&FT_313, 1, "transient");
}

#[test]
fn default_314() {
    check(&DEFAULT_314, 0, "enabled");
}

#[test]
fn free_threaded_314() {
    check(&FT_314, 0, "disabled");
    check(&FT_314, i32::MAX, "enabled");
    check(&FT_314, 1, "transient");
}

/// 3.14 frames are read through the stack-ref tags and thread-local bytecode: the same
/// stacks with those features misread would name other lines.
#[test]
fn free_threaded_314_reads_the_per_thread_bytecode() {
    let w = world(&FT_314, 0);
    let runtime = w.builder.runtime();
    assert_eq!(runtime.layout.frame.code_tag_mask, 1);
    assert!(runtime.layout.frame.tlbc_index.is_some());
    let mut walker = Walker::new(&w.builder.image, runtime);
    let state = walker.read(true).unwrap();
    let t1003 = state.threads.iter().find(|t| t.tid == Some(1003)).unwrap();
    let lines: Vec<u32> = t1003.frames.iter().map(|f| f.line).collect();
    assert_eq!(lines, [170, 40, 21]);
}
