//! When the recorded process calls exec(): find the new program's interpreter (it may be
//! another Python version, may still be loading, or may not be Python at all), and fold
//! the recordings of the programs one process ran into one [`Recording`].
//!
//! Each program is sampled by a sampler and an aggregator of its own: code objects, thread
//! names and frame caches of one image never name what another image runs. A kernel tid is
//! one thread across the exec (the thread that calls exec() lives on as the main thread, with
//! the process id as its tid), so the counts of a tid add up over programs; its stacks stay
//! apart because their frames name different code.

use crate::error::{OneLine, exit_code, exit_code_of};
use crate::model::recording::{ExecCounts, Recording, StackCount, ThreadCounts};
use crate::model::timeline::Timeline;
use crate::sample::Sampler;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a new image that is not Python (no libpython mapped, no `_PyRuntime` in the
/// executable) is watched before gilscope concludes it is not: the loader maps libpython
/// within milliseconds of the exec; this leaves room for a loaded machine.
const NOT_PYTHON_AFTER: Duration = Duration::from_secs(2);
/// How long a Python image may take to start its interpreter (as for a launched program).
const START_WITHIN: Duration = Duration::from_secs(10);
const RETRY_AT_MOST: Duration = Duration::from_millis(50);

/// Between an exec and the new program's interpreter being attached.
#[derive(Debug)]
pub(super) struct Awaiting {
    since: Instant,
    next_try: Instant,
    wait: Duration,
    /// Why the last attempt did not attach.
    last_error: String,
}

/// What one look at the new image found.
pub(super) enum Attempt {
    Attached(Box<Sampler>),
    /// Not yet: try again on a later tick.
    Waiting,
    /// The new program cannot be sampled: why.
    GaveUp(String),
}

impl Awaiting {
    pub fn new(since: Instant) -> Self {
        Awaiting {
            since,
            next_try: since,
            wait: Duration::from_millis(1),
            last_error: "its interpreter was not found yet".to_string(),
        }
    }

    /// Tries to attach to `pid`'s new image, backing off between tries (a few per tick at
    /// most: the recording's other processes go on being sampled meanwhile).
    pub fn attempt(&mut self, pid: i32) -> Attempt {
        let now = Instant::now();
        if now < self.next_try {
            return Attempt::Waiting;
        }
        self.next_try = now + self.wait;
        self.wait = (self.wait * 2).min(RETRY_AT_MOST);
        let mut not_python = false;
        match Sampler::attach(pid) {
            Ok(mut target) => {
                if target.interpreter_started() {
                    return Attempt::Attached(Box::new(target));
                }
                self.last_error = "its Python interpreter did not start".to_string();
            }
            Err(e) => {
                let why = OneLine(&e).to_string();
                match exit_code_of(&e) {
                    exit_code::UNSUPPORTED_VERSION | exit_code::PERMISSION_DENIED => {
                        return Attempt::GaveUp(why);
                    }
                    exit_code::NOT_PYTHON => not_python = true,
                    _ => {}
                }
                self.last_error = why;
            }
        }
        let waited = now.duration_since(self.since);
        if (not_python && waited >= NOT_PYTHON_AFTER) || waited >= START_WITHIN {
            Attempt::GaveUp(self.last_error.clone())
        } else {
            Attempt::Waiting
        }
    }

    /// Why the new program was not attached, when the recording ends first.
    pub fn unfinished(&self) -> String {
        format!(
            "the recording ended before the new program could be sampled ({})",
            self.last_error
        )
    }
}

/// The stop reason's account of the execs: one clause each.
pub(super) fn describe(execs: &[ExecCounts]) -> String {
    execs
        .iter()
        .map(|e| match &e.python {
            Some(version) => format!(
                "at {:.1} s it called exec() and gilscope followed it into {} (Python {version})",
                e.at_s, e.program
            ),
            None => format!(
                "at {:.1} s it called exec() into {}, which was not sampled: {}",
                e.at_s, e.program, e.note
            ),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Adds the recording of a later program of the same process to `into`: sampled time,
/// sample counts and GIL counts add up, threads are matched by kernel tid, identical stacks
/// are counted once, the later timeline follows the earlier one. `into` keeps its `python`
/// (the first interpreter) and its `command`.
pub(super) fn append_program(into: &mut Recording, later: Recording) {
    into.duration_s += later.duration_s;
    into.samples += later.samples;
    into.missed_samples += later.missed_samples;
    into.torn_samples += later.torn_samples;
    into.stopped_samples += later.stopped_samples;
    append_gil(into, &later);
    into.threads = merge_threads(std::mem::take(&mut into.threads), later.threads);
    into.stacks = merge_stacks(std::mem::take(&mut into.stacks), later.stacks);
    append_timeline(&mut into.timeline, later.timeline);
    into.event_loops.extend(later.event_loops);
    into.thread_flags = match (into.thread_flags.take(), later.thread_flags) {
        (Some(mut a), Some(b)) if a.compared == b.compared => {
            a.samples += b.samples;
            a.samples_agreeing += b.samples_agreeing;
            a.thread_samples += b.thread_samples;
            a.thread_samples_agreeing += b.thread_samples_agreeing;
            Some(a)
        }
        (kept, _) => kept,
    };
}

/// Switch numbers of two interpreters cannot be compared: the hand-offs of each program
/// are added on top of the first program's first value.
fn append_gil(into: &mut Recording, later: &Recording) {
    let switches = |g: &crate::model::recording::GilCounts| match (
        g.first_switch_number,
        g.last_switch_number,
    ) {
        (Some(first), Some(last)) => last.saturating_sub(first),
        _ => 0,
    };
    let (a, b) = (&mut into.gil, &later.gil);
    let total = switches(a) + switches(b);
    a.first_switch_number = a.first_switch_number.or(b.first_switch_number);
    a.last_switch_number = a.first_switch_number.map(|first| first + total);
    a.held += b.held;
    a.contended += b.contended;
    a.waiters += b.waiters;
    a.on_cpu += b.on_cpu;
    if a.interval_us == 0 {
        a.interval_us = b.interval_us;
    }
    a.modes.enabled += b.modes.enabled;
    a.modes.disabled += b.modes.disabled;
    a.modes.transient += b.modes.transient;
}

/// One entry per tid; a tid seen in both keeps the later program's name when it has one.
fn merge_threads(earlier: Vec<ThreadCounts>, later: Vec<ThreadCounts>) -> Vec<ThreadCounts> {
    let mut by_tid: HashMap<i32, ThreadCounts> = earlier.into_iter().map(|t| (t.tid, t)).collect();
    for t in later {
        match by_tid.get_mut(&t.tid) {
            None => {
                by_tid.insert(t.tid, t);
            }
            Some(e) => {
                e.name = t.name.or(e.name.take());
                e.samples += t.samples;
                for state in crate::model::state::ThreadState::ALL {
                    e.states.add(state, t.states.get(state));
                }
                for reason in crate::model::state::IdleReason::ALL {
                    e.idle_reasons.add(reason, t.idle_reasons.get(reason));
                }
                e.wakeups += t.wakeups;
                e.wakeup_waits += t.wakeup_waits;
                e.wakeup_wait_samples += t.wakeup_wait_samples;
            }
        }
    }
    let mut threads: Vec<ThreadCounts> = by_tid.into_values().collect();
    threads.sort_by_key(|t| t.tid);
    threads
}

/// Stacks with the same thread, state and frames (a program that exec'd itself) add up.
fn merge_stacks(earlier: Vec<StackCount>, later: Vec<StackCount>) -> Vec<StackCount> {
    let mut stacks: Vec<StackCount> = Vec::with_capacity(earlier.len() + later.len());
    let mut index = HashMap::new();
    for stack in earlier.into_iter().chain(later) {
        let key = (
            stack.tid,
            stack.state,
            stack.idle_reason,
            stack.frames.clone(),
            stack.truncated,
        );
        match index.get(&key) {
            Some(&i) => {
                let kept: &mut StackCount = &mut stacks[i];
                kept.count += stack.count;
                kept.waiters += stack.waiters;
            }
            None => {
                index.insert(key, stacks.len());
                stacks.push(stack);
            }
        }
    }
    stacks.sort_by(|a, b| (a.tid, a.state, &a.frames).cmp(&(b.tid, b.state, &b.frames)));
    stacks
}

/// The later timeline shifted to the earlier one's clock, its stacks renumbered.
fn append_timeline(into: &mut Timeline, later: Timeline) {
    if later.threads.is_empty() && later.stacks.is_empty() {
        return;
    }
    if into.threads.is_empty() && into.stacks.is_empty() {
        *into = later;
        return;
    }
    let shift = later.start_unix_us.saturating_sub(into.start_unix_us);
    let base = into.stacks.len() as u32;
    into.stacks.extend(later.stacks);
    for mut thread in later.threads {
        for run in &mut thread.runs {
            run.start_us += shift;
            run.end_us += shift;
            run.stack += base;
        }
        match into.threads.iter_mut().find(|t| t.tid == thread.tid) {
            Some(kept) => kept.runs.extend(thread.runs),
            None => into.threads.push(thread),
        }
    }
    into.end_us = into.end_us.max(later.end_us + shift);
    if into.truncated_at_us.is_none() {
        into.truncated_at_us = later.truncated_at_us.map(|t| t + shift);
    }
}

#[cfg(test)]
mod tests;
