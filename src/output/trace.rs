//! `trace.json`: the recording's timeline as Chrome trace events, which ui.perfetto.dev and
//! chrome://tracing open. One process per recorded process (named by its command line), one
//! track per thread ("worker-0 (tid 123)"), one complete event (`ph: "X"`) per run of samples
//! named by state, with the Python stack (innermost first) and idle reason in its args, and
//! a counter track per process with the number of threads waiting for the GIL.
//!
//! Events are written one at a time, so a long timeline never sits in memory twice.

use super::collapsed::{frame_label, thread_label};
use super::palette::trace_cname;
use crate::model::recording::Recording;
use crate::model::state::ThreadState;
use crate::model::timeline::{Run, Timeline};
use crate::profile::timeline::MAX_RUNS;
use anyhow::Result;
use serde::Serialize;
use serde_json::json;
use std::io::Write;

/// Longest process name shown (command lines can be very long).
const MAX_PROCESS_NAME: usize = 120;

/// Writes `trace.json` for `rec` and its child processes, on one time axis.
pub fn write(rec: &Recording, out: &mut impl Write) -> Result<()> {
    let processes: Vec<&Recording> = std::iter::once(rec).chain(&rec.children).collect();
    // Times are µs since the earliest first sample of any process.
    let origin = processes
        .iter()
        .filter(|p| !p.timeline.threads.is_empty())
        .map(|p| p.timeline.start_unix_us)
        .min()
        .unwrap_or(0);
    let mut events = EventWriter::new(out)?;
    for (index, process) in processes.iter().enumerate() {
        let offset = process.timeline.start_unix_us.saturating_sub(origin);
        write_process(&mut events, process, index, offset)?;
    }
    let truncated = processes
        .iter()
        .any(|p| p.timeline.truncated_at_us.is_some());
    let other = json!({
        "generator": concat!("gilscope ", env!("CARGO_PKG_VERSION")),
        "pid": rec.pid,
        "command": rec.command,
        "python": rec.python.version,
        "rate_hz": rec.requested_rate_hz,
        "samples": rec.samples,
        "timeline_truncated": truncated,
    });
    events.finish(&other)
}

/// Streams `{"traceEvents": [e, e, ...], ...}`.
struct EventWriter<'w, W: Write> {
    out: &'w mut W,
    first: bool,
}

impl<'w, W: Write> EventWriter<'w, W> {
    fn new(out: &'w mut W) -> Result<Self> {
        out.write_all(b"{\"traceEvents\":[\n")?;
        Ok(EventWriter { out, first: true })
    }

    fn event(&mut self, event: &impl Serialize) -> Result<()> {
        if !self.first {
            self.out.write_all(b",\n")?;
        }
        self.first = false;
        serde_json::to_writer(&mut *self.out, event)?;
        Ok(())
    }

    fn finish(self, other: &serde_json::Value) -> Result<()> {
        self.out
            .write_all(b"\n],\"displayTimeUnit\":\"ms\",\"otherData\":")?;
        serde_json::to_writer(&mut *self.out, other)?;
        self.out.write_all(b"}\n")?;
        Ok(())
    }
}

#[derive(Serialize)]
struct Slice<'a> {
    name: &'static str,
    cat: &'static str,
    ph: &'static str,
    pid: i32,
    tid: i32,
    ts: u64,
    dur: u64,
    cname: &'static str,
    args: SliceArgs<'a>,
}

#[derive(Serialize)]
struct SliceArgs<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_reason: Option<&'static str>,
    /// Innermost first.
    stack: &'a [String],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stack_truncated: bool,
    samples: u64,
}

