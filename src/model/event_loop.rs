//! What gilscope measured of an asyncio (or uvloop) event loop: counts kept in `recording.json`
//! (gathered by [`crate::profile::event_loop`]) and the figures of `threads[].event_loop` in
//! report.json.

use super::python::FrameInfo;
use super::recording::{IdleCounts, StateCounts};
use serde::{Deserialize, Serialize};

/// One event loop's counts over a recording (kept in recording.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventLoopCounts {
    pub tid: i32,
    /// "asyncio" or "uvloop".
    pub kind: String,
    /// How stretches were told apart: "pass_start" (the loop's clock, exact) or
    /// "timeslices" (the scheduler's counters), whichever told most of them.
    pub method: String,
    /// Stretches told apart by the loop's clock, and by the scheduler's counters.
    pub stamped_stretches: u64,
    pub unstamped_stretches: u64,
    pub stall_threshold_ms: f64,
    /// Samples in which the thread ran the loop.
    pub samples: u64,
    /// Of those, in the selector.
    pub selector_samples: u64,
    /// Samples blocked in the kernel: in the selector, or elsewhere (sleep, I/O, a lock,
    /// the GIL) while running code.
    pub blocked_in_selector: u64,
    pub blocked_elsewhere: u64,
    /// Summed over the intervals between consecutive samples of the loop: wall time, time
    /// on a CPU and time waiting for one (ns).
    pub wall_ns: u64,
    pub cpu_ns: u64,
    pub run_delay_ns: u64,
    /// Stalls seen (`stalls_ms` may keep fewer).
    pub stalls: u64,
    /// Each stall's length (ms), in order.
    pub stalls_ms: Vec<f64>,
    /// The code running during stalls: samples per innermost user frame and state. Where
    /// stalls are not measured (uvloop), the code running while the loop was busy.
    pub blocking: Vec<BlockingCount>,
    /// Whether stalls were measured: false for uvloop, whose passes leave no trace gilscope
    /// can read (docs/event-loops.md); `stalls` and `stalls_ms` are then empty.
    #[serde(default = "stalls_measured_by_default")]
    pub stalls_measured: bool,
}

fn stalls_measured_by_default() -> bool {
    true
}

/// Samples taken during stalls with one function innermost (user code, not asyncio's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockingCount {
    pub frame: FrameInfo,
    pub states: StateCounts,
    pub idle_reasons: IdleCounts,
    pub samples: u64,
    /// Of those samples, how many ran in each asyncio task (by name), most first; samples
    /// whose task could not be read are not counted.
    #[serde(default)]
    pub tasks: Vec<TaskCount>,
}

/// Samples of a blocking function in one asyncio task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCount {
    pub name: String,
    pub samples: u64,
}

/// An event loop's figures, as report.json shows them (`threads[].event_loop`). Where
/// stalls are not measured (uvloop), report.json has `null` for the stall figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(into = "EventLoopJson")]
pub struct EventLoopFigures {
    /// "asyncio" or "uvloop".
    pub kind: String,
    /// Share of the time the loop was not waiting in its selector.
    pub busy: f64,
    pub stall_threshold_ms: f64,
    /// Stretches of running code longer than the threshold.
    pub stalls: u64,
    pub stalls_per_s: f64,
    pub longest_stall_ms: f64,
    pub p95_stall_ms: f64,
    /// Share of the time spent in stalls: what every other client waited behind.
    pub blocked: f64,
    /// "pass_start", "timeslices" or "none" (uvloop; docs/event-loops.md).
    pub method: String,
    /// The code running during stalls, most first (while busy, where stalls are not
    /// measured).
    pub blocking: Vec<BlockingFigure>,
    /// False where stalls cannot be measured (uvloop): the stall figures are then 0 here
    /// and `null` in report.json.
    pub stalls_measured: bool,
}

/// [`EventLoopFigures`] as report.json has it.
#[derive(Serialize)]
struct EventLoopJson {
    kind: String,
    busy: f64,
    stall_threshold_ms: f64,
    stalls: Option<u64>,
    stalls_per_s: Option<f64>,
    longest_stall_ms: Option<f64>,
    p95_stall_ms: Option<f64>,
    blocked: Option<f64>,
    method: String,
    blocking: Vec<BlockingFigure>,
}

impl From<EventLoopFigures> for EventLoopJson {
    fn from(f: EventLoopFigures) -> Self {
        let known = |x| f.stalls_measured.then_some(x);
        EventLoopJson {
            stalls: f.stalls_measured.then_some(f.stalls),
            stalls_per_s: known(f.stalls_per_s),
            longest_stall_ms: known(f.longest_stall_ms),
            p95_stall_ms: known(f.p95_stall_ms),
            blocked: known(f.blocked),
            kind: f.kind,
            busy: f.busy,
            stall_threshold_ms: f.stall_threshold_ms,
            method: f.method,
            blocking: f.blocking,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlockingFigure {
    pub function: String,
    pub file: String,
    /// The line sampled most often in it.
    pub line: u32,
    /// Share of stall time with this function innermost.
    pub fraction: f64,
    /// What it did: "python" (running Python, holding the GIL), "native" (native code
    /// without the GIL), "gil_wait", "sleep", "io", "lock" or "other" (blocked).
    pub cause: String,
    /// The asyncio task that ran it most during stalls, by name, where it could be read
    /// (docs/event-loops.md says on which versions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
}

impl BlockingFigure {
    /// ", in task client-3" (empty when the task is not known).
    pub fn in_task(&self) -> String {
        self.task
            .as_ref()
            .map_or_else(String::new, |t| format!(", in task {t}"))
    }
}

impl EventLoopFigures {
    /// One line for summaries: "busy 31%, 24 stalls over 20 ms (4.8/s), longest 43 ms,
    /// p95 41 ms; blocked by crunch (handlers.py:36) 92% of stall time".
    pub fn describe(&self) -> String {
        if !self.stalls_measured {
            let mut text = format!(
                "busy {:.0}%, stalls not measured ({} loops leave no trace of their passes)",
                self.busy * 100.0,
                self.kind
            );
            if let Some(b) = self.blocking.first() {
                let file = b.file.rsplit('/').next().unwrap_or(&b.file);
                text += &format!(
                    "; busy in {} ({file}:{}, {}) {:.0}% of that time",
                    b.function,
                    b.line,
                    b.cause,
                    b.fraction * 100.0
                );
                text += &b.in_task();
            }
            return text;
        }
        let mut text = format!(
            "busy {:.0}%, {} stall{} over {:.0} ms",
            self.busy * 100.0,
            self.stalls,
            if self.stalls == 1 { "" } else { "s" },
            self.stall_threshold_ms
        );
        if self.stalls > 0 {
            text += &format!(
                " ({:.1}/s, {:.0}% of the time), longest {:.0} ms, p95 {:.0} ms",
                self.stalls_per_s,
                self.blocked * 100.0,
                self.longest_stall_ms,
                self.p95_stall_ms
            );
        }
        if let Some(b) = self.blocking.first() {
            let file = b.file.rsplit('/').next().unwrap_or(&b.file);
            text += &format!(
                "; stalled in {} ({file}:{}, {}) {:.0}% of that time",
                b.function,
                b.line,
                b.cause,
                b.fraction * 100.0
            );
            text += &b.in_task();
        }
        text
    }
}
