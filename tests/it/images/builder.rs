//! Synthetic CPython memory for builds that are not installed here. A [`Builder`] lays
//! out in a [`MemoryImage`] the structures a [`Flavor`]'s `_Py_DebugOffsets` describes:
//! `_PyRuntime` starting with the table, interpreters with their GILs, thread states,
//! interpreter frames, code objects with names, location tables and bytecode, and the
//! dicts and objects behind `threading._active`. Memory is written from the C
//! declarations, never from gilscope's `Layout`, so the reader is checked against the
//! headers rather than against itself.

use super::flavors::{Flavor, GilField};
use super::locations::{Loc, location_table};
use gilscope::mem::{MemoryExt, MemoryImage};
use gilscope::model::python::Build;
use gilscope::python::attach::{PythonBinary, Runtime};
use gilscope::python::debug_offsets::{DEBUG_OFFSETS_READ_SIZE, layout_from_debug_offsets};
use std::collections::HashMap;
use std::path::PathBuf;

/// A code object as laid out: its address and where its bytecode copies start.
#[derive(Debug, Clone, Copy)]
pub struct Code {
    pub addr: u64,
    /// `co_code_adaptive`: the bytecode inline in the code object (`co_tlbc->entries[0]`).
    pub bytecode: u64,
    /// Free-threaded 3.14: `co_tlbc->entries[1]`, another thread's specialized copy.
    pub copy: Option<u64>,
}

pub struct CodeSpec<'a> {
    pub name: &'a str,
    pub qualname: &'a str,
    pub file: &'a str,
    pub first_line: i32,
    pub locations: &'a [Loc],
}

/// One frame of a stack, innermost first.
#[derive(Debug, Clone, Copy)]
pub enum FrameSpec {
    /// A Python frame executing the code unit `unit`. `owner` is `FRAME_OWNED_BY_THREAD`
    /// (0) or another non-C-stack owner (1 generator, 2 frame object); `tagged` sets the
    /// stack-ref tag bits of `f_executable`; `tlbc` runs thread-local bytecode copy 1.
    Python {
        code: Code,
        unit: u64,
        owner: u8,
        tagged: bool,
        tlbc: bool,
    },
    /// The entry frame of a C call into the interpreter. Its `f_executable` points at a
    /// real code object, so only its owner can tell a reader to skip it.
    Entry { code: Code },
}

/// A GIL's fields (`struct _gil_runtime_state`).
#[derive(Debug, Clone, Copy)]
pub struct GilSpec {
    pub enabled: i32,
    pub interval: u64,
    pub last_holder: u64,
    pub locked: i32,
    pub switch_number: u64,
}

/// Object types a reader checks by `tp_flags` or `tp_name` (see `objects.rs`).
#[derive(Default)]
pub(super) struct Types {
    pub code: u64,
    pub str: u64,
    pub bytes: u64,
    pub int: u64,
    pub dict: u64,
    pub module: u64,
    pub thread: u64,
}

pub struct Builder {
    pub flavor: &'static Flavor,
    pub image: MemoryImage,
    /// Address of `_PyRuntime`.
    pub runtime: u64,
    next_free: u64,
    pub(super) types: Types,
    /// Thread-list heads, by interpreter.
    thread_heads: HashMap<u64, u64>,
}

/// Where `_PyRuntime` sits: in libpython's data, not page aligned.
const RUNTIME_ADDR: u64 = 0x7f3a_5c64_2a40;
/// Where the builder's heap starts.
const HEAP_START: u64 = 0x5610_2000_0000;

impl Builder {
    pub fn new(flavor: &'static Flavor) -> Builder {
        let mut b = Builder {
            flavor,
            image: MemoryImage::new(),
            runtime: RUNTIME_ADDR,
            next_free: HEAP_START,
            types: Types::default(),
            thread_heads: HashMap::new(),
        };
        b.image.write(RUNTIME_ADDR, &flavor.debug_offsets());
        b.types = b.new_types();
        b
    }

    pub(super) fn off(&self, section: &str, field: &str) -> u64 {
        self.flavor.offset(section, field)
    }

    /// `size` fresh bytes, 16-aligned, with a gap after them.
    pub fn alloc(&mut self, size: u64) -> u64 {
        let at = self.next_free;
        self.next_free = (at + size + 32 + 15) & !15;
        at
    }

    /// A new object of type `ty` with `size` bytes (refcount 1).
    pub(super) fn object(&mut self, ty: u64, size: u64) -> u64 {
        // A managed dict lives in the words before the object (pre-header): leave room.
        let obj = self.alloc(size + 32) + 32;
        let ob_type = self.off("pyobject", "ob_type");
        if !self.flavor.free_threaded {
            self.image.write_u64(obj, 1); // ob_refcnt
        }
        self.image.write_u64(obj + ob_type, ty);
        obj
    }

