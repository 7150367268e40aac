//! Fractions and classes computed from a [`Recording`]'s counts: what reports show and what
//! recommendations and CI conditions are judged on.

use crate::model::event_loop::EventLoopFigures;
use crate::model::recording::{Recording, StackCount, ThreadCounts};
use crate::model::report::{
    GilFigures, GroupFigures, IdleFractions, StateFractions, ThreadClass, ThreadFigures,
    ThreadFlagFigures, TopFrame,
};
use crate::model::state::{FlagComparison, IdleReason, ThreadState};
use std::collections::HashMap;

/// A thread idle in at least this share of its samples is `io_bound` or `idle`.
pub const IDLE_THRESHOLD: f64 = 0.5;
/// A busy thread waiting for the GIL in at least this share of its busy samples is `gil_bound`.
pub const GIL_BOUND_WAIT_SHARE: f64 = 0.3;
/// A busy thread native in at least this share of its busy samples is `native`.
pub const NATIVE_SHARE: f64 = 0.5;

pub fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

pub fn gil_figures(rec: &Recording) -> GilFigures {
    let g = &rec.gil;
    let switches = match (g.first_switch_number, g.last_switch_number) {
        (Some(first), Some(last)) => last.saturating_sub(first),
        _ => 0,
    };
    GilFigures {
        held: ratio(g.held, rec.samples),
        contended: ratio(g.contended, rec.samples),
        mean_waiters: ratio(g.waiters, rec.samples),
        switches_per_s: if rec.duration_s > 0.0 {
            switches as f64 / rec.duration_s
        } else {
            0.0
        },
        parallelism: ratio(g.on_cpu, rec.samples),
        interval_us: g.interval_us,
        source: match &rec.thread_flags {
            Some(f) if f.compared == FlagComparison::State => "thread_flags",
            _ => "gil_struct",
        },
        thread_flags: rec.thread_flags.as_ref().map(|f| ThreadFlagFigures {
            compared: f.compared,
            samples: f.samples,
            sample_agreement: ratio(f.samples_agreeing, f.samples),
            thread_agreement: ratio(f.thread_samples_agreeing, f.thread_samples),
        }),
    }
}

pub fn thread_figures(rec: &Recording) -> Vec<ThreadFigures> {
    let top = top_frames_by_thread(&rec.stacks);
    let entries = entry_functions(&rec.stacks);
    let period_ms = if rec.requested_rate_hz > 0.0 {
        1000.0 / rec.requested_rate_hz
    } else {
        0.0
    };
    let threads = rec
        .threads
        .iter()
        .map(|t| ThreadFigures {
            tid: t.tid,
            name: t.name.clone(),
            group: group_of(t.name.as_deref(), entries.get(&t.tid).map(String::as_str)),
            samples: t.samples,
            class: classify_thread(t),
            states: state_fractions(t),
            idle_reasons: idle_fractions(t),
            top_frames: top
                .get(&t.tid)
                .map(|frames| top_frames(frames, t.samples))
                .unwrap_or_default(),
            wakeups: t.wakeups,
            wakeups_waiting_for_gil: ratio(t.wakeup_waits, t.wakeups),
            mean_wait_per_wakeup_ms: ratio(t.wakeup_wait_samples, t.wakeups) * period_ms,
            event_loop: rec
                .event_loops
                .iter()
                .find(|l| l.tid == t.tid)
                .map(|l| EventLoopFigures::new(l, rec.duration_s)),
        })
        .collect();
    regroup_brief_threads(threads, rec.duration_s, period_ms)
}

/// The group of threads seen too briefly to be named or placed: one short-lived thread
/// alone in its group.
pub const OTHER_SHORT_LIVED: &str = "(other short-lived threads)";

