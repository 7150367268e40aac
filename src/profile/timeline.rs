//! The timeline behind `trace.json`: per thread, runs of consecutive samples in which the
//! thread stayed in one state and one innermost Python function.
//!
//! A run ends when the thread's state, its idle reason or the code object of its innermost
//! Python frame changes (a new line in the same function does not end it: a hot loop spread
//! over several lines stays one run). The run keeps the stack of its first sample. It ends at
//! the time of the sample that saw the change, or that no longer saw the thread, so one
//! thread's runs never overlap and a GIL hand-off shows as one thread's `gil_held` ending
//! exactly where the next holder's begins.
//!
//! Memory grows with runs (state or function changes), not with samples; stacks are stored
//! once each and runs refer to them by index. At [`MAX_RUNS`] runs the timeline stops: the
//! open runs are closed there and [`Timeline::truncated_at_us`] says when that was.

use crate::classify::Classification;
use crate::model::python::FrameInfo;
use crate::model::timeline::{Run, ThreadTimeline, Timeline, TimelineStack};
use crate::python::code::CodeId;
use crate::python::walker::Frame;
use crate::sample::Sample;
use rustc_hash::FxHashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Runs kept per process before the timeline stops (about 40 bytes each in memory).
pub const MAX_RUNS: usize = 1_000_000;

/// What ends a run when it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RunKey {
    class: Classification,
    innermost: Option<CodeId>,
}

#[derive(Debug, Clone, Copy)]
struct OpenRun {
    key: RunKey,
    stack: u32,
    start_us: u64,
    samples: u64,
    /// Index of the last sample that saw the thread.
    seen: u64,
}

#[derive(Debug, Clone, Copy)]
struct ClosedRun {
    tid: i32,
    key: RunKey,
    stack: u32,
    start_us: u64,
    end_us: u64,
    samples: u64,
}

/// Builds a [`Timeline`] as samples arrive; part of the [`super::Aggregator`].
#[derive(Debug)]
pub struct TimelineBuilder {
    /// The first sample's instant and wall-clock time.
    origin: Option<(Instant, u64)>,
    samples: u64,
    last_us: u64,
    open: FxHashMap<i32, OpenRun>,
    closed: Vec<ClosedRun>,
    /// Interned stacks, innermost first, by whether they were truncated.
    stack_ids: [FxHashMap<Vec<Frame>, u32>; 2],
    stacks: Vec<(Vec<Frame>, bool)>,
    max_runs: usize,
    truncated_at_us: Option<u64>,
}

impl Default for TimelineBuilder {
    fn default() -> Self {
        TimelineBuilder::with_max_runs(MAX_RUNS)
    }
}

impl TimelineBuilder {
    pub fn with_max_runs(max_runs: usize) -> Self {
        TimelineBuilder {
            origin: None,
            samples: 0,
            last_us: 0,
            open: FxHashMap::default(),
            closed: Vec::new(),
            stack_ids: [FxHashMap::default(), FxHashMap::default()],
            stacks: Vec::new(),
            max_runs,
            truncated_at_us: None,
        }
    }

    /// Whether the run cap was reached (later samples are ignored).
    pub fn truncated(&self) -> bool {
        self.truncated_at_us.is_some()
    }

    pub fn add(&mut self, sample: &Sample) {
        if self.truncated() {
            return;
        }
        let at = self.time_of(sample.time);
        self.samples += 1;
        self.last_us = at;
        for thread in &sample.threads {
            self.observe(
                at,
                thread.tid,
                thread.class,
                &thread.frames,
                thread.truncated,
            );
            if self.truncated() {
                return;
            }
        }
        // Every thread of this sample has an open run now: any other one belongs to a thread
        // gone since the previous sample, whose run ends here.
        if self.open.len() > sample.threads.len() {
            let index = self.samples;
            let ended: Vec<i32> = self
                .open
                .iter()
                .filter(|(_, r)| r.seen != index)
                .map(|(&tid, _)| tid)
                .collect();
            for tid in ended {
                self.close(tid, at);
            }
        }
    }

