//! Where every field the walker reads sits, for one CPython build. Per-version differences
//! live here as data: tables for 3.8-3.12 (`tables.rs`), `_Py_DebugOffsets` read from the
//! target for 3.13+ (`debug_offsets.rs`). All offsets are in bytes from the start of the
//! named C struct.

use super::version::Version;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub version: Version,
    pub free_threaded: bool,
    pub runtime: RuntimeLayout,
    pub interp: InterpLayout,
    pub gil: GilLayout,
    pub tstate: ThreadLayout,
    pub frame: FrameLayout,
    pub code: CodeLayout,
    pub object: ObjectLayout,
}

/// `_PyRuntimeState`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeLayout {
    /// `interpreters.head`: the newest `PyInterpreterState*`.
    pub interpreters_head: u64,
    /// 3.8-3.11: `ceval.gil`, the one GIL, inline in the runtime. `None` from 3.12.
    pub gil: Option<u64>,
}

/// `PyInterpreterState`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterpLayout {
    /// `id` (int64).
    pub id: u64,
    /// `next` (`PyInterpreterState*`).
    pub next: u64,
    /// `tstate_head` (<= 3.10) or `threads.head` (3.11+).
    pub threads_head: u64,
    /// 3.12+: `ceval.gil`, a `struct _gil_runtime_state*` to this interpreter's GIL
    /// (its own `_gil`, or the main interpreter's when shared). `None` before 3.12.
    pub gil_ptr: Option<u64>,
    /// `modules` (<= 3.11) or `imports.modules` (3.12+): the `sys.modules` dict.
    pub modules: u64,
}

/// `struct _gil_runtime_state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GilLayout {
    /// Free-threaded builds: `enabled` (int). `None` otherwise.
    pub enabled: Option<u64>,
    /// `interval` (unsigned long, µs).
    pub interval: u64,
    /// `last_holder` (`PyThreadState*`).
    pub last_holder: u64,
    /// `locked` (int, -1 when uninitialized).
    pub locked: u64,
    /// `switch_number` (unsigned long).
    pub switch_number: u64,
    /// `sizeof(struct _gil_runtime_state)`: a futex inside [gil, gil + size) is a GIL wait.
    pub size: u64,
}

/// `PyThreadState`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadLayout {
    /// `next` (`PyThreadState*`).
    pub next: u64,
    /// `interp` (`PyInterpreterState*`).
    pub interp: u64,
    /// `thread_id` (unsigned long: the `pthread_t`, which is also `threading.get_ident()`).
    pub thread_id: u64,
    /// 3.11+: `native_thread_id` (unsigned long: the kernel tid). `None` before.
    pub native_thread_id: Option<u64>,
    /// How to reach the innermost frame.
    pub frame: FramePointer,
    /// 3.13+: the thread's own GIL flags, which take_gil and drop_gil write. `None` before.
    pub gil_flags: Option<ThreadGilFlags>,
}

/// Where a thread state says whether it holds or requests the GIL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadGilFlags {
    /// "Currently holds the GIL": a bit of `_status` (3.13), an `int holds_gil` (3.14+).
    pub holds: FlagField,
    /// 3.15+: `int gil_requested`, "currently requesting the GIL".
    pub requested: Option<u64>,
    /// The interpreter exports these offsets in `_Py_DebugOffsets` (3.15+) for samplers:
    /// they are then the truth of who holds and who waits. Otherwise they are pinned from
    /// the headers and only cross-check the GIL struct.
    pub exported: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagField {
    /// An `int`, set when non-zero.
    Int(u64),
    /// Bit `bit` of the 32-bit word at `word`.
    Bit { word: u64, bit: u32 },
}

impl FlagField {
    /// The offset of the 4-byte word that holds the flag.
    pub fn word(self) -> u64 {
        match self {
            FlagField::Int(offset) | FlagField::Bit { word: offset, .. } => offset,
        }
    }

