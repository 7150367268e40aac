//! Aggregation as samples arrive: counts per thread, state and stack, and the GIL's figures.
//! Memory grows with the number of distinct stacks, never with the number of samples; the
//! [`timeline`] grows with state changes, up to a fixed number of runs.

pub mod event_loop;
pub mod figures;
pub mod timeline;

use crate::classify::Classification;

use crate::mem::RemoteMemory;
use crate::model::event_loop::EventLoopCounts;
use crate::model::recording::{
    FlagCheckCounts, GilCounts, IdleCounts, RECORDING_FORMAT, Recording, StackCount, StateCounts,
    ThreadCounts,
};
use crate::model::state::ThreadState;
use crate::model::timeline::Timeline;
use crate::python::code::CodeTable;
use crate::python::walker::Frame;
use crate::sample::{Sample, Sampler};
use rustc_hash::FxHashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct StackKey {
    tid: i32,
    class: Classification,
    /// Into [`Aggregator::frame_lists`].
    frames: FrameListId,
    truncated: bool,
}

/// A distinct list of frames, numbered in the order first seen.
type FrameListId = u32;

#[derive(Debug, Default, Clone, Copy)]
struct StackTally {
    count: u64,
    waiters: u64,
}

#[derive(Debug, Default)]
struct ThreadTally {
    samples: u64,
    states: StateCounts,
    idle_reasons: IdleCounts,
    previous: Option<ThreadState>,
    wakeups: u64,
    wakeup_waits: u64,
    /// Inside a run of `gil_wait` samples that began right after an idle sample.
    waiting_since_wakeup: bool,
    /// Woke (was idle, then not) and has been runnable without the GIL since: coming back
    /// from the call it was blocked in, often queued for a CPU, before it asks for the GIL.
    returning_from_wakeup: bool,
    wakeup_wait_samples: u64,
}

impl ThreadTally {
    fn observe(&mut self, class: Classification) {
        self.samples += 1;
        self.states.add(class.state, 1);
        if let Some(reason) = class.idle_reason {
            self.idle_reasons.add(reason, 1);
        }
        let woke = self.previous == Some(ThreadState::Idle) && class.state != ThreadState::Idle;
        self.wakeups += u64::from(woke);
        // A wake-up begins with a wait for the GIL if that is what the thread does first,
        // after the native samples of its way back from the call it was blocked in.
        let first_move = woke || self.returning_from_wakeup;
        self.returning_from_wakeup = first_move && class.state == ThreadState::NativeNogil;
        if first_move && class.state == ThreadState::GilWait {
            self.wakeup_waits += 1;
            self.waiting_since_wakeup = true;
        } else if class.state != ThreadState::GilWait {
            self.waiting_since_wakeup = false;
        }
        self.wakeup_wait_samples += u64::from(self.waiting_since_wakeup);
        self.previous = Some(class.state);
    }
}

/// What a [`Recording`] says beyond the counts: the run they were taken in.
#[derive(Debug, Clone, Default)]
pub struct RunInfo {
    pub command: Vec<String>,
    pub duration_s: f64,
    pub requested_rate_hz: f64,
    pub missed_samples: u64,
    pub torn_samples: u64,
    pub stop_reason: String,
    pub cpus: u32,
}

/// Counts for one process, fed one [`Sample`] at a time.
#[derive(Debug, Default)]
pub struct Aggregator {
    threads: FxHashMap<i32, ThreadTally>,
    stacks: FxHashMap<StackKey, StackTally>,
    /// Every distinct frame list (innermost first, as read) once: a sample's stack is
    /// looked up by its frames as they are, without copying them.
    frame_lists: FxHashMap<Vec<Frame>, FrameListId>,
    gil: GilCounts,
    /// Kept only when asked for (`--format trace`): it is the one part that grows with the
    /// recording's length.
    timeline: Option<timeline::TimelineBuilder>,
    /// asyncio event loops, by thread.
    loops: FxHashMap<i32, event_loop::LoopTracker>,
    /// `--stall-ms`; the default when unset.
    stall_ms: Option<f64>,
    /// A second aggregator fed the same samples, taken and restarted at the end of every
    /// `--push` window ([`Aggregator::take_window`]).
    window: Option<Box<Aggregator>>,
    pub samples: u64,
    pub stopped_samples: u64,
    thread_flags: Option<FlagCheckCounts>,
}

