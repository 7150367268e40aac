//! `report.json`: the figures CI jobs read, and the advice. Field names are a contract
//! (docs/report-schema.md): add fields, never rename them.

use super::event_loop::EventLoopFigures;
use super::python::PythonInfo;
use super::state::FlagComparison;
use serde::{Deserialize, Serialize};

pub const REPORT_SCHEMA: &str = "gilscope.report/1";

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub pid: i32,
    pub command: Vec<String>,
    pub python: PythonInfo,
    pub duration_s: f64,
    /// The rate asked for.
    pub rate_hz: f64,
    /// Samples per second actually taken.
    pub achieved_rate_hz: f64,
    pub samples: u64,
    /// Deadlines skipped because gilscope fell behind.
    pub missed_samples: u64,
    /// Samples dropped because memory changed under the reader.
    pub torn_samples: u64,
    /// Samples during which the target was stopped (SIGSTOP, a debugger).
    pub stopped_samples: u64,
    pub stop_reason: String,
    pub cpus: u32,
    /// The CPUs the sampler was kept to, none of which the target may run on (null: it
    /// shared the target's CPUs, and took one from it at each sample).
    pub sampler_cpus: Option<Vec<usize>>,
    pub gil: GilFigures,
    pub threads: Vec<ThreadFigures>,
    /// Threads grouped by job (name without counters, or entry function), most samples
    /// first; each `threads` entry names its `group`.
    pub thread_groups: Vec<GroupFigures>,
    /// Each exec() the target called while recorded: `at_s`, the new `program` and its
    /// `command`, `python` (its version, null when it was not sampled), `interpreter` (the
    /// `python` object of that program: the top-level one describes the first), `samples`
    /// and a `note`. The other figures cover every program. Empty without an exec.
    pub execs: Vec<super::recording::ExecCounts>,
    /// Child processes (with --subprocesses), each a report of its own.
    pub processes: Vec<Report>,
    /// What to do about the GIL, ranked: the first is the primary recommendation. Each has
    /// `kind` (processes | native_offload | threads | async | none), a one-line `verdict`,
    /// the `evidence` it rests on ({figure, value, unit, note}), the `code` to look at
    /// ({function, file, line, fraction, role: holds_gil | waits_for_gil}),
    /// `expected_speedup` (null when it cannot be computed) and the `rule` that fired.
    /// Never empty. See [`crate::advice`].
    pub recommendations: Vec<Recommendation>,
    /// With `record --push`: windows closed, sent, failed requests, dropped windows
    /// ([`crate::model::report::PushCounts`]). Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<crate::model::report::PushCounts>,
}
// ---------------------------------------------------------------------------------------
// Figures (computed by crate::profile::figures)

/// What a thread mostly did. The thresholds are documented in docs/report-schema.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ThreadClass {
    /// Busy, and rarely waiting for the GIL.
    CpuBound,
    /// Busy, but a large share of that spent waiting for the GIL.
    GilBound,
    /// Mostly idle in I/O or sleep.
    IoBound,
    /// Busy mostly in native code without the GIL.
    Native,
    /// Mostly idle on locks or other waits.
    Idle,
}