    pub fn is_set(self, word: u32) -> bool {
        match self {
            FlagField::Int(_) => word != 0,
            FlagField::Bit { bit, .. } => word >> bit & 1 == 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramePointer {
    /// A frame pointer directly in the thread state: `frame` (<= 3.10) or
    /// `current_frame` (3.13+).
    Direct(u64),
    /// 3.11-3.12: `tstate->cframe` (`_PyCFrame*`), then `cframe->current_frame`.
    ViaCFrame { cframe: u64, current_frame: u64 },
}

/// `PyFrameObject` (<= 3.10) or `_PyInterpreterFrame` (3.11+).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameLayout {
    pub kind: FrameKind,
    /// `f_back` (<= 3.10) or `previous` (3.11+).
    pub previous: u64,
    /// `f_code` (<= 3.12) or `f_executable` (3.13+).
    pub code: u64,
    /// `f_lasti` (int, <= 3.10), `prev_instr` (3.11-3.12) or `instr_ptr` (3.13+).
    pub instr: u64,
    /// 3.11+: `owner` (char). `None` before.
    pub owner: Option<u64>,
    /// 3.12+: the `owner` value of frames that belong to the C stack (entry shims), which
    /// carry no Python code and are skipped.
    pub owner_cstack: Option<u8>,
    /// 3.14+: `f_executable` is a `_PyStackRef`; these low bits are tags, not address.
    pub code_tag_mask: u64,
    /// Free-threaded 3.14+: `tlbc_index` (int32), which copy of the bytecode runs.
    pub tlbc_index: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// `PyFrameObject` with `f_lasti` as an int: a byte offset (<= 3.9) or an index in
    /// 2-byte code units (3.10).
    Object { lasti_in_code_units: bool },
    /// `_PyInterpreterFrame` with a pointer to a code unit inside the code object.
    Interpreter,
}

/// `PyCodeObject`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeLayout {
    pub filename: u64,
    pub name: u64,
    /// 3.11+: `co_qualname`.
    pub qualname: Option<u64>,
    /// `co_firstlineno` (int).
    pub firstlineno: u64,
    /// `co_lnotab` (<= 3.9) or `co_linetable` (3.10+), a bytes object.
    pub linetable: u64,
    pub linetable_format: LineTableFormat,
    /// 3.11+: `co_code_adaptive`, where the bytecode starts, inline in the code object.
    pub code_adaptive: Option<u64>,
    /// Free-threaded 3.14+: `co_tlbc` (a `_PyCodeArray*` of per-thread bytecode copies).
    pub tlbc: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineTableFormat {
    /// `co_lnotab` (3.8-3.9).
    Lnotab,
    /// PEP 626 `co_linetable` (3.10).
    Linetable310,
    /// The location table (3.11+).
    Locations,
}

/// Objects other than frames and code: what reading names and strings needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectLayout {
    /// `PyObject.ob_type`.
    pub ob_type: u64,
    /// `PyTypeObject.tp_name` (`const char*`).
    pub tp_name: u64,
    /// `PyUnicodeObject` `state` bit field (a 32-bit word).
    pub unicode_state: u64,
    /// Bit position of `kind` (3 bits) in `state`; `compact` and `ascii` follow it.
    pub unicode_kind_shift: u32,
    /// `length` (Py_ssize_t, in code points).
    pub unicode_length: u64,
    /// `sizeof(PyASCIIObject)`: where a compact ASCII string's characters start.
    pub unicode_ascii_size: u64,
    /// `sizeof(PyCompactUnicodeObject)`: where other compact strings' characters start.
    pub unicode_compact_size: u64,
    /// `PyBytesObject.ob_base.ob_size`.
    pub bytes_size: u64,
    /// `PyBytesObject.ob_sval`.
    pub bytes_data: u64,
    /// `PyDictObject.ma_keys`.
    pub dict_keys: u64,
    /// `PyDictObject.ma_values`.
    pub dict_values: u64,
    pub dict_keys_format: DictKeysFormat,
    /// `PyModuleObject.md_dict`.
    pub module_dict: u64,
    /// `PyLongObject` digits (`ob_digit`), 30-bit digits in 32-bit words.
    pub long_digits: u64,
    /// `ob_size` (<= 3.11: signed digit count) or `long_value.lv_tag` (3.12+).
    pub long_size: u64,
    pub long_format: LongFormat,
    /// `PyTypeObject.tp_dictoffset` (Py_ssize_t).
    pub tp_dictoffset: u64,
    /// `PyTypeObject.tp_basicsize` (Py_ssize_t).
    pub tp_basicsize: u64,
    /// `PyTypeObject.tp_flags` (unsigned long).
    pub tp_flags: u64,
    /// `PyHeapTypeObject.ht_cached_keys` (3.11+): the shared keys of split instance dicts.
    pub ht_cached_keys: Option<u64>,
    pub instance_dict: InstanceDictFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DictKeysFormat {
    /// 3.8-3.10: `dk_refcnt, dk_size, dk_lookup, dk_usable, dk_nentries, dk_indices[]`;
    /// entries are `{hash, key, value}` after `dk_size` indices.
    Sized,
    /// 3.11+: `dk_refcnt, dk_log2_size, dk_log2_index_bytes, dk_kind, dk_version, dk_usable,
    /// dk_nentries, dk_indices[]`; unicode-keyed entries are `{key, value}`. `header` is the
    /// offset of `dk_indices` (it grows by a mutex in free-threaded builds).
    Log2 { header: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongFormat {
    /// `ob_size`: signed number of digits.
    SignedSize,
    /// `lv_tag`: digits << 3 | sign bits.
    Tagged,
}

/// Where a plain class instance keeps its attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceDictFormat {
    /// `*(obj + tp_dictoffset)` is the `__dict__` (3.8-3.10).
    DictOffset,
    /// 3.11: the dict at `obj - 3 words`, or else the values array at `obj - 4 words`.
    Managed311,
    /// 3.12: one tagged word at `obj - 3 words`: values pointer if bit 0 is set, else dict.
    Managed312,
    /// 3.13+: the dict at `obj - 3 words`, or else inline values at `obj + tp_basicsize`.
    Inline313,
}
