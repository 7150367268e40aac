//! `report.md`: the recording as a page to read or attach to a CI run: the primary
//! recommendation first, then the process's GIL figures, a table of threads, every
//! recommendation with its evidence and code, the flamegraphs beside it, and child processes.

use crate::model::report::{GroupFigures, Recommendation, Report, ThreadFigures};
use crate::profile::figures::rows;
use std::fmt::Write;
use std::path::Path;

/// The SVGs `report.md` links to when they are in its directory, with what each shows.
pub const GRAPHS: [(&str, &str); 5] = [
    ("flamegraph.svg", "All threads, by state"),
    ("gil_held.svg", "Stacks holding the GIL"),
    ("gil_wait.svg", "Stacks waiting for the GIL"),
    ("native_nogil.svg", "Native code running without the GIL"),
    (
        "gil_blame.svg",
        "GIL blame: holders' stacks weighted by the threads waiting",
    ),
];

/// The [`GRAPHS`] present in `dir`.
pub fn graphs_in(dir: &Path) -> Vec<&'static str> {
    GRAPHS
        .iter()
        .map(|(file, _)| *file)
        .filter(|file| dir.join(file).is_file())
        .collect()
}

/// The whole page; `graphs` are the SVG file names to link (see [`graphs_in`]).
pub fn render(report: &Report, graphs: &[&str]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# gilscope report: pid {}\n", report.pid);
    render_process(&mut out, report, 2);
    render_graphs(&mut out, graphs);
    if !report.processes.is_empty() {
        let _ = writeln!(out, "## Child processes\n");
        for child in &report.processes {
            render_child(&mut out, child, 3);
        }
    }
    out
}

fn render_child(out: &mut String, r: &Report, level: usize) {
    let _ = writeln!(out, "{} Child process pid {}\n", heading(level), r.pid);
    render_process(out, r, level + 1);
    for child in &r.processes {
        render_child(out, child, level + 1);
    }
}

/// One process: its summary, figures, threads and recommendations, with sections at
/// heading `level`.
fn render_process(out: &mut String, r: &Report, level: usize) {
    if let Some(primary) = r.recommendations.first() {
        let _ = writeln!(
            out,
            "**What to do** ({}): {}\n",
            code(primary.kind.name()),
            text(&primary.verdict)
        );
    }
    let p = &r.python;
    let _ = writeln!(out, "| | |\n|---|---|");
    if !r.command.is_empty() {
        let _ = writeln!(out, "| Command | {} |", cell_code(&r.command.join(" ")));
    }
    let _ = writeln!(
        out,
        "| Python | {} ({} build{}, GIL {}) |",
        text(&p.version),
        p.build.name(),
        if p.free_threaded {
            ", free-threaded"
        } else {
            ""
        },
        text(&p.gil)
    );
    let _ = writeln!(
        out,
        "| Recorded | {:.1} s: {} samples at {:.0} Hz (asked {:.0} Hz; {} missed, {} torn) |",
        r.duration_s, r.samples, r.achieved_rate_hz, r.rate_hz, r.missed_samples, r.torn_samples
    );
    if r.stopped_samples > 0 {
        let _ = writeln!(
            out,
            "| Target stopped | during {} samples (SIGSTOP or a debugger) |",
            r.stopped_samples
        );
    }
    let _ = writeln!(out, "| Stopped because | {} |", text(&r.stop_reason));
    for e in &r.execs {
        let what = e.sampled();
        let _ = writeln!(
            out,
            "| exec() at {:.1} s | {} ({what}): {} |",
            e.at_s,
            cell_code(&e.program),
            text(&e.note)
        );
    }
    let _ = writeln!(out, "| CPUs | {} |\n", r.cpus);
    render_gil(out, r, level);
    render_threads(out, &r.threads, &r.thread_groups, level);
    render_event_loops(out, &r.threads, level);
    render_recommendations(out, &r.recommendations, level);
}

/// One row per asyncio event loop, and the code that stalled it.
fn render_event_loops(out: &mut String, threads: &[ThreadFigures], level: usize) {
    let loops: Vec<_> = threads
        .iter()
        .filter_map(|t| t.event_loop.as_ref().map(|l| (t, l)))
        .collect();
    if loops.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "{} Event loops
",
        heading(level)
    );
    let _ = writeln!(
        out,
        "| Thread | Kind | Busy | Stalls (> threshold) | Stalls/s | Longest | p95 | Stalled in |\n\
         |---|---|---:|---:|---:|---:|---:|---|"
    );
    for (t, l) in loops {
        let blocking: Vec<String> = l
            .blocking
            .iter()
            .take(3)
            .map(|b| {
                format!(
                    "{} ({}, {}) {}{}",
                    cell_code(&b.function),
                    cell_code(&format!("{}:{}", short_path(&b.file), b.line)),
                    b.cause,
                    percent(b.fraction),
                    b.task
                        .as_ref()
                        .map_or_else(String::new, |t| format!(" in task {}", cell_code(t)))
                )
            })
            .collect();
        if !l.stalls_measured {
            // uvloop: stalls cannot be measured (docs/event-loops.md); the code is what ran
            // while the loop was busy.
            let _ = writeln!(
                out,
                "| {} | {} | {} | not measured | - | - | - | busy in {} |",
                text(t.name.as_deref().unwrap_or("-")),
                l.kind,
                percent(l.busy),
                blocking.join(", ")
            );
            continue;
        }
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} (> {:.0} ms) | {:.1} | {:.0} ms | {:.0} ms | {} |",
            text(t.name.as_deref().unwrap_or("-")),
            l.kind,
            percent(l.busy),
            l.stalls,
            l.stall_threshold_ms,
            l.stalls_per_s,
            l.longest_stall_ms,
            l.p95_stall_ms,
            blocking.join(", ")
        );
    }
    out.push('\n');
}

