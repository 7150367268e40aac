//! Stalls of asyncio event loops, found from samples as they arrive.
//!
//! A stall is one stretch of running code, never back in the selector, longer than the
//! threshold (`--stall-ms`). Busy samples in a row do not prove one stretch: a loop busy a
//! quarter of the time in sub-millisecond passes is busy at many samples in a row. What
//! proves it is the loop's own clock: each pass of `_run_once` stamps when it came back
//! from the selector ([`LoopObservation::pass_start_ns`]), and samples with the same stamp
//! are in the same pass. A stretch starts at its stamp and ends before the next sample
//! that is in the selector or in another pass. Where it ends in between is bounded by the
//! CPU the thread used after it was last seen in the stretch (the scheduler's counters):
//! a loop that stalls, then waits in its selector, has used just the rest of the stall.
//!
//! Where the stamp cannot be read (free-threaded builds, versions not known here), busy
//! samples count as one stretch only if the thread never left its CPU between them
//! (schedstat's timeslice count did not move). That is weaker: a loop that never blocks
//! because events are always ready goes back to its selector without leaving the CPU.
//! `method` in the counts says which was used.

use crate::classify::Classification;
use crate::model::event_loop::{
    BlockingCount, BlockingFigure, EventLoopCounts, EventLoopFigures, TaskCount,
};
use crate::model::python::FrameInfo;
use crate::model::recording::{IdleCounts, StateCounts};
use crate::model::state::{IdleReason, ThreadState};
use crate::python::code::CodeTable;
use crate::python::event_loop::{LoopKind, LoopObservation};
use crate::python::walker::Frame;
use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;

/// `--stall-ms` when not given.
pub const DEFAULT_STALL_MS: f64 = 20.0;
/// Stall lengths kept per loop; later stalls are counted but their lengths dropped.
const MAX_STALLS_KEPT: usize = 100_000;
/// Samples of one stretch kept for naming its blocking code.
const MAX_STRETCH_SAMPLES: usize = 10_000;

/// What the stall samples are kept by: the stack, its class and the running task. Stacks
/// and names are shared, so keeping a sample allocates nothing once its stack is known.
type StallKey = (Arc<[Frame]>, Classification, Option<Arc<str>>);

/// Distinct stacks kept for sharing at most; past this the set starts over.
const MAX_STACKS_SHARED: usize = 4096;

/// One stretch of running code, open until the loop is seen out of it.
#[derive(Debug)]
struct Stretch {
    /// When it began (CLOCK_MONOTONIC ns): the pass's stamp, or the first sample in it.
    start_ns: u64,
    /// Identified by the pass stamp (else by timeslices).
    stamped: bool,
    last_seen_ns: u64,
    /// Was the thread on a CPU (or runnable) when last seen in it.
    last_on_cpu: bool,
    /// CPU plus run-queue time at the last sample in it.
    last_cpu_ns: Option<u64>,
    samples: Vec<StallKey>,
}

/// Follows one loop thread across samples.
#[derive(Debug)]
pub struct LoopTracker {
    threshold_ns: u64,
    counts: EventLoopCounts,
    previous: Option<LoopObservation>,
    open: Option<Stretch>,
    /// When the loop was last seen in its selector.
    last_selector_ns: Option<u64>,
    stall_stacks: FxHashMap<StallKey, u64>,
    /// The stacks seen in stretches, shared by the samples that have them.
    stacks: FxHashSet<Arc<[Frame]>>,
    /// A closed stretch's sample list, emptied, for the next stretch.
    spare_samples: Vec<StallKey>,
}

impl LoopTracker {
    pub fn new(tid: i32, threshold_ms: f64) -> Self {
        LoopTracker {
            threshold_ns: (threshold_ms * 1e6) as u64,
            counts: EventLoopCounts {
                tid,
                kind: "asyncio".into(),
                method: "pass_start".into(),
                stamped_stretches: 0,
                unstamped_stretches: 0,
                stall_threshold_ms: threshold_ms,
                samples: 0,
                selector_samples: 0,
                blocked_in_selector: 0,
                blocked_elsewhere: 0,
                wall_ns: 0,
                cpu_ns: 0,
                run_delay_ns: 0,
                stalls: 0,
                stalls_ms: Vec::new(),
                blocking: Vec::new(),
                stalls_measured: true,
            },
            previous: None,
            open: None,
            last_selector_ns: None,
            stall_stacks: FxHashMap::default(),
            stacks: FxHashSet::default(),
            spare_samples: Vec::new(),
        }
    }

