//! Comparing two recordings: GIL figures, per-thread classes and states, and the functions
//! that hold the GIL, judged against thresholds so CI can fail on a regression.

use crate::model::recording::Recording;
use crate::model::report::{StateFractions, ThreadClass, ThreadFigures};
use crate::model::state::ThreadState;
use crate::profile::figures::{gil_figures, ratio, thread_figures};
use serde::Serialize;
use std::collections::HashMap;

pub const DIFF_SCHEMA: &str = "gilscope.diff/1";

/// How much worse the new recording may be before it counts as a regression. Increases
/// are absolute (fractions of samples: 0.1 is 10 percentage points); `None` turns a check off.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Thresholds {
    pub max_contended_increase: Option<f64>,
    pub max_held_increase: Option<f64>,
    /// Per thread, on its `gil_wait` share.
    pub max_wait_increase: Option<f64>,
    pub fail_on_class_change: bool,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_contended_increase: Some(0.10),
            max_held_increase: Some(0.20),
            max_wait_increase: Some(0.10),
            fail_on_class_change: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diff {
    pub schema: &'static str,
    pub base: Side,
    pub new: Side,
    pub thresholds: Thresholds,
    pub gil: GilDiff,
    pub threads: Vec<ThreadDiff>,
    pub top_functions: Vec<FunctionDiff>,
    pub regressions: Vec<Regression>,
}

/// Which recording a side is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Side {
    /// Where it was read from (set by the caller).
    pub source: Option<String>,
    pub pid: i32,
    pub python: String,
    pub samples: u64,
    pub duration_s: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Change {
    pub base: f64,
    pub new: f64,
    pub change: f64,
}

