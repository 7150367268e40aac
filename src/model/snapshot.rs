//! What `gilscope dump` prints: one sample resolved into names and strings. Field names are
//! a contract with users' scripts (docs/formats/dump.md).

use super::python::{FrameInfo, PythonInfo};
use super::state::{IdleReason, ThreadState};
use serde::Serialize;

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