    /// `frames`, shared with the earlier samples that had the same stack.
    fn shared_stack(&mut self, frames: &[Frame]) -> Arc<[Frame]> {
        if let Some(known) = self.stacks.get(frames) {
            return known.clone();
        }
        if self.stacks.len() >= MAX_STACKS_SHARED {
            self.stacks.clear();
        }
        let stack: Arc<[Frame]> = Arc::from(frames);
        self.stacks.insert(stack.clone());
        stack
    }

    /// One sample of the thread: what the loop showed, the thread's class and stack.
    pub fn observe(&mut self, seen: LoopObservation, class: Classification, frames: &[Frame]) {
        let c = &mut self.counts;
        c.samples += 1;
        c.selector_samples += u64::from(seen.in_selector);
        let blocked = class.state == ThreadState::Idle;
        c.blocked_in_selector += u64::from(blocked && seen.in_selector);
        c.blocked_elsewhere += u64::from(
            (blocked && !seen.in_selector) || (class.state == ThreadState::GilWait && !blocked),
        );
        if let (Some(before), Some(now)) =
            (self.previous.as_ref().and_then(|p| p.sched), seen.sched)
        {
            let previous_at = self.previous.as_ref().map_or(seen.at_ns, |p| p.at_ns);
            c.wall_ns += seen.at_ns.saturating_sub(previous_at);
            c.cpu_ns += now.cpu_ns.saturating_sub(before.cpu_ns);
            c.run_delay_ns += now.run_delay_ns.saturating_sub(before.run_delay_ns);
        }
        if seen.kind == LoopKind::Uvloop {
            // No stretches: the code running while the loop is busy is kept instead.
            c.kind = seen.kind.name().into();
            c.method = "none".into();
            c.stalls_measured = false;
            if !seen.in_selector && self.stall_stacks.len() < MAX_STRETCH_SAMPLES {
                // The callback's frames only: the loop's caller is not what keeps it busy.
                let callback = &frames[..frames.len().saturating_sub(seen.caller_frames)];
                let key = (self.shared_stack(callback), class, seen.task.clone());
                *self.stall_stacks.entry(key).or_default() += 1;
            }
            self.previous = Some(seen);
            return;
        }
        let on_cpu = matches!(class.state, ThreadState::GilHeld | ThreadState::NativeNogil);
        let busy_time = seen.sched.map(|s| s.cpu_ns + s.run_delay_ns);
        let unreadable_in_stamped =
            seen.pass_start_ns.is_none() && self.open.as_ref().is_some_and(|o| o.stamped);
        // A stamp from before the loop was last seen in its selector belongs to a pass that
        // has ended: the new pass has not stamped its start yet (a selector wrapper's own
        // code runs after the real selector returns, before the stamp).
        let stale = seen
            .pass_start_ns
            .is_some_and(|start| self.last_selector_ns.is_some_and(|s| start <= s));
        if seen.in_selector || stale {
            self.last_selector_ns = Some(seen.at_ns);
            self.close(seen.at_ns, busy_time);
        } else if unreadable_in_stamped {
            // A stamp that could not be read this time (a torn read) tells nothing about
            // the stretch: neither that it goes on nor that it ended.
        } else {
            let same = match (&self.open, seen.pass_start_ns) {
                (Some(open), Some(start)) => open.stamped && open.start_ns == start,
                (Some(open), None) => !open.stamped && self.never_left_cpu(&seen),
                (None, _) => false,
            };
            if !same {
                let upper = seen.pass_start_ns.unwrap_or(seen.at_ns).min(seen.at_ns);
                self.close(upper, busy_time);
                if seen.pass_start_ns.is_some() {
                    self.counts.stamped_stretches += 1;
                } else {
                    self.counts.unstamped_stretches += 1;
                }
                self.open = Some(Stretch {
                    start_ns: seen.pass_start_ns.unwrap_or(seen.at_ns).min(seen.at_ns),
                    stamped: seen.pass_start_ns.is_some(),
                    last_seen_ns: seen.at_ns,
                    last_on_cpu: on_cpu,
                    last_cpu_ns: busy_time,
                    samples: std::mem::take(&mut self.spare_samples),
                });
            }
            let keep = self
                .open
                .as_ref()
                .is_some_and(|open| open.samples.len() < MAX_STRETCH_SAMPLES);
            let stack = keep.then(|| self.shared_stack(frames));
            let open = self.open.as_mut().expect("a stretch is open");
            open.last_seen_ns = seen.at_ns;
            open.last_on_cpu = on_cpu;
            open.last_cpu_ns = busy_time;
            if let Some(stack) = stack {
                open.samples.push((stack, class, seen.task.clone()));
            }
        }
        self.previous = Some(seen);
    }

