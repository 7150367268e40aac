//! What to do about the GIL, from what was measured. [`recommend`] runs a list of rules over
//! a [`Recording`]; each rule is a short function that stays silent or returns one
//! [`Recommendation`]: a kind, a one-line verdict, the figures it rests on (`evidence`), the
//! code to look at and, where it can be computed, what the change would buy.
//!
//! The rules follow how Python systems are designed around the GIL:
//! - CPU-heavy pure-Python threads taking turns on the GIL -> processes, or native code that
//!   releases the GIL;
//! - I/O threads waiting for the GIL after each wake-up behind a CPU-bound thread (the convoy
//!   effect) -> move the CPU work out of the process;
//! - native threads that queue for the GIL behind a Python loop after every native call
//!   (the convoy effect on native code) -> move the loop out of the process or into native
//!   code; a shorter switch interval if it cannot move;
//! - native code already running without the GIL in parallel -> threads already scale;
//! - one CPU-bound thread that nobody waits for -> the GIL is not the bottleneck;
//! - an asyncio event loop that mostly waits -> async is already right;
//! - threads mostly idle in I/O -> threads are fine; async when there are many of them or
//!   they handle connections;
//! - a free-threaded build with the GIL disabled -> GIL advice does not apply.
//!
//! The ranking is the order of [`RULES`]: problems that cost time now come first, then the
//! verdicts that the current design is right. The first entry is the primary
//! recommendation. With a contended GIL the primary always names who holds it and who
//! waits: if no rule that does so fired first, [`blame::gil_contended`] is put first.
//! Figure names in `evidence` are the ones report.json and `--fail-on` use.

mod blame;
mod event_loop;
mod facts;
mod rules;
#[cfg(test)]
mod tests;

use blame::*;
use event_loop::event_loop_stalled;
pub use event_loop::{LONG_STALL_FACTOR, MIN_LOOP_STALLS, is_stalled};
use facts::Facts;
use rules::*;

use crate::classify::ThreadState;
use crate::profile::figures::{
    GilFigures, IDLE_THRESHOLD, ThreadClass, ThreadFigures, gil_figures, ratio, thread_figures,
};
use crate::profile::recording::{Recording, StackCount};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

// ---------------------------------------------------------------------------------------
// What a recommendation is (the report.json contract, docs/report-schema.md)

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
// Thresholds

/// Below this many samples nothing is judged: the figures would be noise.
pub const MIN_SAMPLES: u64 = 20;
/// A thread wanting a CPU (holding the GIL, waiting for it or running native code) in at
/// least this share of its samples is busy.
pub const BUSY_SHARE: f64 = 0.5;
/// A busy thread holding the GIL in at least this share of its samples runs Python code of
/// its own, rather than only waiting.
pub const MIN_HELD_SHARE: f64 = 0.05;
/// The GIL held while someone waits in at least this share of samples: threads fight for it.
pub const CONTENDED_SHARE: f64 = 0.25;
/// Contended in less than this share of samples: nobody waits for the GIL.
pub const NOBODY_WAITS_SHARE: f64 = 0.05;
/// Wake-ups a thread needs before its wake-up figures are judged.
pub const MIN_WAKEUPS: u64 = 5;
/// A thread whose wake-ups begin with a GIL wait at least this often suffers a convoy...
pub const CONVOY_WAKEUP_WAIT_SHARE: f64 = 0.5;
/// ...when at least this share of its GIL-wait samples follow a wake-up (rather than a
/// turn of its own on the CPU).
pub const WAIT_AFTER_WAKEUP_SHARE: f64 = 0.5;
/// A thread holding the GIL in at least this share of its samples is the CPU-bound holder
/// behind a convoy, or a pure-Python hot loop.
pub const HOLDER_SHARE: f64 = 0.5;
/// Threads on a CPU on average at or above which native threads run in parallel.
pub const PARALLEL_THREADS: f64 = 1.3;
/// A thread with an asyncio event-loop frame in at least this share of its samples runs
/// an event loop.
pub const EVENT_LOOP_SHARE: f64 = 0.5;
/// I/O threads needed before their design is judged (one thread is not a design).
pub const MIN_IO_THREADS: usize = 2;
/// At this many I/O threads, asyncio serves the same work with less memory and fewer GIL
/// hand-offs.
pub const ASYNC_IO_THREADS: usize = 16;
/// Speedup estimates below this are not worth promising.
pub const MIN_SPEEDUP: f64 = 1.2;
/// Functions named per role in `code`.
pub const MAX_CODE_REFS: usize = 3;
/// The least share of its role's samples a function needs to be named in `code`.
pub const MIN_CODE_SHARE: f64 = 0.05;
/// Threads listed by name in a verdict or the evidence; the rest are counted.
pub const MAX_NAMED_THREADS: usize = 4;

/// Frames that make a thread an asyncio event loop: (file suffix, function).
const EVENT_LOOP_FRAMES: [(&str, &str); 2] = [
    ("asyncio/base_events.py", "run_forever"),
    ("asyncio/base_events.py", "_run_once"),
];
/// Files whose frames make a thread a connection handler (thread-per-request servers).
const HANDLER_FILES: [&str; 3] = ["socketserver.py", "http/server.py", "simple_server.py"];
/// Thread names (lowercased) containing one of these are connection handlers too.
const HANDLER_NAMES: [&str; 3] = ["conn", "handler", "process_request"];

// ---------------------------------------------------------------------------------------
// The rules

/// Ranked recommendations for one process (children have their own); never empty.
pub fn recommend(rec: &Recording) -> Vec<Recommendation> {
    let facts = Facts::new(rec);
    if rec.samples < MIN_SAMPLES {
        return vec![too_few_samples(&facts)];
    }
    if let Some(free) = free_threaded(&facts) {
        return vec![free];
    }
    let mut list: Vec<Recommendation> = RULES.iter().filter_map(|rule| rule(&facts)).collect();
    if !primary_blames(&facts, &list)
        && let Some(blame) = gil_contended(&facts)
    {
        list.insert(0, blame);
    }
    if list.is_empty() {
        list.push(nothing_stands_out(&facts));
    }
    list
}

type Rule = fn(&Facts) -> Option<Recommendation>;

/// Every rule, in ranking order.
const RULES: [Rule; 13] = [
    event_loop_stalled,
    cpu_threads_contend,
    convoy,
    native_convoy,
    cpu_threads_native_offload,
    native_convoy_native_offload,
    native_convoy_switch_interval,
    native_parallel,
    one_cpu_thread,
    one_cpu_thread_native_offload,
    event_loop_idle,
    io_threads_async,
    io_threads_fine,
];
