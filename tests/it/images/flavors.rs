//! The builds the synthetic images imitate: 3.13 free-threaded, 3.14 default and 3.14
//! free-threaded. A [`Flavor`] is a `_Py_DebugOffsets` table written out member by member
//! in the C declaration order (one line per nested struct, as in `_Py_DebugOffsets_INIT`),
//! plus what a reader must know from the headers beyond that table: bit fields, stack-ref
//! tag bits, frame owners, the GIL struct.

use gilscope::python::debug_offsets::{DebugOffsets, debug_offsets_size};

pub struct Flavor {
    pub label: &'static str,
    pub version_hex: u64,
    pub free_threaded: bool,
    /// `_Py_DebugOffsets` after its header, one `member: field value, ...` line per struct.
    table: &'static str,
    /// Bit where `PyASCIIObject.state.kind` starts: after `unsigned int interned:2` (2), or
    /// after free-threaded 3.14's `unsigned char interned` (8).
    pub kind_shift: u32,
    /// Low bits set in `f_executable` of frames marked tagged: `Py_TAG_REFCNT` /
    /// `Py_TAG_DEFERRED` of a 3.14 `_PyStackRef`; 3.13 stores a plain `PyObject*`.
    pub executable_tag: u64,
    /// `owner` of the entry frame `_PyEval_EvalFrameDefault` pushes: 3.13
    /// `FRAME_OWNED_BY_CSTACK` (3), 3.14 `FRAME_OWNED_BY_INTERPRETER` (3).
    pub entry_owner: u8,
    /// Free-threaded 3.14: `co_tlbc` and `tlbc_index` exist.
    pub tlbc: bool,
}

/// Free-threaded 3.13.0: the table `_PyRuntimeState_INIT` produces when pyenv 3.13.0's
/// headers are compiled with `-DPy_BUILD_CORE -DPy_GIL_DISABLED`, printed word by word.
pub const FT_313: Flavor = Flavor {
    label: "3.13.0t",
    version_hex: 0x030d_00f0,
    free_threaded: true,
    table: "
        runtime_state: size 328256, finalizing 608, interpreters_head 632
        interpreter_state: size 215616, id 7272, next 7264, threads_head 7344, gc 7400,
            imports_modules 7664, sysdict 7648, builtins 7656, ceval_gil 16,
            gil_runtime_state 7760, gil_runtime_state_enabled 0,
            gil_runtime_state_locked 7784, gil_runtime_state_holder 7776
        thread_state: size 304, prev 0, next 8, interp 16, current_frame 72, thread_id 152,
            native_thread_id 160, datastack_chunk 232, status 32
        interpreter_frame: size 80, previous 8, executable 0, instr_ptr 56, localsplus 72,
            owner 70
        code_object: size 224, filename 128, name 136, qualname 144, linetable 152,
            firstlineno 84, argcount 68, localsplusnames 112, localspluskinds 120,
            co_code_adaptive 216
        pyobject: size 32, ob_type 24
        type_object: size 432, tp_name 40, tp_repr 104, tp_flags 184
        tuple_object: size 48, ob_item 40, ob_size 32
        list_object: size 56, ob_item 40, ob_size 32
        dict_object: size 64, ma_keys 48, ma_values 56
        float_object: size 40, ob_fval 32
        long_object: size 48, lv_tag 32, ob_digit 40
        bytes_object: size 56, ob_size 32, ob_sval 48
        unicode_object: size 80, state 48, length 32, asciiobject_size 56
        gc: size 248, collecting 200
    ",
    kind_shift: 2,
    executable_tag: 0,
    entry_owner: 3,
    tlbc: false,
};

/// 3.14 default build. The table's shape is 3.14 final's (`pycore_debug_offsets.h`). The
/// values follow the 3.14 declarations where they can be worked out by hand: `_PyRuntime`
/// grows by the larger table (so `interpreters.head` moves to 808), frames gain
/// `stackpointer` (owner at 74), code objects `_co_unique_id` (`co_code_adaptive` at 208),
/// tuples `ob_hash`. Inside `PyInterpreterState` and `PyThreadState` only a compiler
/// knows: those are self-consistent, and the thread state is moved on purpose so that
/// stale 3.13 numbers in a reader would fail.
pub const DEFAULT_314: Flavor = Flavor {
    label: "3.14.0",
    version_hex: 0x030e_00f0,
    free_threaded: false,
    table: "
        runtime_state: size 331000, finalizing 784, interpreters_head 808
        interpreter_state: size 198000, id 7288, next 7280, threads_head 7360,
            threads_main 7368, gc 7416, imports_modules 7680, sysdict 7664, builtins 7672,
            ceval_gil 16, gil_runtime_state 7776, gil_runtime_state_enabled 0,
            gil_runtime_state_locked 7792, gil_runtime_state_holder 7784,
            code_object_generation 9016, tlbc_generation 0
        thread_state: size 336, prev 0, next 8, interp 16, current_frame 64, thread_id 144,
            native_thread_id 152, datastack_chunk 224, status 32
        interpreter_frame: size 88, previous 8, executable 0, instr_ptr 56, localsplus 80,
            owner 74, stackpointer 64, tlbc_index 0
        code_object: size 216, filename 112, name 120, qualname 128, linetable 136,
            firstlineno 68, argcount 52, localsplusnames 96, localspluskinds 104,
            co_code_adaptive 208, co_tlbc 0
        pyobject: size 16, ob_type 8
        type_object: size 416, tp_name 24, tp_repr 88, tp_flags 168
        tuple_object: size 40, ob_item 32, ob_size 16
        list_object: size 40, ob_item 24, ob_size 16
        set_object: size 200, used 24, table 40, mask 32
        dict_object: size 48, ma_keys 32, ma_values 40
        float_object: size 24, ob_fval 16
        long_object: size 32, lv_tag 16, ob_digit 24
        bytes_object: size 40, ob_size 16, ob_sval 32
        unicode_object: size 64, state 32, length 16, asciiobject_size 40
        gc: size 384, collecting 292
        gen_object: size 152, gi_name 40, gi_iframe 72, gi_frame_state 67
        llist_node: next 0, prev 8
        debugger_support: eval_breaker 24, remote_debugger_support 272,
            remote_debugging_enabled 5120, debugger_pending_call 0, debugger_script_path 4,
            debugger_script_path_size 512
    ",
    kind_shift: 2,
    executable_tag: 1,
    entry_owner: 3,
    tlbc: false,
};