    /// µs since the first sample (samples taken out of order count as simultaneous).
    fn time_of(&mut self, time: Instant) -> u64 {
        let (origin, _) = *self.origin.get_or_insert_with(|| (time, unix_us_at(time)));
        let us = time.saturating_duration_since(origin).as_micros() as u64;
        us.max(self.last_us)
    }

    fn observe(
        &mut self,
        at: u64,
        tid: i32,
        class: Classification,
        frames: &[Frame],
        truncated: bool,
    ) {
        let index = self.samples;
        let key = RunKey {
            class,
            innermost: frames.first().map(|f| f.code),
        };
        if let Some(run) = self.open.get_mut(&tid)
            && run.key == key
        {
            run.samples += 1;
            run.seen = index;
            return;
        }
        self.close(tid, at);
        if self.closed.len() + self.open.len() >= self.max_runs {
            self.truncate(at);
            return;
        }
        let stack = self.intern(frames, truncated);
        self.open.insert(
            tid,
            OpenRun {
                key,
                stack,
                start_us: at,
                samples: 1,
                seen: index,
            },
        );
    }

    fn close(&mut self, tid: i32, at: u64) {
        if let Some(run) = self.open.remove(&tid) {
            self.closed.push(ClosedRun {
                tid,
                key: run.key,
                stack: run.stack,
                start_us: run.start_us,
                end_us: at,
                samples: run.samples,
            });
        }
    }

    fn truncate(&mut self, at: u64) {
        let tids: Vec<i32> = self.open.keys().copied().collect();
        for tid in tids {
            self.close(tid, at);
        }
        self.truncated_at_us = Some(at);
    }

    fn intern(&mut self, frames: &[Frame], truncated: bool) -> u32 {
        let ids = &mut self.stack_ids[usize::from(truncated)];
        if let Some(&id) = ids.get(frames) {
            return id;
        }
        let id = self.stacks.len() as u32;
        ids.insert(frames.to_vec(), id);
        self.stacks.push((frames.to_vec(), truncated));
        id
    }

    /// The timeline so far, frames resolved by `resolve`. Runs still open end one mean
    /// sampling period after the last sample.
    pub fn finish(&self, resolve: impl Fn(&Frame) -> FrameInfo) -> Timeline {
        let period = if self.samples > 1 {
            (self.last_us / (self.samples - 1)).max(1)
        } else {
            1
        };
        let end_open = self.last_us + period;
        let mut by_tid: FxHashMap<i32, Vec<Run>> = FxHashMap::default();
        let open = self.open.iter().map(|(&tid, r)| ClosedRun {
            tid,
            key: r.key,
            stack: r.stack,
            start_us: r.start_us,
            end_us: end_open,
            samples: r.samples,
        });
        for run in self.closed.iter().copied().chain(open) {
            by_tid.entry(run.tid).or_default().push(Run {
                state: run.key.class.state,
                idle_reason: run.key.class.idle_reason,
                stack: run.stack,
                start_us: run.start_us,
                end_us: run.end_us,
                samples: run.samples,
            });
        }
        let mut threads: Vec<ThreadTimeline> = by_tid
            .into_iter()
            .map(|(tid, mut runs)| {
                runs.sort_by_key(|r| r.start_us);
                ThreadTimeline { tid, runs }
            })
            .collect();
        threads.sort_by_key(|t| t.tid);
        Timeline {
            start_unix_us: self.origin.map_or(0, |(_, unix)| unix),
            end_us: self.last_us,
            stacks: self
                .stacks
                .iter()
                .map(|(frames, truncated)| TimelineStack {
                    frames: frames.iter().rev().map(&resolve).collect(),
                    truncated: *truncated,
                })
                .collect(),
            threads,
            truncated_at_us: self.truncated_at_us,
        }
    }
}