impl Aggregator {
    /// An aggregator that also keeps the timeline of state changes (for trace.json).
    pub fn with_timeline() -> Self {
        Aggregator {
            timeline: Some(timeline::TimelineBuilder::default()),
            ..Default::default()
        }
    }

    /// Sets the length above which an event loop's stretch of running code is a stall.
    pub fn set_stall_threshold_ms(&mut self, ms: f64) {
        self.stall_ms = Some(ms);
        if let Some(window) = self.window.as_mut() {
            window.stall_ms = Some(ms);
        }
    }

    /// Also counts every sample into a window, taken with [`Aggregator::take_window`].
    pub fn keep_windows(&mut self) {
        self.window = Some(Box::new(self.empty_window()));
    }

    /// The counts since the window began; a new window begins (with the same stall
    /// threshold; its event loops are tracked afresh).
    pub fn take_window(&mut self) -> Option<Aggregator> {
        let next = self.empty_window();
        self.window
            .as_mut()
            .map(|w| std::mem::replace(&mut **w, next))
    }

    /// An empty aggregator with the same settings (timeline, stall threshold, windows):
    /// for the next program when the process calls exec().
    pub fn empty_like(&self) -> Aggregator {
        let mut fresh = if self.timeline.is_some() {
            Aggregator::with_timeline()
        } else {
            Aggregator::default()
        };
        fresh.stall_ms = self.stall_ms;
        if self.window.is_some() {
            fresh.keep_windows();
        }
        fresh
    }

    fn empty_window(&self) -> Aggregator {
        Aggregator {
            stall_ms: self.stall_ms,
            ..Default::default()
        }
    }

    pub fn add(&mut self, sample: &Sample) {
        if let Some(window) = self.window.as_mut() {
            window.add(sample);
        }
        self.samples += 1;
        self.stopped_samples += u64::from(sample.target_stopped);
        let waiters = sample
            .threads
            .iter()
            .filter(|t| t.class.state == ThreadState::GilWait)
            .count() as u64;
        self.add_gil(sample, waiters);
        self.add_flag_check(sample);
        if let Some(timeline) = self.timeline.as_mut() {
            timeline.add(sample);
        }
        for thread in &sample.threads {
            if let Some(seen) = thread.event_loop.clone() {
                let threshold = self.stall_ms.unwrap_or(event_loop::DEFAULT_STALL_MS);
                self.loops
                    .entry(thread.tid)
                    .or_insert_with(|| event_loop::LoopTracker::new(thread.tid, threshold))
                    .observe(seen, thread.class, &thread.frames);
            }
            let tally = self.threads.entry(thread.tid).or_default();
            tally.observe(thread.class);
            let key = StackKey {
                tid: thread.tid,
                class: thread.class,
                frames: self.frame_list_id(&thread.frames),
                truncated: thread.truncated,
            };
            let stack = self.stacks.entry(key).or_default();
            stack.count += 1;
            if thread.class.state == ThreadState::GilHeld {
                stack.waiters += waiters;
            }
        }
    }

    fn frame_list_id(&mut self, frames: &[Frame]) -> FrameListId {
        if let Some(&id) = self.frame_lists.get(frames) {
            return id;
        }
        let id = self.frame_lists.len() as FrameListId;
        self.frame_lists.insert(frames.to_vec(), id);
        id
    }

    fn add_flag_check(&mut self, sample: &Sample) {
        let Some(check) = sample.flag_check else {
            return;
        };
        let counts = self
            .thread_flags
            .get_or_insert_with(|| FlagCheckCounts::new(check.compared));
        if check.threads == 0 {
            // The flags settled every thread: /proc was read for none, nothing compared.
            return;
        }
        counts.samples += 1;
        counts.samples_agreeing += u64::from(check.agreeing == check.threads);
        counts.thread_samples += u64::from(check.threads);
        counts.thread_samples_agreeing += u64::from(check.agreeing);
    }

    /// The inference checked against the thread flags, where the version has them.
    pub fn thread_flags(&self) -> Option<&FlagCheckCounts> {
        self.thread_flags.as_ref()
    }

