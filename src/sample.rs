//! One sample of a live target: the Python state from memory, each thread's kernel state
//! from /proc, joined and classified. [`Target`] keeps everything that can be reused across
//! samples (open /proc files, code objects, thread names).

use crate::classify::{Classification, Contradiction, ThreadState, classify, is_gil_wait};
use crate::error::Error;
use crate::mem::{LiveMemory, MemError, RemoteMemory};
use crate::python::attach::{Runtime, attach};
use crate::python::event_loop::{LoopObservation, LoopReader, monotonic_ns};
use crate::python::names::read_thread_names;
use crate::python::walker::{Frame, GilState, InterpreterRecord, PythonState, Walker};
use crate::target::pause::PausedProcess;
use crate::target::{KernelState, KernelStateReader, Process};
use anyhow::Result;
use std::collections::{HashMap, HashSet};

/// One Python thread at one instant.
#[derive(Debug, Clone)]
pub struct ThreadSample {
    pub tid: i32,
    /// Address of the `PyThreadState`.
    pub tstate: u64,
    /// `threading.get_ident()`.
    pub ident: u64,
    /// Index into [`Sample::interpreters`].
    pub interpreter: usize,
    pub class: Classification,
    /// Seen blocked in futex(2) on the GIL (not merely inferred to be waiting).
    pub blocked_on_gil: bool,
    /// CPU time used so far, read when the thread was runnable without the GIL now or at
    /// the sample before (what [`resolve_handoffs`] needs).
    pub cpu_ns: Option<u64>,
    /// Innermost first.
    pub frames: Vec<Frame>,
    pub truncated: bool,
    /// The asyncio event loop this thread runs, as seen at this sample.
    pub event_loop: Option<LoopObservation>,
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub interpreters: Vec<InterpreterRecord>,
    pub threads: Vec<ThreadSample>,
    /// Every thread was stopped by a signal (SIGSTOP, a debugger).
    pub target_stopped: bool,
    /// When the sample was taken (the timeline's clock).
    pub time: std::time::Instant,
}

impl Sample {
    /// The main interpreter's GIL (the oldest interpreter is last in the list).
    pub fn main_gil(&self) -> Option<&crate::python::walker::GilState> {
        self.interpreters.last().map(|i| &i.gil)
    }
}

/// Why a sample could not be taken.
#[derive(Debug)]
pub enum SampleError {
    /// Structures changed under the reader, or memory and /proc disagreed: try again.
    Torn,
    /// The process exited.
    Gone,
    Fatal(anyhow::Error),
}

/// A thread last seen blocked waiting for the GIL: its CPU time then. Holders get no mark:
/// a holder that lets the GIL go for I/O never blocks on it, and when it is runnable again
/// it is returning from its syscall, not waiting for the GIL yet.
#[derive(Debug, Clone, Copy)]
struct GilWaitMark {
    cpu_ns: u64,
    /// Seen blocked in the kernel at the latest sample (not runnable).
    blocked: bool,
}

/// CPU a thread may use after it was last seen blocked on the GIL and, when found runnable
/// without it, still count as waiting for it: a woken waiter uses a few µs (timeouts,
/// re-locking the mutex). Native work runs past this quickly.
/// How often `--blocking` pauses the target again after a torn read.
const PAUSE_ATTEMPTS: usize = 20;

const STILL_WAITING_CPU_NS: u64 = 200_000;

pub struct Target<M = LiveMemory> {
    pub pid: i32,
    pub walker: Walker<M>,
    kernel: KernelStateReader,
    names: HashMap<u64, String>,
    gil_waiters: HashMap<i32, GilWaitMark>,
    /// Threads runnable without the GIL at the latest sample.
    native_before: HashSet<i32>,
    loops: LoopReader,
    /// CLOCK_MONOTONIC when the current sample's walk began: frames were read after it.
    walk_started_ns: u64,
}

impl Target<LiveMemory> {
    /// Attaches to a live process: checks it, finds the interpreter, reads nothing else yet.
    pub fn attach(pid: i32) -> Result<Self> {
        let process = Process::open(pid)?;
        let mem = LiveMemory::new(pid);
        let runtime = attach(&process, &mem)?;
        Ok(Target::new(pid, mem, runtime))
    }
}

impl<M: RemoteMemory> Target<M> {
    pub fn new(pid: i32, mem: M, runtime: Runtime) -> Self {
        Target {
            pid,
            loops: LoopReader::new(&runtime),
            walk_started_ns: 0,
            walker: Walker::new(mem, runtime),
            kernel: KernelStateReader::new(pid),
            names: HashMap::new(),
            gil_waiters: HashMap::new(),
            native_before: HashSet::new(),
        }
    }

