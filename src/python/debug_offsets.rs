//! Layouts for 3.13+ from `_Py_DebugOffsets`.
//!
//! From 3.13 `_PyRuntime` starts with `_Py_DebugOffsets` (`Include/internal/pycore_runtime.h`
//! in 3.13, `Include/internal/pycore_debug_offsets.h` in 3.14): a cookie, `PY_VERSION_HEX`,
//! a free-threaded flag, then tables of `uint64_t` sizes and offsets that the interpreter
//! computed with `offsetof()`/`sizeof()` for its own build. Its shape is fixed within a
//! minor version only, so there is one table per minor version here ([`TABLE_313`],
//! [`TABLE_314`]), written in the order of the C declaration.
//!
//! Everything a [`Layout`] needs that the debug offsets do not carry is derived from what
//! they do carry plus the declarations in that version's headers; every such constant says
//! which C expression it stands for.

use super::layout::{
    CodeLayout, DictKeysFormat, FlagField, FrameKind, FrameLayout, FramePointer, GilLayout,
    InstanceDictFormat, InterpLayout, Layout, LineTableFormat, LongFormat, ObjectLayout,
    RuntimeLayout, ThreadGilFlags, ThreadLayout,
};
use super::version::Version;
use crate::mem::Fields;

/// Why a `_Py_DebugOffsets` buffer gave no layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DebugOffsetsError {
    #[error("no _Py_DebugOffsets: the cookie is not \"xdebugpy\"")]
    BadCookie,
    #[error(
        "_Py_DebugOffsets of CPython {0} has a shape gilscope does not know (3.13 to 3.15 only)"
    )]
    UnsupportedVersion(Version),
    #[error("_Py_DebugOffsets is cut short: fewer bytes than the struct for its version")]
    Truncated,
    #[error("implausible _Py_DebugOffsets: {0}")]
    Implausible(String),
}

