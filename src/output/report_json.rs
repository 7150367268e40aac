//! `report.json`: the figures CI jobs read. Field names are a contract (docs/report-schema.md):
//! add fields, never rename them.

use crate::advice::{Recommendation, recommend};
use crate::profile::figures::{
    GilFigures, GroupFigures, ThreadFigures, gil_figures, thread_figures, thread_groups,
};
use crate::profile::recording::Recording;
use crate::snapshot::PythonInfo;
use serde::Serialize;

pub const REPORT_SCHEMA: &str = "gilscope.report/1";

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub pid: i32,
    pub command: Vec<String>,
    pub python: PythonInfo,
    pub duration_s: f64,
    /// The rate asked for.
    pub rate_hz: f64,
    /// Samples per second actually taken.
    pub achieved_rate_hz: f64,
    pub samples: u64,
    /// Deadlines skipped because gilscope fell behind.
    pub missed_samples: u64,
    /// Samples dropped because memory changed under the reader.
    pub torn_samples: u64,
    /// Samples during which the target was stopped (SIGSTOP, a debugger).
    pub stopped_samples: u64,
    pub stop_reason: String,
    pub cpus: u32,
    pub gil: GilFigures,
    pub threads: Vec<ThreadFigures>,
    /// Threads grouped by job (name without counters, or entry function), most samples
    /// first; each `threads` entry names its `group`.
    pub thread_groups: Vec<GroupFigures>,
    /// Each exec() the target called while recorded: `at_s`, the new `program` and its
    /// `command`, `python` (its version, null when it was not sampled), `interpreter` (the
    /// `python` object of that program: the top-level one describes the first), `samples`
    /// and a `note`. The other figures cover every program. Empty without an exec.
    pub execs: Vec<crate::profile::recording::ExecCounts>,
    /// Child processes (with --subprocesses), each a report of its own.
    pub processes: Vec<Report>,
    /// What to do about the GIL, ranked: the first is the primary recommendation. Each has
    /// `kind` (processes | native_offload | threads | async | none), a one-line `verdict`,
    /// the `evidence` it rests on ({figure, value, unit, note}), the `code` to look at
    /// ({function, file, line, fraction, role: holds_gil | waits_for_gil}),
    /// `expected_speedup` (null when it cannot be computed) and the `rule` that fired.
    /// Never empty. See [`crate::advice`].
    pub recommendations: Vec<Recommendation>,
    /// With `record --push`: windows closed, sent, failed requests, dropped windows
    /// ([`crate::push::PushCounts`]). Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<crate::push::PushCounts>,
}

impl Report {
    pub fn new(rec: &Recording) -> Report {
        let threads = thread_figures(rec);
        let thread_groups = thread_groups(rec, &threads);
        Report {
            schema: REPORT_SCHEMA,
            pid: rec.pid,
            command: rec.command.clone(),
            python: rec.python.clone(),
            duration_s: rec.duration_s,
            rate_hz: rec.requested_rate_hz,
            achieved_rate_hz: if rec.duration_s > 0.0 {
                rec.samples as f64 / rec.duration_s
            } else {
                0.0
            },
            samples: rec.samples,
            missed_samples: rec.missed_samples,
            torn_samples: rec.torn_samples,
            stopped_samples: rec.stopped_samples,
            stop_reason: rec.stop_reason.clone(),
            cpus: rec.cpus,
            gil: gil_figures(rec),
            threads,
            thread_groups,
            execs: rec.execs.clone(),
            processes: rec.children.iter().map(Report::new).collect(),
            recommendations: recommend(rec),
            push: None,
        }
    }
}