    /// Both samples on a CPU with no switch in between.
    fn never_left_cpu(&self, seen: &LoopObservation) -> bool {
        match (self.previous.as_ref().and_then(|p| p.sched), seen.sched) {
            (Some(before), Some(now)) => before.timeslices == now.timeslices,
            _ => false,
        }
    }

    /// Ends the open stretch, seen over by `upper_ns` (when the thread was next seen out
    /// of it, or when the next pass began); `busy_now` is the thread's CPU plus run-queue
    /// time then.
    ///
    /// The end lies between the last sample in the stretch and `upper_ns`. If the thread
    /// was runnable then, it stayed runnable (on a CPU, or preempted and queued for one)
    /// until the end, so the end is at most its CPU plus run-queue time since that sample
    /// past it (the kernel adds CPU time up at scheduler ticks, so this bound can be a tick
    /// high). The length taken is the middle of what is left.
    fn close(&mut self, upper_ns: u64, busy_now: Option<u64>) {
        let Some(mut stretch) = self.open.take() else {
            return;
        };
        let mut samples = std::mem::take(&mut stretch.samples);
        self.count_stall(&stretch, upper_ns, busy_now, &mut samples);
        samples.clear();
        self.spare_samples = samples;
    }

    /// Counts the stretch as a stall if it lasted long enough, with its samples.
    fn count_stall(
        &mut self,
        stretch: &Stretch,
        upper_ns: u64,
        busy_now: Option<u64>,
        samples: &mut Vec<StallKey>,
    ) {
        let upper_ns = upper_ns.max(stretch.last_seen_ns);
        let gap = upper_ns - stretch.last_seen_ns;
        let after = match (stretch.last_on_cpu, stretch.last_cpu_ns, busy_now) {
            (true, Some(before), Some(now)) => now.saturating_sub(before).min(gap) / 2,
            // Blocked (sleep, I/O) or unknown: the middle of the gap.
            _ => gap / 2,
        };
        let length_ns = (stretch.last_seen_ns + after).saturating_sub(stretch.start_ns);
        if length_ns <= self.threshold_ns {
            return;
        }
        let c = &mut self.counts;
        c.stalls += 1;
        if c.stalls_ms.len() < MAX_STALLS_KEPT {
            c.stalls_ms.push(length_ns as f64 / 1e6);
        }
        for key in samples.drain(..) {
            *self.stall_stacks.entry(key).or_default() += 1;
        }
    }

    /// The counts, with the open stretch ended at the last sample and the blocking code
    /// resolved to names.
    pub fn finish(&self, codes: &CodeTable) -> EventLoopCounts {
        let mut counts = self.counts.clone();
        if counts.stalls_measured && counts.unstamped_stretches > counts.stamped_stretches {
            counts.method = "timeslices".into();
        }
        let mut tracker_stalls = self.stall_stacks.clone();
        if let Some(open) = &self.open {
            let length_ns = open.last_seen_ns.saturating_sub(open.start_ns);
            if length_ns > self.threshold_ns {
                counts.stalls += 1;
                counts.stalls_ms.push(length_ns as f64 / 1e6);
                for key in &open.samples {
                    *tracker_stalls.entry(key.clone()).or_default() += 1;
                }
            }
        }
        let mut by_frame: FxHashMap<FrameInfo, BlockingCount> = FxHashMap::default();
        let mut tasks: FxHashMap<FrameInfo, FxHashMap<Arc<str>, u64>> = FxHashMap::default();
        for ((frames, class, task), n) in tracker_stalls {
            let frame = blocking_frame(codes, &frames);
            if let Some(task) = task {
                *tasks
                    .entry(frame.clone())
                    .or_default()
                    .entry(task)
                    .or_default() += n;
            }
            let entry = by_frame
                .entry(frame.clone())
                .or_insert_with(|| BlockingCount {
                    frame,
                    states: StateCounts::default(),
                    idle_reasons: IdleCounts::default(),
                    samples: 0,
                    tasks: Vec::new(),
                });
            entry.samples += n;
            entry.states.add(class.state, n);
            if let Some(reason) = class.idle_reason {
                entry.idle_reasons.add(reason, n);
            }
        }
        for (frame, named) in tasks {
            if let Some(entry) = by_frame.get_mut(&frame) {
                entry.tasks = named
                    .into_iter()
                    .map(|(name, samples)| TaskCount {
                        name: name.to_string(),
                        samples,
                    })
                    .collect();
                entry
                    .tasks
                    .sort_by(|a, b| b.samples.cmp(&a.samples).then(a.name.cmp(&b.name)));
                entry.tasks.truncate(MAX_TASKS);
            }
        }
        counts.blocking = by_frame.into_values().collect();
        counts
            .blocking
            .sort_by(|a, b| b.samples.cmp(&a.samples).then(a.frame.cmp(&b.frame)));
        counts
    }
}