    fn add_gil(&mut self, sample: &Sample, waiters: u64) {
        let Some(gil) = sample.main_gil() else { return };
        let held = sample.gil_held();
        let on_cpu = sample
            .threads
            .iter()
            .filter(|t| {
                matches!(
                    t.class.state,
                    ThreadState::GilHeld | ThreadState::NativeNogil
                )
            })
            .count() as u64;
        let g = &mut self.gil;
        g.held += u64::from(held);
        g.contended += u64::from(held && waiters > 0);
        g.waiters += waiters;
        g.on_cpu += on_cpu;
        g.first_switch_number.get_or_insert(gil.switch_number);
        g.last_switch_number = Some(gil.switch_number);
        g.interval_us = gil.interval_us;
        g.modes.add(gil.mode());
    }

    pub fn gil(&self) -> &GilCounts {
        &self.gil
    }

    /// Per-thread counts, with names looked up by kernel tid.
    pub fn thread_counts(&self, name_of: impl Fn(i32) -> Option<String>) -> Vec<ThreadCounts> {
        let mut threads: Vec<ThreadCounts> = self
            .threads
            .iter()
            .map(|(&tid, t)| ThreadCounts {
                tid,
                name: name_of(tid),
                samples: t.samples,
                states: t.states.clone(),
                idle_reasons: t.idle_reasons.clone(),
                wakeups: t.wakeups,
                wakeup_waits: t.wakeup_waits,
                wakeup_wait_samples: t.wakeup_wait_samples,
            })
            .collect();
        threads.sort_by_key(|t| t.tid);
        threads
    }

    /// Every asyncio event loop seen, by thread id, with its blocking code named.
    pub fn event_loops(&self, codes: &CodeTable) -> Vec<EventLoopCounts> {
        let mut loops: Vec<_> = self.loops.values().map(|l| l.finish(codes)).collect();
        loops.sort_by_key(|l| l.tid);
        loops
    }

    /// The counts so far as a [`Recording`] of `run`, with names and frames resolved by
    /// `sampler` (children none: the caller adds them).
    pub fn recording<M: RemoteMemory>(&self, sampler: &Sampler<M>, run: RunInfo) -> Recording {
        let codes = &sampler.walker.codes;
        Recording {
            format: RECORDING_FORMAT.to_string(),
            pid: sampler.pid,
            command: run.command,
            python: sampler.runtime().python_info(self.gil().modes.most_seen()),
            duration_s: run.duration_s,
            requested_rate_hz: run.requested_rate_hz,
            samples: self.samples,
            missed_samples: run.missed_samples,
            torn_samples: run.torn_samples,
            stopped_samples: self.stopped_samples,
            stop_reason: run.stop_reason,
            cpus: run.cpus,
            sampler_cpus: None,
            gil: self.gil().clone(),
            threads: self.thread_counts(|tid| sampler.thread_name(tid).map(str::to_string)),
            stacks: self.stack_counts(codes),
            timeline: self.timeline(codes),
            event_loops: self.event_loops(codes),
            thread_flags: self.thread_flags().cloned(),
            children: Vec::new(),
            execs: Vec::new(),
        }
    }

    /// The runs of states per thread, frames resolved; see [`timeline`].
    pub fn timeline(&self, codes: &CodeTable) -> Timeline {
        match &self.timeline {
            Some(timeline) => timeline.finish(|f| codes.frame_info(f)),
            None => Timeline::default(),
        }
    }

    /// Every distinct stack with its count, frames resolved and ordered outermost first.
    pub fn stack_counts(&self, codes: &CodeTable) -> Vec<StackCount> {
        let mut frame_lists: Vec<&[Frame]> = vec![&[]; self.frame_lists.len()];
        for (frames, &id) in &self.frame_lists {
            frame_lists[id as usize] = frames;
        }
        let mut stacks: Vec<StackCount> = self
            .stacks
            .iter()
            .map(|(key, tally)| StackCount {
                tid: key.tid,
                state: key.class.state,
                idle_reason: key.class.idle_reason,
                frames: frame_lists[key.frames as usize]
                    .iter()
                    .rev()
                    .map(|f| codes.frame_info(f))
                    .collect(),
                truncated: key.truncated,
                waiters: tally.waiters,
                count: tally.count,
            })
            .collect();
        stacks.sort_by(|a, b| (a.tid, a.state, &a.frames).cmp(&(b.tid, b.state, &b.frames)));
        stacks
    }
}