/// Threads that came and went between name reads join the group their job already has:
/// an unnamed thread started with `f` joins `Thread-* (f)` where that group exists. A
/// short-lived thread still alone in its group joins [`OTHER_SHORT_LIVED`], and so do the
/// threads of an unnamed group (`(unnamed: f)`) seen for less than a short-lived thread's
/// time all together: their entry was guessed from stacks read part-way as they ended, so
/// a thread-per-request server under load is a few rows, not one per stray request. So do
/// those of a `Thread-*` group (a default name, whose job before 3.10 is guessed the same
/// way) that is as brief, each of its threads seen in one sample.
fn regroup_brief_threads(
    mut threads: Vec<ThreadFigures>,
    duration_s: f64,
    period_ms: f64,
) -> Vec<ThreadFigures> {
    let names: std::collections::HashSet<String> =
        threads.iter().map(|t| t.group.clone()).collect();
    for t in &mut threads {
        if let Some(entry) = t
            .group
            .strip_prefix("(unnamed: ")
            .and_then(|g| g.strip_suffix(')'))
        {
            let generic = format!("Thread-* ({entry})");
            if names.contains(&generic) {
                t.group = generic;
            }
        }
    }
    let mut sizes: HashMap<String, (usize, u64)> = HashMap::new();
    for t in &threads {
        let size = sizes.entry(t.group.clone()).or_default();
        size.0 += 1;
        size.1 += t.samples;
    }
    let brief_ms = SHORT_LIVED * duration_s * 1000.0;
    for t in &mut threads {
        let (members, samples) = sizes[&t.group];
        let alone = members == 1 && (t.samples as f64) * period_ms < brief_ms;
        let brief = (samples as f64) * period_ms < brief_ms;
        let stray = brief
            && (t.group.starts_with("(unnamed: ")
                || (t.group.starts_with("Thread-*") && samples as usize <= members));
        if alone || stray {
            t.group = OTHER_SHORT_LIVED.to_string();
        }
    }
    threads
}

fn state_fractions(t: &ThreadCounts) -> StateFractions {
    let f = |s| ratio(t.states.get(s), t.samples);
    StateFractions {
        gil_held: f(ThreadState::GilHeld),
        gil_wait: f(ThreadState::GilWait),
        native_nogil: f(ThreadState::NativeNogil),
        idle: f(ThreadState::Idle),
    }
}

fn idle_fractions(t: &ThreadCounts) -> IdleFractions {
    let f = |r| ratio(t.idle_reasons.get(r), t.samples);
    IdleFractions {
        sleep: f(IdleReason::Sleep),
        io: f(IdleReason::Io),
        lock: f(IdleReason::Lock),
        other: f(IdleReason::Other),
    }
}

/// The class rules, in order: mostly idle -> `io_bound` (I/O or sleep) or `idle`; otherwise
/// by what the busy samples were: waiting -> `gil_bound`, native -> `native`, else `cpu_bound`.
pub fn classify_thread(t: &ThreadCounts) -> ThreadClass {
    let s = &t.states;
    if ratio(s.idle, t.samples) >= IDLE_THRESHOLD {
        let io_or_sleep = t.idle_reasons.io + t.idle_reasons.sleep;
        return if ratio(io_or_sleep, s.idle) >= 0.5 {
            ThreadClass::IoBound
        } else {
            ThreadClass::Idle
        };
    }
    let busy = s.gil_held + s.gil_wait + s.native_nogil;
    if ratio(s.gil_wait, busy) >= GIL_BOUND_WAIT_SHARE {
        ThreadClass::GilBound
    } else if ratio(s.native_nogil, busy) >= NATIVE_SHARE {
        ThreadClass::Native
    } else {
        ThreadClass::CpuBound
    }
}

// ---------------------------------------------------------------------------------------
// Thread groups

/// A group is shown as one row when its threads lived on average less than this share of
/// the recording (they come and go), or when it has more than [`MANY_THREADS`] threads.
pub const SHORT_LIVED: f64 = 0.5;
pub const MANY_THREADS: u64 = 16;

