//! `gilscope diff` in the terminal: both sides, the GIL figures, the threads and the
//! functions, then the regressions (computed by [`crate::diff`]).

use crate::diff::{Change, Diff, percent, points, thread_label};
use std::fmt::Write;

/// The diff as a table for the terminal.
pub fn render(diff: &Diff) -> String {
    let mut out = String::new();
    for (what, s) in [("base", &diff.base), ("new", &diff.new)] {
        let _ = writeln!(
            out,
            "{what:<4}  {}: pid {}, Python {}, {} samples over {:.1} s",
            s.source.as_deref().unwrap_or("-"),
            s.pid,
            s.python,
            s.samples,
            s.duration_s
        );
    }
    let g = &diff.gil;
    let _ = writeln!(
        out,
        "\n{:<14} {:>9} {:>9} {:>10}",
        "GIL", "BASE", "NEW", "CHANGE"
    );
    for (name, c) in [("held", &g.held), ("contended", &g.contended)] {
        let _ = writeln!(
            out,
            "{name:<14} {:>9} {:>9} {:>10}",
            percent(c.base),
            percent(c.new),
            points(c.change)
        );
    }
    for (name, c, decimals) in [
        ("mean waiters", &g.mean_waiters, 2),
        ("switches/s", &g.switches_per_s, 0),
        ("parallelism", &g.parallelism, 2),
    ] {
        let _ = writeln!(
            out,
            "{name:<14} {:>9.decimals$} {:>9.decimals$} {:>+10.decimals$}",
            c.base, c.new, c.change
        );
    }
    render_threads(&mut out, diff);
    render_functions(&mut out, diff);
    let t = &diff.thresholds;
    let limit = |l: Option<f64>| l.map_or("off".to_string(), points);
    let _ = writeln!(
        out,
        "\nThresholds: contended {}, held {}, thread wait {}, class changes {}.",
        limit(t.max_contended_increase),
        limit(t.max_held_increase),
        limit(t.max_wait_increase),
        if t.fail_on_class_change {
            "fail"
        } else {
            "ignored"
        }
    );
    let _ = match diff.regressions.len() {
        0 => writeln!(out, "No regression beyond the thresholds."),
        n => writeln!(out, "{n} regression(s) beyond the thresholds."),
    };
    out
}

fn render_threads(out: &mut String, diff: &Diff) {
    let whole = |f: f64| format!("{:.0}%", f * 100.0);
    let arrow = |c: &Change| format!("{} -> {}", whole(c.base), whole(c.new));
    let rows: Vec<[String; 6]> = diff
        .threads
        .iter()
        .map(|t| {
            let class = match (&t.base, &t.new) {
                (Some(b), Some(n)) if b.class == n.class => b.class.name().to_string(),
                (Some(b), Some(n)) => format!("{} -> {}", b.class.name(), n.class.name()),
                (Some(b), None) => format!("{} (base only)", b.class.name()),
                (None, Some(n)) => format!("{} (new only)", n.class.name()),
                (None, None) => String::new(),
            };
            let states = match (&t.states, t.base.as_ref().or(t.new.as_ref())) {
                (Some(s), _) => [&s.gil_held, &s.gil_wait, &s.native_nogil, &s.idle].map(arrow),
                (None, Some(one)) => {
                    let s = &one.states;
                    [s.gil_held, s.gil_wait, s.native_nogil, s.idle].map(whole)
                }
                (None, None) => Default::default(),
            };
            let [held, wait, native, idle] = states;
            [thread_label(t), class, held, wait, native, idle]
        })
        .collect();
    let header = ["THREAD", "CLASS", "HELD", "WAIT", "NATIVE", "IDLE"].map(String::from);
    let mut widths = [0usize; 6];
    for row in rows.iter().chain([&header]) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    widths[0] = widths[0].min(40);
    out.push('\n');
    for row in [&header].into_iter().chain(&rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(widths) {
            let cell: String = cell.chars().take(width).collect();
            let _ = write!(line, "{cell:<width$}  ");
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

fn render_functions(out: &mut String, diff: &Diff) {
    if diff.top_functions.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n{:<48} {:>9} {:>9} {:>10}",
        "HOLDING THE GIL", "BASE", "NEW", "CHANGE"
    );
    for f in &diff.top_functions {
        let file = f.file.rsplit('/').next().unwrap_or(&f.file);
        let name: String = format!("{} ({file})", f.function)
            .chars()
            .take(48)
            .collect();
        let _ = writeln!(
            out,
            "{name:<48} {:>9} {:>9} {:>10}",
            percent(f.held.base),
            percent(f.held.new),
            points(f.held.change)
        );
    }
}