fn render_gil(out: &mut String, r: &Report, level: usize) {
    let g = &r.gil;
    let _ = writeln!(out, "{} GIL\n", heading(level));
    let _ = writeln!(out, "| Figure | Value | Meaning |\n|---|---:|---|");
    let rows = [
        (
            "gil.held",
            percent(g.held),
            "share of the time some thread held the GIL",
        ),
        (
            "gil.contended",
            percent(g.contended),
            "share of the time the GIL was held while another thread waited for it",
        ),
        (
            "gil.mean_waiters",
            format!("{:.2}", g.mean_waiters),
            "threads waiting for the GIL, on average",
        ),
        (
            "gil.switches_per_s",
            format!("{:.0}", g.switches_per_s),
            "GIL hand-offs per second",
        ),
        (
            "gil.parallelism",
            format!("{:.2}", g.parallelism),
            "threads on a CPU (holding the GIL or native without it), on average",
        ),
    ];
    for (figure, value, meaning) in rows {
        let _ = writeln!(out, "| {} | {value} | {meaning} |", code(figure));
    }
    out.push('\n');
}

fn render_threads(
    out: &mut String,
    threads: &[ThreadFigures],
    groups: &[GroupFigures],
    level: usize,
) {
    let _ = writeln!(out, "{} Threads\n", heading(level));
    if threads.is_empty() {
        let _ = writeln!(out, "No Python thread was sampled.\n");
        return;
    }
    let _ = writeln!(
        out,
        "| Thread | TID | Class | Held | Wait | Native | Idle | Top function |\n\
         |---|---:|---|---:|---:|---:|---:|---|"
    );
    for row in rows(threads, groups) {
        let s = row.states();
        let top = row
            .top_frames()
            .first()
            .map(|f| {
                format!(
                    "{} ({})",
                    cell_code(&f.function),
                    cell_code(&format!("{}:{}", short_path(&f.file), f.line))
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {top} |",
            text(row.label()),
            row.id(),
            row.class().name(),
            percent(s.gil_held),
            percent(s.gil_wait),
            percent(s.native_nogil),
            percent(s.idle)
        );
    }
    out.push('\n');
    let grouped: Vec<&GroupFigures> = groups.iter().filter(|g| g.short_lived).collect();
    if !grouped.is_empty() {
        let _ = writeln!(
            out,
            "Short-lived threads are shown as one row per group (`thread_groups` in report.json):\n\n\
             | Group | Threads | Mean life | Samples |\n|---|---:|---:|---:|"
        );
        for g in grouped {
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} ms | {} |",
                text(&g.name),
                g.threads,
                g.mean_life_ms,
                g.samples
            );
        }
        out.push('\n');
    }
}

fn render_recommendations(out: &mut String, recs: &[Recommendation], level: usize) {
    let _ = writeln!(out, "{} Recommendations\n", heading(level));
    for (i, rec) in recs.iter().enumerate() {
        let _ = writeln!(
            out,
            "{} {}. {} (rule {})\n",
            heading(level + 1),
            i + 1,
            code(rec.kind.name()),
            code(&rec.rule)
        );
        let _ = writeln!(out, "{}\n", text(&rec.verdict));
        if let Some(speedup) = rec.expected_speedup {
            let _ = writeln!(out, "Expected: up to **{speedup:.1}x** the throughput.\n");
        }
        if !rec.evidence.is_empty() {
            let _ = writeln!(out, "| Evidence | Value | Meaning |\n|---|---:|---|");
            for e in &rec.evidence {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} |",
                    cell_code(&e.figure),
                    e.value_text(),
                    text(&e.note)
                );
            }
            out.push('\n');
        }
        if !rec.code.is_empty() {
            let _ = writeln!(out, "Code to look at:\n");
            for c in &rec.code {
                let _ = writeln!(
                    out,
                    "- {} at {}: {} of {}",
                    code(&c.function),
                    code(&format!("{}:{}", c.file, c.line)),
                    percent(c.fraction),
                    c.role.share_of()
                );
            }
            out.push('\n');
        }
    }
}