/// The group of a thread: its name with each run of digits replaced by `*`
/// (`Thread-12 (process_request_thread)` -> `Thread-* (process_request_thread)`,
/// `req-7` -> `req-*`). A name that then says nothing of the job (the default `Thread-*`
/// of Python 3.9 and older, or no name) is completed with the thread's entry function, the
/// outermost frame outside `threading`: `Thread-* (handle)`, `(unnamed: handle)`.
pub fn group_of(name: Option<&str>, entry: Option<&str>) -> String {
    let Some(name) = name else {
        return match entry {
            Some(entry) => format!("(unnamed: {entry})"),
            None => "(unnamed)".to_string(),
        };
    };
    let mut group = String::with_capacity(name.len());
    let mut in_digits = false;
    for c in name.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                group.push('*');
            }
            in_digits = true;
        } else {
            group.push(c);
            in_digits = false;
        }
    }
    match entry {
        Some(entry) if group == "Thread-*" || group == "Dummy-*" => format!("{group} ({entry})"),
        _ => group,
    }
}

/// Per thread, the function it was started with: the outermost frame outside
/// `threading.py` in its most sampled stacks. A thread started by `threading` has
/// `_bootstrap` outermost: a stack without it was read part-way (its frames changing under
/// the reader, as they do while short threads come and go) and names no entry.
fn entry_functions(stacks: &[StackCount]) -> HashMap<i32, String> {
    let rooted: std::collections::HashSet<i32> = stacks
        .iter()
        .filter(|s| {
            s.frames
                .first()
                .is_some_and(|f| f.file.ends_with("threading.py"))
        })
        .map(|s| s.tid)
        .collect();
    let mut counts: HashMap<i32, HashMap<&str, u64>> = HashMap::new();
    for stack in stacks {
        let from_threading = stack
            .frames
            .first()
            .is_some_and(|f| f.file.ends_with("threading.py"));
        if rooted.contains(&stack.tid) && !from_threading {
            continue;
        }
        let entry = stack
            .frames
            .iter()
            .find(|f| !f.file.ends_with("threading.py"))
            .map(|f| f.function.as_str());
        if let Some(entry) = entry {
            *counts
                .entry(stack.tid)
                .or_default()
                .entry(entry)
                .or_default() += stack.count;
        }
    }
    counts
        .into_iter()
        .filter_map(|(tid, functions)| {
            let best = functions
                .into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)))?;
            Some((tid, best.0.to_string()))
        })
        .collect()
}

/// The groups of `threads` (as [`thread_figures`] made them), most samples first.
pub fn thread_groups(rec: &Recording, threads: &[ThreadFigures]) -> Vec<GroupFigures> {
    let mut members: HashMap<&str, Vec<i32>> = HashMap::new();
    for t in threads {
        members.entry(&t.group).or_default().push(t.tid);
    }
    let counts: HashMap<i32, &ThreadCounts> = rec.threads.iter().map(|t| (t.tid, t)).collect();
    let period_ms = if rec.requested_rate_hz > 0.0 {
        1000.0 / rec.requested_rate_hz
    } else {
        0.0
    };
    let mut groups: Vec<GroupFigures> = members
        .into_iter()
        .map(|(name, tids)| {
            let mut sum = ThreadCounts {
                tid: 0,
                name: Some(name.to_string()),
                samples: 0,
                states: Default::default(),
                idle_reasons: Default::default(),
                wakeups: 0,
                wakeup_waits: 0,
                wakeup_wait_samples: 0,
            };
            for t in tids.iter().filter_map(|tid| counts.get(tid)) {
                sum.samples += t.samples;
                for state in ThreadState::ALL {
                    sum.states.add(state, t.states.get(state));
                }
                for reason in IdleReason::ALL {
                    sum.idle_reasons.add(reason, t.idle_reasons.get(reason));
                }
            }
            let mut frames: HashMap<FrameKey, u64> = HashMap::new();
            for stack in rec.stacks.iter().filter(|s| tids.contains(&s.tid)) {
                if let Some(f) = stack.frames.last() {
                    let key = (f.function.clone(), f.file.clone(), f.line);
                    *frames.entry(key).or_default() += stack.count;
                }
            }
            let count = tids.len() as u64;
            let mean_life_ms = ratio(sum.samples, count) * period_ms;
            let short_lived = count > MANY_THREADS
                || (count >= 2 && mean_life_ms < SHORT_LIVED * rec.duration_s * 1000.0);
            GroupFigures {
                name: name.to_string(),
                threads: count,
                samples: sum.samples,
                states: state_fractions(&sum),
                idle_reasons: idle_fractions(&sum),
                class: classify_thread(&sum),
                mean_life_ms,
                top_frames: top_frames(&frames, sum.samples),
                short_lived,
            }
        })
        .collect();
    groups.sort_by(|a, b| b.samples.cmp(&a.samples).then_with(|| a.name.cmp(&b.name)));
    groups
}

