//! The timeline behind `trace.json` as saved in `recording.json` (built by
//! [`crate::profile::timeline`]): per thread, runs of consecutive samples in one state and one
//! innermost Python function.

use super::python::FrameInfo;
use super::state::{IdleReason, ThreadState};
use serde::{Deserialize, Serialize};

/// A finished timeline, as saved in `recording.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// Wall-clock time of the first sample in µs since the Unix epoch: it lines up the
    /// timelines of several processes. All other times are µs since the first sample.
    pub start_unix_us: u64,
    /// Time of the last sample.
    pub end_us: u64,
    /// The stacks runs refer to by index.
    pub stacks: Vec<TimelineStack>,
    /// Threads by tid, each with its runs in time order.
    pub threads: Vec<ThreadTimeline>,
    /// The timeline reached [`crate::profile::timeline::MAX_RUNS`] runs at this time;
    /// nothing after it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated_at_us: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineStack {
    /// Outermost first.
    pub frames: Vec<FrameInfo>,
    /// The real stack was deeper; its outermost frames are missing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadTimeline {
    pub tid: i32,
    pub runs: Vec<Run>,
}

/// Consecutive samples of one thread in one state and innermost function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub state: ThreadState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_reason: Option<IdleReason>,
    /// Index into [`Timeline::stacks`]: the stack at the run's first sample.
    pub stack: u32,
    pub start_us: u64,
    pub end_us: u64,
    pub samples: u64,
}