fn render_graphs(out: &mut String, graphs: &[&str]) {
    if graphs.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "## Flamegraphs\n\nOpen an SVG on its own for the interactive view (zoom, search).\n"
    );
    for (file, title) in GRAPHS.iter().filter(|(file, _)| graphs.contains(file)) {
        let _ = writeln!(out, "### [{title}]({file})\n\n![{title}]({file})\n");
    }
}

fn heading(level: usize) -> String {
    "#".repeat(level.clamp(1, 6))
}

fn percent(fraction: f64) -> String {
    format!("{:.0}%", fraction * 100.0)
}

fn short_path(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Plain text with Markdown's special characters escaped (`<module>` stays visible, and a
/// pipe does not end a table cell).
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(
            c,
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '|'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A code span (backticks inside become quotes).
fn code(s: &str) -> String {
    format!("`{}`", s.replace('`', "'"))
}

/// A code span for a table cell (GitHub splits cells at pipes even inside code spans).
fn cell_code(s: &str) -> String {
    code(s).replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::recording::Recording;
    use serde_json::json;

    fn thread(tid: i32, name: &str, held: u64, wait: u64, idle: u64) -> serde_json::Value {
        json!({
            "tid": tid, "name": name, "samples": held + wait + idle,
            "states": {"gil_held": held, "gil_wait": wait, "native_nogil": 0, "idle": idle},
            "idle_reasons": {"sleep": idle, "io": 0, "lock": 0, "other": 0},
        })
    }

    fn stack(tid: i32, state: &str, function: &str, count: u64) -> serde_json::Value {
        json!({
            "tid": tid, "state": state, "idle_reason": null, "count": count,
            "frames": [{"function": function, "qualname": null, "file": "/srv/app.py", "line": 7}],
        })
    }

    /// Two threads fighting over the GIL in `crunch|it`, a sleeping main thread, one child.
    fn recording() -> Recording {
        let process = |pid: i32| {
            json!({
                "format": "gilscope.recording/1", "pid": pid, "command": ["python", "app.py"],
                "python": {"version": "3.12.1", "build": "shared", "free_threaded": false,
                           "gil": "enabled", "binary": "/usr/bin/python3"},
                "duration_s": 1.0, "requested_rate_hz": 100.0, "samples": 100,
                "missed_samples": 0, "torn_samples": 0, "stopped_samples": 0,
                "stop_reason": "the duration elapsed", "cpus": 4,
                "gil": {"held": 100, "contended": 100, "waiters": 100, "on_cpu": 100,
                        "first_switch_number": 0, "last_switch_number": 200, "interval_us": 5000},
                "threads": [thread(1, "MainThread", 0, 0, 100), thread(2, "worker-0", 50, 50, 0),
                            thread(3, "worker-1", 50, 50, 0)],
                "stacks": [stack(2, "gil_held", "crunch|it", 50), stack(2, "gil_wait", "crunch|it", 50),
                           stack(3, "gil_held", "crunch|it", 50), stack(3, "gil_wait", "<module>", 50)],
                "children": [],
            })
        };
        let mut parent = process(10);
        parent["children"] = json!([process(11)]);
        serde_json::from_value(parent).expect("a valid recording")
    }

    #[test]
    fn the_page_has_figures_threads_advice_graphs_and_children() {
        let report = Report::new(&recording());
        let page = render(&report, &["flamegraph.svg", "gil_wait.svg"]);
        let has = |line: &str| {
            assert!(
                page.lines().any(|l| l == line),
                "no line {line:?} in\n{page}"
            )
        };
        has("# gilscope report: pid 10");
        has("| Python | 3.12.1 (shared build, GIL enabled) |");
        has(
            "| `gil.contended` | 100% | share of the time the GIL was held while another thread waited for it |",
        );
        has("| Thread | TID | Class | Held | Wait | Native | Idle | Top function |");
        has("| worker-0 | 2 | gil_bound | 50% | 50% | 0% | 0% | `crunch\\|it` (`app.py:7`) |");
        has("### 1. `processes` (rule `cpu_threads_contend`)");
        has("Expected: up to **2.0x** the throughput.");
        has("| `thread[worker-0].gil_wait` | 50% | of its time worker-0 waited for the GIL |");
        has("- `crunch|it` at `/srv/app.py:7`: 100% of the time holding the GIL");
        has("### [All threads, by state](flamegraph.svg)");
        has("![Stacks waiting for the GIL](gil_wait.svg)");
        assert!(
            !page.contains("gil_held.svg"),
            "only the graphs present are linked"
        );
        has("## Child processes");
        has("### Child process pid 11");
        has("#### Threads");
        assert!(
            page.starts_with(
                "# gilscope report: pid 10\n\n**What to do** (`processes`): 2 threads"
            ),
            "the primary recommendation comes first:\n{page}"
        );
    }

    #[test]
    fn markdown_specials_are_escaped_in_text() {
        assert_eq!(text("<module> a_b|c"), "\\<module\\> a\\_b\\|c");
        assert_eq!(cell_code("a|b`c"), "`a\\|b'c`");
    }
}