    pub fn runtime(&self) -> &Runtime {
        &self.walker.runtime
    }

    pub fn thread_name(&self, ident: u64) -> Option<&str> {
        self.names.get(&ident).map(String::as_str)
    }

    /// CPU time a thread of the target has used, in ns (None if it is gone).
    pub fn cpu_time_ns(&mut self, tid: i32) -> Option<u64> {
        self.kernel.cpu_time_ns(tid)
    }

    /// Re-reads `threading`'s thread names (not on every sample: it is many reads).
    pub fn refresh_names(&mut self) {
        let Ok(state) = self.walker.read(false) else {
            return;
        };
        let addresses = self.interpreter_addresses(&state);
        for interp in addresses {
            if let Ok(names) = read_thread_names(&self.walker.mem, &self.walker.runtime, interp) {
                self.names.extend(names);
            }
        }
    }

    fn interpreter_addresses(&self, state: &PythonState) -> Vec<u64> {
        let mut seen: Vec<u64> = state
            .threads
            .iter()
            .map(|t| t.interpreter_address)
            .collect();
        seen.sort_unstable();
        seen.dedup();
        seen
    }

    /// Takes one sample without stopping the target.
    pub fn sample(&mut self, with_frames: bool) -> Result<Sample, SampleError> {
        self.walk_started_ns = monotonic_ns();
        let state = self
            .walker
            .read(with_frames)
            .map_err(|e| self.mem_error(e))?;
        let stopped = self.kernel.process_stopped();
        let kernel: Vec<KernelState> = state
            .threads
            .iter()
            .map(|t| match t.tid {
                None => KernelState::Gone,
                Some(_) if stopped => KernelState::Stopped,
                Some(tid) => self.kernel.read(tid),
            })
            .collect();
        // The GIL again, right after the kernel reads, so both describe nearly one instant.
        let interpreters = self
            .walker
            .reread_gils(&state.interpreters)
            .map_err(|e| self.mem_error(e))?;
        self.join(state, interpreters, &kernel, false)
    }

    /// Takes one sample with every thread paused (`--blocking`); the target runs again
    /// before this returns.
    pub fn sample_paused(&mut self, with_frames: bool) -> Result<Sample> {
        // A pause can land inside take_gil between its `locked` and `last_holder` stores,
        // freezing a contradiction in place: let the target run a moment and pause again.
        for _ in 0..PAUSE_ATTEMPTS {
            let tids = crate::target::process::list_tids(self.pid)?;
            let paused = PausedProcess::pause(self.pid, &tids)?;
            let result = self.sample_while_paused(with_frames);
            drop(paused);
            match result {
                Ok(sample) => return Ok(sample),
                Err(SampleError::Torn) => continue,
                Err(SampleError::Gone) => return Err(Error::ProcessExited { pid: self.pid }.into()),
                Err(SampleError::Fatal(e)) => return Err(e),
            }
        }
        Err(anyhow::anyhow!(
            "the target's memory was inconsistent each time it was paused"
        ))
    }

    fn sample_while_paused(&mut self, with_frames: bool) -> Result<Sample, SampleError> {
        self.walk_started_ns = monotonic_ns();
        let state = self
            .walker
            .read(with_frames)
            .map_err(|e| self.mem_error(e))?;
        let kernel: Vec<KernelState> = state
            .threads
            .iter()
            .map(
                |t| match t.tid.map_or(KernelState::Gone, |tid| self.kernel.read(tid)) {
                    // In a ptrace-stop outside a syscall: it was running user code.
                    KernelState::Blocked => KernelState::Running,
                    other => other,
                },
            )
            .collect();
        let interpreters = state.interpreters.clone();
        self.join(state, interpreters, &kernel, true)
    }