/// The innermost frame of the code that blocks: the first not in the standard library,
/// else the first not in asyncio or selectors, else the innermost.
fn blocking_frame(codes: &CodeTable, frames: &[Frame]) -> FrameInfo {
    let infos: Vec<FrameInfo> = frames.iter().map(|f| codes.frame_info(f)).collect();
    infos
        .iter()
        .find(|f| !is_stdlib(&f.file))
        .or_else(|| infos.iter().find(|f| !is_loop_machinery(&f.file)))
        .or(infos.first())
        .cloned()
        .unwrap_or_else(|| FrameInfo {
            function: "(no Python frame)".into(),
            qualname: None,
            file: String::new(),
            line: 0,
        })
}

/// A file of the standard library (`.../lib/python3.X/...`, not site- or dist-packages).
pub fn is_stdlib(file: &str) -> bool {
    let file = file.replace('\\', "/");
    file.contains("/lib/python3") && !file.contains("-packages/") || file.starts_with("<frozen")
}

fn is_loop_machinery(file: &str) -> bool {
    let file = file.replace('\\', "/");
    file.contains("/asyncio/") || file.ends_with("/selectors.py")
}

/// Functions listed in `blocking`.
const MAX_BLOCKING: usize = 5;
/// Tasks kept per blocking function in recording.json.
const MAX_TASKS: usize = 20;