    /// A code object with its names, location table and bytecode (one `NOP`-like code
    /// unit per unit covered by the table); free-threaded 3.14 adds `co_tlbc` with a second
    /// copy of the bytecode elsewhere.
    pub fn code(&mut self, spec: &CodeSpec) -> Code {
        let units: u64 = spec.locations.iter().map(|l| l.units()).sum();
        let (name, qualname, file) = (
            self.str(spec.name),
            self.str(spec.qualname),
            self.str(spec.file),
        );
        let linetable = self.bytes(&location_table(spec.locations));
        let adaptive = self.off("code_object", "co_code_adaptive");
        let addr = self.object(self.types.code, adaptive + 2 * units);
        // `PyObject_VAR_HEAD`: `ob_size` is the number of code units.
        let head = self.off("pyobject", "size");
        self.image.write_u64(addr + head, units);
        let fl = self.flavor;
        let f = |field: &str| fl.offset("code_object", field);
        let (fname, fqual, ffile, fline, ftable) = (
            f("name"),
            f("qualname"),
            f("filename"),
            f("firstlineno"),
            f("linetable"),
        );
        self.image.write_u64(addr + fname, name);
        self.image.write_u64(addr + fqual, qualname);
        self.image.write_u64(addr + ffile, file);
        self.image.write_i32(addr + fline, spec.first_line);
        self.image.write_u64(addr + ftable, linetable);
        let bytecode = addr + adaptive;
        let code_units: Vec<u8> = (0..units).flat_map(|i| [9, i as u8]).collect();
        self.image.write(bytecode, &code_units);
        let copy = if self.flavor.tlbc {
            // `_PyCodeArray { Py_ssize_t size; char *entries[]; }`, entries[0] the inline
            // bytecode. A reader that measured an offset into the copy from the inline
            // start would land far past the end of the location table.
            let copy = self.alloc(2 * units);
            self.image.write(copy, &code_units);
            let array = self.alloc(24);
            self.image.write_u64(array, 2);
            self.image.write_u64(array + 8, bytecode);
            self.image.write_u64(array + 16, copy);
            self.image
                .write_u64(addr + self.off("code_object", "co_tlbc"), array);
            Some(copy)
        } else {
            None
        };
        Code {
            addr,
            bytecode,
            copy,
        }
    }

    /// Lays out `frames` (innermost first) linked by `previous`; returns the innermost
    /// frame's address (0 for no frames).
    pub fn stack(&mut self, frames: &[FrameSpec]) -> u64 {
        let mut previous = 0;
        for spec in frames.iter().rev() {
            previous = self.frame(spec, previous);
        }
        previous
    }

    fn frame(&mut self, spec: &FrameSpec, previous: u64) -> u64 {
        let fl = self.flavor;
        let f = |field: &str| fl.offset("interpreter_frame", field);
        let (size, f_prev, f_exec, f_instr, f_owner, f_local) = (
            f("size"),
            f("previous"),
            f("executable"),
            f("instr_ptr"),
            f("owner"),
            f("localsplus"),
        );
        let frame = self.alloc(size + 64);
        self.image.write_u64(frame + f_prev, previous);
        if self.flavor.minor() >= 14 {
            self.image
                .write_u64(frame + f("stackpointer"), frame + f_local);
        }
        let (code, instr, owner, tagged, tlbc) = match *spec {
            FrameSpec::Python {
                code,
                unit,
                owner,
                tagged,
                tlbc,
            } => {
                let base = match (tlbc, code.copy) {
                    (true, Some(copy)) => copy,
                    _ => code.bytecode,
                };
                (code, base + 2 * unit, owner, tagged, tlbc)
            }
            FrameSpec::Entry { code } => {
                (code, code.bytecode, self.flavor.entry_owner, true, false)
            }
        };
        let tag = if tagged {
            self.flavor.executable_tag
        } else {
            0
        };
        self.image.write_u64(frame + f_exec, code.addr | tag);
        self.image.write_u64(frame + f_instr, instr);
        self.image.write(frame + f_owner, &[owner]);
        if self.flavor.tlbc {
            let index = i32::from(tlbc && code.copy.is_some());
            self.image.write_i32(frame + f("tlbc_index"), index);
        }
        frame
    }

