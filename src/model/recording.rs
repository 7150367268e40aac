//! A finished recording: counts only, with every frame resolved to strings. It is what all
//! outputs read, and it is saved (`recording.json`) so `gilscope report` can re-render later.

use super::event_loop::EventLoopCounts;
use super::python::{FrameInfo, GilMode, PythonInfo};
use super::state::{FlagComparison, IdleReason, ThreadState};
use super::timeline::Timeline;
use serde::{Deserialize, Serialize};

pub const RECORDING_FORMAT: &str = "gilscope.recording/1";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts {
    pub gil_held: u64,
    pub gil_wait: u64,
    pub native_nogil: u64,
    pub idle: u64,
}

impl StateCounts {
    pub fn add(&mut self, state: ThreadState, n: u64) {
        *self.get_mut(state) += n;
    }
    pub fn get(&self, state: ThreadState) -> u64 {
        match state {
            ThreadState::GilHeld => self.gil_held,
            ThreadState::GilWait => self.gil_wait,
            ThreadState::NativeNogil => self.native_nogil,
            ThreadState::Idle => self.idle,
        }
    }
    fn get_mut(&mut self, state: ThreadState) -> &mut u64 {
        match state {
            ThreadState::GilHeld => &mut self.gil_held,
            ThreadState::GilWait => &mut self.gil_wait,
            ThreadState::NativeNogil => &mut self.native_nogil,
            ThreadState::Idle => &mut self.idle,
        }
    }
    pub fn total(&self) -> u64 {
        self.gil_held + self.gil_wait + self.native_nogil + self.idle
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdleCounts {
    pub sleep: u64,
    pub io: u64,
    pub lock: u64,
    pub other: u64,
}

impl IdleCounts {
    pub fn add(&mut self, reason: IdleReason, n: u64) {
        match reason {
            IdleReason::Sleep => self.sleep += n,
            IdleReason::Io => self.io += n,
            IdleReason::Lock => self.lock += n,
            IdleReason::Other => self.other += n,
        }
    }
    pub fn get(&self, reason: IdleReason) -> u64 {
        match reason {
            IdleReason::Sleep => self.sleep,
            IdleReason::Io => self.io,
            IdleReason::Lock => self.lock,
            IdleReason::Other => self.other,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadCounts {
    pub tid: i32,
    pub name: Option<String>,
    /// Samples in which this thread existed.
    pub samples: u64,
    pub states: StateCounts,
    pub idle_reasons: IdleCounts,
    /// Idle-to-busy transitions seen (wake-ups).
    #[serde(default)]
    pub wakeups: u64,
    /// Wake-ups whose first busy sample was a GIL wait (the convoy effect).
    #[serde(default)]
    pub wakeup_waits: u64,
    /// `gil_wait` samples in runs that began at a wake-up.
    #[serde(default)]
    pub wakeup_wait_samples: u64,
}

/// One distinct (thread, state, stack) and how many samples it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackCount {
    pub tid: i32,
    pub state: ThreadState,
    pub idle_reason: Option<IdleReason>,
    /// Outermost first.
    pub frames: Vec<FrameInfo>,
    /// The real stack was deeper; its outermost frames are missing.
    #[serde(default)]
    pub truncated: bool,
    /// Threads waiting for the GIL, summed over these samples (GIL blame weight).
    #[serde(default)]
    pub waiters: u64,
    pub count: u64,
}

/// Process-wide GIL counters over all samples.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GilCounts {
    /// Samples in which some thread held the GIL.
    pub held: u64,
    /// Samples in which the GIL was held and at least one thread waited.
    pub contended: u64,
    /// Waiting threads, summed over samples.
    pub waiters: u64,
    /// Threads on a CPU (holding the GIL or native without it), summed over samples.
    pub on_cpu: u64,
    /// `switch_number` at the first and the last sample.
    pub first_switch_number: Option<u64>,
    pub last_switch_number: Option<u64>,
    pub interval_us: u64,
    /// Samples by the main GIL's mode (free-threaded builds switch it; others are always
    /// enabled).
    #[serde(default)]
    pub modes: GilModeCounts,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GilModeCounts {
    pub enabled: u64,
    pub disabled: u64,
    pub transient: u64,
}

impl GilModeCounts {
    pub fn add(&mut self, mode: GilMode) {
        match mode {
            GilMode::Enabled => self.enabled += 1,
            GilMode::Disabled => self.disabled += 1,
            GilMode::Transient => self.transient += 1,
        }
    }

    /// The mode most samples saw; `None` before any sample.
    pub fn most_seen(&self) -> Option<GilMode> {
        [
            (self.enabled, GilMode::Enabled),
            (self.transient, GilMode::Transient),
            (self.disabled, GilMode::Disabled),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .max_by_key(|(n, _)| *n)
        .map(|(_, mode)| mode)
    }
}

/// How the inference compared with the thread states' own GIL flags, over a recording
/// (3.13+; see [`crate::sample::settle_by_thread_flags`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagCheckCounts {
    pub compared: FlagComparison,
    /// Samples compared, and those in which every thread agreed.
    pub samples: u64,
    pub samples_agreeing: u64,
    /// Threads compared, summed over samples, and those that agreed.
    pub thread_samples: u64,
    pub thread_samples_agreeing: u64,
}

impl FlagCheckCounts {
    pub fn new(compared: FlagComparison) -> Self {
        FlagCheckCounts {
            compared,
            samples: 0,
            samples_agreeing: 0,
            thread_samples: 0,
            thread_samples_agreeing: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recording {
    pub format: String,
    pub pid: i32,
    pub command: Vec<String>,
    pub python: PythonInfo,
    pub duration_s: f64,
    pub requested_rate_hz: f64,
    /// Samples taken of this process.
    pub samples: u64,
    pub missed_samples: u64,
    pub torn_samples: u64,
    /// Samples during which every thread of the target was stopped (SIGSTOP, a debugger).
    pub stopped_samples: u64,
    pub stop_reason: String,
    /// CPUs the target may run on.
    pub cpus: u32,
    /// The CPUs the sampler was kept to, none of which the target may run on; `None`: it
    /// shared the target's CPUs.
    #[serde(default)]
    pub sampler_cpus: Option<Vec<usize>>,
    pub gil: GilCounts,
    pub threads: Vec<ThreadCounts>,
    pub stacks: Vec<StackCount>,
    /// Child processes recorded with --subprocesses.
    pub children: Vec<Recording>,
    /// Runs of states per thread over time (for `trace.json`); empty in older recordings.
    #[serde(default)]
    pub timeline: Timeline,
    /// asyncio event loops and their stalls; empty in older recordings.
    #[serde(default)]
    pub event_loops: Vec<EventLoopCounts>,
    /// The inference checked against the thread states' own GIL flags (3.13+).
    #[serde(default)]
    pub thread_flags: Option<FlagCheckCounts>,
    /// Each exec() the target called while recorded, in order; the counts above cover
    /// every program it ran (docs/report-schema.md, `execs`).
    #[serde(default)]
    pub execs: Vec<ExecCounts>,
}

/// One exec() of the recorded process: the program it became and what was sampled of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecCounts {
    /// Seconds since the recording began.
    pub at_s: f64,
    /// The new executable (/proc/PID/exe).
    pub program: String,
    /// Its argv (/proc/PID/cmdline), when it could be read.
    pub command: Vec<String>,
    /// The new interpreter's version; `None` when it is not a Python gilscope could read.
    pub python: Option<String>,
    /// The new interpreter in full (the recording's `python` describes the first one).
    pub interpreter: Option<PythonInfo>,
    /// Samples taken of this program.
    pub samples: u64,
    /// What happened, in words: followed, not Python (and why), exec'd again before its
    /// interpreter started, ...
    pub note: String,
}

impl ExecCounts {
    /// "Python 3.12.1, 480 samples", or "not sampled".
    pub fn sampled(&self) -> String {
        match &self.python {
            Some(version) => format!("Python {version}, {} samples", self.samples),
            None => "not sampled".to_string(),
        }
    }
}
