//! One sample of a live target: the Python state from memory, each thread's kernel state
//! from /proc, joined and classified. [`Sampler`] keeps everything that can be reused across
//! samples (open /proc files, code objects, thread names).

use crate::classify::{
    Classification, Contradiction, classify, classify_without_gil, in_gil_futex_call, is_gil_wait,
};

use crate::error::Error;
use crate::mem::{LiveMemory, MemError, RemoteMemory};
use crate::model::state::FlagComparison;
use crate::model::state::ThreadState;
use crate::process::glibc::{CONDVAR_SIZE, CondvarLayout};
use crate::process::pause::PausedProcess;
use crate::process::switches::{LastSwitch, SYSCALL_INSTRUCTION, SwitchOut, SwitchTracker};
use crate::process::{KernelState, KernelStateReader, Process};
use crate::python::attach::{Runtime, attach};
use crate::python::event_loop::{LoopObservation, LoopReader, ThreadAddresses, monotonic_ns};
use crate::python::names::{LiveThread, ThreadNames};
use crate::python::walker::{
    Frame, GilState, InterpreterRecord, PythonState, ThreadRecord, Walker,
};
use anyhow::Result;
use rustc_hash::{FxHashMap, FxHashSet};

/// Per interpreter: threads inside the GIL's waits, and its mutexes' owners (None: unread).
type GilWaits = Vec<Option<(u32, [i32; 2])>>;

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
    /// What /proc said the thread was doing.
    pub kernel: KernelState,
    /// CPU time used so far, read when the thread was runnable without the GIL now or at
    /// the sample before (what [`resolve_handoffs`] needs).
    pub cpu_ns: Option<u64>,
    /// 3.15+: the thread state's own GIL flags, which take_gil and drop_gil write. They
    /// settle who holds and who waits once the sample is final ([`settle_by_thread_flags`]).
    pub gil_flags: Option<ThreadGilFlagValues>,
    /// Innermost first.
    pub frames: Vec<Frame>,
    pub truncated: bool,
    /// The asyncio event loop this thread runs, as seen at this sample.
    pub event_loop: Option<LoopObservation>,
}

/// `PyThreadState.holds_gil` and `gil_requested` as read (3.15+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadGilFlagValues {
    pub holds: bool,
    pub requested: bool,
    /// Read the same at the start of the sample and at its end (`--verify-flags` reads
    /// them twice; otherwise always true). A thread whose flags changed in between went
    /// into or out of `take_gil` while /proc was being read: its state at the /proc read is
    /// not known, and it is not compared.
    pub steady: bool,
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub interpreters: Vec<InterpreterRecord>,
    pub threads: Vec<ThreadSample>,
    /// Every thread was stopped by a signal (SIGSTOP, a debugger).
    pub target_stopped: bool,
    /// Per interpreter (as [`Sample::interpreters`]): threads inside a wait on the GIL's
    /// condition variables, runnable ones included; `None` where it could not be read.
    pub gil_waiters: Vec<Option<u32>>,
    /// Per interpreter: the kernel tids that own the GIL's two mutexes (0: unlocked), that
    /// is, threads inside `take_gil` or `drop_gil`.
    pub gil_mutex_owners: Vec<[i32; 2]>,
    /// When the sample was taken (the timeline's clock): the moment the reads that decide
    /// the classes (the threads' kernel states, then the GIL) began.
    pub time: std::time::Instant,
    /// When the read of the GIL (holder, waiters, mutex owners) completed, `time` where
    /// there was none. A thread's class describes this instant better than `time`, tens of
    /// µs earlier, when the target changes fast (docs/accuracy.md, thirteenth round).
    pub gil_read_at: std::time::Instant,
    /// How the inference (GIL struct, /proc, handoff resolution) compared with the thread
    /// states' own GIL flags, on versions that have them (3.13+).
    pub flag_check: Option<FlagCheck>,
}

/// One sample's comparison of the inference with the thread states' own GIL flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagCheck {
    pub compared: FlagComparison,
    /// Threads compared, and those on which both sources agreed.
    pub threads: u32,
    pub agreeing: u32,
}

impl Sample {
    /// The main interpreter's GIL (the oldest interpreter is last in the list).
    pub fn main_gil(&self) -> Option<&crate::python::walker::GilState> {
        self.interpreters.last().map(|i| &i.gil)
    }