/// The wall-clock time of `time`, an instant in the recent past, in µs since the epoch.
fn unix_us_at(time: Instant) -> u64 {
    let now = SystemTime::now();
    let ago = Instant::now().saturating_duration_since(time);
    now.checked_sub(ago)
        .unwrap_or(now)
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::state::ThreadState;
    use crate::sample::ThreadSample;
    use std::time::Duration;

    const HELD: Classification = Classification {
        state: ThreadState::GilHeld,
        idle_reason: None,
    };
    const WAIT: Classification = Classification {
        state: ThreadState::GilWait,
        idle_reason: None,
    };

    fn thread(tid: i32, class: Classification, code: CodeId, line: u32) -> ThreadSample {
        ThreadSample {
            tid,
            tstate: 0,
            ident: 0,
            interpreter: 0,
            class,
            blocked_on_gil: false,
            kernel: crate::process::KernelState::Running,
            cpu_ns: None,
            gil_flags: None,
            frames: vec![Frame { code, line }, Frame { code: 99, line: 1 }],
            truncated: false,
            event_loop: None,
        }
    }

    fn sample(time: Instant, threads: Vec<ThreadSample>) -> Sample {
        Sample {
            interpreters: Vec::new(),
            threads,
            target_stopped: false,
            gil_waiters: Vec::new(),
            gil_mutex_owners: Vec::new(),
            time,
            gil_read_at: time,
            flag_check: None,
        }
    }

    fn resolve(f: &Frame) -> FrameInfo {
        FrameInfo {
            function: format!("f{}", f.code),
            qualname: None,
            file: "x.py".into(),
            line: f.line,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn runs_merge_samples_and_hand_offs_line_up() {
        let t0 = Instant::now();
        let mut b = TimelineBuilder::default();
        // Thread 1 holds for three samples (two lines of one function), then 2 takes over.
        for (i, (a, c)) in [
            (HELD, WAIT),
            (HELD, WAIT),
            (HELD, WAIT),
            (WAIT, HELD),
            (WAIT, HELD),
        ]
        .into_iter()
        .enumerate()
        {
            let line = 10 + i as u32 % 2;
            b.add(&sample(
                t0 + ms(10 * i as u64),
                vec![thread(1, a, 5, line), thread(2, c, 6, 20)],
            ));
        }
        let t = b.finish(resolve);
        assert_eq!(t.end_us, 40_000);
        let one = &t.threads[0].runs;
        let two = &t.threads[1].runs;
        assert_eq!(one.len(), 2);
        assert_eq!(
            (one[0].state, one[0].start_us, one[0].end_us, one[0].samples),
            (ThreadState::GilHeld, 0, 30_000, 3)
        );
        assert_eq!(
            (one[1].state, one[1].end_us),
            (ThreadState::GilWait, 50_000)
        );
        assert_eq!(
            (two[1].state, two[1].start_us),
            (ThreadState::GilHeld, 30_000)
        );
        // Stacks come out outermost first, from the run's first sample.
        let stack = &t.stacks[one[0].stack as usize].frames;
        assert_eq!(
            (
                stack[0].function.as_str(),
                stack[1].function.as_str(),
                stack[1].line
            ),
            ("f99", "f5", 10)
        );
    }

    #[test]
    fn a_new_innermost_function_or_a_gone_thread_ends_a_run() {
        let t0 = Instant::now();
        let mut b = TimelineBuilder::default();
        b.add(&sample(
            t0,
            vec![thread(1, HELD, 5, 1), thread(2, WAIT, 6, 1)],
        ));
        b.add(&sample(t0 + ms(10), vec![thread(1, HELD, 7, 1)]));
        b.add(&sample(t0 + ms(20), vec![thread(1, HELD, 7, 1)]));
        let t = b.finish(resolve);
        assert_eq!(t.threads[0].runs.len(), 2);
        assert_eq!(
            t.threads[0].runs[1].end_us, 30_000,
            "open runs end a period later"
        );
        assert_eq!(t.threads[1].runs[0].end_us, 10_000);
    }

    #[test]
    fn the_run_cap_stops_the_timeline() {
        let t0 = Instant::now();
        let mut b = TimelineBuilder::with_max_runs(3);
        for i in 0..10u64 {
            let class = if i % 2 == 0 { HELD } else { WAIT };
            b.add(&sample(t0 + ms(i), vec![thread(1, class, 5, 1)]));
        }
        assert!(b.truncated());
        let t = b.finish(resolve);
        assert_eq!(t.truncated_at_us, Some(3_000));
        assert_eq!(t.threads[0].runs.len(), 3);
        assert_eq!(t.threads[0].runs[2].end_us, 3_000);
        assert_eq!(t.stacks.len(), 1, "one stack stored once");
    }
}