    fn join(
        &mut self,
        state: PythonState,
        interpreters: Vec<InterpreterRecord>,
        kernel: &[KernelState],
        paused: bool,
    ) -> Result<Sample, SampleError> {
        let mut threads = Vec::with_capacity(state.threads.len());
        let mut stopped = 0usize;
        let stand_ins = stand_ins(&state, &interpreters);
        for ((thread, &kernel_state), stand_in) in
            state.threads.into_iter().zip(kernel).zip(stand_ins)
        {
            let Some(tid) = thread.tid else { continue };
            if kernel_state == KernelState::Gone || stand_in {
                continue;
            }
            stopped += usize::from(kernel_state == KernelState::Stopped);
            let gil = &interpreters[thread.interpreter].gil;
            let holds = gil.holder() == Some(thread.tstate);
            let waiting = !holds
                && kernel_state == KernelState::Running
                && self.still_waiting(tid, thread.tstate, gil);
            let class = classify(holds, kernel_state, gil, waiting)
                .map_err(|Contradiction| SampleError::Torn)?;
            self.track_gil_wait(tid, kernel_state, gil, class);
            let event_loop = self.observe_loop(tid, &thread.frames, &thread.frame_addresses);
            threads.push(ThreadSample {
                tid,
                tstate: thread.tstate,
                ident: thread.pthread_id,
                interpreter: thread.interpreter,
                class,
                blocked_on_gil: is_gil_wait(kernel_state, gil),
                cpu_ns: if class.state == ThreadState::NativeNogil
                    || self.native_before.contains(&tid)
                {
                    self.kernel.cpu_time_ns(tid)
                } else {
                    None
                },
                frames: thread.frames,
                truncated: thread.truncated,
                event_loop,
            });
        }
        self.native_before = threads
            .iter()
            .filter(|t| t.class.state == ThreadState::NativeNogil)
            .map(|t| t.tid)
            .collect();
        let target_stopped = !paused && !threads.is_empty() && stopped == threads.len();
        let alive: HashSet<i32> = threads.iter().map(|t| t.tid).collect();
        self.kernel.retain(|tid| alive.contains(&tid));
        self.gil_waiters.retain(|tid, _| alive.contains(tid));
        Ok(Sample {
            interpreters,
            threads,
            target_stopped,
            time: std::time::Instant::now(),
        })
    }

    /// The asyncio loop the thread runs, if its frames show one, with its scheduler counters.
    fn observe_loop(
        &mut self,
        tid: i32,
        frames: &[Frame],
        addresses: &[u64],
    ) -> Option<LoopObservation> {
        if frames.is_empty() {
            return None;
        }
        let mut observation = self.loops.observe(
            &self.walker.mem,
            &self.walker.codes,
            frames,
            addresses,
            None,
        )?;
        observation.sched = self.kernel.sched_counters(tid);
        Some(observation)
    }

    /// A runnable thread is still waiting for the GIL if it was last seen blocked on it, is
    /// not its last holder now, and has used almost no CPU since.
    fn still_waiting(&mut self, tid: i32, tstate: u64, gil: &GilState) -> bool {
        let Some(mark) = self.gil_waiters.get(&tid).copied() else {
            return false;
        };
        if gil.last_holder == tstate {
            return false;
        }
        self.kernel
            .cpu_time_ns(tid)
            .is_some_and(|now| now.saturating_sub(mark.cpu_ns) < STILL_WAITING_CPU_NS)
    }

    fn track_gil_wait(
        &mut self,
        tid: i32,
        kernel: KernelState,
        gil: &GilState,
        class: Classification,
    ) {
        if is_gil_wait(kernel, gil) {
            // The CPU baseline is taken when the thread (re)enters the wait, not on every
            // sample it stays blocked in it.
            let needs_baseline = self.gil_waiters.get(&tid).is_none_or(|m| !m.blocked);
            if needs_baseline && let Some(cpu_ns) = self.kernel.cpu_time_ns(tid) {
                self.gil_waiters.insert(
                    tid,
                    GilWaitMark {
                        cpu_ns,
                        blocked: true,
                    },
                );
            }
        } else if class.state == ThreadState::GilWait {
            if let Some(mark) = self.gil_waiters.get_mut(&tid) {
                mark.blocked = false;
            }
        } else {
            self.gil_waiters.remove(&tid);
        }
    }

    fn mem_error(&self, e: MemError) -> SampleError {
        match e {
            MemError::Fault { .. } => {
                if crate::target::process::is_alive(self.pid) {
                    SampleError::Torn
                } else {
                    SampleError::Gone
                }
            }
            MemError::ProcessGone => SampleError::Gone,
            MemError::PermissionDenied => {
                SampleError::Fatal(Error::PermissionDenied { pid: self.pid }.into())
            }
        }
    }
}

/// Thread states that share a kernel tid with another and should not be counted for it.
/// A thread state being created carries its creator's ids until the new thread starts, and a
/// thread running a subinterpreter has a thread state in each interpreter. The one kept holds
/// a GIL, else has frames, else is the oldest (last in the list).
fn stand_ins(state: &PythonState, interpreters: &[InterpreterRecord]) -> Vec<bool> {
    let rank = |t: &crate::python::walker::ThreadRecord| {
        let holds = interpreters[t.interpreter].gil.holder() == Some(t.tstate);
        (holds, !t.frames.is_empty())
    };
    let mut kept: HashMap<i32, usize> = HashMap::new();
    for (index, thread) in state.threads.iter().enumerate() {
        let Some(tid) = thread.tid else { continue };
        let better = kept
            .get(&tid)
            .is_none_or(|&k| rank(thread) >= rank(&state.threads[k]));
        if better {
            kept.insert(tid, index);
        }
    }
    let mut stand_in = vec![true; state.threads.len()];
    for index in kept.into_values() {
        stand_in[index] = false;
    }
    stand_in
}

