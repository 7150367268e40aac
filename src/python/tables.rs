//! Offset tables for CPython 3.8-3.12 (x86-64 Linux, default builds with the GIL).
//!
//! Every number comes from `offsetof`/`sizeof` compiled against the headers each release
//! ships (internal ones included); `tests/it/offsets.rs` recompiles them against every
//! installed interpreter and compares. Parts that did not change between minors are shared
//! as consts named after the first minor they apply to.

use super::layout::{
    CodeLayout, DictKeysFormat, FrameKind, FrameLayout, FramePointer, GilLayout,
    InstanceDictFormat, InterpLayout, Layout, LineTableFormat, LongFormat, ObjectLayout,
    RuntimeLayout, ThreadLayout,
};
use super::version::Version;

/// The layout of a CPython 3.8-3.12 build; `None` for any other version.
pub fn table(version: Version) -> Option<Layout> {
    if version.major != 3 {
        return None;
    }
    match version.minor {
        8 => Some(v3_8(version)),
        9 => Some(v3_9(version)),
        10 => Some(v3_10(version)),
        11 => Some(v3_11(version)),
        12 => Some(v3_12(version)),
        _ => None,
    }
}

fn v3_8(version: Version) -> Layout {
    Layout {
        version,
        free_threaded: false,
        // `ceval` still holds the pending-calls array here, hence the far-off GIL.
        runtime: RuntimeLayout {
            interpreters_head: 32,
            gil: Some(1152),
        },
        interp: InterpLayout {
            id: 16,
            next: 0,
            threads_head: 8,
            gil_ptr: None,
            modules: 56,
        },
        gil: GIL,
        tstate: THREAD_3_8,
        frame: FRAME_3_8,
        code: CODE_3_8,
        object: OBJECTS_3_8,
    }
}

fn v3_9(version: Version) -> Layout {
    Layout {
        version,
        free_threaded: false,
        runtime: RUNTIME_3_9,
        interp: INTERP_3_9,
        gil: GIL,
        tstate: THREAD_3_8,
        frame: FRAME_3_8,
        code: CODE_3_8,
        object: OBJECTS_3_8,
    }
}

fn v3_10(version: Version) -> Layout {
    Layout {
        version,
        free_threaded: false,
        runtime: RUNTIME_3_9,
        interp: INTERP_3_9,
        gil: GIL,
        tstate: THREAD_3_8,
        frame: FrameLayout {
            kind: FrameKind::Object {
                lasti_in_code_units: true,
            },
            instr: 96,
            ..FRAME_3_8
        },
        code: CodeLayout {
            linetable_format: LineTableFormat::Linetable310,
            ..CODE_3_8
        },
        object: OBJECTS_3_8,
    }
}

fn v3_11(version: Version) -> Layout {
    Layout {
        version,
        free_threaded: false,
        runtime: RuntimeLayout {
            interpreters_head: 40,
            gil: Some(360),
        },
        interp: InterpLayout {
            id: 48,
            next: 0,
            threads_head: 16,
            gil_ptr: None,
            modules: 888,
        },
        gil: GIL,
        tstate: ThreadLayout {
            next: 8,
            interp: 16,
            thread_id: 152,
            native_thread_id: Some(160),
            frame: FramePointer::ViaCFrame {
                cframe: 56,
                current_frame: 8,
            },
            gil_flags: None,
        },
        frame: FrameLayout {
            kind: FrameKind::Interpreter,
            previous: 48,
            code: 32,
            instr: 56,
            owner: Some(69),
            owner_cstack: None,
            code_tag_mask: 0,
            tlbc_index: None,
        },
        code: CodeLayout {
            filename: 112,
            name: 120,
            qualname: Some(128),
            firstlineno: 72,
            linetable: 136,
            linetable_format: LineTableFormat::Locations,
            code_adaptive: Some(184),
            tlbc: None,
        },
        object: OBJECTS_3_11,
    }
}