/// One nested struct of `_Py_DebugOffsets`: its C member name and its `uint64_t` fields in
/// declaration order.
type Section = (&'static str, &'static [&'static str]);

/// `_Py_DebugOffsets` of 3.13 (`Include/internal/pycore_runtime.h`), after the header
/// (`char cookie[8]; uint64_t version; uint64_t free_threaded;`).
pub const TABLE_313: &[Section] = &[
    (
        "runtime_state",
        &["size", "finalizing", "interpreters_head"],
    ),
    (
        "interpreter_state",
        &[
            "size",
            "id",
            "next",
            "threads_head",
            "gc",
            "imports_modules",
            "sysdict",
            "builtins",
            "ceval_gil",
            "gil_runtime_state",
            "gil_runtime_state_enabled",
            "gil_runtime_state_locked",
            "gil_runtime_state_holder",
        ],
    ),
    (
        "thread_state",
        &[
            "size",
            "prev",
            "next",
            "interp",
            "current_frame",
            "thread_id",
            "native_thread_id",
            "datastack_chunk",
            "status",
        ],
    ),
    (
        "interpreter_frame",
        &[
            "size",
            "previous",
            "executable",
            "instr_ptr",
            "localsplus",
            "owner",
        ],
    ),
    (
        "code_object",
        &[
            "size",
            "filename",
            "name",
            "qualname",
            "linetable",
            "firstlineno",
            "argcount",
            "localsplusnames",
            "localspluskinds",
            "co_code_adaptive",
        ],
    ),
    ("pyobject", &["size", "ob_type"]),
    ("type_object", &["size", "tp_name", "tp_repr", "tp_flags"]),
    ("tuple_object", &["size", "ob_item", "ob_size"]),
    ("list_object", &["size", "ob_item", "ob_size"]),
    ("dict_object", &["size", "ma_keys", "ma_values"]),
    ("float_object", &["size", "ob_fval"]),
    ("long_object", &["size", "lv_tag", "ob_digit"]),
    ("bytes_object", &["size", "ob_size", "ob_sval"]),
    (
        "unicode_object",
        &["size", "state", "length", "asciiobject_size"],
    ),
    ("gc", &["size", "collecting"]),
];

/// `_Py_DebugOffsets` of 3.14 final (`Include/internal/pycore_debug_offsets.h`). Against
/// 3.13: `threads_main` after `threads_head` and `code_object_generation`,
/// `tlbc_generation` at the end of the interpreter table; `stackpointer`, `tlbc_index` in
/// the frame table; `co_tlbc` in the code table; a `set_object` table between the list and
/// dict tables; `gen_object`, `llist_node` and `debugger_support` at the end. (Early 3.14
/// development versions of the header differ; their tables fail the plausibility checks.)
pub const TABLE_314: &[Section] = &[
    (
        "runtime_state",
        &["size", "finalizing", "interpreters_head"],
    ),
    (
        "interpreter_state",
        &[
            "size",
            "id",
            "next",
            "threads_head",
            "threads_main",
            "gc",
            "imports_modules",
            "sysdict",
            "builtins",
            "ceval_gil",
            "gil_runtime_state",
            "gil_runtime_state_enabled",
            "gil_runtime_state_locked",
            "gil_runtime_state_holder",
            "code_object_generation",
            "tlbc_generation",
        ],
    ),
    (
        "thread_state",
        &[
            "size",
            "prev",
            "next",
            "interp",
            "current_frame",
            "thread_id",
            "native_thread_id",
            "datastack_chunk",
            "status",
        ],
    ),
    (
        "interpreter_frame",
        &[
            "size",
            "previous",
            "executable",
            "instr_ptr",
            "localsplus",
            "owner",
            "stackpointer",
            "tlbc_index",
        ],
    ),
    (
        "code_object",
        &[
            "size",
            "filename",
            "name",
            "qualname",
            "linetable",
            "firstlineno",
            "argcount",
            "localsplusnames",
            "localspluskinds",
            "co_code_adaptive",
            "co_tlbc",
        ],
    ),
    ("pyobject", &["size", "ob_type"]),
    ("type_object", &["size", "tp_name", "tp_repr", "tp_flags"]),
    ("tuple_object", &["size", "ob_item", "ob_size"]),
    ("list_object", &["size", "ob_item", "ob_size"]),
    ("set_object", &["size", "used", "table", "mask"]),
    ("dict_object", &["size", "ma_keys", "ma_values"]),
    ("float_object", &["size", "ob_fval"]),
    ("long_object", &["size", "lv_tag", "ob_digit"]),
    ("bytes_object", &["size", "ob_size", "ob_sval"]),
    (
        "unicode_object",
        &["size", "state", "length", "asciiobject_size"],
    ),
    ("gc", &["size", "collecting"]),
    (
        "gen_object",
        &["size", "gi_name", "gi_iframe", "gi_frame_state"],
    ),
    ("llist_node", &["next", "prev"]),
    (
        "debugger_support",
        &[
            "eval_breaker",
            "remote_debugger_support",
            "remote_debugging_enabled",
            "debugger_pending_call",
            "debugger_script_path",
            "debugger_script_path_size",
        ],
    ),
];

/// `_Py_DebugOffsets` of 3.15 (`Include/internal/pycore_debug_offsets.h`, checked against
/// 3.15.2). Against 3.14: `base_frame`, `last_profiled_frame`, `last_profiled_frame_seq`,
/// `holds_gil`, `gil_requested`, `current_exception`, `exc_state` in the thread table; an
/// `err_stackitem` table after it; `tp_basicsize`, `tp_dictoffset` in the type table and a
/// `heap_type_object` table after it; `compactunicodeobject_size` in the unicode table;
/// `frame`, `generation_stats_size`, `generation_stats` in the gc table.
pub const TABLE_315: &[Section] = &[
    (
        "runtime_state",
        &["size", "finalizing", "interpreters_head"],
    ),
    (
        "interpreter_state",
        &[
            "size",
            "id",
            "next",
            "threads_head",
            "threads_main",
            "gc",
            "imports_modules",
            "sysdict",
            "builtins",
            "ceval_gil",
            "gil_runtime_state",
            "gil_runtime_state_enabled",
            "gil_runtime_state_locked",
            "gil_runtime_state_holder",
            "code_object_generation",
            "tlbc_generation",
        ],
    ),
    (
        "thread_state",
        &[
            "size",
            "prev",
            "next",
            "interp",
            "current_frame",
            "base_frame",
            "last_profiled_frame",
            "last_profiled_frame_seq",
            "thread_id",
            "native_thread_id",
            "datastack_chunk",
            "status",
            "holds_gil",
            "gil_requested",
            "current_exception",
            "exc_state",
        ],
    ),
    ("err_stackitem", &["exc_value"]),
    (
        "interpreter_frame",
        &[
            "size",
            "previous",
            "executable",
            "instr_ptr",
            "localsplus",
            "owner",
            "stackpointer",
            "tlbc_index",
        ],
    ),
    (
        "code_object",
        &[
            "size",
            "filename",
            "name",
            "qualname",
            "linetable",
            "firstlineno",
            "argcount",
            "localsplusnames",
            "localspluskinds",
            "co_code_adaptive",
            "co_tlbc",
        ],
    ),
    ("pyobject", &["size", "ob_type"]),
    (
        "type_object",
        &[
            "size",
            "tp_name",
            "tp_repr",
            "tp_flags",
            "tp_basicsize",
            "tp_dictoffset",
        ],
    ),
    ("heap_type_object", &["size", "ht_cached_keys"]),
    ("tuple_object", &["size", "ob_item", "ob_size"]),
    ("list_object", &["size", "ob_item", "ob_size"]),
    ("set_object", &["size", "used", "table", "mask"]),
    ("dict_object", &["size", "ma_keys", "ma_values"]),
    ("float_object", &["size", "ob_fval"]),
    ("long_object", &["size", "lv_tag", "ob_digit"]),
    ("bytes_object", &["size", "ob_size", "ob_sval"]),
    (
        "unicode_object",
        &[
            "size",
            "state",
            "length",
            "asciiobject_size",
            "compactunicodeobject_size",
        ],
    ),
    (
        "gc",
        &[
            "size",
            "collecting",
            "frame",
            "generation_stats_size",
            "generation_stats",
        ],
    ),
    (
        "gen_object",
        &["size", "gi_name", "gi_iframe", "gi_frame_state"],
    ),
    ("llist_node", &["next", "prev"]),
    (
        "debugger_support",
        &[
            "eval_breaker",
            "remote_debugger_support",
            "remote_debugging_enabled",
            "debugger_pending_call",
            "debugger_script_path",
            "debugger_script_path_size",
        ],
    ),
];

/// What gilscope knows of one minor version beyond its `_Py_DebugOffsets` table: the facts
/// the table does not carry, each read from that version's headers. Adding a minor version
/// is one entry in [`MINOR_VERSIONS`] (and its table); a version not listed is refused.
#[derive(Debug, PartialEq, Eq)]
pub struct MinorVersion {
    pub minor: u8,
    pub table: &'static [Section],
    /// The `owner` of the entry frame that `_PyEval_EvalFrameDefault` pushes for each C call
    /// into the interpreter: it carries no code and is skipped.
    pub entry_frame_owner: u8,
    /// Tag bits of `_PyInterpreterFrame.f_executable`: `[default build, free-threaded]`.
    pub executable_tag_bits: [u64; 2],
    /// Where `kind` starts in `PyASCIIObject.state`: `[default build, free-threaded]`.
    pub unicode_kind_shift: [u32; 2],
    /// Free-threaded builds keep per-thread bytecode copies (`co_tlbc`, `tlbc_index`).
    pub thread_local_bytecode: bool,
    /// Where the thread state says it holds the GIL.
    pub holds_gil: HoldsGil,
}

/// Where `PyThreadState` keeps "currently holds the GIL".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldsGil {
    /// 3.13 (`Include/cpython/pystate.h`): `unsigned int holds_gil:1` in `_status`, after
    /// `initialized`, `bound`, `unbound`, `bound_gilstate` and `active`: bit 5.
    StatusBit(u32),
    /// 3.14: `int holds_gil` right after the 4-byte `_status` (the `_PyThreadState_WHENCE_*`
    /// lines between them are macros).
    IntAfterStatus,
    /// 3.15+: `holds_gil` and `gil_requested` in the debug offsets' thread table.
    Exported,
}

/// The minor versions read from `_Py_DebugOffsets`, oldest first.
pub const MINOR_VERSIONS: &[MinorVersion] = &[
    MinorVersion {
        minor: 13,
        table: TABLE_313,
        // 3.13 (`internal/pycore_frame.h`): FRAME_OWNED_BY_CSTACK = 3.
        entry_frame_owner: 3,
        // A plain `PyObject*`.
        executable_tag_bits: [0, 0],
        // Free-threaded 3.13 still has the 2-bit `interned` field first.
        unicode_kind_shift: [2, 2],
        thread_local_bytecode: false,
        holds_gil: HoldsGil::StatusBit(5),
    },
    MinorVersion {
        minor: 14,
        table: TABLE_314,
        // 3.14 (`internal/pycore_interpframe_structs.h`) inserts FRAME_OWNED_BY_INTERPRETER
        // = 3 and moves FRAME_OWNED_BY_CSTACK to 4, but the entry frame is now
        // FRAME_OWNED_BY_INTERPRETER (`Python/ceval.c`) and nothing assigns
        // FRAME_OWNED_BY_CSTACK; CPython's own readers skip `owner >= 3`.
        entry_frame_owner: 3,
        // A `_PyStackRef` (`internal/pycore_stackref.h`): `Py_TAG_BITS` is 3 in the default
        // build (Py_TAG_REFCNT = 1 plus room for Py_INT_TAG = 3), 1 free-threaded
        // (Py_TAG_DEFERRED).
        executable_tag_bits: [3, 1],
        // Free-threaded 3.14 makes `interned` an `unsigned char` of its own (accessed
        // atomically), so `kind:3` starts in the next byte.
        unicode_kind_shift: [2, 8],
        thread_local_bytecode: true,
        holds_gil: HoldsGil::IntAfterStatus,
    },
    MinorVersion {
        minor: 15,
        table: TABLE_315,
        // `internal/pycore_interpframe_structs.h`: FRAME_OWNED_BY_INTERPRETER = 3 is the
        // last owner; there is no FRAME_OWNED_BY_CSTACK any more.
        entry_frame_owner: 3,
        // `internal/pycore_stackref.h` defines Py_TAG_BITS = 3 for both builds.
        executable_tag_bits: [3, 3],
        unicode_kind_shift: [2, 8],
        thread_local_bytecode: true,
        holds_gil: HoldsGil::Exported,
    },
];

/// The facts for `3.minor`, if gilscope knows that version's shape.
pub fn minor_version(minor: u8) -> Option<&'static MinorVersion> {
    MINOR_VERSIONS.iter().find(|m| m.minor == minor)
}

