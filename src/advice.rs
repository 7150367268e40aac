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
//! - native code already running without the GIL in parallel -> threads already scale;
//! - one CPU-bound thread that nobody waits for -> the GIL is not the bottleneck;
//! - an asyncio event loop that mostly waits -> async is already right;
//! - threads mostly idle in I/O -> threads are fine; async when there are many of them or
//!   they handle connections;
//! - a free-threaded build with the GIL disabled -> GIL advice does not apply.
//!
//! The ranking is the order of [`RULES`]: problems that cost time now come first, then the
//! verdicts that the current design is right. The first entry is the primary
//! recommendation. Figure names in `evidence` are the ones report.json and `--fail-on` use.

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
}

impl Evidence {
    /// The value as a reader expects it: "98%", "12", "1.95", "4.8 ms".
    pub fn value_text(&self) -> String {
        match self.unit {
            Unit::Share => format!("{:.0}%", self.value * 100.0),
            Unit::Count => format!("{:.0}", self.value),
            Unit::Threads => format!("{:.2}", self.value),
            Unit::Ms => format!("{:.1} ms", self.value),
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
}

impl Role {
    /// What a [`CodeRef`]'s fraction is a share of, in words.
    pub fn share_of(self) -> &'static str {
        match self {
            Role::HoldsGil => "the time holding the GIL",
            Role::WaitsForGil => "the time waiting for the GIL",
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
    if list.is_empty() {
        list.push(nothing_stands_out(&facts));
    }
    list
}

type Rule = fn(&Facts) -> Option<Recommendation>;

/// Every rule, in ranking order.
const RULES: [Rule; 9] = [
    cpu_threads_contend,
    convoy,
    cpu_threads_native_offload,
    native_parallel,
    one_cpu_thread,
    one_cpu_thread_native_offload,
    event_loop_idle,
    io_threads_async,
    io_threads_fine,
];

fn too_few_samples(f: &Facts) -> Recommendation {
    Recommendation {
        kind: Kind::None,
        verdict: format!(
            "Only {} samples were taken: too few to judge; record for longer.",
            f.rec.samples
        ),
        evidence: vec![count("samples", f.rec.samples, "samples taken")],
        code: Vec::new(),
        expected_speedup: None,
        rule: "too_few_samples".into(),
    }
}

/// A free-threaded build running with the GIL disabled: threads already run Python in
/// parallel, and nothing here is about the GIL.
fn free_threaded(f: &Facts) -> Option<Recommendation> {
    let p = &f.rec.python;
    (p.free_threaded && p.gil == "disabled").then(|| Recommendation {
        kind: Kind::None,
        verdict: format!(
            "Python {} is free-threaded and runs with the GIL disabled: threads run Python in \
             parallel, and GIL advice does not apply.",
            p.version
        ),
        evidence: vec![mean_threads(
            "gil.parallelism",
            f.gil.parallelism,
            "threads on a CPU on average",
        )],
        code: Vec::new(),
        expected_speedup: None,
        rule: "free_threaded".into(),
    })
}

/// Two or more threads run Python and take turns on the GIL: processes would run them in
/// parallel.
fn cpu_threads_contend(f: &Facts) -> Option<Recommendation> {
    let compute = f.cpu_contention()?;
    let speedup = f.speedup();
    let mut evidence = vec![
        share(
            "gil.contended",
            f.gil.contended,
            "of the time the GIL was held while another thread waited for it",
        ),
        mean_threads(
            "gil.parallelism",
            f.gil.parallelism,
            "threads on a CPU on average: the GIL runs one Python thread at a time",
        ),
        mean_threads(
            "cpu_demand",
            f.cpu_demand(),
            "threads that wanted a CPU on average (holding the GIL, waiting for it, or native)",
        ),
        count(
            "cpus",
            u64::from(f.rec.cpus),
            "CPUs this process may run on",
        ),
    ];
    for t in compute.iter().take(MAX_NAMED_THREADS) {
        evidence.push(t.share_of("gil_wait", t.fig.states.gil_wait, "waited for the GIL"));
    }
    let mut code = f.code_refs(&compute, ThreadState::GilHeld, Role::HoldsGil);
    code.extend(f.code_refs(&compute, ThreadState::GilWait, Role::WaitsForGil));
    Some(Recommendation {
        kind: Kind::Processes,
        verdict: format!(
            "{} Python code and take turns on the GIL: run that work in processes \
             (ProcessPoolExecutor or multiprocessing){}.",
            subject(&compute, "runs", "run"),
            speedup_text(speedup)
        ),
        evidence,
        code,
        expected_speedup: speedup,
        rule: "cpu_threads_contend".into(),
    })
}

/// I/O threads wait for the GIL after their wake-ups while a CPU-bound thread holds it.
fn convoy(f: &Facts) -> Option<Recommendation> {
    let (victims, holders) = f.convoy()?;
    let wakeups: u64 = victims.iter().map(|t| t.fig.wakeups).sum();
    let waited: u64 = victims.iter().map(|t| t.wakeup_waits).sum();
    let wait_samples: u64 = victims.iter().map(|t| t.wakeup_wait_samples).sum();
    let wait_ms = ratio(wait_samples, wakeups) * f.period_ms;
    let wait_share =
        victims.iter().map(|t| t.fig.states.gil_wait).sum::<f64>() / victims.len() as f64;
    let mut evidence = Vec::new();
    for t in victims.iter().take(MAX_NAMED_THREADS) {
        let f = &t.fig;
        evidence.push(Evidence {
            figure: t.figure("wakeups_waiting_for_gil"),
            value: f.wakeups_waiting_for_gil,
            unit: Unit::Share,
            note: format!(
                "of the {} wake-ups of {} seen began with a wait for the GIL",
                f.wakeups, t.label
            ),
        });
        evidence.push(Evidence {
            figure: t.figure("mean_wait_per_wakeup_ms"),
            value: f.mean_wait_per_wakeup_ms,
            unit: Unit::Ms,
            note: format!("waiting for the GIL per wake-up of {}, on average", t.label),
        });
    }
    for t in holders.iter().take(MAX_NAMED_THREADS) {
        evidence.push(t.share_of("gil_held", t.fig.states.gil_held, "held the GIL"));
    }
    let mut code = f.code_refs(&holders, ThreadState::GilHeld, Role::HoldsGil);
    code.extend(f.code_refs(&victims, ThreadState::GilWait, Role::WaitsForGil));
    Some(Recommendation {
        kind: Kind::Processes,
        verdict: format!(
            "{} for the GIL after {:.0}% of their wake-ups ({wait_ms:.1} ms per wake-up \
             seen; {:.0}% of their time) because {} keeps it busy: move that CPU work out of \
             this process (a ProcessPoolExecutor or a separate worker).",
            subject(&victims, "waits", "wait"),
            ratio(waited, wakeups) * 100.0,
            wait_share * 100.0,
            names(&holders)
        ),
        evidence,
        code,
        expected_speedup: None,
        rule: "convoy".into(),
    })
}

/// The other way out of [`cpu_threads_contend`]: make the hot code native and release the GIL.
fn cpu_threads_native_offload(f: &Facts) -> Option<Recommendation> {
    let compute = f.cpu_contention()?;
    let code = f.code_refs(&compute, ThreadState::GilHeld, Role::HoldsGil);
    let speedup = f.speedup();
    let evidence = compute
        .iter()
        .take(MAX_NAMED_THREADS)
        .map(|t| t.share_of("gil_held", t.fig.states.gil_held, "held the GIL"))
        .collect();
    Some(Recommendation {
        kind: Kind::NativeOffload,
        verdict: format!(
            "Or move the hot Python code{} into native code that releases the GIL (NumPy, or \
             a C, Cython or Rust extension), so these threads run in parallel{}.",
            hot_function_text(&code),
            speedup_text(speedup)
        ),
        evidence,
        code,
        expected_speedup: speedup,
        rule: "cpu_threads_native_offload".into(),
    })
}

/// Threads run native code without the GIL, several at once: threads already scale.
fn native_parallel(f: &Facts) -> Option<Recommendation> {
    let native: Vec<&Thread> = f
        .threads
        .iter()
        .filter(|t| t.fig.class == ThreadClass::Native)
        .collect();
    if native.len() < 2 || f.gil.parallelism < PARALLEL_THREADS {
        return None;
    }
    let mut evidence = vec![
        mean_threads(
            "gil.parallelism",
            f.gil.parallelism,
            "threads on a CPU on average",
        ),
        count(
            "cpus",
            u64::from(f.rec.cpus),
            "CPUs this process may run on",
        ),
    ];
    for t in native.iter().take(MAX_NAMED_THREADS) {
        evidence.push(t.share_of(
            "native_nogil",
            t.fig.states.native_nogil,
            "ran native code without the GIL",
        ));
    }
    Some(Recommendation {
        kind: Kind::Threads,
        verdict: format!(
            "{} native code without the GIL, {:.1} threads on a CPU on average: threads \
             already scale here; keep them.",
            subject(&native, "runs", "run"),
            f.gil.parallelism
        ),
        evidence,
        code: Vec::new(),
        expected_speedup: None,
        rule: "native_parallel".into(),
    })
}

/// One busy thread and nobody waiting for the GIL: the GIL is not what limits speed.
fn one_cpu_thread(f: &Facts) -> Option<Recommendation> {
    let busy = f.lone_busy_thread()?;
    let code = f.code_refs(&[busy], ThreadState::GilHeld, Role::HoldsGil);
    let s = &busy.fig.states;
    let mut evidence = vec![busy.share_of("gil_held", s.gil_held, "held the GIL")];
    if s.native_nogil > 0.0 {
        let native = "ran native code without the GIL";
        evidence.push(busy.share_of("native_nogil", s.native_nogil, native));
    }
    evidence.push(share(
        "gil.contended",
        f.gil.contended,
        "of the time another thread waited for the GIL",
    ));
    Some(Recommendation {
        kind: Kind::None,
        verdict: format!(
            "One thread ({}) does the work and no thread waits for the GIL: the GIL is not the \
             bottleneck, and more threads or async would not help; make the hot code{} faster.",
            busy.label,
            hot_function_text(&code)
        ),
        evidence,
        code,
        expected_speedup: None,
        rule: "one_cpu_thread".into(),
    })
}

/// The lone busy thread runs pure Python: native code is how it gets faster.
fn one_cpu_thread_native_offload(f: &Facts) -> Option<Recommendation> {
    let busy = f.lone_busy_thread()?;
    if busy.fig.states.gil_held < HOLDER_SHARE {
        return None;
    }
    let code = f.code_refs(&[busy], ThreadState::GilHeld, Role::HoldsGil);
    Some(Recommendation {
        kind: Kind::NativeOffload,
        verdict: format!(
            "To make {} faster, move its hot loop{} into native code (NumPy, or a C, Cython or \
             Rust extension).",
            busy.label,
            hot_function_text(&code)
        ),
        evidence: vec![busy.share_of("gil_held", busy.fig.states.gil_held, "ran Python code")],
        code,
        expected_speedup: None,
        rule: "one_cpu_thread_native_offload".into(),
    })
}

/// An asyncio event loop that mostly waits for I/O: async is already the right model.
fn event_loop_idle(f: &Facts) -> Option<Recommendation> {
    let loops: Vec<&Thread> = f
        .threads
        .iter()
        .filter(|t| t.event_loop && t.fig.states.idle >= IDLE_THRESHOLD)
        .collect();
    let first = loops.first()?;
    let mut evidence: Vec<Evidence> = loops
        .iter()
        .take(MAX_NAMED_THREADS)
        .map(|t| t.share_of("idle", t.fig.states.idle, "was idle, waiting for events"))
        .collect();
    evidence.push(share(
        "gil.contended",
        f.gil.contended,
        "of the time a thread waited for the GIL",
    ));
    Some(Recommendation {
        kind: Kind::Async,
        verdict: format!(
            "The asyncio event loop ({}) waits for I/O {:.0}% of the time: async is already \
             the right model here; nothing to offload.",
            first.label,
            first.fig.states.idle * 100.0
        ),
        evidence,
        code: Vec::new(),
        expected_speedup: None,
        rule: "event_loop_idle".into(),
    })
}

/// Many threads, or connection handlers, mostly idle in I/O: asyncio does this with one.
fn io_threads_async(f: &Facts) -> Option<Recommendation> {
    let io = f.io_threads()?;
    let handlers = io.iter().any(|t| t.handler);
    if !(io.len() >= ASYNC_IO_THREADS || handlers) {
        return None;
    }
    let role = if handlers {
        " as connection handlers"
    } else {
        ""
    };
    Some(Recommendation {
        kind: Kind::Async,
        verdict: format!(
            "{} for I/O {:.0}% of the time{role}: asyncio would serve the same \
             connections on one thread, with less memory and fewer GIL hand-offs.",
            subject(&io, "waits", "wait"),
            mean_idle(&io) * 100.0
        ),
        evidence: io_evidence(f, &io),
        code: Vec::new(),
        expected_speedup: None,
        rule: "io_threads_async".into(),
    })
}

/// A few threads mostly idle in I/O or sleep, rarely waiting for the GIL: threads are fine.
fn io_threads_fine(f: &Facts) -> Option<Recommendation> {
    let io = f.io_threads()?;
    let handlers = io.iter().any(|t| t.handler);
    if io.len() >= ASYNC_IO_THREADS || handlers {
        return None;
    }
    Some(Recommendation {
        kind: Kind::Threads,
        verdict: format!(
            "{} for I/O or sleep {:.0}% of the time and rarely for the GIL: threads \
             are fine here.",
            subject(&io, "waits", "wait"),
            mean_idle(&io) * 100.0
        ),
        evidence: io_evidence(f, &io),
        code: Vec::new(),
        expected_speedup: None,
        rule: "io_threads_fine".into(),
    })
}

fn nothing_stands_out(f: &Facts) -> Recommendation {
    Recommendation {
        kind: Kind::None,
        verdict: "No GIL pattern stands out; see the per-thread table and gil_wait.svg."
            .to_string(),
        evidence: vec![
            share(
                "gil.held",
                f.gil.held,
                "of the time some thread held the GIL",
            ),
            share(
                "gil.contended",
                f.gil.contended,
                "of the time the GIL was held while another thread waited for it",
            ),
        ],
        code: Vec::new(),
        expected_speedup: None,
        rule: "nothing_stands_out".into(),
    }
}

// ---------------------------------------------------------------------------------------
// The facts the rules read

/// A recording's figures, computed once, with what the rules ask of each thread.
struct Facts<'a> {
    rec: &'a Recording,
    gil: GilFigures,
    threads: Vec<Thread>,
    /// Time between samples (ms), to turn sample counts into durations.
    period_ms: f64,
}

struct Thread {
    fig: ThreadFigures,
    /// The name, else "tid N".
    label: String,
    gil_wait_samples: u64,
    wakeup_waits: u64,
    wakeup_wait_samples: u64,
    /// Runs an asyncio event loop ([`EVENT_LOOP_SHARE`]).
    event_loop: bool,
    /// Handles connections ([`HANDLER_FILES`], [`HANDLER_NAMES`]).
    handler: bool,
}

impl<'a> Facts<'a> {
    fn new(rec: &'a Recording) -> Facts<'a> {
        let loop_samples = samples_where(&rec.stacks, is_event_loop_frame);
        let handler_samples = samples_where(&rec.stacks, |frame_file, _| {
            HANDLER_FILES.iter().any(|f| frame_file.ends_with(f))
        });
        let threads = thread_figures(rec)
            .into_iter()
            .zip(&rec.threads)
            .map(|(fig, counts)| {
                let name = fig.name.as_deref().unwrap_or("").to_lowercase();
                let in_stacks = |by_tid: &HashMap<i32, u64>| {
                    ratio(by_tid.get(&fig.tid).copied().unwrap_or(0), fig.samples)
                };
                Thread {
                    label: fig
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("tid {}", fig.tid)),
                    gil_wait_samples: counts.states.gil_wait,
                    wakeup_waits: counts.wakeup_waits,
                    wakeup_wait_samples: counts.wakeup_wait_samples,
                    event_loop: in_stacks(&loop_samples) >= EVENT_LOOP_SHARE,
                    handler: in_stacks(&handler_samples) > 0.0
                        || HANDLER_NAMES.iter().any(|n| name.contains(n)),
                    fig,
                }
            })
            .collect();
        Facts {
            rec,
            gil: gil_figures(rec),
            threads,
            period_ms: if rec.requested_rate_hz > 0.0 {
                1000.0 / rec.requested_rate_hz
            } else {
                0.0
            },
        }
    }

    /// The threads behind [`cpu_threads_contend`]: two or more compute threads and a
    /// contended GIL.
    fn cpu_contention(&self) -> Option<Vec<&Thread>> {
        let compute: Vec<&Thread> = self.threads.iter().filter(|t| t.is_compute()).collect();
        (compute.len() >= 2 && self.gil.contended >= CONTENDED_SHARE).then_some(compute)
    }

    /// The one busy thread, when it is the only one and nobody waits for the GIL.
    fn lone_busy_thread(&self) -> Option<&Thread> {
        let mut busy = self.threads.iter().filter(|t| t.busy() >= BUSY_SHARE);
        let first = busy.next()?;
        (busy.next().is_none() && self.gil.contended < NOBODY_WAITS_SHARE).then_some(first)
    }

    /// The threads behind [`convoy`]: its victims, and the threads holding the GIL on them.
    /// Victims come most waiting first.
    fn convoy(&self) -> Option<(Vec<&Thread>, Vec<&Thread>)> {
        let mut victims: Vec<&Thread> = self
            .threads
            .iter()
            .filter(|t| t.is_convoy_victim())
            .collect();
        victims.sort_by(|a, b| b.fig.states.gil_wait.total_cmp(&a.fig.states.gil_wait));
        let holders: Vec<&Thread> = self
            .threads
            .iter()
            .filter(|t| !t.is_convoy_victim() && t.fig.states.gil_held >= HOLDER_SHARE)
            .collect();
        (!victims.is_empty() && !holders.is_empty()).then_some((victims, holders))
    }

    /// Threads mostly idle in I/O or sleep, other than event loops, when there are enough
    /// of them to judge and the process has no convoy (I/O threads that queue for the GIL
    /// behind CPU work are not fine, however many they are).
    fn io_threads(&self) -> Option<Vec<&Thread>> {
        let io: Vec<&Thread> = self
            .threads
            .iter()
            .filter(|t| t.fig.class == ThreadClass::IoBound && !t.event_loop)
            .collect();
        (io.len() >= MIN_IO_THREADS && self.convoy().is_none()).then_some(io)
    }

    /// Threads that wanted a CPU, on average: held + waiting + native, summed over threads.
    fn cpu_demand(&self) -> f64 {
        self.threads.iter().map(Thread::busy).sum()
    }

    /// What running the demand in parallel would give: min(demand, CPUs) over the
    /// parallelism achieved. None if too small to promise or not measurable.
    fn speedup(&self) -> Option<f64> {
        if self.gil.parallelism <= 0.0 || self.rec.cpus == 0 {
            return None;
        }
        let possible = self.cpu_demand().min(f64::from(self.rec.cpus));
        let speedup = possible / self.gil.parallelism;
        (speedup >= MIN_SPEEDUP).then(|| (speedup * 10.0).round() / 10.0)
    }

    /// The functions `threads` spent most of their `state` samples in (innermost Python
    /// frame), most first, each with the line sampled most often.
    fn code_refs(&self, threads: &[&Thread], state: ThreadState, role: Role) -> Vec<CodeRef> {
        let tids: Vec<i32> = threads.iter().map(|t| t.fig.tid).collect();
        let mut total = 0;
        let mut functions: HashMap<(String, String), HashMap<u32, u64>> = HashMap::new();
        for stack in self.rec.stacks.iter() {
            if stack.state != state || !tids.contains(&stack.tid) {
                continue;
            }
            total += stack.count;
            if let Some(frame) = stack.frames.last() {
                let function = frame.qualname.as_ref().unwrap_or(&frame.function).clone();
                let lines = functions.entry((function, frame.file.clone())).or_default();
                *lines.entry(frame.line).or_default() += stack.count;
            }
        }
        let mut refs: Vec<CodeRef> = functions
            .into_iter()
            .map(|((function, file), lines)| CodeRef {
                fraction: ratio(lines.values().sum(), total),
                line: most_sampled_line(&lines),
                function,
                file,
                role,
            })
            .filter(|r| r.fraction >= MIN_CODE_SHARE)
            .collect();
        refs.sort_by(|a, b| {
            b.fraction
                .total_cmp(&a.fraction)
                .then_with(|| (&a.function, &a.file).cmp(&(&b.function, &b.file)))
        });
        refs.truncate(MAX_CODE_REFS);
        refs
    }
}

impl Thread {
    /// Share of its samples in which it wanted a CPU.
    fn busy(&self) -> f64 {
        let s = &self.fig.states;
        s.gil_held + s.gil_wait + s.native_nogil
    }

    /// Busy running Python of its own, its waits not mostly after wake-ups.
    fn is_compute(&self) -> bool {
        self.busy() >= BUSY_SHARE
            && matches!(
                self.fig.class,
                ThreadClass::CpuBound | ThreadClass::GilBound
            )
            && self.fig.states.gil_held >= MIN_HELD_SHARE
            && !self.waits_after_wakeups()
    }

    /// Wakes up often, and most of its GIL waits follow a wake-up.
    fn waits_after_wakeups(&self) -> bool {
        self.fig.wakeups >= MIN_WAKEUPS
            && ratio(self.wakeup_wait_samples, self.gil_wait_samples) >= WAIT_AFTER_WAKEUP_SHARE
    }

    fn is_convoy_victim(&self) -> bool {
        self.waits_after_wakeups() && self.fig.wakeups_waiting_for_gil >= CONVOY_WAKEUP_WAIT_SHARE
    }

    /// "thread[worker-0].gil_wait", as `--fail-on` names it.
    fn figure(&self, what: &str) -> String {
        match &self.fig.name {
            Some(name) => format!("thread[{name}].{what}"),
            None => format!("thread[{}].{what}", self.fig.tid),
        }
    }

    fn share_of(&self, what: &str, value: f64, doing: &str) -> Evidence {
        Evidence {
            figure: self.figure(what),
            value,
            unit: Unit::Share,
            note: format!("of its time {} {doing}", self.label),
        }
    }
}

/// Per thread, the samples whose stack has a frame that `matches(file, function)`.
fn samples_where(stacks: &[StackCount], matches: impl Fn(&str, &str) -> bool) -> HashMap<i32, u64> {
    let mut by_tid = HashMap::new();
    for stack in stacks {
        if stack.frames.iter().any(|f| matches(&f.file, &f.function)) {
            *by_tid.entry(stack.tid).or_default() += stack.count;
        }
    }
    by_tid
}

/// A frame of asyncio's loop (`run_forever`, `_run_once`), which sits right above the
/// selector's `select` while the loop waits. (socketserver polls through selectors too, so
/// a `select` frame alone does not make an event loop.)
fn is_event_loop_frame(file: &str, function: &str) -> bool {
    EVENT_LOOP_FRAMES
        .iter()
        .any(|(suffix, name)| file.ends_with(suffix) && function == *name)
}

fn most_sampled_line(lines: &HashMap<u32, u64>) -> u32 {
    lines
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
        .map_or(0, |(line, _)| *line)
}

fn mean_idle(threads: &[&Thread]) -> f64 {
    let sum: f64 = threads.iter().map(|t| t.fig.states.idle).sum();
    sum / threads.len().max(1) as f64
}

fn io_evidence(f: &Facts, io: &[&Thread]) -> Vec<Evidence> {
    let mut evidence = vec![
        count(
            "threads.io_bound",
            io.len() as u64,
            "threads mostly idle in I/O or sleep",
        ),
        share(
            "gil.contended",
            f.gil.contended,
            "of the time a thread waited for the GIL",
        ),
    ];
    for t in io.iter().take(MAX_NAMED_THREADS) {
        evidence.push(t.share_of("idle", t.fig.states.idle, "was idle"));
    }
    evidence
}

// ---------------------------------------------------------------------------------------
// Words

/// "thread conn-0" / "2 threads (worker-0, worker-1)" / "6 threads (a, b, c, d, and 2 more)".
fn names(threads: &[&Thread]) -> String {
    let shown: Vec<&str> = threads
        .iter()
        .take(MAX_NAMED_THREADS)
        .map(|t| t.label.as_str())
        .collect();
    let more = threads.len().saturating_sub(MAX_NAMED_THREADS);
    match (threads.len(), more) {
        (1, _) => format!("thread {}", shown[0]),
        (n, 0) => format!("{n} threads ({})", shown.join(", ")),
        (n, more) => format!("{n} threads ({}, and {more} more)", shown.join(", ")),
    }
}

/// The start of a sentence about `threads`: "Thread conn-0 waits" / "2 threads (...) wait".
fn subject(threads: &[&Thread], singular: &str, plural: &str) -> String {
    let names = names(threads);
    let verb = if threads.len() == 1 { singular } else { plural };
    let mut chars = names.chars();
    let first = chars.next().map(|c| c.to_uppercase().collect::<String>());
    format!("{}{} {verb}", first.unwrap_or_default(), chars.as_str())
}

fn hot_function_text(code: &[CodeRef]) -> String {
    code.first()
        .map(|c| format!(" ({})", c.function))
        .unwrap_or_default()
}

fn speedup_text(speedup: Option<f64>) -> String {
    speedup
        .map(|x| format!(" for up to {x:.1}x the throughput"))
        .unwrap_or_default()
}

fn share(figure: &str, value: f64, note: &str) -> Evidence {
    Evidence {
        figure: figure.into(),
        value,
        unit: Unit::Share,
        note: note.into(),
    }
}

fn mean_threads(figure: &str, value: f64, note: &str) -> Evidence {
    Evidence {
        figure: figure.into(),
        value,
        unit: Unit::Threads,
        note: note.into(),
    }
}

fn count(figure: &str, value: u64, note: &str) -> Evidence {
    Evidence {
        figure: figure.into(),
        value: value as f64,
        unit: Unit::Count,
        note: note.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::IdleReason;
    use crate::profile::recording::{GilCounts, IdleCounts, RECORDING_FORMAT, StateCounts};
    use crate::profile::recording::{StackCount, ThreadCounts};
    use crate::python::attach::Build;
    use crate::snapshot::{FrameInfo, PythonInfo};

    /// Samples in every synthetic recording, at 200 Hz (5 ms apart).
    const N: u64 = 200;
    const APP: &str = "/srv/app.py";
    const BASE_EVENTS: &str = "/usr/lib/python3.12/asyncio/base_events.py";

    /// A synthetic recording, built thread by thread.
    struct Rec(Recording);

    impl Rec {
        fn new() -> Rec {
            Rec(Recording {
                format: RECORDING_FORMAT.into(),
                pid: 4242,
                command: vec!["python".into(), "app.py".into()],
                python: PythonInfo {
                    version: "3.12.1".into(),
                    build: Build::Shared,
                    free_threaded: false,
                    gil: "enabled".into(),
                    binary: "/usr/bin/python3.12".into(),
                },
                duration_s: 1.0,
                requested_rate_hz: 200.0,
                samples: N,
                missed_samples: 0,
                torn_samples: 0,
                stopped_samples: 0,
                stop_reason: "the duration elapsed".into(),
                cpus: 2,
                gil: GilCounts::default(),
                threads: Vec::new(),
                stacks: Vec::new(),
                children: Vec::new(),
                timeline: Default::default(),
            })
        }

        /// A thread with [held, wait, native, idle] samples (summing to N), idle for
        /// `reason`, whose innermost frame in every state is `function` in app.py, called
        /// from `outer` frames (file, function), outermost first.
        fn thread(
            mut self,
            name: &str,
            [held, wait, native, idle]: [u64; 4],
            reason: IdleReason,
            function: &str,
            outer: &[(&str, &str)],
        ) -> Rec {
            assert_eq!(held + wait + native + idle, N, "{name}");
            let tid = 100 + self.0.threads.len() as i32;
            let mut idle_reasons = IdleCounts::default();
            idle_reasons.add(reason, idle);
            self.0.threads.push(ThreadCounts {
                tid,
                name: Some(name.into()),
                samples: N,
                states: StateCounts {
                    gil_held: held,
                    gil_wait: wait,
                    native_nogil: native,
                    idle,
                },
                idle_reasons,
                wakeups: 0,
                wakeup_waits: 0,
                wakeup_wait_samples: 0,
            });
            let mut frames: Vec<FrameInfo> = outer
                .iter()
                .map(|(file, function)| frame(file, function, 1))
                .collect();
            frames.push(frame(APP, function, 10));
            for (state, count) in [
                (ThreadState::GilHeld, held),
                (ThreadState::GilWait, wait),
                (ThreadState::NativeNogil, native),
                (ThreadState::Idle, idle),
            ] {
                if count > 0 {
                    self.0.stacks.push(StackCount {
                        tid,
                        state,
                        idle_reason: (state == ThreadState::Idle).then_some(reason),
                        frames: frames.clone(),
                        truncated: false,
                        waiters: 0,
                        count,
                    });
                }
            }
            self
        }

        /// Wake-up counters of the thread added last.
        fn wakeups(mut self, wakeups: u64, waits: u64, wait_samples: u64) -> Rec {
            let t = self.0.threads.last_mut().unwrap();
            t.wakeups = wakeups;
            t.wakeup_waits = waits;
            t.wakeup_wait_samples = wait_samples;
            self
        }

        /// GIL counters in samples: held, contended, waiters and threads on a CPU.
        fn gil(mut self, held: u64, contended: u64, waiters: u64, on_cpu: u64) -> Rec {
            self.0.gil = GilCounts {
                held,
                contended,
                waiters,
                on_cpu,
                first_switch_number: Some(0),
                last_switch_number: Some(100),
                interval_us: 5000,
            };
            self
        }

        fn main_sleeping(self) -> Rec {
            self.thread("MainThread", [0, 0, 0, N], IdleReason::Sleep, "main", &[])
        }
    }

    fn frame(file: &str, function: &str, line: u32) -> FrameInfo {
        FrameInfo {
            function: function.into(),
            qualname: None,
            file: file.into(),
            line,
        }
    }

    // One synthetic recording per rule, shaped like the fixture workload that embodies it.

    fn cpu_threads() -> Recording {
        let mut rec = Rec::new().main_sleeping();
        for i in 0..4 {
            let name = format!("worker-{i}");
            rec = rec.thread(&name, [50, 150, 0, 0], IdleReason::Lock, "spin", &[]);
        }
        rec.gil(N, N, 3 * N, N).0
    }

    fn convoy() -> Recording {
        Rec::new()
            .main_sleeping()
            .thread("worker-0", [190, 5, 5, 0], IdleReason::Lock, "spin", &[])
            .thread("io-0", [2, 160, 2, 36], IdleReason::Io, "round_trip", &[])
            .wakeups(30, 29, 150)
            .thread("io-1", [2, 160, 2, 36], IdleReason::Io, "round_trip", &[])
            .wakeups(30, 28, 150)
            .thread("echo-0", [0, 0, 0, N], IdleReason::Io, "echo", &[])
            .gil(N, 180, 330, N)
            .0
    }

    fn sleepers() -> Recording {
        let mut rec = Rec::new().main_sleeping();
        for i in 0..3 {
            let name = format!("sleeper-{i}");
            rec = rec.thread(&name, [0, 0, 0, N], IdleReason::Sleep, "nap", &[]);
        }
        rec.thread("reader-0", [1, 0, 1, 198], IdleReason::Io, "read", &[])
            .wakeups(1, 0, 0)
            .gil(1, 0, 0, 2)
            .0
    }

    fn io_threads(count: usize, name: &str) -> Recording {
        let mut rec = Rec::new().main_sleeping();
        for i in 0..count {
            let name = format!("{name}-{i}");
            rec = rec.thread(&name, [2, 0, 0, 198], IdleReason::Io, "serve", &[]);
        }
        rec.gil(10, 0, 0, 10).0
    }

    fn socketserver_handlers() -> Recording {
        let server = [(
            "/usr/lib/python3.12/socketserver.py",
            "process_request_thread",
        )];
        let mut rec = Rec::new().main_sleeping();
        for i in 0..3 {
            let name = format!("Thread-{i}");
            rec = rec.thread(&name, [2, 0, 0, 198], IdleReason::Io, "handle", &server);
        }
        rec.gil(6, 0, 0, 6).0
    }

    fn asyncio_server() -> Recording {
        let event_loop = [(BASE_EVENTS, "run_forever"), (BASE_EVENTS, "_run_once")];
        Rec::new()
            .thread(
                "MainThread",
                [20, 0, 10, 170],
                IdleReason::Io,
                "select",
                &event_loop,
            )
            .wakeups(30, 0, 0)
            .gil(20, 0, 0, 30)
            .0
    }

    fn native_parallel() -> Recording {
        Rec::new()
            .main_sleeping()
            .thread(
                "native-0",
                [4, 2, 194, 0],
                IdleReason::Lock,
                "compress",
                &[],
            )
            .thread(
                "native-1",
                [2, 4, 194, 0],
                IdleReason::Lock,
                "compress",
                &[],
            )
            .gil(6, 6, 6, 394)
            .0
    }

    fn one_cpu() -> Recording {
        Rec::new()
            .main_sleeping()
            .thread("worker-0", [N, 0, 0, 0], IdleReason::Lock, "spin", &[])
            .gil(N, 0, 0, N)
            .0
    }

    fn rules(rec: &Recording) -> Vec<String> {
        recommend(rec).into_iter().map(|r| r.rule).collect()
    }

    #[test]
    fn each_workload_fires_its_rules_and_no_other() {
        let cases: [(&str, Recording, &[&str]); 9] = [
            (
                "cpu_threads",
                cpu_threads(),
                &["cpu_threads_contend", "cpu_threads_native_offload"],
            ),
            ("convoy", convoy(), &["convoy"]),
            ("sleepers", sleepers(), &["io_threads_fine"]),
            (
                "io_threads",
                io_threads(16, "worker"),
                &["io_threads_async"],
            ),
            ("connections", io_threads(3, "conn"), &["io_threads_async"]),
            (
                "socketserver",
                socketserver_handlers(),
                &["io_threads_async"],
            ),
            ("asyncio_server", asyncio_server(), &["event_loop_idle"]),
            ("native_parallel", native_parallel(), &["native_parallel"]),
            (
                "one_cpu",
                one_cpu(),
                &["one_cpu_thread", "one_cpu_thread_native_offload"],
            ),
        ];
        for (name, rec, expected) in cases {
            assert_eq!(rules(&rec), expected, "{name}");
        }
    }

    #[test]
    fn primary_kinds_follow_the_issue() {
        let primary = |rec: Recording| recommend(&rec)[0].kind;
        assert_eq!(primary(cpu_threads()), Kind::Processes);
        assert_eq!(primary(convoy()), Kind::Processes);
        assert_eq!(primary(sleepers()), Kind::Threads);
        assert_eq!(primary(io_threads(16, "worker")), Kind::Async);
        assert_eq!(primary(asyncio_server()), Kind::Async);
        assert_eq!(primary(native_parallel()), Kind::Threads);
        assert_eq!(primary(one_cpu()), Kind::None);
    }

    #[test]
    fn cpu_threads_name_the_hot_function_and_estimate_the_speedup() {
        let recs = recommend(&cpu_threads());
        let processes = &recs[0];
        // 4 threads each wanting a core, serialized to 1.0 on 2 CPUs: up to 2x.
        assert_eq!(processes.expected_speedup, Some(2.0));
        assert!(
            processes.verdict.contains("4 threads (worker-0"),
            "{}",
            processes.verdict
        );
        assert!(processes.verdict.contains("2.0x"), "{}", processes.verdict);
        let spin = &processes.code[0];
        assert_eq!((spin.function.as_str(), spin.file.as_str()), ("spin", APP));
        assert_eq!((spin.line, spin.role), (10, Role::HoldsGil));
        assert!((spin.fraction - 1.0).abs() < 1e-9);
        assert!(
            processes
                .code
                .iter()
                .any(|c| c.role == Role::WaitsForGil && c.function == "spin")
        );
        let figures: Vec<&str> = processes
            .evidence
            .iter()
            .map(|e| e.figure.as_str())
            .collect();
        for figure in ["gil.contended", "gil.parallelism", "cpu_demand", "cpus"] {
            assert!(figures.contains(&figure), "{figures:?}");
        }
        assert!(
            figures.contains(&"thread[worker-0].gil_wait"),
            "{figures:?}"
        );
        let offload = &recs[1];
        assert_eq!(offload.kind, Kind::NativeOffload);
        assert!(offload.verdict.contains("(spin)"), "{}", offload.verdict);
    }

    #[test]
    fn more_cpus_than_demand_caps_the_speedup_at_the_demand() {
        let mut rec = cpu_threads();
        rec.cpus = 64;
        assert_eq!(recommend(&rec)[0].expected_speedup, Some(4.0));
        rec.cpus = 1;
        assert_eq!(
            recommend(&rec)[0].expected_speedup,
            None,
            "1x is no speedup"
        );
    }

    #[test]
    fn convoy_gives_the_wait_per_wakeup_and_blames_the_holder() {
        let rec = &recommend(&convoy())[0];
        assert_eq!(rec.rule, "convoy");
        // 300 wait samples after 60 wake-ups, 5 ms apart: 25 ms per wake-up.
        assert!(
            rec.verdict.contains("25.0 ms per wake-up"),
            "{}",
            rec.verdict
        );
        assert!(
            rec.verdict.contains("2 threads (io-0, io-1)"),
            "{}",
            rec.verdict
        );
        assert!(rec.verdict.contains("thread worker-0"), "{}", rec.verdict);
        let wait = rec
            .evidence
            .iter()
            .find(|e| e.figure == "thread[io-0].mean_wait_per_wakeup_ms")
            .expect("wait per wake-up");
        assert_eq!(
            (wait.value, wait.value_text()),
            (25.0, "25.0 ms".to_string())
        );
        assert_eq!(rec.code[0].function, "spin");
        assert_eq!(rec.code[0].role, Role::HoldsGil);
        assert!(
            rec.code
                .iter()
                .any(|c| c.function == "round_trip" && c.role == Role::WaitsForGil)
        );
    }

    #[test]
    fn waits_after_rare_wakeups_are_not_a_convoy() {
        let mut rec = convoy();
        for t in &mut rec.threads {
            t.wakeups = t.wakeups.min(MIN_WAKEUPS - 1);
        }
        assert!(!rules(&rec).contains(&"convoy".to_string()));
    }

    #[test]
    fn an_event_loop_is_found_by_its_frames_and_selectors_alone_do_not_make_one() {
        assert_eq!(rules(&asyncio_server())[0], "event_loop_idle");
        // socketserver's serve_forever polls through selectors too: not an event loop.
        let selectors = [("/usr/lib/python3.12/selectors.py", "select")];
        let rec = Rec::new()
            .thread(
                "server",
                [2, 0, 0, 198],
                IdleReason::Io,
                "serve_forever",
                &selectors,
            )
            .thread("other", [2, 0, 0, 198], IdleReason::Io, "read", &[])
            .gil(4, 0, 0, 4)
            .0;
        assert_eq!(rules(&rec), ["io_threads_fine"]);
    }

    #[test]
    fn a_free_threaded_build_without_the_gil_gets_no_gil_advice() {
        let mut rec = cpu_threads();
        rec.python.free_threaded = true;
        rec.python.gil = "disabled".into();
        let recs = recommend(&rec);
        assert_eq!(recs.len(), 1);
        assert_eq!(
            (recs[0].rule.as_str(), recs[0].kind),
            ("free_threaded", Kind::None)
        );
        assert!(
            recs[0].verdict.contains("GIL disabled"),
            "{}",
            recs[0].verdict
        );
        // With the GIL switched back on (transient), the GIL rules apply again.
        rec.python.gil = "transient".into();
        assert_eq!(rules(&rec)[0], "cpu_threads_contend");
    }

    #[test]
    fn too_few_samples_and_no_pattern_still_say_something() {
        let mut rec = one_cpu();
        rec.samples = MIN_SAMPLES - 1;
        assert_eq!(rules(&rec), ["too_few_samples"]);
        let rec = Rec::new()
            .thread("MainThread", [0, 0, 0, N], IdleReason::Lock, "join", &[])
            .0;
        assert_eq!(rules(&rec), ["nothing_stands_out"]);
    }

    #[test]
    fn a_lone_io_thread_is_not_judged() {
        let rec = Rec::new().main_sleeping().gil(0, 0, 0, 0).0;
        assert_eq!(rules(&rec), ["nothing_stands_out"]);
    }

    #[test]
    fn the_json_names_are_the_contract() {
        let rec = &recommend(&cpu_threads())[0];
        let json = serde_json::to_value(rec).unwrap();
        for key in [
            "kind",
            "verdict",
            "evidence",
            "code",
            "expected_speedup",
            "rule",
        ] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
        assert_eq!(json["kind"], "processes");
        assert_eq!(json["code"][0]["role"], "holds_gil");
        for key in ["function", "file", "line", "fraction"] {
            assert!(json["code"][0].get(key).is_some(), "{key}");
        }
        for key in ["figure", "value", "note", "unit"] {
            assert!(json["evidence"][0].get(key).is_some(), "{key}");
        }
        let offload = serde_json::to_value(Kind::NativeOffload).unwrap();
        assert_eq!(offload, "native_offload");
        assert_eq!(serde_json::to_value(Kind::None).unwrap(), "none");
        assert_eq!(
            serde_json::to_value(Role::WaitsForGil).unwrap(),
            "waits_for_gil"
        );
    }
}
