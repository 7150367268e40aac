//! What a thread was doing at a sample, and how the inference was checked: the vocabulary
//! every stage after the sampler shares.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ThreadState {
    /// Holds the GIL (running Python, or C code that kept the GIL).
    GilHeld,
    /// Blocked taking the GIL (or handing it over).
    GilWait,
    /// On a CPU or runnable without the GIL: C code that released it, or any running thread
    /// of a free-threaded build with the GIL disabled.
    NativeNogil,
    /// Blocked in the kernel on something other than the GIL.
    Idle,
}

impl ThreadState {
    pub const ALL: [ThreadState; 4] = [
        ThreadState::GilHeld,
        ThreadState::GilWait,
        ThreadState::NativeNogil,
        ThreadState::Idle,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ThreadState::GilHeld => "gil_held",
            ThreadState::GilWait => "gil_wait",
            ThreadState::NativeNogil => "native_nogil",
            ThreadState::Idle => "idle",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum IdleReason {
    /// time.sleep and friends.
    Sleep,
    /// Sockets, files, pipes, and poll/epoll/select on descriptors.
    Io,
    /// A futex that is not the GIL: threading locks, conditions, queues, joins.
    Lock,
    /// Anything else (waiting for a child, a signal, a stopped thread).
    Other,
}

impl IdleReason {
    pub const ALL: [IdleReason; 4] = [
        IdleReason::Sleep,
        IdleReason::Io,
        IdleReason::Lock,
        IdleReason::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            IdleReason::Sleep => "sleep",
            IdleReason::Io => "io",
            IdleReason::Lock => "lock",
            IdleReason::Other => "other",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagComparison {
    /// 3.13 and 3.14: whether each thread holds the GIL, by the GIL struct and by the
    /// thread's `holds_gil` flag (pinned from the headers; the struct stays the source).
    Holder,
    /// 3.15+: holding, waiting or neither, by the inference and by the exported
    /// `holds_gil` / `gil_requested` flags (the flags are the source).
    State,
}