/// `char cookie[8]; uint64_t version; uint64_t free_threaded;`
const HEADER_SIZE: usize = 24;
const COOKIE: &[u8; 8] = b"xdebugpy";

const fn table_size(table: &[Section]) -> usize {
    let mut words = 0;
    let mut i = 0;
    while i < table.len() {
        words += table[i].1.len();
        i += 1;
    }
    HEADER_SIZE + 8 * words
}

/// `sizeof(_Py_DebugOffsets)` in 3.13 (584).
pub const DEBUG_OFFSETS_SIZE_313: usize = table_size(TABLE_313);
/// `sizeof(_Py_DebugOffsets)` in 3.14 (760).
pub const DEBUG_OFFSETS_SIZE_314: usize = table_size(TABLE_314);
/// `sizeof(_Py_DebugOffsets)` in 3.15 (888).
pub const DEBUG_OFFSETS_SIZE_315: usize = table_size(TABLE_315);
/// How many bytes to read from the start of `_PyRuntime`: the largest struct known.
pub const DEBUG_OFFSETS_READ_SIZE: usize = largest_table_size();

const fn largest_table_size() -> usize {
    let mut largest = 0;
    let mut i = 0;
    while i < MINOR_VERSIONS.len() {
        let size = table_size(MINOR_VERSIONS[i].table);
        if size > largest {
            largest = size;
        }
        i += 1;
    }
    largest
}

/// `sizeof(_Py_DebugOffsets)` for a minor version of 3, if gilscope knows its shape.
pub fn debug_offsets_size(minor: u8) -> Option<usize> {
    minor_version(minor).map(|m| table_size(m.table))
}

/// Upper bound on any struct size, so a garbage table is refused rather than trusted
/// (`_PyRuntimeState` and `PyInterpreterState` are a few hundred KiB at most).
const MAX_STRUCT_SIZE: u64 = 16 << 20;

/// A parsed `_Py_DebugOffsets`: the header plus every table word, looked up by C name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugOffsets {
    /// `version` (`PY_VERSION_HEX`).
    pub version: Version,
    /// The raw `version` word, with release level and serial.
    pub version_hex: u64,
    /// `free_threaded` (0 or 1).
    pub free_threaded: bool,
    pub minor: &'static MinorVersion,
    words: Vec<u64>,
}

impl DebugOffsets {
    /// Checks the cookie and version and reads the table for that version. `bytes` starts
    /// at `_PyRuntime` and may run past the struct.
    pub fn parse(bytes: &[u8]) -> Result<DebugOffsets, DebugOffsetsError> {
        let fields = Fields::new(0, bytes);
        let word = |offset: usize| {
            fields
                .u64(offset as u64)
                .map_err(|_| DebugOffsetsError::Truncated)
        };
        let cookie = bytes
            .get(..COOKIE.len())
            .ok_or(DebugOffsetsError::Truncated)?;
        if cookie != COOKIE {
            return Err(DebugOffsetsError::BadCookie);
        }
        let version_hex = word(8)?;
        let version = Version::from_hex(version_hex);
        let minor = match version.major {
            3 => minor_version(version.minor),
            _ => None,
        }
        .ok_or(DebugOffsetsError::UnsupportedVersion(version))?;
        let table = minor.table;
        if bytes.len() < table_size(table) {
            return Err(DebugOffsetsError::Truncated);
        }
        let free_threaded = match word(16)? {
            0 => false,
            1 => true,
            other => {
                return Err(DebugOffsetsError::Implausible(format!(
                    "free_threaded is {other}, not 0 or 1"
                )));
            }
        };
        let count = (table_size(table) - HEADER_SIZE) / 8;
        let words = (0..count)
            .map(|i| word(HEADER_SIZE + 8 * i))
            .collect::<Result<Vec<u64>, _>>()?;
        Ok(DebugOffsets {
            version,
            version_hex,
            free_threaded,
            minor,
            words,
        })
    }

    /// `section.field` (C names, e.g. `("interpreter_state", "threads_head")`), or `None`
    /// when this version's struct has no such member.
    pub fn get(&self, section: &str, field: &str) -> Option<u64> {
        let mut index = 0;
        for (name, fields) in self.minor.table {
            if *name == section {
                let at = fields.iter().position(|f| *f == field)?;
                return self.words.get(index + at).copied();
            }
            index += fields.len();
        }
        None
    }

    fn need(&self, section: &str, field: &str) -> Result<u64, DebugOffsetsError> {
        self.get(section, field).ok_or_else(|| {
            implausible(format!(
                "no {section}.{field} in the 3.{} table",
                self.version.minor
            ))
        })
    }

    /// `section.field` where this version exports it (inside its struct), else `derived`.
    fn exported_or(
        &self,
        section: &str,
        field: &str,
        derived: u64,
    ) -> Result<u64, DebugOffsetsError> {
        match self.get(section, field) {
            Some(_) => self.inside(section, field, WORD),
            None => Ok(derived),
        }
    }

    /// `section.size`, refused when zero or absurd.
    fn size(&self, section: &str) -> Result<u64, DebugOffsetsError> {
        let size = self.need(section, "size")?;
        if size == 0 || size > MAX_STRUCT_SIZE {
            return Err(implausible(format!("{section}.size is {size}")));
        }
        Ok(size)
    }

    /// An offset that must lie inside its struct (`offset + width <= section.size`).
    fn inside(&self, section: &str, field: &str, width: u64) -> Result<u64, DebugOffsetsError> {
        let size = self.size(section)?;
        let offset = self.need(section, field)?;
        if offset.checked_add(width).is_none_or(|end| end > size) {
            return Err(implausible(format!(
                "{section}.{field} = {offset} does not fit in a struct of {size} bytes"
            )));
        }
        Ok(offset)
    }
}