/// CPU that a thread in a GIL handoff never uses before it reaches the GIL, and native code
/// soon does. The kernel adds a running thread's CPU time up only at scheduler ticks, so a
/// reading can lag by one tick: this is just above one tick at HZ=250 (Debian's and Ubuntu's
/// default). On an HZ=100 kernel some handoffs read as native.
pub const NATIVE_CPU_NS: u64 = 5_000_000;

/// What a thread runnable without the GIL at one sample turned out to be doing, judged by a
/// later sample: a thread in a GIL handoff (a holder handing over, a woken waiter, queued
/// for a CPU) reaches the GIL before it has used [`NATIVE_CPU_NS`] of CPU; native code uses
/// that much first, or blocks elsewhere. `None`: still undecided.
pub fn handoff_verdict(earlier: &ThreadSample, later: &ThreadSample) -> Option<bool> {
    let used = match (earlier.cpu_ns, later.cpu_ns) {
        (Some(before), Some(after)) => after.saturating_sub(before),
        _ => u64::MAX,
    };
    if used >= NATIVE_CPU_NS {
        return Some(false);
    }
    // Only what was seen counts: a GIL wait inferred for a runnable thread is the guess
    // being checked.
    if later.class.state == ThreadState::GilHeld || later.blocked_on_gil {
        return Some(true);
    }
    match later.class.state {
        ThreadState::NativeNogil | ThreadState::GilWait => None,
        ThreadState::Idle | ThreadState::GilHeld => Some(false),
    }
}

/// Marks as waiting for the GIL the threads of `earlier` that were runnable without it and
/// that `later` shows were in a GIL handoff. Returns the tids still undecided.
pub fn resolve_handoffs(earlier: &mut Sample, later: &Sample) -> Vec<i32> {
    let mut undecided = Vec::new();
    for thread in earlier
        .threads
        .iter_mut()
        .filter(|t| t.class.state == ThreadState::NativeNogil)
    {
        let Some(next) = later.threads.iter().find(|t| t.tid == thread.tid) else {
            continue;
        };
        match handoff_verdict(thread, next) {
            Some(true) => {
                thread.class = Classification {
                    state: ThreadState::GilWait,
                    idle_reason: None,
                }
            }
            Some(false) => {}
            None => undecided.push(thread.tid),
        }
    }
    undecided
}

/// Holds each sample back by one, so that the next can resolve its runnable threads.
#[derive(Debug, Default)]
pub struct HandoffResolver {
    held: Option<Sample>,
}

impl HandoffResolver {
    /// Takes a new sample; gives back the previous one, resolved.
    pub fn push(&mut self, sample: Sample) -> Option<Sample> {
        let mut previous = self.held.replace(sample)?;
        if let Some(later) = &self.held {
            resolve_handoffs(&mut previous, later);
        }
        Some(previous)
    }

    /// The last sample, as it stands.
    pub fn finish(&mut self) -> Option<Sample> {
        self.held.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::walker::{Frame, GilState, ThreadRecord};

    fn thread(tstate: u64, tid: i32, frames: usize) -> ThreadRecord {
        ThreadRecord {
            tstate,
            pthread_id: tstate,
            tid: Some(tid),
            interpreter: 0,
            interpreter_address: 0x10,
            frames: vec![Frame { code: 0, line: 1 }; frames],
            frame_addresses: vec![0; frames],
            truncated: false,
        }
    }

    fn interpreter(holder: u64) -> InterpreterRecord {
        let gil = GilState {
            address: 0x1000,
            size: 208,
            locked: holder != 0,
            last_holder: holder,
            switch_number: 1,
            interval_us: 5000,
            enabled: None,
        };
        InterpreterRecord {
            address: 0x10,
            id: 0,
            gil,
        }
    }

    #[test]
    fn a_thread_state_being_created_does_not_count_for_its_creator() {
        // The newest thread state comes first; it still carries its creator's tid 7.
        let state = PythonState {
            interpreters: vec![interpreter(0)],
            threads: vec![thread(0xb, 7, 0), thread(0xa, 7, 3), thread(0xc, 8, 1)],
        };
        assert_eq!(
            stand_ins(&state, &state.interpreters),
            vec![true, false, false]
        );
    }

    #[test]
    fn of_two_thread_states_of_one_thread_the_gil_holder_counts() {
        let state = PythonState {
            interpreters: vec![interpreter(0xb)],
            threads: vec![thread(0xb, 7, 1), thread(0xa, 7, 3)],
        };
        assert_eq!(stand_ins(&state, &state.interpreters), vec![false, true]);
    }
}