impl ThreadClass {
    pub fn name(self) -> &'static str {
        match self {
            ThreadClass::CpuBound => "cpu_bound",
            ThreadClass::GilBound => "gil_bound",
            ThreadClass::IoBound => "io_bound",
            ThreadClass::Native => "native",
            ThreadClass::Idle => "idle",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct StateFractions {
    pub gil_held: f64,
    pub gil_wait: f64,
    pub native_nogil: f64,
    pub idle: f64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct IdleFractions {
    pub sleep: f64,
    pub io: f64,
    pub lock: f64,
    pub other: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TopFrame {
    pub function: String,
    pub file: String,
    pub line: u32,
    /// Share of the thread's samples in which this was the innermost Python frame.
    pub fraction: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ThreadFigures {
    pub tid: i32,
    pub name: Option<String>,
    /// The thread's group (see [`group_of`]): the `name` of its entry in `thread_groups`.
    pub group: String,
    pub samples: u64,
    pub class: ThreadClass,
    pub states: StateFractions,
    pub idle_reasons: IdleFractions,
    pub top_frames: Vec<TopFrame>,
    /// Idle-to-busy transitions seen.
    pub wakeups: u64,
    /// Share of wake-ups that began with a wait for the GIL.
    pub wakeups_waiting_for_gil: f64,
    /// Mean time a wake-up spent waiting for the GIL, estimated from samples (ms).
    pub mean_wait_per_wakeup_ms: f64,
    /// The asyncio event loop this thread runs, if any: busy share and stalls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_loop: Option<EventLoopFigures>,
}

#[cfg(test)]
impl ThreadFigures {
    /// A thread idle in all its `samples`, with nothing else known: where tests' threads
    /// start from.
    pub(crate) fn idle(tid: i32, group: &str, samples: u64) -> Self {
        ThreadFigures {
            tid,
            name: None,
            group: group.to_string(),
            samples,
            class: ThreadClass::Idle,
            states: StateFractions {
                idle: 1.0,
                ..StateFractions::default()
            },
            idle_reasons: IdleFractions::default(),
            top_frames: Vec::new(),
            wakeups: 0,
            wakeups_waiting_for_gil: 0.0,
            mean_wait_per_wakeup_ms: 0.0,
            event_loop: None,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct GilFigures {
    /// Share of samples in which some thread held the GIL.
    pub held: f64,
    /// Share of samples in which the GIL was held and at least one thread waited for it.
    pub contended: f64,
    /// Threads waiting for the GIL, on average per sample.
    pub mean_waiters: f64,
    /// GIL hand-offs per second (from the interpreter's own `switch_number`).
    pub switches_per_s: f64,
    /// Threads on a CPU (holding the GIL or native without it), on average per sample.
    pub parallelism: f64,
    pub interval_us: u64,
    /// Where who holds and who waits comes from: "thread_flags" (3.15+: the thread states'
    /// own `holds_gil` / `gil_requested`) or "gil_struct" (the GIL struct and /proc).
    pub source: &'static str,
    /// The /proc inference checked against the thread states' own GIL flags (3.13+).
    pub thread_flags: Option<ThreadFlagFigures>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ThreadFlagFigures {
    /// "state" (3.15+: holding / waiting / neither, per thread) or "holder" (3.13, 3.14:
    /// whether each thread holds the GIL, the GIL struct against `holds_gil`).
    pub compared: FlagComparison,
    pub samples: u64,
    /// Share of samples in which every thread agreed.
    pub sample_agreement: f64,
    /// Share of (thread, sample) pairs that agreed.
    pub thread_agreement: f64,
}

/// Threads that do the same job, as one row: a thread-per-request server's thousands of
/// short threads, or a pool's workers.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupFigures {
    /// The threads' name with its counters taken out (`req-*`), see [`group_of`].
    pub name: String,
    /// Threads of the group seen in at least one sample.
    pub threads: u64,
    /// Thread-samples of the group (each sample counts each of its threads once).
    pub samples: u64,
    /// Shares of the group's thread-samples.
    pub states: StateFractions,
    pub idle_reasons: IdleFractions,
    /// The class of the group's summed counts, by the thread rules.
    pub class: ThreadClass,
    /// How long a thread of the group lived on average, estimated as its samples times the
    /// sampling period (ms). Threads shorter than one period read as one period or unseen.
    pub mean_life_ms: f64,
    /// Innermost frames over the group's samples, as for a thread.
    pub top_frames: Vec<TopFrame>,
    /// Reports show the group as one row instead of its threads (see [`SHORT_LIVED`]).
    pub short_lived: bool,
}
// ---------------------------------------------------------------------------------------
// Recommendations (made by crate::advice)

/// What to change. The first three are changes; `threads` and `async` may also mean "keep".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Run the work in processes (multiprocessing, ProcessPoolExecutor).
    Processes,
    /// Move the hot code into native code that releases the GIL.
    NativeOffload,
    /// Threads (already) suit this work.
    Threads,
    /// asyncio suits this work (better, or already).
    Async,
    /// Nothing to change about concurrency.
    None,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Processes => "processes",
            Kind::NativeOffload => "native_offload",
            Kind::Threads => "threads",
            Kind::Async => "async",
            Kind::None => "none",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    pub kind: Kind,
    /// One line, readable without the figures.
    pub verdict: String,
    /// The figures the verdict rests on.
    pub evidence: Vec<Evidence>,
    /// The code to look at, most important first.
    pub code: Vec<CodeRef>,
    /// How much faster the change could make the work (throughput), where it can be computed.
    pub expected_speedup: Option<f64>,
    /// Stable id of the rule that fired, e.g. "cpu_threads_contend".
    pub rule: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// A report.json figure: "gil.contended", "thread[worker-0].gil_wait", "cpus"...
    pub figure: String,
    pub value: f64,
    pub unit: Unit,
    /// What the figure means here, in words that read after the value: "98%" + " of the
    /// time the GIL was held while another thread waited for it".
    pub note: String,
}

/// How to read an [`Evidence`] value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// A fraction between 0 and 1.
    Share,
    /// A whole number of things (samples, wake-ups, CPUs, threads).
    Count,
    /// A mean number of threads.
    Threads,
    /// Milliseconds.
    Ms,
    /// Events per second.
    PerSecond,
}

impl Evidence {
    /// The value as a reader expects it: "98%", "12", "1.95", "4.8 ms".
    pub fn value_text(&self) -> String {
        match self.unit {
            Unit::Share => format!("{:.0}%", self.value * 100.0),
            Unit::Count => format!("{:.0}", self.value),
            Unit::Threads => format!("{:.2}", self.value),
            Unit::Ms => format!("{:.1} ms", self.value),
            Unit::PerSecond => format!("{:.1}/s", self.value),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeRef {
    /// The qualified name where the interpreter records one.
    pub function: String,
    pub file: String,
    /// The line sampled most often inside the function.
    pub line: u32,
    /// Share of the rule's threads' samples in `role`'s state (GIL held, or waiting for it)
    /// whose innermost Python frame was this function.
    pub fraction: f64,
    pub role: Role,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Runs while holding the GIL.
    HoldsGil,
    /// Where threads wait for the GIL.
    WaitsForGil,
    /// Runs while an event loop is stalled.
    BlocksLoop,
}

impl Role {
    /// What a [`CodeRef`]'s fraction is a share of, in words.
    pub fn share_of(self) -> &'static str {
        match self {
            Role::HoldsGil => "the time holding the GIL",
            Role::WaitsForGil => "the time waiting for the GIL",
            Role::BlocksLoop => "the time the event loop was stalled",
        }
    }
}
// ---------------------------------------------------------------------------------------
// Push (counted by crate::push)

/// What reached the server (`push` in report.json).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushCounts {
    /// Windows closed with at least one sample (each one profile to send).
    pub windows: u64,
    /// Windows the server accepted (a 2xx answer).
    pub sent: u64,
    /// Requests that failed: refused, timed out, or answered with an error status. A window
    /// tried three times counts three times.
    pub failed: u64,
    /// Windows that never reached the server: given up after their tries, dropped because
    /// the queue was full, or still queued when gilscope had to exit.
    pub dropped: u64,
    /// Why the last failed request failed, or that gilscope stopped waiting for the server
    /// (no header values in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}