fn implausible(message: String) -> DebugOffsetsError {
    DebugOffsetsError::Implausible(message)
}

fn ensure(ok: bool, message: impl FnOnce() -> String) -> Result<(), DebugOffsetsError> {
    if ok {
        Ok(())
    } else {
        Err(implausible(message()))
    }
}

/// A pointer, `Py_ssize_t` or `unsigned long` on the 64-bit Linux targets gilscope reads.
const WORD: u64 = 8;

/// `sizeof(PyCOND_T)` = `sizeof(pthread_cond_t)` (48 on x86-64 and aarch64 glibc).
const COND_SIZE: u64 = std::mem::size_of::<libc::pthread_cond_t>() as u64;
/// `sizeof(PyMUTEX_T)` = `sizeof(pthread_mutex_t)` (40 on x86-64 glibc, 48 on aarch64).
const MUTEX_SIZE: u64 = std::mem::size_of::<libc::pthread_mutex_t>() as u64;

/// `offsetof(PyDictKeysObject, dk_indices)` in 3.13 and 3.14, both builds: `dk_refcnt` (8),
/// `dk_log2_size`, `dk_log2_index_bytes`, `dk_kind` (3 x uint8_t), in free-threaded builds
/// `dk_mutex` (a 1-byte PyMutex, which lands in what is padding otherwise), `dk_version`
/// (uint32_t, at 12), `dk_usable`, `dk_nentries` (2 x Py_ssize_t) = 32.
const DICT_KEYS_HEADER: u64 = 32;

/// `offsetof(PyHeapTypeObject, ht_cached_keys) - sizeof(PyTypeObject)` in 3.13 and 3.14:
/// `PyAsyncMethods` (4 pointers) + `PyNumberMethods` (36) + `PyMappingMethods` (3) +
/// `PySequenceMethods` (10) + `PyBufferProcs` (2) + `ht_name, ht_slots, ht_qualname` (3)
/// = 58 pointers = 464 bytes.
const HEAP_TYPE_CACHED_KEYS_AFTER_TYPE: u64 = 58 * WORD;

/// `offsetof(PyTypeObject, tp_basicsize) - offsetof(PyTypeObject, tp_name)`.
const TP_BASICSIZE_AFTER_NAME: u64 = WORD;
/// `offsetof(PyTypeObject, tp_flags) - offsetof(PyTypeObject, tp_name)`: `tp_name`,
/// `tp_basicsize`, `tp_itemsize`, `tp_dealloc`, `tp_vectorcall_offset`, `tp_getattr`,
/// `tp_setattr`, `tp_as_async`, `tp_repr`, `tp_as_number`, `tp_as_sequence`,
/// `tp_as_mapping`, `tp_hash`, `tp_call`, `tp_str`, `tp_getattro`, `tp_setattro`,
/// `tp_as_buffer` = 18 words. Only checked, to confirm the public layout holds.
const TP_FLAGS_AFTER_NAME: u64 = 18 * WORD;
/// `offsetof(PyTypeObject, tp_dictoffset) - offsetof(PyTypeObject, tp_name)`: the 18 words
/// above, then `tp_flags`, `tp_doc`, `tp_traverse`, `tp_clear`, `tp_richcompare`,
/// `tp_weaklistoffset`, `tp_iter`, `tp_iternext`, `tp_methods`, `tp_members`, `tp_getset`,
/// `tp_base`, `tp_dict`, `tp_descr_get`, `tp_descr_set` = 33 words.
const TP_DICTOFFSET_AFTER_NAME: u64 = 33 * WORD;

/// `sizeof(PyCompactUnicodeObject) - sizeof(PyASCIIObject)`: `utf8_length` (Py_ssize_t)
/// and `utf8` (char*).
const COMPACT_UNICODE_EXTRA: u64 = 2 * WORD;

/// Reads a `_Py_DebugOffsets` (the first [`DEBUG_OFFSETS_READ_SIZE`] bytes of
/// `_PyRuntime`, or at least the struct for its version) into a [`Layout`].
pub fn layout_from_debug_offsets(bytes: &[u8]) -> Result<Layout, DebugOffsetsError> {
    let offsets = DebugOffsets::parse(bytes)?;
    layout_from_parsed(&offsets)
}

/// Builds the [`Layout`] from an already parsed [`DebugOffsets`].
pub fn layout_from_parsed(d: &DebugOffsets) -> Result<Layout, DebugOffsetsError> {
    let facts = d.minor;
    let ft = d.free_threaded;
    let build = usize::from(ft);
    let thread_local_bytecode = facts.thread_local_bytecode && ft;

    let runtime = RuntimeLayout {
        interpreters_head: d.inside("runtime_state", "interpreters_head", WORD)?,
        gil: None,
    };

    let interp = InterpLayout {
        id: d.inside("interpreter_state", "id", WORD)?,
        next: d.inside("interpreter_state", "next", WORD)?,
        threads_head: d.inside("interpreter_state", "threads_head", WORD)?,
        gil_ptr: Some(d.inside("interpreter_state", "ceval_gil", WORD)?),
        modules: d.inside("interpreter_state", "imports_modules", WORD)?,
    };

    let gil = gil_layout(d)?;

    let tstate = ThreadLayout {
        next: d.inside("thread_state", "next", WORD)?,
        interp: d.inside("thread_state", "interp", WORD)?,
        thread_id: d.inside("thread_state", "thread_id", WORD)?,
        native_thread_id: Some(d.inside("thread_state", "native_thread_id", WORD)?),
        frame: FramePointer::Direct(d.inside("thread_state", "current_frame", WORD)?),
        gil_flags: Some(thread_gil_flags(d)?),
    };

    let frame = FrameLayout {
        kind: FrameKind::Interpreter,
        previous: d.inside("interpreter_frame", "previous", WORD)?,
        code: d.inside("interpreter_frame", "executable", WORD)?,
        instr: d.inside("interpreter_frame", "instr_ptr", WORD)?,
        owner: Some(d.inside("interpreter_frame", "owner", 1)?),
        owner_cstack: Some(facts.entry_frame_owner),
        code_tag_mask: facts.executable_tag_bits[build],
        tlbc_index: if thread_local_bytecode {
            let at = d.inside("interpreter_frame", "tlbc_index", 4)?;
            ensure(at != 0, || "free-threaded build without tlbc_index".into())?;
            Some(at)
        } else {
            None
        },
    };

    let code = CodeLayout {
        filename: d.inside("code_object", "filename", WORD)?,
        name: d.inside("code_object", "name", WORD)?,
        qualname: Some(d.inside("code_object", "qualname", WORD)?),
        firstlineno: d.inside("code_object", "firstlineno", 4)?,
        linetable: d.inside("code_object", "linetable", WORD)?,
        linetable_format: LineTableFormat::Locations,
        // `char co_code_adaptive[1]`: the bytecode runs on past the struct.
        code_adaptive: Some(d.inside("code_object", "co_code_adaptive", 1)?),
        tlbc: if thread_local_bytecode {
            let at = d.inside("code_object", "co_tlbc", WORD)?;
            ensure(at != 0, || "free-threaded build without co_tlbc".into())?;
            Some(at)
        } else {
            None
        },
    };

    let object = object_layout(d)?;

    Ok(Layout {
        version: d.version,
        free_threaded: ft,
        runtime,
        interp,
        gil,
        tstate,
        frame,
        code,
        object,
    })
}

