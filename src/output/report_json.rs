//! `report.json`: a [`Report`] built from a [`Recording`] (its figures and the advice). The
//! type and its field names are in [`crate::model::report`].

use crate::advice::recommend;
use crate::model::recording::Recording;
use crate::model::report::{REPORT_SCHEMA, Report};
use crate::profile::figures::{gil_figures, thread_figures, thread_groups};

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
            sampler_cpus: rec.sampler_cpus.clone(),
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
