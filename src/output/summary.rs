//! The terminal summary printed at the end of a recording.

use crate::model::report::Recommendation;
use crate::model::report::Report;
use crate::model::state::FlagComparison;
use crate::profile::figures::rows;
use std::fmt::Write;

/// The summary of `report`; `written` names the directory and the files written into it.
pub fn render(report: &Report, written: Option<(&str, &[String])>) -> String {
    let mut out = String::new();
    render_process(&mut out, report);
    for child in &report.processes {
        out.push('\n');
        render_process(&mut out, child);
    }
    if let Some(push) = &report.push {
        render_push(&mut out, push);
    }
    if let Some((dir, files)) = written {
        let _ = writeln!(out, "\nWrote {dir}/: {}", files.join(", "));
    }
    out
}

/// What `--push` got to the server.
fn render_push(out: &mut String, p: &crate::model::report::PushCounts) {
    let _ = write!(
        out,
        "\nPushed: {} of {} windows sent, {} dropped ({} failed requests)",
        p.sent, p.windows, p.dropped, p.failed
    );
    match &p.last_error {
        Some(error) => {
            let _ = writeln!(out, "; last failure: {error}.");
        }
        _ => {
            let _ = writeln!(out, ".");
        }
    }
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
    for e in &r.execs {
        let what = e.sampled();
        let _ = writeln!(
            out,
            "exec() at {:.1} s into {} ({what}): {}.",
            e.at_s, e.program, e.note
        );
    }
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
    let sampler = match r.sampler_cpus.as_deref() {
        Some([cpu]) => format!("; gilscope sampled from CPU {cpu}, which the target may not use"),
        Some(cpus) => format!(
            "; gilscope sampled from CPUs {}, which the target may not use",
            cpus.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "GIL: held {} of the time, contended {}, {:.1} threads waiting on average, {:.0} switches/s; {:.2} threads on CPU on average ({} CPU{}{sampler}).",
        percent(g.held),
        percent(g.contended),
        g.mean_waiters,
        g.switches_per_s,
        g.parallelism,
        r.cpus,
        if r.cpus == 1 { "" } else { "s" }
    );
    if let Some(flags) = &g.thread_flags
        && flags.compared == FlagComparison::State
    {
        if flags.samples == 0 {
            let _ = writeln!(
                out,
                "Holders and waiters come from the threads' own GIL flags (--verify-flags \
                 checks gilscope's /proc inference against them)."
            );
        } else {
            let _ = writeln!(
                out,
                "Holders and waiters come from the threads' own GIL flags; the /proc \
                 inference agreed on {} of samples ({} of thread states compared).",
                percent(flags.sample_agreement),
                percent(flags.thread_agreement)
            );
        }
    }
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
    let rows = rows(&r.threads, &r.thread_groups);
    let width = rows
        .iter()
        .map(|row| row.label().chars().count())
        .max()
        .unwrap_or(6)
        .clamp(6, 40);
    let _ = writeln!(
        out,
        "\n{:<width$}  {:>8}  {:<9}  {:>5}  {:>5}  {:>6}  {:>5}  top function",
        "THREAD", "TID", "CLASS", "HELD", "WAIT", "NATIVE", "IDLE"
    );
    for row in &rows {
        let name: String = row.label().chars().take(width).collect();
        let top = row
            .top_frames()
            .first()
            .map(|f| format!("{} ({}:{})", f.function, short_path(&f.file), f.line))
            .unwrap_or_default();
        let s = row.states();
        let _ = writeln!(
            out,
            "{name:<width$}  {:>8}  {:<9}  {:>5}  {:>5}  {:>6}  {:>5}  {top}",
            row.id(),
            row.class().name(),
            percent(s.gil_held),
            percent(s.gil_wait),
            percent(s.native_nogil),
            percent(s.idle)
        );
    }
    let grouped: Vec<String> = r
        .thread_groups
        .iter()
        .filter(|g| g.short_lived)
        .map(|g| {
            format!(
                "{} ({} threads, {:.1} ms each on average)",
                g.name, g.threads, g.mean_life_ms
            )
        })
        .collect();
    if !grouped.is_empty() {
        let _ = writeln!(
            out,
            "Short-lived threads shown as one row per group: {}.",
            grouped.join("; ")
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