/// Where the thread state says it holds (and, from 3.15, requests) the GIL. Pinned offsets
/// (3.13, 3.14) are checked to lie inside the thread state, like exported ones.
fn thread_gil_flags(d: &DebugOffsets) -> Result<ThreadGilFlags, DebugOffsetsError> {
    let status = d.inside("thread_state", "status", 4)?;
    let pinned = |offset: u64| -> Result<u64, DebugOffsetsError> {
        let size = d.size("thread_state")?;
        ensure(offset + 4 <= size, || {
            format!("holds_gil at {offset} does not fit in a thread state of {size} bytes")
        })?;
        Ok(offset)
    };
    Ok(match d.minor.holds_gil {
        HoldsGil::StatusBit(bit) => ThreadGilFlags {
            holds: FlagField::Bit { word: status, bit },
            requested: None,
            exported: false,
        },
        HoldsGil::IntAfterStatus => ThreadGilFlags {
            holds: FlagField::Int(pinned(status + 4)?),
            requested: None,
            exported: false,
        },
        HoldsGil::Exported => ThreadGilFlags {
            holds: FlagField::Int(d.inside("thread_state", "holds_gil", 4)?),
            requested: Some(d.inside("thread_state", "gil_requested", 4)?),
            exported: true,
        },
    })
}

/// `struct _gil_runtime_state` (`Include/internal/pycore_gil.h`, unchanged in 3.13 and
/// 3.14):
///
/// ```c
/// #ifdef Py_GIL_DISABLED
///     int enabled;
/// #endif
///     unsigned long interval;
///     PyThreadState* last_holder;
///     int locked;
///     unsigned long switch_number;
///     PyCOND_T cond;  PyMUTEX_T mutex;
///     PyCOND_T switch_cond;  PyMUTEX_T switch_mutex;   // FORCE_SWITCHING is always on
/// ```
///
/// The debug offsets give `gil_runtime_state = offsetof(PyInterpreterState, _gil)` and
/// `gil_runtime_state_locked/holder = offsetof(PyInterpreterState, _gil.locked/last_holder)`
/// (relative to the interpreter), but `gil_runtime_state_enabled = offsetof(struct
/// _gil_runtime_state, enabled)` (relative to the GIL, 0 when not free-threaded).
fn gil_layout(d: &DebugOffsets) -> Result<GilLayout, DebugOffsetsError> {
    let interp_size = d.size("interpreter_state")?;
    let base = d.inside("interpreter_state", "gil_runtime_state", WORD)?;
    // Interpreter-relative as the 3.13/3.14 headers define them; should a later header make
    // them GIL-relative, they would be far smaller than `base` and are taken as they are.
    let relative = |offset: u64| offset.checked_sub(base).unwrap_or(offset);
    let last_holder = relative(d.inside("interpreter_state", "gil_runtime_state_holder", WORD)?);
    let locked = relative(d.inside("interpreter_state", "gil_runtime_state_locked", 4)?);
    let enabled = d.need("interpreter_state", "gil_runtime_state_enabled")?;

    // `interval` is the unsigned long right before `last_holder`; `switch_number` the
    // unsigned long right after the int `locked` (which is padded to 8).
    ensure(last_holder >= WORD, || {
        format!("GIL last_holder at {last_holder}, no room for interval before it")
    })?;
    let interval = last_holder - WORD;
    let switch_number = locked + WORD;
    // `enabled` is an int padded to 8 in free-threaded builds, absent otherwise.
    let expected_interval = if d.free_threaded { WORD } else { 0 };
    ensure(
        interval == expected_interval && locked == last_holder + WORD,
        || {
            format!(
                "GIL fields (last_holder {last_holder}, locked {locked}) are not laid out as \
                 pycore_gil.h declares them"
            )
        },
    )?;
    ensure(!d.free_threaded || enabled == 0, || {
        format!("GIL enabled at {enabled}, expected first")
    })?;
    let size = switch_number + WORD + 2 * COND_SIZE + 2 * MUTEX_SIZE;
    ensure(base + size <= interp_size, || {
        format!("GIL of {size} bytes at {base} overruns an interpreter of {interp_size}")
    })?;
    Ok(GilLayout {
        enabled: d.free_threaded.then_some(enabled),
        interval,
        last_holder,
        locked,
        switch_number,
        size,
    })
}