impl Change {
    fn new(base: f64, new: f64) -> Change {
        Change {
            base,
            new,
            change: new - base,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GilDiff {
    pub held: Change,
    pub contended: Change,
    pub mean_waiters: Change,
    pub switches_per_s: Change,
    pub parallelism: Change,
}

/// How a thread of one recording was paired with one of the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Matched {
    Name,
    Position,
    OnlyInBase,
    OnlyInNew,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThreadSide {
    pub tid: i32,
    pub name: Option<String>,
    pub class: ThreadClass,
    pub states: StateFractions,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThreadDiff {
    pub matched_by: Matched,
    pub base: Option<ThreadSide>,
    pub new: Option<ThreadSide>,
    /// State changes, for threads in both recordings.
    pub states: Option<StatesDiff>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatesDiff {
    pub gil_held: Change,
    pub gil_wait: Change,
    pub native_nogil: Change,
    pub idle: Change,
}

/// A function seen as the innermost frame of the thread holding the GIL.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionDiff {
    pub function: String,
    pub file: String,
    /// Share of the process's samples in which it held the GIL.
    pub held: Change,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Regression {
    /// `gil.contended`, `gil.held`, `thread[NAME].gil_wait` or `thread[NAME].class`.
    pub figure: String,
    pub base: serde_json::Value,
    pub new: serde_json::Value,
    pub limit: Option<f64>,
    pub message: String,
}

/// Top GIL-holding functions listed per side before the union is taken.
const TOP_FUNCTIONS: usize = 10;

pub fn compare(base: &Recording, new: &Recording, thresholds: &Thresholds) -> Diff {
    let (gb, gn) = (gil_figures(base), gil_figures(new));
    let gil = GilDiff {
        held: Change::new(gb.held, gn.held),
        contended: Change::new(gb.contended, gn.contended),
        mean_waiters: Change::new(gb.mean_waiters, gn.mean_waiters),
        switches_per_s: Change::new(gb.switches_per_s, gn.switches_per_s),
        parallelism: Change::new(gb.parallelism, gn.parallelism),
    };
    let threads = pair_threads(thread_figures(base), thread_figures(new));
    let mut diff = Diff {
        schema: DIFF_SCHEMA,
        base: side(base),
        new: side(new),
        thresholds: thresholds.clone(),
        gil,
        threads,
        top_functions: top_functions(base, new),
        regressions: Vec::new(),
    };
    diff.regressions = regressions(&diff);
    diff
}

fn side(rec: &Recording) -> Side {
    Side {
        source: None,
        pid: rec.pid,
        python: rec.python.version.clone(),
        samples: rec.samples,
        duration_s: rec.duration_s,
    }
}

/// Pairs threads by name (the k-th thread of a name with the k-th of the same name), then
/// the rest by their order in each recording.
fn pair_threads(base: Vec<ThreadFigures>, new: Vec<ThreadFigures>) -> Vec<ThreadDiff> {
    let mut new: Vec<Option<ThreadFigures>> = new.into_iter().map(Some).collect();
    let mut taken = vec![false; new.len()];
    let name_of = |t: &Option<ThreadFigures>| t.as_ref().and_then(|t| t.name.clone());
    // The index in `new` of each base thread's partner: by name first...
    let mut partner: Vec<Option<usize>> = Vec::with_capacity(base.len());
    for b in &base {
        let found = b.name.as_ref().and_then(|name| {
            (0..new.len()).find(|&i| !taken[i] && name_of(&new[i]).as_ref() == Some(name))
        });
        if let Some(i) = found {
            taken[i] = true;
        }
        partner.push(found);
    }
    let by_name: Vec<bool> = partner.iter().map(Option::is_some).collect();
    // ...then the rest in order.
    let mut free = (0..new.len())
        .filter(|&i| !taken[i])
        .collect::<Vec<_>>()
        .into_iter();
    for p in partner.iter_mut().filter(|p| p.is_none()) {
        *p = free.next();
    }
    let mut diffs: Vec<ThreadDiff> = base
        .into_iter()
        .zip(partner.into_iter().zip(by_name))
        .map(|(b, (p, named))| {
            let matched_by = match (p, named) {
                (Some(_), true) => Matched::Name,
                (Some(_), false) => Matched::Position,
                (None, _) => Matched::OnlyInBase,
            };
            thread_diff(matched_by, Some(b), p.and_then(|i| new[i].take()))
        })
        .collect();
    diffs.extend(free.map(|i| thread_diff(Matched::OnlyInNew, None, new[i].take())));
    diffs
}

fn thread_diff(
    matched_by: Matched,
    base: Option<ThreadFigures>,
    new: Option<ThreadFigures>,
) -> ThreadDiff {
    let states = match (&base, &new) {
        (Some(b), Some(n)) => {
            let (b, n) = (&b.states, &n.states);
            Some(StatesDiff {
                gil_held: Change::new(b.gil_held, n.gil_held),
                gil_wait: Change::new(b.gil_wait, n.gil_wait),
                native_nogil: Change::new(b.native_nogil, n.native_nogil),
                idle: Change::new(b.idle, n.idle),
            })
        }
        _ => None,
    };
    let side = |t: ThreadFigures| ThreadSide {
        tid: t.tid,
        name: t.name,
        class: t.class,
        states: t.states,
    };
    ThreadDiff {
        matched_by,
        base: base.map(side),
        new: new.map(side),
        states,
    }
}

type FunctionKey = (String, String);

/// Samples in which each function was the innermost frame of the GIL holder.
fn gil_holding_functions(rec: &Recording) -> HashMap<FunctionKey, u64> {
    let mut counts = HashMap::new();
    for stack in rec
        .stacks
        .iter()
        .filter(|s| s.state == ThreadState::GilHeld)
    {
        if let Some(frame) = stack.frames.last() {
            *counts
                .entry((frame.function.clone(), frame.file.clone()))
                .or_default() += stack.count;
        }
    }
    counts
}

fn top_functions(base: &Recording, new: &Recording) -> Vec<FunctionDiff> {
    let (cb, cn) = (gil_holding_functions(base), gil_holding_functions(new));
    let top = |counts: &HashMap<FunctionKey, u64>| {
        let mut keys: Vec<(&FunctionKey, &u64)> = counts.iter().collect();
        keys.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        keys.into_iter()
            .take(TOP_FUNCTIONS)
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>()
    };
    let mut keys = top(&cb);
    for key in top(&cn) {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let mut functions: Vec<FunctionDiff> = keys
        .into_iter()
        .map(|key| {
            let b = ratio(cb.get(&key).copied().unwrap_or(0), base.samples);
            let n = ratio(cn.get(&key).copied().unwrap_or(0), new.samples);
            FunctionDiff {
                function: key.0,
                file: key.1,
                held: Change::new(b, n),
            }
        })
        .collect();
    functions.sort_by(|a, b| {
        let size = |f: &FunctionDiff| f.held.base.max(f.held.new);
        size(b)
            .total_cmp(&size(a))
            .then_with(|| a.function.cmp(&b.function))
    });
    functions
}

fn regressions(diff: &Diff) -> Vec<Regression> {
    let t = &diff.thresholds;
    let mut found = Vec::new();
    let mut check = |figure: String, change: &Change, limit: Option<f64>| {
        if let Some(limit) = limit
            && change.change > limit + 1e-12
        {
            found.push(Regression {
                message: format!(
                    "{figure} rose from {} to {} ({}, limit +{})",
                    percent(change.base),
                    percent(change.new),
                    points(change.change),
                    points(limit).trim_start_matches('+')
                ),
                figure,
                base: change.base.into(),
                new: change.new.into(),
                limit: Some(limit),
            });
        }
    };
    check(
        "gil.contended".into(),
        &diff.gil.contended,
        t.max_contended_increase,
    );
    check("gil.held".into(), &diff.gil.held, t.max_held_increase);
    for thread in &diff.threads {
        if let Some(states) = &thread.states {
            let figure = format!("thread[{}].gil_wait", thread_label(thread));
            check(figure, &states.gil_wait, t.max_wait_increase);
        }
    }
    if t.fail_on_class_change {
        for thread in &diff.threads {
            if let (Some(b), Some(n)) = (&thread.base, &thread.new)
                && b.class != n.class
            {
                let figure = format!("thread[{}].class", thread_label(thread));
                found.push(Regression {
                    message: format!(
                        "{figure} changed from {} to {}",
                        b.class.name(),
                        n.class.name()
                    ),
                    figure,
                    base: b.class.name().into(),
                    new: n.class.name().into(),
                    limit: None,
                });
            }
        }
    }
    found
}

fn name_of(t: &ThreadSide) -> String {
    t.name.clone().unwrap_or_else(|| format!("tid:{}", t.tid))
}

/// `cpu-0`, `old -> new` for threads paired by position, `name` for one-sided threads.
pub fn thread_label(t: &ThreadDiff) -> String {
    match (&t.base, &t.new) {
        (Some(b), Some(n)) if name_of(b) != name_of(n) => {
            format!("{} -> {}", name_of(b), name_of(n))
        }
        (Some(b), _) => name_of(b),
        (None, Some(n)) => name_of(n),
        (None, None) => "?".into(),
    }
}

pub(crate) fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

/// A change of a fraction in percentage points, signed.
pub(crate) fn points(change: f64) -> String {
    let value = change * 100.0;
    let value = if value.abs() < 0.05 { 0.0 } else { value };
    format!("{value:+.1} pp")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::diff_text::render;

    /// A recording of 100 samples; each thread is (name, held, wait, native, idle).
    fn recording(
        contended: u64,
        held: u64,
        threads: &[(Option<&str>, u64, u64, u64, u64)],
    ) -> Recording {
        let threads: Vec<serde_json::Value> = threads
            .iter()
            .enumerate()
            .map(|(i, (name, h, w, n, idle))| {
                serde_json::json!({
                    "tid": 100 + i, "name": name, "samples": h + w + n + idle,
                    "states": {"gil_held": h, "gil_wait": w, "native_nogil": n, "idle": idle},
                    "idle_reasons": {"sleep": 0, "io": idle, "lock": 0, "other": 0},
                })
            })
            .collect();
        let frame = |function: &str| {
            serde_json::json!({"function": function, "qualname": null,
                               "file": "/app/work.py", "line": 1})
        };
        let stack = |tid: u64, state: &str, frames: Vec<serde_json::Value>, count: u64| {
            serde_json::json!({"tid": tid, "state": state, "idle_reason": null,
                               "frames": frames, "count": count})
        };
        serde_json::from_value(serde_json::json!({
            "format": "gilscope.recording/1", "pid": 1, "command": [],
            "python": {"version": "3.12.1", "build": "shared", "free_threaded": false,
                       "gil": "enabled", "binary": "/usr/bin/python3"},
            "duration_s": 1.0, "requested_rate_hz": 100.0, "samples": 100,
            "missed_samples": 0, "torn_samples": 0, "stopped_samples": 0,
            "stop_reason": "the duration elapsed", "cpus": 4,
            "gil": {"held": held, "contended": contended, "waiters": contended, "on_cpu": held,
                    "first_switch_number": 0, "last_switch_number": 100, "interval_us": 5000},
            "threads": threads,
            "stacks": [
                stack(100, "gil_held", vec![frame("main"), frame("crunch")], held / 2),
                stack(100, "gil_wait", vec![frame("main"), frame("waiting")], 10),
                stack(101, "gil_held", vec![frame("parse")], held - held / 2),
            ],
            "children": [],
        }))
        .unwrap()
    }

    fn workers(wait: u64) -> Vec<(Option<&'static str>, u64, u64, u64, u64)> {
        vec![
            (Some("worker-1"), 50, wait, 0, 50 - wait),
            (Some("worker-2"), 40, 10, 0, 50),
        ]
    }

    #[test]
    fn a_recording_compared_with_itself_has_no_regression() {
        let rec = recording(30, 80, &workers(20));
        let diff = compare(&rec, &rec, &Thresholds::default());
        assert!(diff.regressions.is_empty(), "{:?}", diff.regressions);
        assert_eq!(diff.gil.contended.change, 0.0);
        assert!(diff.threads.iter().all(|t| t.matched_by == Matched::Name));
        assert!(render(&diff).contains("No regression beyond the thresholds."));
    }

    #[test]
    fn contention_beyond_the_limit_is_a_regression() {
        let base = recording(30, 80, &workers(20));
        let new = recording(45, 80, &workers(20));
        let diff = compare(&base, &new, &Thresholds::default());
        assert_eq!(diff.regressions.len(), 1, "{:?}", diff.regressions);
        let r = &diff.regressions[0];
        assert_eq!(r.figure, "gil.contended");
        assert_eq!(
            r.message,
            "gil.contended rose from 30.0% to 45.0% (+15.0 pp, limit +10.0 pp)"
        );
        let lenient = Thresholds {
            max_contended_increase: Some(0.2),
            ..Thresholds::default()
        };
        assert!(compare(&base, &new, &lenient).regressions.is_empty());
        let off = Thresholds {
            max_contended_increase: None,
            ..Thresholds::default()
        };
        assert!(compare(&base, &new, &off).regressions.is_empty());
        // Less contention is never a regression.
        assert!(
            compare(&new, &base, &Thresholds::default())
                .regressions
                .is_empty()
        );
    }

    #[test]
    fn held_and_per_thread_wait_have_their_own_limits() {
        let base = recording(30, 60, &workers(10));
        let new = recording(30, 85, &workers(25));
        let figures: Vec<String> = compare(&base, &new, &Thresholds::default())
            .regressions
            .into_iter()
            .map(|r| r.figure)
            .collect();
        assert_eq!(figures, ["gil.held", "thread[worker-1].gil_wait"]);
    }

    #[test]
    fn class_changes_fail_only_when_asked() {
        let base = recording(30, 80, &[(Some("w"), 90, 5, 0, 5)]);
        let new = recording(30, 80, &[(Some("w"), 60, 35, 0, 5)]);
        let t = Thresholds {
            max_wait_increase: None,
            ..Thresholds::default()
        };
        assert!(compare(&base, &new, &t).regressions.is_empty());
        let t = Thresholds {
            fail_on_class_change: true,
            ..t
        };
        let diff = compare(&base, &new, &t);
        assert_eq!(diff.regressions.len(), 1);
        assert_eq!(
            diff.regressions[0].message,
            "thread[w].class changed from cpu_bound to gil_bound"
        );
        assert!(render(&diff).contains("cpu_bound -> gil_bound"));
    }

    #[test]
    fn threads_pair_by_name_then_by_position() {
        let base = recording(
            0,
            50,
            &[
                (Some("a"), 10, 0, 0, 90),
                (None, 10, 0, 0, 90),
                (Some("gone"), 1, 0, 0, 99),
            ],
        );
        let new = recording(
            0,
            50,
            &[
                (Some("fresh"), 1, 0, 0, 99),
                (Some("a"), 10, 0, 0, 90),
                (Some("extra1"), 1, 0, 0, 99),
                (Some("extra2"), 1, 0, 0, 99),
            ],
        );
        let diff = compare(&base, &new, &Thresholds::default());
        let pairs: Vec<(Matched, String)> = diff
            .threads
            .iter()
            .map(|t| (t.matched_by, thread_label(t)))
            .collect();
        assert_eq!(
            pairs,
            [
                (Matched::Name, "a".to_string()),
                (Matched::Position, "tid:101 -> fresh".to_string()),
                (Matched::Position, "gone -> extra1".to_string()),
                (Matched::OnlyInNew, "extra2".to_string()),
            ]
        );
        let diff = compare(&new, &base, &Thresholds::default());
        assert_eq!(diff.threads.last().unwrap().matched_by, Matched::OnlyInBase);
        assert!(render(&diff).contains("(base only)"));
    }

    #[test]
    fn top_functions_are_the_gil_holders() {
        let base = recording(30, 80, &workers(20));
        let new = recording(30, 60, &workers(20));
        let diff = compare(&base, &new, &Thresholds::default());
        let shown: Vec<(&str, f64, f64)> = diff
            .top_functions
            .iter()
            .map(|f| (f.function.as_str(), f.held.base, f.held.new))
            .collect();
        assert_eq!(shown, [("crunch", 0.4, 0.3), ("parse", 0.4, 0.3)]);
        assert!(render(&diff).contains("crunch (work.py)"));
    }
}
