//! A [`Sample`] resolved into names and strings: what `gilscope dump` prints, and the
//! `python` / `gil` objects the other reports share.

use crate::classify::{IdleReason, ThreadState};
use crate::mem::RemoteMemory;
use crate::python::attach::{Build, Runtime};
use crate::python::code::CodeTable;
use crate::python::walker::{Frame, GilState};
use crate::sample::{FlagCheck, FlagComparison, Sample, Target};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PythonInfo {
    pub version: String,
    pub build: Build,
    pub free_threaded: bool,
    /// "enabled", "disabled" (free-threaded, GIL off) or "transient" (free-threaded, GIL
    /// switched on for now, e.g. while importing an extension that needs it).
    pub gil: String,
    pub binary: String,
}

impl PythonInfo {
    /// `gil` is the mode of the main GIL as sampled (`None`: not sampled, taken as enabled).
    pub fn new(runtime: &Runtime, gil: Option<GilMode>) -> Self {
        let b = &runtime.binary;
        PythonInfo {
            version: b.version.to_string(),
            build: b.build,
            free_threaded: b.free_threaded,
            gil: gil.unwrap_or(GilMode::Enabled).name().to_string(),
            binary: b.path.display().to_string(),
        }
    }
}

/// Whether the GIL is in force: always on a default build; a free-threaded build can run
/// without it, or switch it on for a while (e.g. while an extension that needs it loads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GilMode {
    Enabled,
    Disabled,
    Transient,
}

impl GilMode {
    /// From the GIL's `enabled` counter (free-threaded builds; `None` elsewhere).
    pub fn of(gil: &GilState) -> GilMode {
        match gil.enabled {
            None | Some(i32::MAX) => GilMode::Enabled,
            Some(0) => GilMode::Disabled,
            Some(_) => GilMode::Transient,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            GilMode::Enabled => "enabled",
            GilMode::Disabled => "disabled",
            GilMode::Transient => "transient",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GilInfo {
    pub locked: bool,
    pub holder_tid: Option<i32>,
    /// Where the holder and the waiters come from: "thread_flags" (3.15+: the thread
    /// states' own `holds_gil` / `gil_requested`) or "gil_struct" (the GIL's `locked` and
    /// `last_holder`, with /proc for the waiters).
    pub source: &'static str,
    pub switch_number: u64,
    pub interval_us: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameInfo {
    pub function: String,
    /// The qualified name (`Class.method`) where the interpreter records one (3.11+).
    pub qualname: Option<String>,
    pub file: String,
    pub line: u32,
}

impl FrameInfo {
    pub fn new(codes: &CodeTable, frame: &Frame) -> Self {
        let info = codes.info(frame.code);
        FrameInfo {
            function: info.name.clone(),
            qualname: info.qualname.clone(),
            file: info.file.clone(),
            line: frame.line,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ThreadInfo {
    pub tid: i32,
    pub name: Option<String>,
    pub state: ThreadState,
    pub idle_reason: Option<IdleReason>,
    pub interpreter_id: i64,
    /// `threading.get_ident()`.
    pub ident: u64,
    pub frames: Vec<FrameInfo>,
    /// The stack was deeper than gilscope reads; the outermost frames are missing.
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct InterpreterInfo {
    pub id: i64,
    pub gil: GilInfo,
}

/// `gilscope dump` output. Field names are a contract with users' scripts.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub pid: i32,
    pub python: PythonInfo,
    /// The main interpreter's GIL.
    pub gil: GilInfo,
    pub threads: Vec<ThreadInfo>,
    /// Every interpreter (subinterpreters may have GILs of their own), main last.
    pub interpreters: Vec<InterpreterInfo>,
    pub target_stopped: bool,
}

impl Snapshot {
    pub fn new<M: RemoteMemory>(target: &Target<M>, sample: &Sample) -> Self {
        let interpreters: Vec<InterpreterInfo> = sample
            .interpreters
            .iter()
            .enumerate()
            .map(|(index, i)| InterpreterInfo {
                id: i.id,
                gil: gil_info(index, &i.gil, sample),
            })
            .collect();
        let threads = sample
            .threads
            .iter()
            .map(|t| ThreadInfo {
                tid: t.tid,
                name: target.thread_name(t.tid).map(str::to_string),
                state: t.class.state,
                idle_reason: t.class.idle_reason,
                interpreter_id: sample.interpreters[t.interpreter].id,
                ident: t.ident,
                frames: t
                    .frames
                    .iter()
                    .map(|f| FrameInfo::new(&target.walker.codes, f))
                    .collect(),
                truncated: t.truncated,
            })
            .collect();
        let main_gil = sample.main_gil();
        Snapshot {
            pid: target.pid,
            python: PythonInfo::new(target.runtime(), main_gil.map(GilMode::of)),
            gil: interpreters
                .last()
                .map(|i| i.gil.clone())
                .unwrap_or(GilInfo {
                    locked: false,
                    holder_tid: None,
                    source: GIL_STRUCT,
                    switch_number: 0,
                    interval_us: 0,
                }),
            threads,
            interpreters,
            target_stopped: sample.target_stopped,
        }
    }
}

const GIL_STRUCT: &str = "gil_struct";
const THREAD_FLAGS: &str = "thread_flags";

fn gil_info(interpreter: usize, gil: &GilState, sample: &Sample) -> GilInfo {
    let by_flags = matches!(
        sample.flag_check,
        Some(FlagCheck {
            compared: FlagComparison::State,
            ..
        })
    );
    let holder = if by_flags {
        sample
            .threads
            .iter()
            .find(|t| t.interpreter == interpreter && t.class.state == ThreadState::GilHeld)
    } else {
        gil.holder()
            .and_then(|h| sample.threads.iter().find(|t| t.tstate == h))
    };
    GilInfo {
        locked: gil.locked,
        holder_tid: holder.map(|t| t.tid),
        source: if by_flags { THREAD_FLAGS } else { GIL_STRUCT },
        switch_number: gil.switch_number,
        interval_us: gil.interval_us,
    }
}