fn object_layout(d: &DebugOffsets) -> Result<ObjectLayout, DebugOffsetsError> {
    let object_size = d.size("pyobject")?;
    let ob_type = d.inside("pyobject", "ob_type", WORD)?;
    // `PyObject` ends with `ob_type` in every build (16 bytes by default, 32 free-threaded).
    ensure(
        ob_type + WORD == object_size && object_size % WORD == 0,
        || format!("PyObject of {object_size} bytes with ob_type at {ob_type}"),
    )?;

    let type_size = d.size("type_object")?;
    let tp_name = d.inside("type_object", "tp_name", WORD)?;
    let tp_flags = d.inside("type_object", "tp_flags", WORD)?;
    // `PyTypeObject` starts with `PyObject_VAR_HEAD` (`PyObject` + `ob_size`), then the
    // public fields in `Include/cpython/object.h` order.
    ensure(
        tp_name == object_size + WORD && tp_flags == tp_name + TP_FLAGS_AFTER_NAME,
        || format!("PyTypeObject with tp_name at {tp_name} and tp_flags at {tp_flags}"),
    )?;
    // Exported from 3.15; derived from the public `PyTypeObject` before.
    let tp_basicsize = d.exported_or(
        "type_object",
        "tp_basicsize",
        tp_name + TP_BASICSIZE_AFTER_NAME,
    )?;
    let tp_dictoffset = d.exported_or(
        "type_object",
        "tp_dictoffset",
        tp_name + TP_DICTOFFSET_AFTER_NAME,
    )?;
    ensure(tp_dictoffset + WORD <= type_size, || {
        format!("PyTypeObject of {type_size} bytes has no room for tp_dictoffset")
    })?;

    let unicode_size = d.size("unicode_object")?;
    let ascii_size = d.need("unicode_object", "asciiobject_size")?;
    let unicode_state = d.inside("unicode_object", "state", 4)?;
    let unicode_length = d.inside("unicode_object", "length", WORD)?;
    let compact_size = d
        .get("unicode_object", "compactunicodeobject_size")
        .unwrap_or(ascii_size + COMPACT_UNICODE_EXTRA);
    ensure(
        unicode_state + 4 <= ascii_size
            && unicode_length + WORD <= ascii_size
            && compact_size < unicode_size,
        || {
            format!(
                "PyASCIIObject of {ascii_size} bytes (state {unicode_state}, length \
                 {unicode_length}) in a PyUnicodeObject of {unicode_size}"
            )
        },
    )?;

    let long_size = d.inside("long_object", "lv_tag", WORD)?;
    let long_digits = d.inside("long_object", "ob_digit", 4)?;
    ensure(long_digits > long_size, || {
        format!("ob_digit at {long_digits} before lv_tag at {long_size}")
    })?;

    Ok(ObjectLayout {
        ob_type,
        tp_name,
        unicode_state,
        unicode_kind_shift: d.minor.unicode_kind_shift[usize::from(d.free_threaded)],
        unicode_length,
        unicode_ascii_size: ascii_size,
        unicode_compact_size: compact_size,
        bytes_size: d.inside("bytes_object", "ob_size", WORD)?,
        // `char ob_sval[1]`.
        bytes_data: d.inside("bytes_object", "ob_sval", 1)?,
        dict_keys: d.inside("dict_object", "ma_keys", WORD)?,
        dict_values: d.inside("dict_object", "ma_values", WORD)?,
        dict_keys_format: DictKeysFormat::Log2 {
            header: DICT_KEYS_HEADER,
        },
        // `PyModuleObject { PyObject_HEAD; PyObject *md_dict; ... }`.
        module_dict: object_size,
        long_digits,
        long_size,
        long_format: LongFormat::Tagged,
        tp_dictoffset,
        tp_basicsize,
        tp_flags,
        ht_cached_keys: Some(match d.get("heap_type_object", "ht_cached_keys") {
            Some(_) => d.inside("heap_type_object", "ht_cached_keys", WORD)?,
            None => type_size + HEAP_TYPE_CACHED_KEYS_AFTER_TYPE,
        }),
        instance_dict: InstanceDictFormat::Inline313,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a `_Py_DebugOffsets` image one `uint64_t` at a time, in C declaration order.
    struct Image(Vec<u8>);

    impl Image {
        fn new(version_hex: u64, free_threaded: u64) -> Image {
            let mut image = Image(COOKIE.to_vec());
            image.push(&[version_hex, free_threaded]);
            image
        }
        fn push(&mut self, words: &[u64]) {
            for word in words {
                self.0.extend_from_slice(&word.to_le_bytes());
            }
        }
    }

    /// A free-threaded 3.14.0 final, with offsets shaped like that build's (object headers
    /// of 32 bytes, `tlbc_index` and `co_tlbc` present).
    fn image_314t() -> Vec<u8> {
        let mut b = Image::new(0x030e_00f0, 1);
        // runtime_state: size, finalizing, interpreters_head
        b.push(&[330_000, 608, 632]);
        // interpreter_state: size, id, next, threads_head, threads_main, gc,
        // imports_modules, sysdict, builtins, ceval_gil, gil_runtime_state,
        // gil_runtime_state_enabled, gil_runtime_state_locked, gil_runtime_state_holder,
        // code_object_generation, tlbc_generation
        b.push(&[
            240_000, 7296, 7288, 7368, 7376, 7424, 7688, 7672, 7680, 16, 7784, 0, 7808, 7800, 9000,
            9008,
        ]);
        // thread_state: size, prev, next, interp, current_frame, thread_id,
        // native_thread_id, datastack_chunk, status
        b.push(&[336, 0, 8, 16, 72, 152, 160, 232, 32]);
        // interpreter_frame: size, previous, executable, instr_ptr, localsplus, owner,
        // stackpointer, tlbc_index
        b.push(&[88, 8, 0, 56, 80, 78, 64, 72]);
        // code_object: size, filename, name, qualname, linetable, firstlineno, argcount,
        // localsplusnames, localspluskinds, co_code_adaptive, co_tlbc
        b.push(&[240, 128, 136, 144, 152, 84, 68, 112, 120, 232, 224]);
        // pyobject: size, ob_type
        b.push(&[32, 24]);
        // type_object: size, tp_name, tp_repr, tp_flags
        b.push(&[432, 40, 104, 184]);
        // tuple_object, list_object: size, ob_item, ob_size
        b.push(&[48, 40, 32]);
        b.push(&[56, 40, 32]);
        // set_object: size, used, table, mask
        b.push(&[216, 48, 64, 72]);
        // dict_object: size, ma_keys, ma_values
        b.push(&[64, 48, 56]);
        // float_object: size, ob_fval
        b.push(&[40, 32]);
        // long_object: size, lv_tag, ob_digit
        b.push(&[48, 32, 40]);
        // bytes_object: size, ob_size, ob_sval
        b.push(&[56, 32, 48]);
        // unicode_object: size, state, length, asciiobject_size
        b.push(&[80, 48, 32, 56]);
        // gc: size, collecting
        b.push(&[400, 300]);
        // gen_object: size, gi_name, gi_iframe, gi_frame_state
        b.push(&[200, 56, 96, 90]);
        // llist_node: next, prev
        b.push(&[0, 8]);
        // debugger_support: eval_breaker, remote_debugger_support, remote_debugging_enabled,
        // debugger_pending_call, debugger_script_path, debugger_script_path_size
        b.push(&[24, 400, 5000, 0, 4, 512]);
        b.0
    }

    /// The real 3.13.0 default build's table (read from libpython3.13.so.1.0).
    fn image_313() -> Vec<u8> {
        let mut b = Image::new(0x030d_00f0, 0);
        b.push(&[283_320, 608, 632]);
        b.push(&[
            194_968, 7272, 7264, 7344, 7400, 7656, 7640, 7648, 16, 7752, 0, 7768, 7760,
        ]);
        b.push(&[304, 0, 8, 16, 72, 152, 160, 232, 32]);
        b.push(&[80, 8, 0, 56, 72, 70]);
        b.push(&[208, 112, 120, 128, 136, 68, 52, 96, 104, 200]);
        b.push(&[16, 8]);
        b.push(&[416, 24, 88, 168]);
        b.push(&[32, 24, 16]);
        b.push(&[40, 24, 16]);
        b.push(&[48, 32, 40]);
        b.push(&[24, 16]);
        b.push(&[32, 16, 24]);
        b.push(&[40, 16, 32]);
        b.push(&[64, 32, 16, 40]);
        b.push(&[240, 200]);
        b.0
    }

    fn pthread_gil_tail() -> u64 {
        WORD + 2 * COND_SIZE + 2 * MUTEX_SIZE
    }

    /// The real 3.15.2 default build's table (Debian's static python3.15, `.PyRuntime`).
    fn image_315() -> Vec<u8> {
        let mut b = Image::new(0x030f_02f0, 0);
        b.push(&[346_568, 912, 936]);
        b.push(&[
            226_240, 7272, 7264, 7336, 7352, 7400, 7592, 7576, 7584, 16, 7736, 0, 7752, 7744, 7944,
            0,
        ]);
        // thread_state: size, prev, next, interp, current_frame, base_frame,
        // last_profiled_frame, last_profiled_frame_seq, thread_id, native_thread_id,
        // datastack_chunk, status, holds_gil, gil_requested, current_exception, exc_state
        b.push(&[
            888, 0, 8, 16, 72, 80, 88, 96, 176, 184, 256, 32, 36, 40, 136, 288,
        ]);
        b.push(&[0]);
        b.push(&[88, 8, 0, 56, 80, 74, 64, 0]);
        b.push(&[216, 112, 120, 128, 136, 68, 52, 96, 104, 208, 0]);
        b.push(&[16, 8]);
        b.push(&[424, 24, 88, 168, 32, 288]);
        b.push(&[944, 888]);
        b.push(&[40, 32, 16]);
        b.push(&[40, 24, 16]);
        b.push(&[200, 24, 40, 32]);
        b.push(&[48, 32, 40]);
        b.push(&[24, 16]);
        b.push(&[32, 16, 24]);
        b.push(&[40, 16, 32]);
        b.push(&[64, 32, 16, 40, 56]);
        b.push(&[176, 112, 120, 1120, 104]);
        b.push(&[160, 24, 72, 67]);
        b.push(&[0, 8]);
        b.push(&[24, 344, 8028, 0, 4, 512]);
        b.0
    }

    #[test]
    fn struct_sizes_match_the_c_declarations() {
        assert_eq!(DEBUG_OFFSETS_SIZE_313, 584);
        assert_eq!(DEBUG_OFFSETS_SIZE_314, 760);
        assert_eq!(DEBUG_OFFSETS_SIZE_315, 888);
        assert_eq!(DEBUG_OFFSETS_READ_SIZE, 888);
        assert_eq!(image_313().len(), 584);
        assert_eq!(image_314t().len(), 760);
        assert_eq!(image_315().len(), 888);
        assert_eq!(debug_offsets_size(12), None);
        assert_eq!(debug_offsets_size(16), None);
    }

    #[test]
    fn every_minor_version_is_listed_once_and_the_newest_is_supported() {
        let minors: Vec<u8> = MINOR_VERSIONS.iter().map(|m| m.minor).collect();
        assert_eq!(minors, vec![13, 14, 15]);
        assert_eq!(
            minors.last().copied(),
            Some(crate::python::version::NEWEST_MINOR)
        );
        assert!(crate::python::version::SUPPORTED.contains(&format!("3.{}", minors[2])));
    }

    #[test]
    fn default_315_layout_reads_the_exported_gil_flags() {
        let layout = layout_from_debug_offsets(&image_315()).unwrap();
        assert_eq!(layout.version, Version::new(3, 15, 2));
        assert!(!layout.free_threaded);
        assert_eq!(
            layout.tstate.gil_flags,
            Some(ThreadGilFlags {
                holds: FlagField::Int(36),
                requested: Some(40),
                exported: true,
            })
        );
        let gil = &layout.gil;
        assert_eq!((gil.interval, gil.last_holder, gil.locked), (0, 8, 16));
        assert_eq!(layout.interp.threads_head, 7336);
        assert_eq!(layout.tstate.frame, FramePointer::Direct(72));
        assert_eq!(layout.tstate.native_thread_id, Some(184));
        assert_eq!(layout.frame.owner, Some(74));
        assert_eq!(layout.frame.owner_cstack, Some(3));
        assert_eq!(layout.frame.code_tag_mask, 3);
        assert_eq!(layout.frame.tlbc_index, None);
        assert_eq!(layout.code.code_adaptive, Some(208));
        let obj = &layout.object;
        // Exported from 3.15, and equal to what the public headers give earlier versions.
        assert_eq!((obj.tp_basicsize, obj.tp_dictoffset), (32, 288));
        assert_eq!(obj.ht_cached_keys, Some(888));
        assert_eq!(obj.unicode_compact_size, 56);
        assert_eq!(obj.unicode_kind_shift, 2);
    }

    #[test]
    fn holds_gil_is_pinned_on_313_and_314() {
        let layout = layout_from_debug_offsets(&image_313()).unwrap();
        assert_eq!(
            layout.tstate.gil_flags,
            Some(ThreadGilFlags {
                holds: FlagField::Bit { word: 32, bit: 5 },
                requested: None,
                exported: false,
            })
        );
        let layout = layout_from_debug_offsets(&image_314t()).unwrap();
        assert_eq!(
            layout
                .tstate
                .gil_flags
                .map(|f| (f.holds, f.requested, f.exported)),
            Some((FlagField::Int(36), None, false))
        );
        assert!(FlagField::Bit { word: 32, bit: 5 }.is_set(0b10_0001));
        assert!(!FlagField::Bit { word: 32, bit: 5 }.is_set(0b01_1111));
    }

    #[test]
    fn free_threaded_314_layout() {
        let layout = layout_from_debug_offsets(&image_314t()).unwrap();
        assert_eq!(layout.version, Version::new(3, 14, 0));
        assert!(layout.free_threaded);
        assert_eq!(layout.runtime.interpreters_head, 632);
        assert_eq!(layout.runtime.gil, None);
        assert_eq!(layout.interp.threads_head, 7368);
        assert_eq!(layout.interp.gil_ptr, Some(16));
        assert_eq!(layout.interp.modules, 7688);

        let gil = &layout.gil;
        assert_eq!(gil.enabled, Some(0));
        assert_eq!(gil.interval, 8);
        assert_eq!(gil.last_holder, 16);
        assert_eq!(gil.locked, 24);
        assert_eq!(gil.switch_number, 32);
        assert_eq!(gil.size, 32 + pthread_gil_tail());
        #[cfg(all(target_arch = "x86_64", target_env = "gnu"))]
        assert_eq!(gil.size, 216);

        assert_eq!(layout.tstate.frame, FramePointer::Direct(72));
        assert_eq!(layout.tstate.native_thread_id, Some(160));

        let frame = &layout.frame;
        assert_eq!(frame.kind, FrameKind::Interpreter);
        assert_eq!((frame.previous, frame.code, frame.instr), (8, 0, 56));
        assert_eq!(frame.owner, Some(78));
        assert_eq!(frame.owner_cstack, Some(3));
        assert_eq!(frame.code_tag_mask, 1);
        assert_eq!(frame.tlbc_index, Some(72));

        let code = &layout.code;
        assert_eq!(code.qualname, Some(144));
        assert_eq!(code.code_adaptive, Some(232));
        assert_eq!(code.tlbc, Some(224));
        assert_eq!(code.linetable_format, LineTableFormat::Locations);

        let obj = &layout.object;
        assert_eq!(obj.ob_type, 24);
        assert_eq!(obj.tp_name, 40);
        assert_eq!(obj.tp_basicsize, 48);
        assert_eq!(obj.tp_flags, 184);
        assert_eq!(obj.tp_dictoffset, 304);
        assert_eq!(obj.ht_cached_keys, Some(896));
        assert_eq!(obj.unicode_kind_shift, 8);
        assert_eq!(obj.unicode_ascii_size, 56);
        assert_eq!(obj.unicode_compact_size, 72);
        assert_eq!(obj.module_dict, 32);
        assert_eq!(obj.dict_keys_format, DictKeysFormat::Log2 { header: 32 });
        assert_eq!((obj.long_size, obj.long_digits), (32, 40));
        assert_eq!(obj.instance_dict, InstanceDictFormat::Inline313);
    }

    #[test]
    fn default_313_layout() {
        let layout = layout_from_debug_offsets(&image_313()).unwrap();
        assert_eq!(layout.version, Version::new(3, 13, 0));
        assert!(!layout.free_threaded);
        let gil = &layout.gil;
        assert_eq!(gil.enabled, None);
        assert_eq!((gil.interval, gil.last_holder, gil.locked), (0, 8, 16));
        assert_eq!(gil.switch_number, 24);
        #[cfg(all(target_arch = "x86_64", target_env = "gnu"))]
        assert_eq!(gil.size, 208);
        assert_eq!(layout.frame.owner_cstack, Some(3));
        assert_eq!(layout.frame.code_tag_mask, 0);
        assert_eq!(layout.frame.tlbc_index, None);
        assert_eq!(layout.code.tlbc, None);
        assert_eq!(layout.object.unicode_kind_shift, 2);
        assert_eq!(layout.object.tp_dictoffset, 288);
        assert_eq!(layout.object.ht_cached_keys, Some(880));
        assert_eq!(layout.object.module_dict, 16);
        // A longer read (the 3.14 size) is fine.
        let mut long = image_313();
        long.resize(DEBUG_OFFSETS_READ_SIZE, 0xAA);
        assert_eq!(layout_from_debug_offsets(&long).unwrap(), layout);
    }

    #[test]
    fn lookups_by_name() {
        let parsed = DebugOffsets::parse(&image_314t()).unwrap();
        assert_eq!(parsed.get("interpreter_state", "threads_main"), Some(7376));
        assert_eq!(
            parsed.get("debugger_support", "debugger_script_path_size"),
            Some(512)
        );
        assert_eq!(parsed.get("set_object", "mask"), Some(72));
        let parsed = DebugOffsets::parse(&image_313()).unwrap();
        assert_eq!(parsed.get("interpreter_state", "threads_main"), None);
        assert_eq!(parsed.get("gc", "collecting"), Some(200));
    }

    #[test]
    fn bad_cookie() {
        let mut bytes = image_314t();
        bytes[0] = b'X';
        assert_eq!(
            layout_from_debug_offsets(&bytes),
            Err(DebugOffsetsError::BadCookie)
        );
        assert_eq!(
            layout_from_debug_offsets(&[0u8; 800]),
            Err(DebugOffsetsError::BadCookie)
        );
    }

    #[test]
    fn truncated() {
        let bytes = image_314t();
        for len in [0, 5, 8, 20, 24, 584, 759] {
            assert_eq!(
                layout_from_debug_offsets(&bytes[..len]),
                Err(DebugOffsetsError::Truncated),
                "{len} bytes"
            );
        }
        assert_eq!(
            layout_from_debug_offsets(&image_313()[..583]),
            Err(DebugOffsetsError::Truncated)
        );
    }

    #[test]
    fn unsupported_versions() {
        for (hex, version) in [
            (0x030c_01f0, Version::new(3, 12, 1)),
            (0x0310_00a1, Version::new(3, 16, 0)),
            (0x0400_0000, Version::new(4, 0, 0)),
        ] {
            let mut bytes = image_314t();
            bytes[8..16].copy_from_slice(&u64::to_le_bytes(hex));
            assert_eq!(
                layout_from_debug_offsets(&bytes),
                Err(DebugOffsetsError::UnsupportedVersion(version))
            );
        }
    }

    /// Overwrites the `index`-th table word (after the 24-byte header).
    fn poke(bytes: &mut [u8], index: usize, value: u64) {
        let at = HEADER_SIZE + 8 * index;
        bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }

    #[test]
    fn implausible_tables_are_refused() {
        let check = |index: usize, value: u64| {
            let mut bytes = image_314t();
            poke(&mut bytes, index, value);
            let result = layout_from_debug_offsets(&bytes);
            assert!(
                matches!(result, Err(DebugOffsetsError::Implausible(_))),
                "word {index} = {value}: {result:?}"
            );
        };
        check(0, 0); // runtime_state.size
        check(2, 400_000); // interpreters_head past the runtime
        check(3, 0); // interpreter_state.size
        check(15, 7784 + 32); // gil_runtime_state_locked not after last_holder
        check(16, 7784 + 8); // gil_runtime_state_holder where interval belongs
        check(19 + 4, 4000); // thread_state.current_frame past the thread state
        check(28 + 7, 0); // free-threaded 3.14 without tlbc_index
        check(36 + 10, 0); // free-threaded 3.14 without co_tlbc
        check(47 + 1, 16); // ob_type not at the end of PyObject
        check(49 + 3, 168); // tp_flags not where the public PyTypeObject has it
        let mut bytes = image_314t();
        bytes[16] = 2;
        assert!(matches!(
            layout_from_debug_offsets(&bytes),
            Err(DebugOffsetsError::Implausible(_))
        ));
    }

    #[test]
    fn default_314_uses_stackref_tags_without_tlbc() {
        let mut bytes = image_314t();
        bytes[16] = 0; // free_threaded = 0
        poke(&mut bytes, 3 + 11, 0); // gil_runtime_state_enabled = 0 (not free-threaded)
        // Default-build GIL: last_holder at +8, locked at +16.
        poke(&mut bytes, 3 + 12, 7784 + 16);
        poke(&mut bytes, 3 + 13, 7784 + 8);
        let layout = layout_from_debug_offsets(&bytes).unwrap();
        assert_eq!(layout.gil.enabled, None);
        assert_eq!((layout.gil.interval, layout.gil.switch_number), (0, 24));
        assert_eq!(layout.frame.code_tag_mask, 3);
        assert_eq!(layout.frame.tlbc_index, None);
        assert_eq!(layout.code.tlbc, None);
        assert_eq!(layout.object.unicode_kind_shift, 2);
    }
}