/// 3.14 free-threaded: the 32-byte object header, `enabled` first in the GIL (so
/// `last_holder` at +16, `locked` at +24), `tlbc_index` in frames (owner moves to 78),
/// `co_tlbc` before `co_code_adaptive`.
pub const FT_314: Flavor = Flavor {
    label: "3.14.0t",
    version_hex: 0x030e_00f0,
    free_threaded: true,
    table: "
        runtime_state: size 335000, finalizing 784, interpreters_head 808
        interpreter_state: size 240000, id 7296, next 7288, threads_head 7368,
            threads_main 7376, gc 7424, imports_modules 7688, sysdict 7672, builtins 7680,
            ceval_gil 16, gil_runtime_state 7784, gil_runtime_state_enabled 0,
            gil_runtime_state_locked 7808, gil_runtime_state_holder 7800,
            code_object_generation 9000, tlbc_generation 9008
        thread_state: size 336, prev 0, next 8, interp 16, current_frame 64, thread_id 144,
            native_thread_id 152, datastack_chunk 224, status 32
        interpreter_frame: size 88, previous 8, executable 0, instr_ptr 56, localsplus 80,
            owner 78, stackpointer 64, tlbc_index 72
        code_object: size 240, filename 128, name 136, qualname 144, linetable 152,
            firstlineno 84, argcount 68, localsplusnames 112, localspluskinds 120,
            co_code_adaptive 232, co_tlbc 224
        pyobject: size 32, ob_type 24
        type_object: size 432, tp_name 40, tp_repr 104, tp_flags 184
        tuple_object: size 56, ob_item 48, ob_size 32
        list_object: size 56, ob_item 40, ob_size 32
        set_object: size 216, used 40, table 56, mask 48
        dict_object: size 64, ma_keys 48, ma_values 56
        float_object: size 40, ob_fval 32
        long_object: size 48, lv_tag 32, ob_digit 40
        bytes_object: size 56, ob_size 32, ob_sval 48
        unicode_object: size 80, state 48, length 32, asciiobject_size 56
        gc: size 400, collecting 300
        gen_object: size 168, gi_name 56, gi_iframe 88, gi_frame_state 83
        llist_node: next 0, prev 8
        debugger_support: eval_breaker 24, remote_debugger_support 272,
            remote_debugging_enabled 5120, debugger_pending_call 0, debugger_script_path 4,
            debugger_script_path_size 512
    ",
    kind_shift: 8,
    executable_tag: 1,
    entry_owner: 3,
    tlbc: true,
};