/// One row of a thread table: a thread, or a short-lived group in place of its threads.
#[derive(Debug, Clone, Copy)]
pub enum Row<'a> {
    Thread(&'a ThreadFigures),
    Group(&'a GroupFigures),
}

/// The rows reports show: each thread in order, except that the threads of a
/// [`GroupFigures::short_lived`] group are one row, where its first thread was.
pub fn rows<'a>(threads: &'a [ThreadFigures], groups: &'a [GroupFigures]) -> Vec<Row<'a>> {
    let by_name: HashMap<&str, &GroupFigures> = groups
        .iter()
        .filter(|g| g.short_lived)
        .map(|g| (g.name.as_str(), g))
        .collect();
    let mut shown = std::collections::HashSet::new();
    let mut rows = Vec::new();
    for t in threads {
        match by_name.get(t.group.as_str()) {
            Some(group) => {
                if shown.insert(group.name.as_str()) {
                    rows.push(Row::Group(group));
                }
            }
            None => rows.push(Row::Thread(t)),
        }
    }
    rows
}

impl Row<'_> {
    /// The thread's name (else "-"), or the group's name.
    pub fn label(&self) -> &str {
        match self {
            Row::Thread(t) => t.name.as_deref().unwrap_or("-"),
            Row::Group(g) => &g.name,
        }
    }
    /// The tid, or "N thr" for a group.
    pub fn id(&self) -> String {
        match self {
            Row::Thread(t) => t.tid.to_string(),
            Row::Group(g) => format!("{} thr", g.threads),
        }
    }
    pub fn class(&self) -> ThreadClass {
        match self {
            Row::Thread(t) => t.class,
            Row::Group(g) => g.class,
        }
    }
    pub fn states(&self) -> &StateFractions {
        match self {
            Row::Thread(t) => &t.states,
            Row::Group(g) => &g.states,
        }
    }
    pub fn top_frames(&self) -> &[TopFrame] {
        match self {
            Row::Thread(t) => &t.top_frames,
            Row::Group(g) => &g.top_frames,
        }
    }
}

type FrameKey = (String, String, u32);

fn top_frames_by_thread(stacks: &[StackCount]) -> HashMap<i32, HashMap<FrameKey, u64>> {
    let mut by_thread: HashMap<i32, HashMap<FrameKey, u64>> = HashMap::new();
    for stack in stacks {
        let Some(innermost) = stack.frames.last() else {
            continue;
        };
        let key = (
            innermost.function.clone(),
            innermost.file.clone(),
            innermost.line,
        );
        *by_thread
            .entry(stack.tid)
            .or_default()
            .entry(key)
            .or_default() += stack.count;
    }
    by_thread
}

const TOP_FRAMES: usize = 10;