    /// Some thread held the main GIL: by the thread flags where they are the source, else
    /// by the GIL struct.
    pub fn gil_held(&self) -> bool {
        match self.flag_check {
            Some(FlagCheck {
                compared: FlagComparison::State,
                ..
            }) => self
                .threads
                .iter()
                .any(|t| t.class.state == ThreadState::GilHeld),
            _ => self.main_gil().is_some_and(|g| g.holder().is_some()),
        }
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

/// Times after attaching at which every code object is read again: code seen while the
/// interpreter was starting may have been freed and its address reused (after an exec,
/// or `record -- cmd`), and would name the new code wrongly.
const CODE_REREADS_AFTER: [std::time::Duration; 2] = [
    std::time::Duration::from_secs(1),
    std::time::Duration::from_secs(4),
];

/// Instruction pointers remembered as system call sites or not; past this the map starts
/// over.
const MAX_SYSTEM_CALL_SITES: usize = 4096;

/// How often `--blocking` pauses the target again after a torn read.
const PAUSE_ATTEMPTS: usize = 20;

/// CPU a thread may use after it was last seen blocked on the GIL and, when found runnable
/// without it, still count as waiting for it: a woken waiter uses a few µs (timeouts,
/// re-locking the mutex). Native work runs past this quickly.
const STILL_WAITING_CPU_NS: u64 = 200_000;

pub struct Sampler<M = LiveMemory> {
    pub pid: i32,
    pub walker: Walker<M>,
    kernel: KernelStateReader,
    names: ThreadNames,
    gil_waiters: FxHashMap<i32, GilWaitMark>,
    /// Threads runnable without the GIL at the latest sample.
    native_before: FxHashSet<i32>,
    /// Per instruction pointer a thread was preempted at: does a system call instruction
    /// end there.
    system_call_sites: FxHashMap<u64, bool>,
    /// Buffers reused from sample to sample.
    state: PythonState,
    kernel_states: Vec<KernelState>,
    /// Thread states whose /proc files were not read (the GIL's holder).
    skipped: Vec<u64>,
    /// Read /proc for threads the interpreter's GIL flags settle too (3.15+), to compare
    /// the inference with the flags.
    verify_flags: bool,
    /// Per thread of the sample being joined: whether its GIL flags read the same twice
    /// (`verify_flags` only; empty otherwise).
    flags_steady: Vec<bool>,
    /// The GILs' switch counts at the latest sample: a count that moved since says the
    /// target ran in between, without asking /proc whether it is stopped.
    last_switches: Vec<u64>,
    /// The thread states whose stacks are being read (to drop the kernel states of any
    /// thread left out as it ends).
    stacked: Vec<u64>,
    /// When the sampler attached, and the code re-reads still due ([`CODE_REREADS_AFTER`]).
    attached: std::time::Instant,
    code_rereads_done: usize,
    loops: LoopReader,
    /// CLOCK_MONOTONIC when the current sample's walk began: frames were read after it.
    walk_started_ns: u64,
    /// Where the GIL's condition variables count their waiters (None: the target's C
    /// library is not a glibc gilscope knows, so runnable threads are resolved by what they
    /// do next instead).
    conds: Option<GilConds>,
    /// Each thread's state at the latest sample.
    last_state: FxHashMap<i32, ThreadState>,
    /// Turns to pick among equally likely woken waiters (see [`Sampler::woken_waiters`]).
    turn: usize,
    /// How each thread last left a CPU (preempted, or to wait), where perf events allow.
    switches: SwitchTracker,
    /// A sample held back until the next one resolves its runnable threads (only without
    /// `conds`).
    pending: HandoffResolver,
    /// What consumers gave back ([`Sampler::recycle`]) and the per-sample working sets,
    /// reused so that a steady sampling loop does not allocate.
    spare: Spare,
}

/// Samples given back, emptied, and the buffers a sample is joined with.
#[derive(Default)]
struct Spare {
    /// Their threads are kept as they were, for their frames' vectors.
    samples: Vec<Sample>,
    /// The threads of the sample being reused while its replacements are joined.
    earlier_threads: Vec<ThreadSample>,
    frames: Vec<Vec<Frame>>,
    waits: GilWaits,
    stand_in: Vec<bool>,
    kept: FxHashMap<i32, usize>,
    woken: FxHashSet<i32>,
    candidates: Vec<(u8, i32)>,
    alive: FxHashSet<i32>,
    live_threads: Vec<LiveThread>,
    decided: Vec<Decided>,
}

/// What [`Sampler::decide`] read.
struct Decision {
    /// The sample to fill, with its instant and its interpreters' GILs.
    sample: Sample,
    /// Per thread of the list decided on.
    kernel: Vec<KernelState>,
    /// A thread other than the holder was found running.
    running: bool,
}

/// What [`Sampler::decide`] found for one thread of the last walk's list, kept while the
/// walk refills the list.
#[derive(Debug, Clone, Copy)]
struct Decided {
    tstate: u64,
    tid: Option<i32>,
    holds_gil: Option<bool>,
    gil_requested: Option<bool>,
    kernel: KernelState,
}

/// At most this many samples are kept for reuse: more than a recording holds back at once
/// (`record` counts its samples every 50 ms, the handoff resolver within 200 ms).
const MAX_SPARE_SAMPLES: usize = 8192;

const MUTEX_SIZE: u64 = std::mem::size_of::<libc::pthread_mutex_t>() as u64;

/// The GIL's two condition variables, as offsets into its struct, and the C library's
/// layout of a condition variable.
#[derive(Debug, Clone, Copy)]
struct GilConds {
    layout: CondvarLayout,
    /// `cond`: waiters for the GIL.
    cond: u64,
    /// `switch_cond`: a holder that was asked to drop the GIL, until another thread took it.
    switch_cond: u64,
}

impl GilConds {
    /// `cond` follows `switch_number` in `struct _gil_runtime_state` on every version
    /// (3.8-3.14), then `mutex`, `switch_cond`, `switch_mutex`.
    fn new(layout: CondvarLayout, gil: &crate::python::layout::GilLayout) -> Option<Self> {
        let cond = gil.switch_number + 8;
        let switch_cond = cond + CONDVAR_SIZE + MUTEX_SIZE;
        (switch_cond + CONDVAR_SIZE + MUTEX_SIZE == gil.size).then_some(GilConds {
            layout,
            cond,
            switch_cond,
        })
    }

    /// Whether `addr` (a futex word) is inside one of the two conditions of the GIL at `gil`.
    /// Bytes from `cond` to the end of `switch_mutex`.
    fn span(&self) -> usize {
        (self.switch_cond + CONDVAR_SIZE + MUTEX_SIZE - self.cond) as usize
    }

    /// Threads inside the two waits, and the owners of the two mutexes, from the bytes of
    /// [`GilConds::span`].
    fn parse(&self, bytes: &[u8]) -> Option<(u32, [i32; 2])> {
        let switch = (self.switch_cond - self.cond) as usize;
        let waiters = self.layout.waiters(bytes)? + self.layout.waiters(bytes.get(switch..)?)?;
        // glibc's `pthread_mutex_t` starts `int __lock; unsigned __count; int __owner`.
        let owner = |at: usize| -> Option<i32> {
            Some(i32::from_ne_bytes(
                bytes.get(at + 8..at + 12)?.try_into().ok()?,
            ))
        };
        let mutex = CONDVAR_SIZE as usize;
        Some((waiters, [owner(mutex)?, owner(switch + mutex)?]))
    }

    fn contains(&self, gil: u64, addr: u64) -> bool {
        [self.cond, self.switch_cond]
            .iter()
            .any(|&c| addr.wrapping_sub(gil + c) < CONDVAR_SIZE)
    }
}

impl Sampler<LiveMemory> {
    /// Attaches to a live process: checks it, finds the interpreter, reads nothing else yet.
    pub fn attach(pid: i32) -> Result<Self> {
        let process = Process::open(pid)?;
        let mem = LiveMemory::new(pid);
        let runtime = attach(&process, &mem)?;
        let mut target = Sampler::new(pid, mem, runtime);
        target.switches = SwitchTracker::live();
        target.conds = CondvarLayout::of_process(&process)
            .and_then(|layout| GilConds::new(layout, &target.walker.runtime.layout.gil));
        Ok(target)
    }
}

impl<M: RemoteMemory> Sampler<M> {
    pub fn new(pid: i32, mem: M, runtime: Runtime) -> Self {
        Sampler {
            pid,
            loops: LoopReader::new(&runtime),
            walk_started_ns: 0,
            walker: Walker::new(mem, runtime),
            kernel: KernelStateReader::new(pid),
            names: ThreadNames::default(),
            gil_waiters: FxHashMap::default(),
            native_before: FxHashSet::default(),
            system_call_sites: FxHashMap::default(),
            state: PythonState::default(),
            kernel_states: Vec::new(),
            skipped: Vec::new(),
            verify_flags: false,
            flags_steady: Vec::new(),
            last_switches: Vec::new(),
            stacked: Vec::new(),
            attached: std::time::Instant::now(),
            code_rereads_done: 0,
            conds: None,
            last_state: FxHashMap::default(),
            turn: 0,
            switches: SwitchTracker::off(),
            pending: HandoffResolver::default(),
            spare: Spare::default(),
        }
    }

    /// Whether each sample is classified completely at its own instant (the GIL's waiters
    /// are counted); otherwise runnable threads wait for the next sample to be resolved.
    pub fn resolves_at_once(&self) -> bool {
        self.conds.is_some()
    }

    pub fn runtime(&self) -> &Runtime {
        &self.walker.runtime
    }

    /// The name `threading` gives the thread with this kernel tid (see [`ThreadNames`]).
    pub fn thread_name(&self, tid: i32) -> Option<&str> {
        self.names.get(tid)
    }

    /// How many times a thread's state has been read from /proc.
    pub fn kernel_reads(&self) -> u64 {
        self.kernel.thread_reads()
    }

    /// Whether the target's context switches are recorded (perf events allowed).
    pub fn tracks_switches(&self) -> bool {
        self.switches.available()
    }

    /// CPU time a thread of the target has used, in ns (None if it is gone).
    pub fn cpu_time_ns(&mut self, tid: i32) -> Option<u64> {
        self.kernel.cpu_time_ns(tid)
    }

    /// Re-reads `threading`'s thread names (not on every sample: it is many reads).
    pub fn refresh_names(&mut self) {
        let Ok(mut state) = self.walker.read(false) else {
            return;
        };
        self.calibrate_tids(&mut state);
        let threads: Vec<LiveThread> = state
            .threads
            .iter()
            .filter_map(|t| {
                Some(LiveThread {
                    tid: t.tid?,
                    tstate: t.tstate,
                    ident: t.pthread_id,
                    interpreter: t.interpreter_address,
                })
            })
            .collect();
        self.names.forget_changed(&threads);
        self.names
            .read(&self.walker.mem, &self.walker.runtime, &threads);
    }

    /// Takes a sample and appends to `resolved` the earlier ones now resolved, oldest
    /// first: every consumer (record, top, dump) reads the target through this, so all
    /// classify alike. A thread runnable without the GIL that may be in a GIL handoff is
    /// judged by what later samples show it did next ([`handoff_verdict`], for up to
    /// 200 ms); everything else is decided at its own instant. Nothing on the first call.
    /// `paused`: take it with every thread paused (`--blocking`). Hand the samples back with
    /// [`Sampler::recycle`] once done with them.
    pub fn resolved_sample(
        &mut self,
        with_frames: bool,
        paused: bool,
        resolved: &mut Vec<Sample>,
    ) -> Result<(), SampleError> {
        let sample = if paused {
            self.sample_paused(with_frames).map_err(|e| {
                if crate::process::maps::is_alive(self.pid) {
                    SampleError::Fatal(e)
                } else {
                    SampleError::Gone
                }
            })?
        } else {
            self.sample(with_frames)?
        };
        self.pending.push(sample, resolved);
        Ok(())
    }

    /// How many samples [`Sampler::resolved_sample`] holds back now, waiting for later ones.
    pub fn held_back(&self) -> usize {
        self.pending.held.len()
    }

    /// Takes back a sample its consumer is done with: its vectors are reused for later
    /// samples.
    pub fn recycle(&mut self, mut sample: Sample) {
        if self.spare.samples.len() >= MAX_SPARE_SAMPLES {
            return;
        }
        sample.interpreters.clear();
        sample.gil_waiters.clear();
        sample.gil_mutex_owners.clear();
        self.spare.samples.push(sample);
    }

    /// An empty sample to fill, reusing one given back when there is one.
    fn empty_sample(&mut self, time: std::time::Instant) -> Sample {
        let mut sample = self.spare.samples.pop().unwrap_or_else(|| Sample {
            interpreters: Vec::new(),
            threads: Vec::new(),
            target_stopped: false,
            gil_waiters: Vec::new(),
            gil_mutex_owners: Vec::new(),
            time,
            gil_read_at: time,
            flag_check: None,
        });
        sample.time = time;
        sample.gil_read_at = time;
        sample
    }

    /// The samples [`Sampler::resolved_sample`] holds back, as they stand (when sampling
    /// ends: their undecided threads stay native).
    pub fn last_samples(&mut self) -> Vec<Sample> {
        self.pending.finish()
    }

    /// Takes one sample without stopping the target, as seen at that instant: threads that
    /// need the next sample to be resolved are left `native_nogil`. Use
    /// [`Sampler::resolved_sample`] unless that is what you want.
    pub fn sample(&mut self, with_frames: bool) -> Result<Sample, SampleError> {
        if CODE_REREADS_AFTER
            .get(self.code_rereads_done)
            .is_some_and(|&after| self.attached.elapsed() >= after)
        {
            self.walker.reread_code();
            self.code_rereads_done += 1;
        }
        let mut state = std::mem::take(&mut self.state);
        let result = self.sample_into(&mut state, with_frames);
        self.state = state;
        result
    }

    /// The reads that decide the classes (/proc and the GIL) come first, right after the
    /// sampler wakes, on the threads of the last walk; the walk that finds the threads and
    /// their stacks comes after them. On 2 CPUs the sampler's own time on a CPU moves the
    /// target from the moment it wakes (docs/accuracy.md, ninth and tenth rounds), so the
    /// sooner the deciding reads, the fairer the draw.
    ///
    /// Decided after the walk instead: the first sample, one after the interpreters
    /// changed, and every sample where the threads' own GIL flags are the source (3.15+).
    /// There a thread whose flags read the same in the walk and in the GIL's read, tens of
    /// µs apart, is settled without /proc. Decided first, those two reads would be a sample
    /// apart, and a lone event loop passing through `take_gil` read as waiting 0.01 of its
    /// time (tenth round).
    ///
    /// On 3.13 and 3.14 the flags only check the GIL struct's holder, in the same read.
    /// Decided first, that read takes 15-19 µs (median) against 5-6 µs right after the walk,
    /// and a lone event loop can take or drop the GIL inside it, so the two disagree
    /// somewhat more often (eleventh round).
    fn sample_into(
        &mut self,
        state: &mut PythonState,
        with_frames: bool,
    ) -> Result<Sample, SampleError> {
        let decided_first = !state.threads.is_empty() && !self.flags_exported();
        let (mut sample, mut kernel, running) = if decided_first {
            let Decision {
                sample,
                kernel,
                running,
            } = self.decide(state)?;
            self.keep_decisions(state, &kernel);
            self.names
                .read_ahead(&self.walker.mem, &self.walker.runtime);
            if let Err(e) = self.walk_threads(state) {
                self.give_back(sample, kernel);
                return Err(self.mem_error(e));
            }
            let same_interpreters = state
                .interpreters
                .iter()
                .map(|i| i.address)
                .eq(sample.interpreters.iter().map(|i| i.address));
            if same_interpreters {
                let (kernel, new_running) = self.apply_decisions(state, &sample, kernel);
                (sample, kernel, running || new_running)
            } else {
                self.give_back(sample, kernel);
                let d = self.decide(state)?;
                (d.sample, d.kernel, d.running)
            }
        } else {
            self.names
                .read_ahead(&self.walker.mem, &self.walker.runtime);
            self.walk_threads(state).map_err(|e| self.mem_error(e))?;
            let d = self.decide(state)?;
            (d.sample, d.kernel, d.running)
        };
        if let Err(e) = self.read_stacks(with_frames, state, &mut kernel) {
            self.give_back(sample, kernel);
            return Err(self.mem_error(e));
        }
        self.mark_if_stopped(state, &mut kernel, running);
        let result = self.join(state, &mut sample, &kernel, false);
        self.kernel_states = kernel;
        if let Err(e) = result {
            self.recycle(sample);
            return Err(e);
        }
        self.name_new_threads(&sample);
        Ok(sample)
    }

    /// The reads that decide each thread's class, for the threads of `state`: /proc, then
    /// the GIL (its holder, waiters and mutexes' owners) and the threads' GIL flags in one
    /// read, so that both describe nearly one instant.
    fn decide(&mut self, state: &mut PythonState) -> Result<Decision, SampleError> {
        let time = std::time::Instant::now();
        let (mut kernel, running) = self.read_kernel_states(state);
        // The GIL, right after the kernel reads (after the walk's own read of it, when the
        // walk came first); in the same read, the count of its waiters and its mutexes'
        // owners. Not needed when no thread runs but those the GIL flags settle (3.15+):
        // the count and the holder only ever decide runnable threads.
        let conds = self.conds;
        let mut sample = self.empty_sample(time);
        // The threads' GIL flags (3.13+: the source on 3.15+, a check of the GIL struct's
        // holder on 3.13 and 3.14) are read again in the same read as the GIL: the struct
        // names the holder at that instant, and flags read earlier could contradict it.
        self.flags_steady.clear();
        let settled_by_flags =
            kernel.contains(&KernelState::NotRead) && !kernel.contains(&KernelState::Running);
        let reread = if settled_by_flags {
            sample.interpreters.extend_from_slice(&state.interpreters);
            self.spare.waits.clear();
            self.spare.waits.resize(state.interpreters.len(), None);
            Ok(())
        } else {
            self.walker.reread_gils_into(
                &state.interpreters,
                Some(&mut state.threads[..]),
                &mut self.flags_steady,
                &mut sample.interpreters,
                &mut self.spare.waits,
                |bytes| {
                    let conds = conds?;
                    conds.parse(bytes.get(conds.cond as usize..)?)
                },
            )
        };
        if let Err(e) = reread {
            self.give_back(sample, kernel);
            return Err(self.mem_error(e));
        }
        if !settled_by_flags {
            sample.gil_read_at = std::time::Instant::now();
        }
        // A thread the earlier flags settled without /proc whose flags have changed since:
        // they no longer say what it does, so ask the kernel.
        for ((thread, kernel_state), steady) in state
            .threads
            .iter()
            .zip(kernel.iter_mut())
            .zip(&self.flags_steady)
        {
            if *kernel_state == KernelState::NotRead && !steady {
                *kernel_state = thread
                    .tid
                    .map_or(KernelState::Gone, |tid| self.kernel.read(tid));
            }
        }
        // A thread skipped as the holder that the second read no longer names: ask now. So
        // too while a thread is inside take_gil or drop_gil (it owns one of the GIL's
        // mutexes): the GIL may still name its previous holder, which may be waiting for it
        // again, and the waiter count needs to know who is blocked in the wait. And a thread
        // the second read names as holder that /proc, read before it, found blocked: it has
        // taken the GIL since, or the GIL names it as the holder before (take_gil stores
        // `locked` before `last_holder`) while it waits again. A read after tells which.
        for (thread, kernel_state) in state.threads.iter().zip(kernel.iter_mut()) {
            let holds = sample.interpreters[thread.interpreter].gil.holder() == Some(thread.tstate);
            let handoff = self
                .spare
                .waits
                .get(thread.interpreter)
                .copied()
                .flatten()
                .is_some_and(|(_, owners)| owners != [0, 0]);
            let skipped_wrongly = *kernel_state == KernelState::Running
                && (!holds || handoff)
                && self.skipped.contains(&thread.tstate);
            let read_blocked = holds
                && !matches!(
                    kernel_state,
                    KernelState::Running | KernelState::NotRead | KernelState::Gone
                );
            if skipped_wrongly || read_blocked {
                *kernel_state = thread
                    .tid
                    .map_or(KernelState::Gone, |tid| self.kernel.read(tid));
            }
        }
        Ok(Decision {
            sample,
            kernel,
            running,
        })
    }

    /// Keeps the buffers of a sample that is not going out.
    fn give_back(&mut self, sample: Sample, kernel: Vec<KernelState>) {
        self.kernel_states = kernel;
        self.recycle(sample);
    }

    /// Keeps what [`Sampler::decide`] found for each thread of the last walk's list while
    /// the walk refills that list.
    fn keep_decisions(&mut self, state: &PythonState, kernel: &[KernelState]) {
        let decided = &mut self.spare.decided;
        decided.clear();
        decided.extend(
            state
                .threads
                .iter()
                .zip(kernel)
                .map(|(thread, &kernel)| Decided {
                    tstate: thread.tstate,
                    tid: thread.tid,
                    holds_gil: thread.holds_gil,
                    gil_requested: thread.gil_requested,
                    kernel,
                }),
        );
    }

    /// The kernel states and GIL flags of the threads the walk found, from
    /// [`Sampler::keep_decisions`], so that the flags are those of the GIL's read, not the
    /// walk's: a thread the decisions did not know (it started since the last walk) is read
    /// now. Also whether such a thread, not the holder, runs. Whether the flags read the
    /// same twice is not kept: it counts only where the flags are the source (3.15+), and
    /// [`Sampler::sample_into`] decides those after their walk.
    fn apply_decisions(
        &mut self,
        state: &mut PythonState,
        sample: &Sample,
        mut kernel: Vec<KernelState>,
    ) -> (Vec<KernelState>, bool) {
        let decided = std::mem::take(&mut self.spare.decided);
        kernel.clear();
        let flags_settle = self.flags_settle();
        let mut next = 0;
        let mut running = false;
        for thread in &mut state.threads {
            match decision_for(&decided, &mut next, thread) {
                Some(d) => {
                    thread.holds_gil = d.holds_gil;
                    thread.gil_requested = d.gil_requested;
                    kernel.push(d.kernel);
                }
                None => {
                    let holds =
                        sample.interpreters[thread.interpreter].gil.holder() == Some(thread.tstate);
                    let kernel_state = self.kernel_state_of(thread, holds, flags_settle);
                    running |= !holds && kernel_state == KernelState::Running;
                    kernel.push(kernel_state);
                }
            }
        }
        self.spare.decided = decided;
        (kernel, running)
    }

    /// Whether the interpreter has started: its thread list has a thread to read. Right
    /// after a program starts (or execs), the runtime is found before any thread exists.
    pub fn interpreter_started(&mut self) -> bool {
        self.walker
            .read(false)
            .is_ok_and(|state| !state.threads.is_empty())
    }

    /// Reads /proc for the threads the interpreter's GIL flags settle as well (3.15+), so
    /// that the report can say how often the inference agrees with them. Off by default:
    /// it costs a /proc read per such thread and sample.
    pub fn set_verify_flags(&mut self, verify: bool) {
        self.verify_flags = verify;
    }

    /// Each thread's state from /proc, except what memory already tells, or what the thread's
    /// context switches tell (blocked in the same syscall as at the last read): on 3.15+ a thread
    /// whose own flags say it holds or wants the GIL ([`KernelState::NotRead`]); the thread
    /// the GIL names as holder is running Python (its /proc file could only contradict the
    /// read: [`Sampler::decide`] asks after all when the second GIL read names another
    /// holder or finds a handoff under way). Also whether a thread other than the holder
    /// was found running.
    fn read_kernel_states(&mut self, state: &PythonState) -> (Vec<KernelState>, bool) {
        let mut kernel = std::mem::take(&mut self.kernel_states);
        kernel.clear();
        self.skipped.clear();
        let mut running = false;
        let flags_settle = self.flags_settle();
        for thread in &state.threads {
            let holds = state.interpreters[thread.interpreter].gil.holder() == Some(thread.tstate);
            let kernel_state = self.kernel_state_of(thread, holds, flags_settle);
            running |= !holds && kernel_state == KernelState::Running;
            kernel.push(kernel_state);
        }
        (kernel, running)
    }

    /// Whether the interpreter's GIL flags settle the threads they flag, so that their /proc
    /// files need no read (3.15+, unless `--verify-flags`).
    fn flags_settle(&self) -> bool {
        !self.verify_flags && self.flags_exported()
    }

    /// Whether the threads' GIL flags are the interpreter's own account (3.15+).
    fn flags_exported(&self) -> bool {
        self.walker
            .layout()
            .tstate
            .gil_flags
            .is_some_and(|f| f.exported)
    }

    /// One thread's state for [`Sampler::read_kernel_states`]; the holder is skipped.
    fn kernel_state_of(
        &mut self,
        thread: &ThreadRecord,
        holds: bool,
        flags_settle: bool,
    ) -> KernelState {
        let settled =
            flags_settle && (thread.holds_gil == Some(true) || thread.gil_requested == Some(true));
        match thread.tid {
            None => KernelState::Gone,
            Some(_) if settled => KernelState::NotRead,
            Some(_) if holds => {
                self.skipped.push(thread.tstate);
                KernelState::Running
            }
            Some(tid) => self.kernel.read_unless_still(tid, self.switches.mark(tid)),
        }
    }

    /// /proc/PID/stat is read only when no thread is `running` (a stopped process has none),
    /// no GIL changed hands and no frame moved since the last sample (a stopped process
    /// does neither); if the process is stopped, so is every thread.
    fn mark_if_stopped(&mut self, state: &PythonState, kernel: &mut [KernelState], running: bool) {
        let switched = state
            .interpreters
            .iter()
            .map(|i| i.gil.switch_number)
            .ne(self.last_switches.iter().copied());
        if switched {
            self.last_switches.clear();
            self.last_switches
                .extend(state.interpreters.iter().map(|i| i.gil.switch_number));
        }
        let ran = switched || self.walker.stacks_moved();
        if !running && !ran && self.kernel.process_stopped() {
            for kernel_state in kernel {
                if *kernel_state != KernelState::Gone {
                    *kernel_state = KernelState::Stopped;
                }
            }
        }
    }

    /// Takes one sample with every thread paused (`--blocking`); the target runs again
    /// before this returns.
    pub fn sample_paused(&mut self, with_frames: bool) -> Result<Sample> {
        // A pause can land inside take_gil between its `locked` and `last_holder` stores,
        // freezing a contradiction in place: let the target run a moment and pause again.
        for _ in 0..PAUSE_ATTEMPTS {
            let tids = crate::process::maps::list_tids(self.pid)?;
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
        let time = std::time::Instant::now();
        let mut state = self
            .walker
            .read(with_frames)
            .map_err(|e| self.mem_error(e))?;
        self.calibrate_tids(&mut state);
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
        let mut sample = self.empty_sample(time);
        sample.interpreters.extend_from_slice(&state.interpreters);
        self.spare.waits = self.read_gil_waiters(&state.interpreters);
        self.join(&mut state, &mut sample, &kernel, true)?;
        Ok(sample)
    }

    /// Per interpreter, the threads inside a wait on its GIL's conditions and the owners
    /// of its mutexes.
    fn read_gil_waiters(&self, interpreters: &[InterpreterRecord]) -> GilWaits {
        interpreters
            .iter()
            .map(|i| {
                let conds = self.conds?;
                let mut bytes = vec![0u8; conds.span()];
                self.walker
                    .mem
                    .read(i.gil.address + conds.cond, &mut bytes)
                    .ok()?;
                conds.parse(&bytes)
            })
            .collect()
    }

    /// Classifies each thread of `state` into `sample`, whose interpreters are read and
    /// whose GIL waits are in `self.spare.waits`.
    fn join(
        &mut self,
        state: &mut PythonState,
        sample: &mut Sample,
        kernel: &[KernelState],
        paused: bool,
    ) -> Result<(), SampleError> {
        let waits = std::mem::take(&mut self.spare.waits);
        let mut stand_ins = std::mem::take(&mut self.spare.stand_in);
        let mut woken = std::mem::take(&mut self.spare.woken);
        let result = self.join_with(
            state,
            sample,
            kernel,
            paused,
            &waits,
            &mut stand_ins,
            &mut woken,
        );
        self.spare.waits = waits;
        self.spare.stand_in = stand_ins;
        self.spare.woken = woken;
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn join_with(
        &mut self,
        state: &mut PythonState,
        sample: &mut Sample,
        kernel: &[KernelState],
        paused: bool,
        waits: &GilWaits,
        stand_ins: &mut Vec<bool>,
        woken: &mut FxHashSet<i32>,
    ) -> Result<(), SampleError> {
        let interpreters = &sample.interpreters;
        sample.gil_waiters.clear();
        sample
            .gil_waiters
            .extend(waits.iter().map(|w| w.map(|(n, _)| n)));
        sample.gil_mutex_owners.clear();
        sample
            .gil_mutex_owners
            .extend(waits.iter().map(|w| w.map_or([0, 0], |(_, o)| o)));
        let gil_waiters = &sample.gil_waiters;
        // The threads of the sample this one reuses, newest first: a thread's frames go to
        // the walker in place of the vector it fills next, which the thread at the same
        // place filled before, so it mostly has the room it needs already.
        let threads = &mut sample.threads;
        let mut earlier = std::mem::take(&mut self.spare.earlier_threads);
        std::mem::swap(threads, &mut earlier);
        threads.clear();
        earlier.reverse();
        let mut stopped = 0usize;
        let mut holder_check = (0u32, 0u32);
        let exported_flags = self.flags_exported();
        mark_stand_ins(state, interpreters, &mut self.spare.kept, stand_ins);
        self.woken_waiters(state, interpreters, kernel, stand_ins, waits, woken);
        for (index, ((thread, &kernel_state), &stand_in)) in state
            .threads
            .iter_mut()
            .zip(kernel)
            .zip(stand_ins.iter())
            .enumerate()
        {
            let Some(tid) = thread.tid else { continue };
            if kernel_state == KernelState::Gone || stand_in {
                continue;
            }
            stopped += usize::from(kernel_state == KernelState::Stopped);
            let gil = &interpreters[thread.interpreter].gil;
            let holds = gil.holder() == Some(thread.tstate);
            if let (false, Some(flag)) = (exported_flags, thread.holds_gil) {
                holder_check.0 += 1;
                holder_check.1 += u32::from(flag == holds);
            }
            let counted = gil_waiters
                .get(thread.interpreter)
                .is_some_and(Option::is_some);
            let waiting = !holds
                && kernel_state == KernelState::Running
                && if counted {
                    woken.contains(&tid)
                } else {
                    self.still_waiting(tid, thread.tstate, gil)
                };
            let class = if kernel_state == KernelState::NotRead {
                Classification::active(if thread.holds_gil == Some(true) {
                    ThreadState::GilHeld
                } else {
                    ThreadState::GilWait
                })
            } else {
                match classify(holds, kernel_state, gil, waiting) {
                    Ok(class) => class,
                    // Paused inside take_gil between its `locked` and `last_holder` stores,
                    // the contradiction stays for as long as the pause: pause again.
                    Err(Contradiction) if paused => return Err(SampleError::Torn),
                    Err(Contradiction) => waiting_on_a_stale_holder(),
                }
            };
            self.track_gil_wait(tid, kernel_state, gil, class);
            let event_loop = self.observe_loop(tid, thread);
            threads.push(ThreadSample {
                tid,
                tstate: thread.tstate,
                ident: thread.pthread_id,
                interpreter: thread.interpreter,
                class,
                blocked_on_gil: is_gil_wait(kernel_state, gil),
                kernel: kernel_state,
                cpu_ns: if self.native_before.contains(&tid)
                    || (class.state == ThreadState::NativeNogil
                        && !released_last(gil, thread.tstate)
                        && self.needs_next_sample(tid, counted))
                {
                    self.kernel.cpu_time_ns(tid)
                } else {
                    None
                },
                gil_flags: match (exported_flags, thread.holds_gil, thread.gil_requested) {
                    (true, Some(holds), Some(requested)) => Some(ThreadGilFlagValues {
                        holds,
                        requested,
                        steady: self.flags_steady.get(index).copied().unwrap_or(true),
                    }),
                    _ => None,
                },
                frames: std::mem::replace(
                    &mut thread.frames,
                    earlier
                        .pop()
                        .map(|t| t.frames)
                        .or_else(|| self.spare.frames.pop())
                        .unwrap_or_default(),
                ),
                truncated: thread.truncated,
                event_loop,
            });
        }
        self.spare
            .frames
            .extend(earlier.drain(..).map(|thread| thread.frames));
        self.spare.earlier_threads = earlier;
        if several_flagged_holders(threads) {
            // Thread states are read one after another: a GIL handed over between two reads
            // shows both threads holding it.
            return Err(SampleError::Torn);
        }
        self.native_before.clear();
        self.native_before.extend(
            threads
                .iter()
                .filter(|t| t.class.state == ThreadState::NativeNogil && t.cpu_ns.is_some())
                .map(|t| t.tid),
        );
        self.last_state.clear();
        self.last_state
            .extend(threads.iter().map(|t| (t.tid, t.class.state)));
        sample.target_stopped = !paused && !threads.is_empty() && stopped == threads.len();
        let alive = &mut self.spare.alive;
        alive.clear();
        alive.extend(threads.iter().map(|t| t.tid));
        self.kernel.retain(|tid| alive.contains(&tid));
        self.switches.retain(|tid| alive.contains(&tid));
        self.gil_waiters.retain(|tid, _| alive.contains(tid));
        sample.flag_check = (holder_check.0 > 0).then_some(FlagCheck {
            compared: FlagComparison::Holder,
            threads: holder_check.0,
            agreeing: holder_check.1,
        });
        Ok(())
    }

    /// The asyncio loop the thread runs, if its frames show one, with its scheduler counters.
    fn observe_loop(
        &mut self,
        tid: i32,
        thread: &crate::python::walker::ThreadRecord,
    ) -> Option<LoopObservation> {
        if thread.frames.is_empty() {
            return None;
        }
        let addresses = ThreadAddresses {
            tstate: thread.tstate,
            interpreter: thread.interpreter_address,
        };
        let mut observation = self.loops.observe(
            &self.walker.mem,
            &self.walker.codes,
            &thread.frames,
            &thread.frame_addresses,
            None,
            addresses,
        )?;
        // Timed from the start of the walk that read these frames: a stamp the loop wrote
        // after them must not look older than this sample.
        observation.at_ns = self.walk_started_ns;
        observation.sched = self.kernel.sched_counters(tid);
        Some(observation)
    }

    /// The runnable threads that are inside a wait on the GIL: woken (by a release, or by
    /// their one-interval timeout) and queued for a CPU, or on their way into the wait.
    /// /proc shows them running, like native code. The GIL's conditions count the threads
    /// inside their waits; those not seen blocked there are runnable. When there are more
    /// runnable candidates than that, the likeliest are taken: a thread last seen waiting
    /// for the GIL, then one last seen holding it (a holder asked to drop it), then the rest
    /// in turn, so that no thread is favoured over many samples. A runnable thread that owns
    /// one of the GIL's mutexes is inside `take_gil` or `drop_gil`: it waits, whatever the
    /// count; so does one that left its CPU inside a futex call on the GIL and has not run
    /// since (see [`Sampler::off_cpu_in_gil_call`]), which fills a place in the count if it
    /// was woken from a wait on a condition.
    fn woken_waiters(
        &mut self,
        state: &PythonState,
        interpreters: &[InterpreterRecord],
        kernel: &[KernelState],
        stand_ins: &[bool],
        waits: &GilWaits,
        woken: &mut FxHashSet<i32>,
    ) {
        woken.clear();
        let Some(conds) = self.conds else {
            return;
        };
        let mut candidates = std::mem::take(&mut self.spare.candidates);
        self.turn = self.turn.wrapping_add(1);
        for (index, record) in interpreters.iter().enumerate() {
            let Some(Some((inside, owners))) = waits.get(index).copied() else {
                continue;
            };
            let gil = &record.gil;
            // Threads inside the wait: blocked in it, or flagged as requesting the GIL and
            // left unread (blocked or woken, they are not among the runnable candidates).
            let mut blocked = 0u32;
            candidates.clear();
            for ((thread, kernel), &stand_in) in state.threads.iter().zip(kernel).zip(stand_ins) {
                let Some(tid) = thread.tid else { continue };
                if thread.interpreter != index || stand_in {
                    continue;
                }
                match *kernel {
                    KernelState::Syscall { nr, args }
                        if nr == libc::SYS_futex && conds.contains(gil.address, args[0]) =>
                    {
                        blocked += 1
                    }
                    KernelState::Running
                        if gil.holder() != Some(thread.tstate) && owners.contains(&tid) =>
                    {
                        woken.insert(tid);
                    }
                    KernelState::NotRead if thread.gil_requested == Some(true) => blocked += 1,
                    KernelState::Running if gil.holder() != Some(thread.tstate) => {
                        if let Some(out) = self.off_cpu_in_gil_call(tid, gil) {
                            woken.insert(tid);
                            // Woken from the wait on a condition and not run since, it is
                            // still among the condition's counted waiters.
                            blocked += u32::from(
                                !out.preempted && conds.contains(gil.address, out.argument),
                            );
                            continue;
                        }
                        // A waiter the GIL's release woke has not run since it slept; a
                        // preempted thread or one on a CPU is rarely inside the wait.
                        let woken_rank = match self.switches.last(tid) {
                            Some(LastSwitch::Slept) => 0,
                            None => 1,
                            Some(LastSwitch::Preempted) => 2,
                            Some(LastSwitch::OnCpu) => 3,
                        };
                        let rank = woken_rank * 4
                            + if self.gil_waiters.contains_key(&tid) {
                                0
                            } else {
                                match self.last_state.get(&tid) {
                                    Some(ThreadState::GilWait) => 1,
                                    Some(ThreadState::GilHeld) => 2,
                                    _ => 3,
                                }
                            };
                        candidates.push((rank, tid));
                    }
                    _ => {}
                }
            }
            let runnable = inside.saturating_sub(blocked) as usize;
            if runnable == 0 || candidates.is_empty() {
                continue;
            }
            candidates.sort_unstable();
            let rotate = self.turn % candidates.len();
            candidates.rotate_left(rotate);
            candidates.sort_by_key(|&(rank, _)| rank);
            woken.extend(candidates.iter().take(runnable).map(|&(_, tid)| tid));
        }
        self.spare.candidates = candidates;
    }

    /// Whether a thread runnable without the GIL, not counted inside the GIL's waits and
    /// owning none of its mutexes, may still be in a GIL handoff, for the next sample to tell
    /// (see [`handoff_verdict`]). See [`may_be_in_handoff`].
    fn needs_next_sample(&self, tid: i32, counted: bool) -> bool {
        may_be_in_handoff(
            counted,
            self.switches.last(tid),
            self.last_state.get(&tid).copied(),
        )
    }

    /// How a runnable thread left its CPU inside a futex call on one of the GIL's words, if it
    /// did and has not run since ([`in_gil_futex_call`]): woken from a wait on one, or
    /// preempted inside the system call (a holder waking a waiter as it drops the GIL, a
    /// waiter on its way out of the wait). It is inside `take_gil` or `drop_gil`. /proc says
    /// only "running", and a waiter woken on the GIL's mutex is in no count. Whether a
    /// preempted thread was in a system call is told by the bytes before its instruction
    /// pointer, read once per address.
    fn off_cpu_in_gil_call(&mut self, tid: i32, gil: &GilState) -> Option<SwitchOut> {
        let last_out = self.switches.left_with_argument(tid);
        let mem = &self.walker.mem;
        let sites = &mut self.system_call_sites;
        in_gil_futex_call(last_out, gil, |ip| {
            if sites.len() >= MAX_SYSTEM_CALL_SITES {
                sites.clear();
            }
            *sites.entry(ip).or_insert_with(|| {
                let mut before = [0u8; 4];
                let before = &mut before[..SYSCALL_INSTRUCTION.len()];
                !before.is_empty()
                    && mem
                        .read(ip.wrapping_sub(before.len() as u64), before)
                        .is_ok()
                    && before == SYSCALL_INSTRUCTION
            })
        })
    }

    /// A runnable thread is still waiting for the GIL if it left its CPU inside a futex call
    /// on it and has not run since, or if it was last seen blocked on it, is not its last
    /// holder now, and has used almost no CPU since.
    fn still_waiting(&mut self, tid: i32, tstate: u64, gil: &GilState) -> bool {
        if self.off_cpu_in_gil_call(tid, gil).is_some() {
            return true;
        }
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
                if crate::process::maps::is_alive(self.pid) {
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

/// The decision kept for `thread`, if it was in the list before the walk: the same thread
/// state of the same kernel thread (a freed thread state can be reused by a new thread).
/// The walk keeps the list's order, less the threads that ended and with new ones first, so
/// decisions are looked for from `next`, just past the one found last.
fn decision_for(decided: &[Decided], next: &mut usize, thread: &ThreadRecord) -> Option<Decided> {
    let at = decided
        .get(*next..)?
        .iter()
        .position(|d| d.tstate == thread.tstate && d.tid == thread.tid)?
        + *next;
    *next = at + 1;
    Some(decided[at])
}

/// More than one thread of an interpreter flags itself as holding its GIL.
fn several_flagged_holders(threads: &[ThreadSample]) -> bool {
    let holds = |t: &ThreadSample| t.gil_flags.is_some_and(|f| f.holds);
    threads.iter().enumerate().any(|(index, thread)| {
        holds(thread)
            && threads[..index]
                .iter()
                .any(|earlier| holds(earlier) && earlier.interpreter == thread.interpreter)
    })
}

impl<M: RemoteMemory> Sampler<M> {
    /// A walk that faults (a thread state freed under the reader as its thread ended) is
    /// tried once more at once: the list is whole again within microseconds.
    fn walk_threads(&mut self, state: &mut PythonState) -> Result<(), MemError> {
        self.walk_started_ns = monotonic_ns();
        match self.walker.read_threads_into(state) {
            Err(MemError::Fault { .. }) => {
                self.walk_started_ns = monotonic_ns();
                self.walker.read_threads_into(state)?;
            }
            other => other?,
        }
        self.calibrate_tids(state);
        for tid in state.threads.iter().filter_map(|t| t.tid) {
            self.switches.track(tid);
        }
        Ok(())
    }

    /// The stacks, read after the states are settled (or left empty), with `kernel` and the
    /// flags' steadiness kept in step with the threads: a thread ending as its stack is read
    /// is left out of all of them.
    fn read_stacks(
        &mut self,
        with_frames: bool,
        state: &mut PythonState,
        kernel: &mut Vec<KernelState>,
    ) -> Result<(), MemError> {
        if !with_frames {
            self.walker.skip_stacks(state);
            return Ok(());
        }
        self.stacked.clear();
        self.stacked.extend(state.threads.iter().map(|t| t.tstate));
        self.walker.read_stacks_into(state)?;
        if state.threads.len() < self.stacked.len() {
            let mut kept = state.threads.iter().map(|t| t.tstate).peekable();
            let keep: Vec<bool> = self
                .stacked
                .iter()
                .map(|tstate| kept.next_if_eq(tstate).is_some())
                .collect();
            let mut index = 0;
            kernel.retain(|_| {
                index += 1;
                keep[index - 1]
            });
            if !self.flags_steady.is_empty() {
                let mut index = 0;
                self.flags_steady.retain(|_| {
                    index += 1;
                    keep[index - 1]
                });
            }
        }
        Ok(())
    }

    /// Before 3.11 the walk gives kernel tids only once the walker knows where glibc keeps
    /// them, found by matching against the target's tids in /proc.
    fn calibrate_tids(&mut self, state: &mut PythonState) {
        if self.walker.needs_tid_calibration(&state.threads) {
            let tids = crate::process::maps::list_tids(self.pid).unwrap_or_default();
            self.walker.calibrate_tids(&mut state.threads, &tids);
        }
    }

    /// Keeps names right as threads come and go (see [`ThreadNames`]).
    fn name_new_threads(&mut self, sample: &Sample) {
        let threads = &mut self.spare.live_threads;
        threads.clear();
        threads.extend(sample.threads.iter().map(|t| LiveThread {
            tid: t.tid,
            tstate: t.tstate,
            ident: t.ident,
            interpreter: sample.interpreters[t.interpreter].address,
        }));
        self.names
            .update(&self.walker.mem, &self.walker.runtime, threads);
    }
}

/// The GIL names a thread as its holder that the kernel shows blocked on the GIL. `take_gil`
/// sets `locked` before `last_holder`, so for a moment the GIL names its previous holder,
/// which may be waiting for it again (or waiting in a handoff on `switch_cond`). The kernel's
/// view is the later one: the thread waits, and the GIL is held by a thread not named yet.
/// Threads that start and end take and drop the GIL often, so this is common under churn;
/// it is no reason to drop a live sample. A paused one is taken again instead (the pause
/// would keep the contradiction for as long as it lasts).
fn waiting_on_a_stale_holder() -> Classification {
    Classification {
        state: ThreadState::GilWait,
        idle_reason: None,
    }
}

/// Thread states that share a kernel tid with another and should not be counted for it.
/// A thread state being created carries its creator's ids until the new thread starts, and a
/// thread running a subinterpreter has a thread state in each interpreter. The one kept holds
/// a GIL, else has frames, else is the oldest (last in the list).
/// `stand_in[i]` says whether `state.threads[i]` is one; `kept` is working space.
fn mark_stand_ins(
    state: &PythonState,
    interpreters: &[InterpreterRecord],
    kept: &mut FxHashMap<i32, usize>,
    stand_in: &mut Vec<bool>,
) {
    let rank = |t: &crate::python::walker::ThreadRecord| {
        let holds = interpreters[t.interpreter].gil.holder() == Some(t.tstate);
        (holds, !t.frames.is_empty())
    };
    kept.clear();
    for (index, thread) in state.threads.iter().enumerate() {
        let Some(tid) = thread.tid else { continue };
        let better = kept
            .get(&tid)
            .is_none_or(|&k| rank(thread) >= rank(&state.threads[k]));
        if better {
            kept.insert(tid, index);
        }
    }
    stand_in.clear();
    stand_in.resize(state.threads.len(), true);
    for &index in kept.values() {
        stand_in[index] = false;
    }
}

/// Whether a thread runnable without the GIL, that neither the GIL's waiter count nor its
/// mutexes place inside `take_gil`/`drop_gil`, may still be in a GIL handoff: preempted
/// inside `drop_gil` or on its way back into `take_gil`. Only a later sample can tell
/// ([`handoff_verdict`]). `counted`: the GIL's waiters were counted at this sample;
/// `last_switch`: how the thread last left a CPU, where the kernel's switch records are
/// available; `last_state`: its class at the sample before.
///
/// - Without the count, any such thread may be.
/// - Woken from a wait and not run since ([`LastSwitch::Slept`]): it was waiting for
///   something else (a lock, a sleep, I/O). It reaches the GIL soon after, but was not in a
///   handoff at this instant; the count would have included it had it been woken from the
///   GIL's condition. (One woken on the GIL's mutex is not counted either, and reads as
///   native: the gap docs/accuracy.md measures against 3.15's flags.)
/// - Preempted while runnable: in a handoff, or in native code. The later sample tells
///   which by the CPU it used meanwhile.
/// - On a CPU, or unknown: only if it held or waited for the GIL at the sample before (a
///   thread coming back from I/O cannot be told from one in a handoff otherwise).
pub fn may_be_in_handoff(
    counted: bool,
    last_switch: Option<LastSwitch>,
    last_state: Option<ThreadState>,
) -> bool {
    if !counted {
        return true;
    }
    match last_switch {
        Some(LastSwitch::Slept) => false,
        Some(LastSwitch::Preempted) => true,
        Some(LastSwitch::OnCpu) | None => matches!(
            last_state,
            Some(ThreadState::GilHeld | ThreadState::GilWait)
        ),
    }
}

/// CPU that a thread in a GIL handoff never uses before it reaches the GIL, and native code
/// soon does. The kernel adds a running thread's CPU time up only at scheduler ticks, so a
/// reading can lag by one tick: this is just above one tick at HZ=250 (Debian's and Ubuntu's
/// default). On an HZ=100 kernel some handoffs read as native.
pub const NATIVE_CPU_NS: u64 = 5_000_000;

/// What a thread runnable without the GIL at one sample turned out to be doing, judged by a
/// later sample: a thread in a GIL handoff (a holder handing over, a woken waiter, queued
/// for a CPU) reaches the GIL before it has used [`NATIVE_CPU_NS`] of CPU; native code uses
/// that much first, or blocks elsewhere. `later_counted`: the later sample counted the GIL's
/// waiters, so a `gil_wait` in it was seen, not inferred. `None`: still undecided.
pub fn handoff_verdict(
    earlier: &ThreadSample,
    later: &ThreadSample,
    later_counted: bool,
) -> Option<bool> {
    let used = match (earlier.cpu_ns, later.cpu_ns) {
        (Some(before), Some(after)) => after.saturating_sub(before),
        _ => u64::MAX,
    };
    if used >= NATIVE_CPU_NS {
        return Some(false);
    }
    // Only what was seen counts: a GIL wait inferred for a runnable thread from its history
    // alone is the guess being checked. A thread left unread because its own flag says it
    // requests the GIL (3.15+) was seen waiting by the interpreter itself.
    let seen_waiting = later.blocked_on_gil
        || (later_counted && later.class.state == ThreadState::GilWait)
        || (later.kernel == KernelState::NotRead && later.class.state == ThreadState::GilWait);
    if later.class.state == ThreadState::GilHeld || seen_waiting {
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
    let mut undecided: Vec<i32> = earlier
        .threads
        .iter()
        .filter(|t| t.class.state == ThreadState::NativeNogil)
        .map(|t| t.tid)
        .collect();
    resolve_some(earlier, later, &mut undecided);
    undecided
}

/// Whether nobody holds `gil` and the thread at `tstate` held it last. Such a thread is not
/// in a handoff, whatever comes next: no thread has taken the GIL since it dropped it, so
/// none is handing it over to it. Queued for a CPU on a busy machine, it reaches the GIL
/// as soon as it runs, like a waiter would (a lone asyncio loop read as waiting in
/// 0.016-0.018 of samples under load before this). The sample does not read its CPU time
/// for the verdict, and the verdict leaves it as it is.
fn released_last(gil: &GilState, tstate: u64) -> bool {
    !gil.locked && gil.last_holder == tstate
}

/// [`resolve_handoffs`] for the threads in `undecided` only, which keeps those still
/// undecided.
fn resolve_some(earlier: &mut Sample, later: &Sample, undecided: &mut Vec<i32>) {
    undecided.retain(|&tid| {
        let Some(thread) = earlier
            .threads
            .iter_mut()
            .find(|t| t.tid == tid && t.class.state == ThreadState::NativeNogil)
        else {
            return false;
        };
        let released_by_it = earlier
            .interpreters
            .get(thread.interpreter)
            .is_some_and(|i| released_last(&i.gil, thread.tstate));
        if released_by_it {
            return false;
        }
        let Some(next) = later.threads.iter().find(|t| t.tid == tid) else {
            return false;
        };
        let counted = later
            .gil_waiters
            .get(next.interpreter)
            .is_some_and(Option::is_some);
        match handoff_verdict(thread, next, counted) {
            Some(true) => {
                thread.class = Classification {
                    state: ThreadState::GilWait,
                    idle_reason: None,
                };
                false
            }
            Some(false) => false,
            None => true,
        }
    });
}

/// Makes the thread states' own GIL flags (3.15+) the source of who holds the GIL and who
/// waits for it, once the inference has had its say (handoffs resolved), and records how
/// often the two agreed where the flags speak.
///
/// - `holds_gil` set: holding (with `gil_requested` too, it is a take_gil read mid-way).
/// - `gil_requested` set, or blocked in the GIL's futex (a holder handing the GIL over on a
///   forced switch, which requests nothing): waiting.
/// - Neither, and blocked elsewhere: idle, as /proc says.
/// - Neither, and runnable: the flags are silent. Such a thread is running native code, or
///   is between a forced switch and its next take_gil, queued for a CPU; only the inference
///   (the handoff resolver) tells these apart, so it keeps its class and is not compared.
pub fn settle_by_thread_flags(sample: &mut Sample) {
    let mut threads = 0;
    let mut agreeing = 0;
    let mut flagged = false;
    for thread in &mut sample.threads {
        let Some(flags) = thread.gil_flags else {
            continue;
        };
        flagged = true;
        let by_flags = if flags.holds {
            Classification::active(ThreadState::GilHeld)
        } else if flags.requested || thread.blocked_on_gil {
            Classification::active(ThreadState::GilWait)
        } else if thread.kernel == KernelState::Running {
            if thread.class.state == ThreadState::GilHeld {
                // Named by the GIL struct but not flagged: inside take_gil or drop_gil.
                thread.class = Classification::active(ThreadState::GilWait);
            }
            continue;
        } else {
            classify_without_gil(thread.kernel)
        };
        // Unread in /proc, the thread was classified by its flags: nothing to compare. Nor
        // when the flags changed while /proc was read.
        if thread.kernel != KernelState::NotRead && flags.steady {
            threads += 1;
            agreeing += u32::from(by_flags.state == thread.class.state);
        }
        thread.class = by_flags;
    }
    if flagged {
        sample.flag_check = Some(FlagCheck {
            compared: FlagComparison::State,
            threads,
            agreeing,
        });
    }
}

/// How long a sample waits for later ones to resolve its runnable threads; past this they
/// stay native (a thread queued for a CPU this long is rare, native code is not).
const RESOLVE_WITHIN: std::time::Duration = std::time::Duration::from_millis(200);

/// Holds samples back until later ones have resolved their runnable threads: at least one
/// sample, at most [`RESOLVE_WITHIN`]. Samples come out in the order they went in.
#[derive(Debug, Default)]
pub struct HandoffResolver {
    /// Each held sample with the tids it still waits to resolve.
    held: std::collections::VecDeque<(Sample, Vec<i32>)>,
    /// Emptied lists of tids, reused.
    spare: Vec<Vec<i32>>,
}

impl HandoffResolver {
    /// Takes a new sample; appends to `ready` the held ones now resolved and settled by the
    /// thread flags ([`settle_by_thread_flags`]), oldest first.
    pub fn push(&mut self, sample: Sample, ready: &mut Vec<Sample>) {
        for (earlier, undecided) in &mut self.held {
            if !undecided.is_empty() {
                resolve_some(earlier, &sample, undecided);
            }
        }
        while let Some((front, undecided)) = self.held.front() {
            let expired = sample.time.saturating_duration_since(front.time) >= RESOLVE_WITHIN;
            if !undecided.is_empty() && !expired {
                break;
            }
            if let Some((mut s, mut tids)) = self.held.pop_front() {
                settle_by_thread_flags(&mut s);
                ready.push(s);
                tids.clear();
                self.spare.push(tids);
            }
        }
        let mut pending = self.spare.pop().unwrap_or_default();
        pending.extend(
            sample
                .threads
                .iter()
                .filter(|t| t.class.state == ThreadState::NativeNogil && t.cpu_ns.is_some())
                .map(|t| t.tid),
        );
        self.held.push_back((sample, pending));
    }

    /// The samples still held, as they stand.
    pub fn finish(&mut self) -> Vec<Sample> {
        self.held
            .drain(..)
            .map(|(mut s, _)| {
                settle_by_thread_flags(&mut s);
                s
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::walker::{Frame, GilState, ThreadRecord};

    #[test]
    fn a_thread_woken_from_another_wait_is_not_in_a_gil_handoff() {
        use ThreadState::*;
        // Counted GIL waiters, and the thread was waiting for the GIL at the sample before:
        // woken from a lock since and not run yet, it has not asked for the GIL again.
        assert!(!may_be_in_handoff(
            true,
            Some(LastSwitch::Slept),
            Some(GilWait)
        ));
        // Preempted while runnable: in a handoff or native code, whatever it did before.
        assert!(may_be_in_handoff(
            true,
            Some(LastSwitch::Preempted),
            Some(Idle)
        ));
        assert!(may_be_in_handoff(true, Some(LastSwitch::Preempted), None));
        // On a CPU, or without switch records: only after holding or waiting for the GIL.
        assert!(may_be_in_handoff(
            true,
            Some(LastSwitch::OnCpu),
            Some(GilHeld)
        ));
        assert!(!may_be_in_handoff(
            true,
            Some(LastSwitch::OnCpu),
            Some(Idle)
        ));
        assert!(may_be_in_handoff(true, None, Some(GilWait)));
        assert!(!may_be_in_handoff(true, None, Some(NativeNogil)));
        // Without the waiter count nothing rules a runnable thread out.
        assert!(may_be_in_handoff(
            false,
            Some(LastSwitch::Slept),
            Some(Idle)
        ));
    }

    fn thread(tstate: u64, tid: i32, frames: usize) -> ThreadRecord {
        ThreadRecord {
            tstate,
            pthread_id: tstate,
            tid: Some(tid),
            interpreter: 0,
            interpreter_address: 0x10,
            holds_gil: None,
            gil_requested: None,
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

    /// `struct _gil_runtime_state` of 3.8-3.13 (default builds), as in python::tables.
    fn gil_layout() -> crate::python::layout::GilLayout {
        crate::python::layout::GilLayout {
            enabled: None,
            interval: 0,
            last_holder: 8,
            locked: 16,
            switch_number: 24,
            size: 208,
        }
    }

    #[test]
    fn decisions_follow_the_threads_through_a_walk_that_changed_the_list() {
        let decided = |tstate: u64, tid: i32| Decided {
            tstate,
            tid: Some(tid),
            holds_gil: None,
            gil_requested: None,
            kernel: KernelState::Syscall {
                nr: i64::from(tid),
                args: [0; 6],
            },
        };
        // Before the walk: threads 1, 2, 3 and 4, newest first as CPython lists them.
        let before = [
            decided(0x100, 1),
            decided(0x200, 2),
            decided(0x300, 3),
            decided(0x400, 4),
        ];
        // The walk: a new thread 5 at the head, 2 gone, and 4's thread state freed and
        // reused by a new thread 6.
        let walked = [
            thread(0x500, 5, 0),
            thread(0x100, 1, 0),
            thread(0x300, 3, 0),
            thread(0x400, 6, 0),
        ];
        let mut next = 0;
        let found: Vec<Option<i32>> = walked
            .iter()
            .map(|t| decision_for(&before, &mut next, t).and_then(|d| d.tid))
            .collect();
        assert_eq!(found, [None, Some(1), Some(3), None]);
    }

    #[test]
    fn the_gil_conditions_follow_switch_number() {
        let layout = CondvarLayout::for_version(2, 36).unwrap();
        let conds = GilConds::new(layout, &gil_layout()).unwrap();
        assert_eq!((conds.cond, conds.switch_cond), (32, 120));
        assert_eq!(conds.span(), 208 - 32);
        // A futex on `cond` or `switch_cond` is inside; on `mutex` it is not (that wait is
        // seen as blocked on the GIL by /proc, and is not in the count).
        let gil = 0x1000;
        assert!(conds.contains(gil, gil + 32 + 40));
        assert!(conds.contains(gil, gil + 120));
        assert!(!conds.contains(gil, gil + 80));
        // A layout whose size does not add up is not guessed at.
        let odd = crate::python::layout::GilLayout {
            size: 200,
            ..gil_layout()
        };
        assert!(GilConds::new(layout, &odd).is_none());
    }

    #[test]
    fn reads_the_waiters_and_the_mutex_owners() {
        let conds =
            GilConds::new(CondvarLayout::for_version(2, 36).unwrap(), &gil_layout()).unwrap();
        let mut bytes = vec![0u8; conds.span()];
        // Two waiters on `cond`, one on `switch_cond` (each count is 8 per waiter, plus
        // the clock bit), and thread 4242 inside `take_gil` owning `mutex`.
        bytes[36..40].copy_from_slice(&(2 * 8 + 2u32).to_ne_bytes());
        bytes[88 + 36..88 + 40].copy_from_slice(&(8 + 2u32).to_ne_bytes());
        bytes[48 + 8..48 + 12].copy_from_slice(&4242i32.to_ne_bytes());
        assert_eq!(conds.parse(&bytes), Some((3, [4242, 0])));
    }

    #[test]
    fn the_resolver_settles_the_samples_it_releases_by_the_thread_flags() {
        // 3.15: the GIL struct named no holder, the thread's own flag says it holds it.
        let sample = |time| Sample {
            interpreters: vec![interpreter(0)],
            threads: vec![thread_7(
                ThreadState::GilWait,
                KernelState::Running,
                None,
                Some(flags(true, false)),
            )],
            target_stopped: false,
            gil_waiters: vec![None],
            gil_mutex_owners: vec![[0, 0]],
            time,
            gil_read_at: time,
            flag_check: None,
        };
        let start = std::time::Instant::now();
        let mut resolver = HandoffResolver::default();
        let mut released = Vec::new();
        resolver.push(sample(start), &mut released);
        assert!(released.is_empty());
        let later = start + std::time::Duration::from_millis(1);
        resolver.push(sample(later), &mut released);
        released.extend(resolver.finish());
        assert_eq!(released.len(), 2);
        for s in &released {
            assert_eq!(s.threads[0].class.state, ThreadState::GilHeld);
            assert_eq!(
                s.flag_check.map(|c| c.compared),
                Some(FlagComparison::State)
            );
            assert!(s.gil_held());
        }
    }

    /// Thread 7 (thread state 0xa) of interpreter 0, as a sample saw it.
    fn thread_7(
        class: ThreadState,
        kernel: KernelState,
        cpu_ns: Option<u64>,
        gil_flags: Option<ThreadGilFlagValues>,
    ) -> ThreadSample {
        ThreadSample {
            tid: 7,
            tstate: 0xa,
            ident: 0xa,
            interpreter: 0,
            class: Classification::active(class),
            blocked_on_gil: false,
            kernel,
            cpu_ns,
            gil_flags,
            frames: Vec::new(),
            truncated: false,
            event_loop: None,
        }
    }

    fn flags(holds: bool, requested: bool) -> ThreadGilFlagValues {
        ThreadGilFlagValues {
            holds,
            requested,
            steady: true,
        }
    }

    #[test]
    fn a_handoff_ends_at_a_gil_request_the_flags_show_without_proc() {
        // 3.15: runnable without the GIL and unflagged, then left unread in /proc because
        // its own flag requests the GIL, a few µs of CPU later: it was in a handoff.
        let thread = |class, kernel, cpu_ns, requested| {
            thread_7(class, kernel, Some(cpu_ns), Some(flags(false, requested)))
        };
        let earlier = thread(ThreadState::NativeNogil, KernelState::Running, 1_000, false);
        let later = thread(ThreadState::GilWait, KernelState::NotRead, 6_000, true);
        assert_eq!(handoff_verdict(&earlier, &later, false), Some(true));
        // Native work first: a scheduler tick of CPU or more before the request.
        let later = thread(ThreadState::GilWait, KernelState::NotRead, 9_000_000, true);
        assert_eq!(handoff_verdict(&earlier, &later, false), Some(false));
    }

    #[test]
    fn a_thread_that_dropped_the_gil_nobody_took_since_is_not_in_a_handoff() {
        // Runnable without the GIL, then holding it after a few µs of CPU: a handoff, unless
        // the GIL was free at the first sample and this thread its last holder.
        let sample = |holder: u64, locked: bool, class, cpu_ns| Sample {
            interpreters: vec![InterpreterRecord {
                gil: GilState {
                    locked,
                    ..interpreter(holder).gil
                },
                ..interpreter(holder)
            }],
            threads: vec![thread_7(class, KernelState::Running, Some(cpu_ns), None)],
            target_stopped: false,
            gil_waiters: vec![Some(0)],
            gil_mutex_owners: vec![[0, 0]],
            time: std::time::Instant::now(),
            gil_read_at: std::time::Instant::now(),
            flag_check: None,
        };
        let later = sample(0xa, true, ThreadState::GilHeld, 6_000);
        // Another thread (0xb) held the GIL last: handed over.
        let mut earlier = sample(0xb, false, ThreadState::NativeNogil, 1_000);
        assert!(resolve_handoffs(&mut earlier, &later).is_empty());
        assert_eq!(earlier.threads[0].class.state, ThreadState::GilWait);
        // It held the GIL last, and nobody took it since: queued for a CPU, not for the GIL.
        let mut earlier = sample(0xa, false, ThreadState::NativeNogil, 1_000);
        assert!(resolve_handoffs(&mut earlier, &later).is_empty());
        assert_eq!(earlier.threads[0].class.state, ThreadState::NativeNogil);
    }

    #[test]
    fn a_thread_state_being_created_does_not_count_for_its_creator() {
        // The newest thread state comes first; it still carries its creator's tid 7.
        let state = PythonState {
            interpreters: vec![interpreter(0)],
            threads: vec![thread(0xb, 7, 0), thread(0xa, 7, 3), thread(0xc, 8, 1)],
        };
        assert_eq!(stand_ins(&state), vec![true, false, false]);
    }

    #[test]
    fn of_two_thread_states_of_one_thread_the_gil_holder_counts() {
        let state = PythonState {
            interpreters: vec![interpreter(0xb)],
            threads: vec![thread(0xb, 7, 1), thread(0xa, 7, 3)],
        };
        assert_eq!(stand_ins(&state), vec![false, true]);
    }

    fn stand_ins(state: &PythonState) -> Vec<bool> {
        let mut stand_in = vec![false; 9];
        mark_stand_ins(
            state,
            &state.interpreters,
            &mut FxHashMap::default(),
            &mut stand_in,
        );
        stand_in
    }
}
