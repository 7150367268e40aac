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

use crate::model::recording::{Recording, StackCount};
use crate::model::report::{
    CodeRef, Evidence, GilFigures, Kind, Recommendation, Role, ThreadClass, ThreadFigures, Unit,
};
use crate::model::state::ThreadState;
use crate::profile::figures::{IDLE_THRESHOLD, gil_figures, ratio, thread_figures};
use std::collections::HashMap;

// ---------------------------------------------------------------------------------------
// What a recommendation is (the report.json contract, docs/report-schema.md)

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