impl EventLoopFigures {
    /// `duration_s` is the recording's, used when the loop's own time was not measured.
    pub fn new(c: &EventLoopCounts, duration_s: f64) -> Self {
        let seconds = if c.wall_ns > 0 {
            c.wall_ns as f64 / 1e9
        } else {
            duration_s
        };
        let mut sorted = c.stalls_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let p95 = sorted
            .get(((sorted.len() as f64 * 0.95).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0);
        let stalled_ms: f64 = c.stalls_ms.iter().sum();
        EventLoopFigures {
            kind: c.kind.clone(),
            busy: busy(c),
            stall_threshold_ms: c.stall_threshold_ms,
            stalls: c.stalls,
            stalls_per_s: if seconds > 0.0 {
                c.stalls as f64 / seconds
            } else {
                0.0
            },
            longest_stall_ms: sorted.last().copied().unwrap_or(0.0),
            p95_stall_ms: p95,
            blocked: if seconds > 0.0 {
                (stalled_ms / 1000.0 / seconds).min(1.0)
            } else {
                0.0
            },
            method: c.method.clone(),
            blocking: blocking_figures(&c.blocking),
            stalls_measured: c.stalls_measured,
        }
    }
}

/// 1 - time blocked in the selector / wall time. The kernel's counters give the time the
/// thread was blocked (wall - on a CPU - waiting for one); the samples say which share of
/// the blocked samples were in the selector. A loop woken by an event but still waiting
/// for a CPU counts as busy. Without the counters: the share of samples out of the selector.
fn busy(c: &EventLoopCounts) -> f64 {
    if c.wall_ns == 0 {
        return 1.0 - super::figures::ratio(c.selector_samples, c.samples);
    }
    let blocked_ns = c.wall_ns.saturating_sub(c.cpu_ns + c.run_delay_ns) as f64;
    let in_selector = super::figures::ratio(
        c.blocked_in_selector,
        c.blocked_in_selector + c.blocked_elsewhere,
    );
    (1.0 - blocked_ns * in_selector / c.wall_ns as f64).clamp(0.0, 1.0)
}

fn blocking_figures(counts: &[BlockingCount]) -> Vec<BlockingFigure> {
    let total: u64 = counts.iter().map(|b| b.samples).sum();
    // One entry per function: its lines summed, the line seen most kept.
    let mut by_function: Vec<(String, String, Vec<&BlockingCount>)> = Vec::new();
    for b in counts {
        let name = b.frame.qualname.clone().unwrap_or(b.frame.function.clone());
        match by_function
            .iter_mut()
            .find(|(n, f, _)| *n == name && *f == b.frame.file)
        {
            Some((_, _, list)) => list.push(b),
            None => by_function.push((name, b.frame.file.clone(), vec![b])),
        }
    }
    let mut figures: Vec<BlockingFigure> = by_function
        .into_iter()
        .map(|(function, file, list)| {
            let samples: u64 = list.iter().map(|b| b.samples).sum();
            let line = list
                .iter()
                .max_by_key(|b| b.samples)
                .map_or(0, |b| b.frame.line);
            let mut states = StateCounts::default();
            let mut reasons = IdleCounts::default();
            for b in &list {
                for s in [
                    ThreadState::GilHeld,
                    ThreadState::GilWait,
                    ThreadState::NativeNogil,
                    ThreadState::Idle,
                ] {
                    states.add(s, b.states.get(s));
                }
                for r in IdleReason::ALL {
                    reasons.add(r, b.idle_reasons.get(r));
                }
            }
            BlockingFigure {
                function,
                file,
                line,
                fraction: super::figures::ratio(samples, total),
                cause: cause(&states, &reasons).into(),
                task: main_task(&list),
            }
        })
        .collect();
    figures.sort_by(|a, b| {
        b.fraction
            .total_cmp(&a.fraction)
            .then_with(|| a.function.cmp(&b.function))
    });
    figures.truncate(MAX_BLOCKING);
    figures
}

/// The task that ran a function's stall samples most (summed over its lines).
fn main_task(list: &[&BlockingCount]) -> Option<String> {
    let mut by_name: FxHashMap<&str, u64> = FxHashMap::default();
    for t in list.iter().flat_map(|b| &b.tasks) {
        *by_name.entry(&t.name).or_default() += t.samples;
    }
    by_name
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
        .map(|(name, _)| name.to_string())
}

/// What a function mostly did during stalls.
fn cause(states: &StateCounts, reasons: &IdleCounts) -> &'static str {
    let most = [
        (states.gil_held, "python"),
        (states.native_nogil, "native"),
        (states.gil_wait, "gil_wait"),
        (states.idle, "idle"),
    ]
    .into_iter()
    .max_by_key(|(n, _)| *n)
    .map_or("python", |(_, c)| c);
    if most != "idle" {
        return most;
    }
    [
        (reasons.sleep, "sleep"),
        (reasons.io, "io"),
        (reasons.lock, "lock"),
        (reasons.other, "other"),
    ]
    .into_iter()
    .max_by_key(|(n, _)| *n)
    .map_or("other", |(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::state::IdleReason;
    use crate::process::kernel::SchedCounters;

    const MS: u64 = 1_000_000;
    const HELD: Classification = Classification {
        state: ThreadState::GilHeld,
        idle_reason: None,
    };
    const WAITING: Classification = Classification {
        state: ThreadState::Idle,
        idle_reason: Some(IdleReason::Io),
    };

    /// A loop sampled every 10 ms: `passes` gives, per sample, None for "in the
    /// selector" or the pass stamp (ms), with the CPU time used so far (ms).
    fn run(passes: &[(Option<u64>, u64)]) -> EventLoopCounts {
        run_in(passes, LoopKind::Asyncio, |_| None)
    }

    /// [`run`] on a loop of `kind`, the task of sample `i` named by `task(i)`.
    fn run_in(
        passes: &[(Option<u64>, u64)],
        kind: LoopKind,
        task: impl Fn(usize) -> Option<&'static str>,
    ) -> EventLoopCounts {
        let mut tracker = LoopTracker::new(1, DEFAULT_STALL_MS);
        for (i, &(pass, cpu_ms)) in passes.iter().enumerate() {
            let seen = LoopObservation {
                in_selector: pass.is_none(),
                pass_start_ns: pass.map(|ms| ms * MS),
                at_ns: 1000 * MS + i as u64 * 10 * MS,
                sched: Some(SchedCounters {
                    cpu_ns: cpu_ms * MS,
                    run_delay_ns: 0,
                    timeslices: i as u64,
                }),
                task: task(i).map(Arc::from),
                kind,
                caller_frames: 0,
            };
            let class = if pass.is_some() { HELD } else { WAITING };
            tracker.observe(seen, class, &[]);
        }
        tracker.finish(&CodeTable::default())
    }

    #[test]
    fn busy_samples_in_different_passes_are_no_stall() {
        // Busy at every sample, each time in a pass that began 0.5 ms before it.
        let passes: Vec<(Option<u64>, u64)> =
            (0..50).map(|i| (Some(1000 + i * 10 - 1), i * 3)).collect();
        let counts = run(&passes);
        assert_eq!(counts.stalls, 0, "{counts:?}");
    }

    #[test]
    fn samples_in_one_pass_make_one_stall_as_long_as_it_ran() {
        // A pass begins at 1002 ms and is seen at 1010, 1020, 1030, 1040; at 1050 the loop
        // is in its selector, having used 3 ms of CPU after 1040: it ended between 1040 and
        // 1043, so it lasted 38 to 41 ms, taken as 39.5.
        let passes = [
            (None, 0),
            (Some(1002), 8),
            (Some(1002), 18),
            (Some(1002), 28),
            (Some(1002), 38),
            (None, 41),
            (None, 41),
        ];
        let counts = run(&passes);
        assert_eq!(counts.stalls, 1);
        assert!((counts.stalls_ms[0] - 39.5).abs() < 1e-6, "{counts:?}");
    }

    #[test]
    fn a_pass_followed_at_once_by_another_ends_before_it() {
        // Pass A from 1002 to before 1045 (the next pass's stamp).
        let passes = [
            (None, 0),
            (Some(1002), 8),
            (Some(1002), 18),
            (Some(1002), 28),
            (Some(1002), 38),
            (Some(1045), 48),
            (None, 50),
        ];
        let counts = run(&passes);
        assert_eq!(counts.stalls, 1);
        assert!(counts.stalls_ms[0] <= 43.0 && counts.stalls_ms[0] >= 38.0);
    }

    #[test]
    fn a_stamp_older_than_the_selector_visit_is_no_stretch() {
        // A pass stamped 1002 is seen at 1010, then the loop waits in its selector; samples
        // at 1030-1060 still read 1002 (a selector wrapper's code, before the new stamp).
        let passes = [
            (None, 0),
            (Some(1002), 5),
            (None, 6),
            (None, 6),
            (Some(1002), 7),
            (Some(1002), 8),
            (Some(1002), 9),
            (Some(1002), 10),
            (None, 11),
        ];
        let counts = run(&passes);
        assert_eq!(counts.stalls, 0, "{counts:?}");
    }

    /// One 40 ms stall: three samples in task "client-3", one in "client-4" (a task switch
    /// read between the frames and the task).
    const STALL: [(Option<u64>, u64); 7] = [
        (None, 0),
        (Some(1002), 8),
        (Some(1002), 18),
        (Some(1002), 28),
        (Some(1002), 38),
        (None, 41),
        (None, 41),
    ];

    #[test]
    fn the_blocking_code_is_named_with_the_task_that_ran_it_most() {
        let counts = run_in(&STALL, LoopKind::Asyncio, |i| match i {
            4 => Some("client-4"),
            _ => Some("client-3"),
        });
        assert_eq!(counts.stalls, 1);
        let tasks = &counts.blocking[0].tasks;
        assert_eq!(tasks[0].name, "client-3");
        assert_eq!((tasks[0].samples, tasks[1].samples), (3, 1));
        let figures = EventLoopFigures::new(&counts, 1.0);
        assert_eq!(figures.blocking[0].task.as_deref(), Some("client-3"));
        let json = serde_json::to_value(&figures).unwrap();
        assert_eq!(json["blocking"][0]["task"], "client-3");
        assert_eq!(json["stalls"], 1);
    }

    #[test]
    fn uvloop_stalls_are_not_guessed_from_busy_samples() {
        // The same samples on uvloop: four busy samples in a row are no proof of a stall.
        let counts = run_in(&STALL, LoopKind::Uvloop, |_| Some("client-3"));
        assert_eq!(counts.kind, "uvloop");
        assert!(!counts.stalls_measured);
        assert_eq!(counts.stalls, 0);
        assert_eq!(
            counts.blocking[0].samples, 4,
            "the busy samples name the code"
        );
        let figures = EventLoopFigures::new(&counts, 1.0);
        let json = serde_json::to_value(&figures).unwrap();
        for key in [
            "stalls",
            "stalls_per_s",
            "longest_stall_ms",
            "p95_stall_ms",
            "blocked",
        ] {
            assert!(json[key].is_null(), "{key}: {}", json[key]);
        }
        assert_eq!(json["kind"], "uvloop");
        assert_eq!(json["blocking"][0]["task"], "client-3");
        assert!(figures.describe().contains("stalls not measured"));
    }
}
