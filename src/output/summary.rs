//! The terminal summary printed at the end of a recording.

use super::report_json::Report;
use crate::advice::Recommendation;
use std::fmt::Write;

/// The summary of `report`; `written` names the directory and the files written into it.
pub fn render(report: &Report, written: Option<(&str, &[String])>) -> String {
    let mut out = String::new();
    render_process(&mut out, report);
    for child in &report.processes {
        out.push('\n');
        render_process(&mut out, child);
    }
    if let Some((dir, files)) = written {
        let _ = writeln!(out, "\nWrote {dir}/: {}", files.join(", "));
    }
    out
}

fn render_process(out: &mut String, r: &Report) {
    let command = if r.command.is_empty() {
        String::new()
    } else {
        format!(" ({})", r.command.join(" "))
    };
    let _ = writeln!(
        out,
        "gilscope: pid {}{command}, Python {} ({} build, GIL {})",
        r.pid,
        r.python.version,
        r.python.build.name(),
        r.python.gil
    );
    let _ = writeln!(
        out,
        "Recorded {:.1} s: {} samples at {:.0} Hz (asked {:.0} Hz; {} missed, {} torn); stopped: {}.",
        r.duration_s,
        r.samples,
        r.achieved_rate_hz,
        r.rate_hz,
        r.missed_samples,
        r.torn_samples,
        r.stop_reason
    );
    if r.stopped_samples > 0 {
        let _ = writeln!(
            out,
            "The target was stopped (SIGSTOP or a debugger) during {} samples.",
            r.stopped_samples
        );
    }
    render_threads(out, r);
    for t in &r.threads {
        if let Some(l) = &t.event_loop {
            let name = t.name.clone().unwrap_or_else(|| format!("tid {}", t.tid));
            let _ = writeln!(out, "Event loop ({} in {name}): {}.", l.kind, l.describe());
        }
    }
    let g = &r.gil;
    let _ = writeln!(
        out,
        "GIL: held {} of the time, contended {}, {:.1} threads waiting on average, {:.0} switches/s; {:.2} threads on CPU on average ({} CPUs).",
        percent(g.held),
        percent(g.contended),
        g.mean_waiters,
        g.switches_per_s,
        g.parallelism,
        r.cpus
    );
    if let Some(primary) = r.recommendations.first() {
        render_recommendation(out, primary, r.recommendations.len() - 1);
    }
}

/// The primary recommendation, with the figures behind it and the code to look at.
fn render_recommendation(out: &mut String, rec: &Recommendation, others: usize) {
    let _ = writeln!(out, "\nWhat to do ({}): {}", rec.kind.name(), rec.verdict);
    if !rec.evidence.is_empty() {
        let _ = writeln!(out, "  Because:");
    }
    for e in &rec.evidence {
        let _ = writeln!(out, "    {} {}  [{}]", e.value_text(), e.note, e.figure);
    }
    if !rec.code.is_empty() {
        let _ = writeln!(out, "  Look at:");
    }
    for c in &rec.code {
        let _ = writeln!(
            out,
            "    {} ({}:{}): {} of {}",
            c.function,
            short_path(&c.file),
            c.line,
            percent(c.fraction),
            c.role.share_of()
        );
    }
    match others {
        0 => {}
        1 => {
            let _ = writeln!(out, "  (1 more recommendation in report.md)");
        }
        n => {
            let _ = writeln!(out, "  ({n} more recommendations in report.md)");
        }
    }
}

fn render_threads(out: &mut String, r: &Report) {
    let width = r
        .threads
        .iter()
        .map(|t| t.name.as_deref().unwrap_or("-").chars().count())
        .max()
        .unwrap_or(6)
        .clamp(6, 28);
    let _ = writeln!(
        out,
        "\n{:<width$}  {:>8}  {:<9}  {:>5}  {:>5}  {:>6}  {:>5}  top function",
        "THREAD", "TID", "CLASS", "HELD", "WAIT", "NATIVE", "IDLE"
    );
    for t in &r.threads {
        let name: String = t
            .name
            .as_deref()
            .unwrap_or("-")
            .chars()
            .take(width)
            .collect();
        let top = t
            .top_frames
            .first()
            .map(|f| format!("{} ({}:{})", f.function, short_path(&f.file), f.line))
            .unwrap_or_default();
        let s = &t.states;
        let _ = writeln!(
            out,
            "{name:<width$}  {:>8}  {:<9}  {:>5}  {:>5}  {:>6}  {:>5}  {top}",
            t.tid,
            t.class.name(),
            percent(s.gil_held),
            percent(s.gil_wait),
            percent(s.native_nogil),
            percent(s.idle)
        );
    }
    out.push('\n');
}

fn percent(fraction: f64) -> String {
    format!("{:.0}%", fraction * 100.0)
}

fn short_path(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}