    /// A new `PyInterpreterState`, pushed on `_PyRuntime.interpreters.head` (newest first).
    /// Its `ceval.gil` points at its own `_gil` until [`Builder::share_gil`].
    pub fn interpreter(&mut self, id: i64) -> u64 {
        let fl = self.flavor;
        let f = |field: &str| fl.offset("interpreter_state", field);
        let (size, f_id, f_next, f_gil_ptr, f_gil) = (
            f("size"),
            f("id"),
            f("next"),
            f("ceval_gil"),
            f("gil_runtime_state"),
        );
        let interp = self.alloc(size);
        let head_at = self.runtime + self.off("runtime_state", "interpreters_head");
        let head = self.image.read_u64(head_at).unwrap_or(0);
        self.image.write_u64(interp + f_id, id as u64);
        self.image.write_u64(interp + f_next, head);
        self.image.write_u64(interp + f_gil_ptr, interp + f_gil);
        self.image.write_u64(head_at, interp);
        // An untouched GIL reads `locked == -1`.
        self.write_gil(
            interp + f_gil,
            &GilSpec {
                enabled: 0,
                interval: 0,
                last_holder: 0,
                locked: -1,
                switch_number: 0,
            },
        );
        interp
    }

    /// Where the interpreter's own `_gil` is.
    pub fn own_gil(&self, interp: u64) -> u64 {
        interp + self.off("interpreter_state", "gil_runtime_state")
    }

    /// Makes `interp` use `gil` (another interpreter's) as CPython's shared-GIL mode does.
    pub fn share_gil(&mut self, interp: u64, gil: u64) {
        let at = interp + self.off("interpreter_state", "ceval_gil");
        self.image.write_u64(at, gil);
    }

    pub fn write_gil(&mut self, gil: u64, spec: &GilSpec) {
        let fl = self.flavor;
        if fl.free_threaded {
            self.image
                .write_i32(gil + fl.gil_field(GilField::Enabled), spec.enabled);
        }
        let w = &mut self.image;
        w.write_u64(gil + fl.gil_field(GilField::Interval), spec.interval);
        w.write_u64(gil + fl.gil_field(GilField::LastHolder), spec.last_holder);
        w.write_i32(gil + fl.gil_field(GilField::Locked), spec.locked);
        w.write_u64(
            gil + fl.gil_field(GilField::SwitchNumber),
            spec.switch_number,
        );
        // `cond`, `mutex`, `switch_cond`, `switch_mutex` follow: make them readable.
        let after = gil + fl.gil_field(GilField::SwitchNumber) + 8;
        w.write(after, &[0u8; 192]);
    }

    /// Sets `imports.modules` (the `sys.modules` dict).
    pub fn set_modules(&mut self, interp: u64, modules: u64) {
        let at = interp + self.off("interpreter_state", "imports_modules");
        self.image.write_u64(at, modules);
    }

    /// A new `PyThreadState` running `top_frame`, pushed on the interpreter's thread list
    /// (newest first, as `new_threadstate` does).
    pub fn thread(&mut self, interp: u64, tid: i32, pthread: u64, top_frame: u64) -> u64 {
        let fl = self.flavor;
        let f = |field: &str| fl.offset("thread_state", field);
        let (size, f_prev, f_next, f_interp, f_frame, f_id, f_native, f_status) = (
            f("size"),
            f("prev"),
            f("next"),
            f("interp"),
            f("current_frame"),
            f("thread_id"),
            f("native_thread_id"),
            f("status"),
        );
        let tstate = self.alloc(size);
        let head = self.thread_heads.get(&interp).copied().unwrap_or(0);
        let w = &mut self.image;
        w.write_u64(tstate + f_next, head);
        if head != 0 {
            w.write_u64(head + f_prev, tstate);
        }
        w.write_u64(tstate + f_interp, interp);
        w.write_u64(tstate + f_frame, top_frame);
        w.write_u64(tstate + f_id, pthread);
        w.write_u64(tstate + f_native, tid as u64);
        w.write_u32(tstate + f_status, 0b111); // initialized, bound, unbound=0, ...
        let heads_at = interp + self.off("interpreter_state", "threads_head");
        self.image.write_u64(heads_at, tstate);
        if self.flavor.minor() >= 14 && head == 0 {
            let main_at = interp + self.off("interpreter_state", "threads_main");
            self.image.write_u64(main_at, tstate);
        }
        self.thread_heads.insert(interp, tstate);
        tstate
    }

    /// What `attach` would produce for this image: the layout read from the
    /// `_Py_DebugOffsets` at `_PyRuntime`, and the fake `PyCode_Type`.
    pub fn runtime(&self) -> Runtime {
        let bytes = self
            .image
            .read_vec(self.runtime, DEBUG_OFFSETS_READ_SIZE)
            .expect("the debug offsets are in the image");
        let layout = layout_from_debug_offsets(&bytes)
            .unwrap_or_else(|e| panic!("{}: {e}", self.flavor.label));
        let binary = PythonBinary {
            version: layout.version,
            build: Build::Shared,
            free_threaded: layout.free_threaded,
            path: PathBuf::from(format!("/synthetic/libpython{}.so", self.flavor.label)),
        };
        Runtime {
            pid: 0,
            binary,
            layout,
            address: self.runtime,
            code_type: Some(self.types.code),
        }
    }
}