/// 3.15 free-threaded: the table `_PyRuntimeState_INIT` produces when Debian's 3.15.2
/// headers are compiled with `-DPy_BUILD_CORE -DPy_GIL_DISABLED`, printed word by word
/// (`holds_gil` and `gil_requested` exported in the thread table; `Py_TAG_BITS` is 3 in
/// both builds from 3.15).
pub const FT_315: Flavor = Flavor {
    label: "3.15.0t",
    version_hex: 0x030f_00f0,
    free_threaded: true,
    table: "
        runtime_state: size 409296, finalizing 912, interpreters_head 936
        interpreter_state: size 250328, id 7272, next 7264, threads_head 7336,
            threads_main 7352, gc 7400, imports_modules 7592, sysdict 7576, builtins 7584,
            ceval_gil 16, gil_runtime_state 7736, gil_runtime_state_enabled 0,
            gil_runtime_state_locked 7760, gil_runtime_state_holder 7752,
            code_object_generation 7952, tlbc_generation 17252
        thread_state: size 888, prev 0, next 8, interp 16, current_frame 72, base_frame 80,
            last_profiled_frame 88, last_profiled_frame_seq 96, thread_id 176,
            native_thread_id 184, datastack_chunk 256, status 32, holds_gil 36,
            gil_requested 40, current_exception 136, exc_state 288
        err_stackitem: exc_value 0
        interpreter_frame: size 88, previous 8, executable 0, instr_ptr 56, localsplus 80,
            owner 78, stackpointer 64, tlbc_index 72
        code_object: size 240, filename 128, name 136, qualname 144, linetable 152,
            firstlineno 84, argcount 68, localsplusnames 112, localspluskinds 120,
            co_code_adaptive 232, co_tlbc 224
        pyobject: size 32, ob_type 24
        type_object: size 440, tp_name 40, tp_repr 104, tp_flags 184, tp_basicsize 48,
            tp_dictoffset 304
        heap_type_object: size 968, ht_cached_keys 904
        tuple_object: size 56, ob_item 48, ob_size 32
        list_object: size 56, ob_item 40, ob_size 32
        set_object: size 216, used 40, table 56, mask 48
        dict_object: size 64, ma_keys 48, ma_values 56
        float_object: size 40, ob_fval 32
        long_object: size 48, lv_tag 32, ob_digit 40
        bytes_object: size 56, ob_size 32, ob_sval 48
        unicode_object: size 80, state 48, length 32, asciiobject_size 56,
            compactunicodeobject_size 72
        gc: size 176, collecting 112, frame 120, generation_stats_size 224,
            generation_stats 104
        gen_object: size 176, gi_name 40, gi_iframe 88, gi_frame_state 83
        llist_node: next 0, prev 8
        debugger_support: eval_breaker 24, remote_debugger_support 344,
            remote_debugging_enabled 8036, debugger_pending_call 0, debugger_script_path 4,
            debugger_script_path_size 512
    ",
    kind_shift: 8,
    executable_tag: 3,
    entry_owner: 3,
    tlbc: true,
};

/// A field of `struct _gil_runtime_state`.
#[derive(Debug, Clone, Copy)]
pub enum GilField {
    Enabled,
    Interval,
    LastHolder,
    Locked,
    SwitchNumber,
}

impl Flavor {
    pub fn minor(&self) -> u8 {
        (self.version_hex >> 16) as u8
    }

    /// The table as (member, [(field, value)]), in declaration order.
    pub fn sections(&self) -> Vec<(&'static str, Vec<(&'static str, u64)>)> {
        let mut sections: Vec<(&str, Vec<(&str, u64)>)> = Vec::new();
        for line in self.table.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let rest = match line.split_once(": ") {
                Some((member, rest)) => {
                    sections.push((member, Vec::new()));
                    rest
                }
                None => line, // a continuation line
            };
            let fields = &mut sections.last_mut().expect("a member first").1;
            for item in rest.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                let (field, value) = item.split_once(' ').expect("`field value`");
                fields.push((field, value.parse().expect("a number")));
            }
        }
        sections
    }

    /// The table value `member.field`; panics if the table has no such field.
    pub fn offset(&self, member: &str, field: &str) -> u64 {
        self.sections()
            .into_iter()
            .find(|(name, _)| *name == member)
            .and_then(|(_, fields)| fields.into_iter().find(|(f, _)| *f == field))
            .map(|(_, value)| value)
            .unwrap_or_else(|| panic!("{}: no {member}.{field}", self.label))
    }

    /// The `_Py_DebugOffsets` bytes: cookie, version, free_threaded, then every table word.
    pub fn debug_offsets(&self) -> Vec<u8> {
        let mut bytes = b"xdebugpy".to_vec();
        let table = self.sections().into_iter().flat_map(|(_, fields)| fields);
        let words = [self.version_hex, u64::from(self.free_threaded)]
            .into_iter()
            .chain(table.map(|(_, value)| value));
        for word in words {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        bytes
    }

    /// Checks that the table has the size gilscope expects for its minor version and that
    /// every field is where gilscope looks it up by name.
    pub fn check_table_shape(&self) {
        let bytes = self.debug_offsets();
        assert_eq!(
            debug_offsets_size(self.minor()),
            Some(bytes.len()),
            "{}: sizeof(_Py_DebugOffsets)",
            self.label
        );
        let parsed = DebugOffsets::parse(&bytes).expect("the table parses");
        for (member, fields) in self.sections() {
            for (field, value) in fields {
                assert_eq!(
                    parsed.get(member, field),
                    Some(value),
                    "{}: {member}.{field}",
                    self.label
                );
            }
        }
    }

    /// `offsetof(struct _gil_runtime_state, ...)`: `int enabled` first in free-threaded
    /// builds (padded to 8), then `interval`, `last_holder`, `int locked`, `switch_number`.
    pub fn gil_field(&self, field: GilField) -> u64 {
        let base = if self.free_threaded { 8 } else { 0 };
        match field {
            GilField::Enabled => 0,
            GilField::Interval => base,
            GilField::LastHolder => base + 8,
            GilField::Locked => base + 16,
            GilField::SwitchNumber => base + 24,
        }
    }
}