fn v3_12(version: Version) -> Layout {
    Layout {
        version,
        free_threaded: false,
        // The GIL moved into the interpreter: see `interp.gil_ptr`.
        runtime: RuntimeLayout {
            interpreters_head: 40,
            gil: None,
        },
        interp: InterpLayout {
            id: 8,
            next: 0,
            threads_head: 72,
            gil_ptr: Some(384),
            modules: 944,
        },
        gil: GIL,
        tstate: ThreadLayout {
            next: 8,
            interp: 16,
            thread_id: 136,
            native_thread_id: Some(144),
            frame: FramePointer::ViaCFrame {
                cframe: 56,
                current_frame: 0,
            },
            gil_flags: None,
        },
        frame: FrameLayout {
            kind: FrameKind::Interpreter,
            previous: 8,
            code: 0,
            instr: 56,
            owner: Some(70),
            owner_cstack: Some(3), // FRAME_OWNED_BY_CSTACK
            code_tag_mask: 0,
            tlbc_index: None,
        },
        code: CodeLayout {
            filename: 112,
            name: 120,
            qualname: Some(128),
            firstlineno: 68,
            linetable: 136,
            linetable_format: LineTableFormat::Locations,
            code_adaptive: Some(192),
            tlbc: None,
        },
        object: OBJECTS_3_12,
    }
}

/// `struct _gil_runtime_state` is the same from 3.8 to 3.12.
const GIL: GilLayout = GilLayout {
    enabled: None,
    interval: 0,
    last_holder: 8,
    locked: 16,
    switch_number: 24,
    size: 208,
};

const RUNTIME_3_9: RuntimeLayout = RuntimeLayout {
    interpreters_head: 32,
    gil: Some(352),
};

const INTERP_3_9: InterpLayout = InterpLayout {
    id: 24,
    next: 0,
    threads_head: 8,
    gil_ptr: None,
    modules: 856,
};

const THREAD_3_8: ThreadLayout = ThreadLayout {
    next: 8,
    interp: 16,
    thread_id: 176,
    native_thread_id: None,
    frame: FramePointer::Direct(24),
    gil_flags: None,
};

const FRAME_3_8: FrameLayout = FrameLayout {
    kind: FrameKind::Object {
        lasti_in_code_units: false,
    },
    previous: 24,
    code: 32,
    instr: 104,
    owner: None,
    owner_cstack: None,
    code_tag_mask: 0,
    tlbc_index: None,
};

const CODE_3_8: CodeLayout = CodeLayout {
    filename: 104,
    name: 112,
    qualname: None,
    firstlineno: 40,
    linetable: 120,
    linetable_format: LineTableFormat::Lnotab,
    code_adaptive: None,
    tlbc: None,
};

const OBJECTS_3_8: ObjectLayout = ObjectLayout {
    ob_type: 8,
    tp_name: 24,
    // `state` follows `hash`; its bit fields start with `interned:2`, then `kind:3`.
    unicode_state: 32,
    unicode_kind_shift: 2,
    unicode_length: 16,
    unicode_ascii_size: 48,
    unicode_compact_size: 72,
    bytes_size: 16,
    bytes_data: 32,
    dict_keys: 32,
    dict_values: 40,
    dict_keys_format: DictKeysFormat::Sized,
    // `PyModuleObject` is private to moduleobject.c before 3.10 (so the integration test
    // cannot compile it there), but it is `PyObject_HEAD; PyObject *md_dict; ...` in all
    // of these versions.
    module_dict: 16,
    long_digits: 24,
    long_size: 16,
    long_format: LongFormat::SignedSize,
    tp_dictoffset: 288,
    tp_basicsize: 32,
    tp_flags: 168,
    ht_cached_keys: None,
    instance_dict: InstanceDictFormat::DictOffset,
};

const OBJECTS_3_11: ObjectLayout = ObjectLayout {
    dict_keys_format: DictKeysFormat::Log2 { header: 32 },
    ht_cached_keys: Some(872),
    instance_dict: InstanceDictFormat::Managed311,
    ..OBJECTS_3_8
};

/// 3.12 dropped `wstr` from the unicode structs and turned `ob_size` into `lv_tag` (which
/// sits where `ob_size` was, so the offsets stay).
const OBJECTS_3_12: ObjectLayout = ObjectLayout {
    unicode_ascii_size: 40,
    unicode_compact_size: 56,
    long_digits: 24,
    long_size: 16,
    long_format: LongFormat::Tagged,
    ht_cached_keys: Some(880),
    instance_dict: InstanceDictFormat::Managed312,
    ..OBJECTS_3_11
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_minor_from_8_to_12_has_a_table() {
        for minor in 8..=12 {
            let version = Version::new(3, minor, 4);
            let layout = table(version).unwrap_or_else(|| panic!("no table for {version}"));
            assert_eq!(layout.version, version);
            assert!(!layout.free_threaded);
        }
    }

    #[test]
    fn other_versions_have_none() {
        for version in [
            Version::new(3, 7, 16),
            Version::new(3, 13, 0),
            Version::new(2, 8, 0),
        ] {
            assert_eq!(table(version), None, "{version}");
        }
    }
}