fn write_process<W: Write>(
    events: &mut EventWriter<'_, W>,
    rec: &Recording,
    index: usize,
    offset: u64,
) -> Result<()> {
    let pid = rec.pid;
    events.event(&metadata(
        pid,
        None,
        "process_name",
        json!({ "name": process_name(rec) }),
    ))?;
    events.event(&metadata(
        pid,
        None,
        "process_sort_index",
        json!({ "sort_index": index }),
    ))?;
    let timeline = &rec.timeline;
    let stacks: Vec<Vec<String>> = timeline
        .stacks
        .iter()
        .map(|s| s.frames.iter().rev().map(frame_label).collect())
        .collect();
    for (order, thread) in timeline.threads.iter().enumerate() {
        let tid = thread.tid;
        let name = json!({ "name": thread_label(rec, tid) });
        events.event(&metadata(pid, Some(tid), "thread_name", name))?;
        let sort = json!({ "sort_index": order });
        events.event(&metadata(pid, Some(tid), "thread_sort_index", sort))?;
        for run in &thread.runs {
            events.event(&Slice {
                name: run.state.name(),
                cat: "gil",
                ph: "X",
                pid,
                tid,
                ts: offset + run.start_us,
                dur: run.end_us.saturating_sub(run.start_us),
                cname: trace_cname(run.state),
                args: SliceArgs {
                    idle_reason: run.idle_reason.map(|r| r.name()),
                    stack: stacks
                        .get(run.stack as usize)
                        .map_or(&[][..], Vec::as_slice),
                    stack_truncated: timeline
                        .stacks
                        .get(run.stack as usize)
                        .is_some_and(|s| s.truncated),
                    samples: run.samples,
                },
            })?;
        }
    }
    for (ts, waiting) in waiter_counts(timeline) {
        events.event(&json!({
            "name": "GIL waiters", "ph": "C", "pid": pid, "ts": offset + ts,
            "args": { "waiting": waiting },
        }))?;
    }
    if let Some(at) = timeline.truncated_at_us {
        events.event(&json!({
            "name": format!("timeline truncated: {MAX_RUNS} runs reached, later samples not shown"),
            "ph": "i", "s": "p", "pid": pid, "tid": pid, "ts": offset + at,
        }))?;
    }
    Ok(())
}

fn metadata(pid: i32, tid: Option<i32>, name: &str, args: serde_json::Value) -> serde_json::Value {
    json!({ "name": name, "ph": "M", "pid": pid, "tid": tid.unwrap_or(pid), "args": args })
}

/// "python app.py --flag", or "pid 123" when the command line is unknown.
fn process_name(rec: &Recording) -> String {
    let command = rec.command.join(" ");
    if command.is_empty() {
        return format!("pid {}", rec.pid);
    }
    match command.char_indices().nth(MAX_PROCESS_NAME) {
        Some((cut, _)) => format!("{}...", &command[..cut]),
        None => command,
    }
}

/// Threads waiting for the GIL over time, as (time, count) at every change.
pub fn waiter_counts(timeline: &Timeline) -> Vec<(u64, u64)> {
    let mut changes: Vec<(u64, i64)> = timeline
        .threads
        .iter()
        .flat_map(|t| &t.runs)
        .filter(|r: &&Run| r.state == ThreadState::GilWait)
        .flat_map(|r| [(r.start_us, 1), (r.end_us, -1)])
        .collect();
    if changes.is_empty() {
        return Vec::new();
    }
    changes.sort_unstable();
    let mut counts: Vec<(u64, u64)> = vec![(0, 0)];
    let mut waiting: i64 = 0;
    for (ts, delta) in changes {
        waiting += delta;
        let value = waiting.max(0) as u64;
        match counts.last_mut() {
            Some(last) if last.0 == ts => last.1 = value,
            _ => counts.push((ts, value)),
        }
    }
    counts.dedup_by_key(|c| c.1);
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::timeline::ThreadTimeline;

    fn run(state: ThreadState, start_us: u64, end_us: u64) -> Run {
        Run {
            state,
            idle_reason: None,
            stack: 0,
            start_us,
            end_us,
            samples: 1,
        }
    }

    #[test]
    fn waiter_counts_follow_gil_wait_runs() {
        let timeline = Timeline {
            threads: vec![
                ThreadTimeline {
                    tid: 1,
                    runs: vec![
                        run(ThreadState::GilWait, 10, 30),
                        run(ThreadState::GilHeld, 30, 50),
                    ],
                },
                ThreadTimeline {
                    tid: 2,
                    runs: vec![run(ThreadState::GilWait, 20, 50)],
                },
            ],
            ..Timeline::default()
        };
        assert_eq!(
            waiter_counts(&timeline),
            vec![(0, 0), (10, 1), (20, 2), (30, 1), (50, 0)]
        );
    }
}