fn top_frames(counts: &HashMap<FrameKey, u64>, samples: u64) -> Vec<TopFrame> {
    let mut frames: Vec<(&FrameKey, &u64)> = counts.iter().collect();
    frames.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    frames
        .into_iter()
        .take(TOP_FRAMES)
        .map(|((function, file, line), &count)| TopFrame {
            function: function.clone(),
            file: file.clone(),
            line: *line,
            fraction: ratio(count, samples),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::recording::{IdleCounts, StateCounts};

    fn thread(held: u64, wait: u64, native: u64, idle: u64, io: u64) -> ThreadCounts {
        ThreadCounts {
            tid: 1,
            name: None,
            samples: held + wait + native + idle,
            states: StateCounts {
                gil_held: held,
                gil_wait: wait,
                native_nogil: native,
                idle,
            },
            idle_reasons: IdleCounts {
                io,
                lock: idle - io,
                ..Default::default()
            },
            wakeups: 0,
            wakeup_waits: 0,
            wakeup_wait_samples: 0,
        }
    }

    #[test]
    fn brief_threads_join_their_jobs_group_or_the_short_lived_one() {
        // A 10 s recording at 100 Hz: a thread seen for less than 5 s (500 samples) is brief.
        let threads = vec![
            ThreadFigures::idle(1, "MainThread", 1000),
            ThreadFigures::idle(2, "Thread-* (handle)", 30),
            ThreadFigures::idle(3, "Thread-* (handle)", 40),
            // Came and went before its name was read: joins the group of its entry function.
            ThreadFigures::idle(4, "(unnamed: handle)", 20),
            // Unnamed, but no group runs its entry: alone and brief.
            ThreadFigures::idle(5, "(unnamed: cleanup)", 10),
            // Two unnamed threads whose stacks were read part-way as they ended, seen briefly
            // all together.
            ThreadFigures::idle(8, "(unnamed: _parsegen)", 2),
            ThreadFigures::idle(9, "(unnamed: _parsegen)", 1),
            // Default names before 3.10, entries guessed from one part-read stack each.
            ThreadFigures::idle(12, "Thread-* (_real_close)", 1),
            ThreadFigures::idle(13, "Thread-* (_real_close)", 1),
            ThreadFigures::idle(14, "Thread-*", 1),
            // Unnamed threads that ran long enough together keep their row.
            ThreadFigures::idle(10, "(unnamed: poll)", 300),
            ThreadFigures::idle(11, "(unnamed: poll)", 300),
            // Named, alone and brief.
            ThreadFigures::idle(6, "reaper", 50),
            // Alone but there most of the time: keeps its own row.
            ThreadFigures::idle(7, "watchdog", 900),
        ];
        let groups: Vec<(i32, String)> = regroup_brief_threads(threads, 10.0, 10.0)
            .into_iter()
            .map(|t| (t.tid, t.group))
            .collect();
        let want = [
            (1, "MainThread"),
            (2, "Thread-* (handle)"),
            (3, "Thread-* (handle)"),
            (4, "Thread-* (handle)"),
            (5, OTHER_SHORT_LIVED),
            (8, OTHER_SHORT_LIVED),
            (9, OTHER_SHORT_LIVED),
            (12, OTHER_SHORT_LIVED),
            (13, OTHER_SHORT_LIVED),
            (14, OTHER_SHORT_LIVED),
            (10, "(unnamed: poll)"),
            (11, "(unnamed: poll)"),
            (6, OTHER_SHORT_LIVED),
            (7, "watchdog"),
        ];
        let want: Vec<(i32, String)> = want.iter().map(|&(t, g)| (t, g.to_string())).collect();
        assert_eq!(groups, want);
    }

    #[test]
    fn classes_follow_the_documented_rules() {
        assert_eq!(
            classify_thread(&thread(25, 74, 0, 1, 1)),
            ThreadClass::GilBound
        );
        assert_eq!(
            classify_thread(&thread(95, 2, 0, 3, 3)),
            ThreadClass::CpuBound
        );
        assert_eq!(
            classify_thread(&thread(10, 5, 80, 5, 5)),
            ThreadClass::Native
        );
        assert_eq!(
            classify_thread(&thread(2, 1, 0, 97, 97)),
            ThreadClass::IoBound
        );
        assert_eq!(classify_thread(&thread(2, 1, 0, 97, 0)), ThreadClass::Idle);
    }
}
