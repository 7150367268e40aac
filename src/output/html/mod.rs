//! `report.html`: the whole recording in one self-contained page, the file a CI job attaches.
//! Everything is inline (CSS, SVG, script) and a Content-Security-Policy forbids loading
//! anything else, so the page never touches the network. It reads without script: the
//! flamegraph tabs are radio buttons styled by CSS, tooltips are SVG titles. The script adds
//! zoom, search and table sorting.
//!
//! Every string from the target (thread, function and file names, the command line) goes
//! through [`text`] or [`attr`].

mod flame;

use super::flamegraph::{self, Graph};
use super::palette::{self, CLASSES};
use crate::model::recording::Recording;
use crate::model::report::{Recommendation, Report, ThreadFigures};
use crate::model::state::ThreadState;
use anyhow::Result;
use serde_json::Value;
use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write;

const CSS: &str = include_str!("report.css");
const SCRIPT: &str = include_str!("report.js");
/// Nothing but what the page carries inline may load or run.
const POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
                      script-src 'unsafe-inline'; img-src data:; base-uri 'none'; \
                      form-action 'none'";

fn text(s: &str) -> Cow<'_, str> {
    html_escape::encode_text(s)
}

fn attr(s: &str) -> Cow<'_, str> {
    html_escape::encode_double_quoted_attribute(s)
}

pub fn write(rec: &Recording, report: &Report, out: &mut impl Write) -> Result<()> {
    out.write_all(render(rec, report).as_bytes())?;
    Ok(())
}

pub fn render(rec: &Recording, report: &Report) -> String {
    let command = report.command.join(" ");
    let mut page = String::with_capacity(64 * 1024);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{POLICY}\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"gilscope {}\">\n\
         <title>gilscope report: pid {}{}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n",
        env!("CARGO_PKG_VERSION"),
        report.pid,
        if command.is_empty() {
            String::new()
        } else {
            format!(", {}", text(&command))
        }
    );
    let _ = writeln!(
        page,
        "<header><h1>gilscope report <span class=\"pid\">pid {}</span></h1>",
        report.pid
    );
    if !command.is_empty() {
        let _ = writeln!(
            page,
            "<p class=\"command\"><code>{}</code></p>",
            text(&command)
        );
    }
    page.push_str("</header>\n<main>\n");
    process_sections(&mut page, report, 2, "");
    graphs_section(&mut page, rec);
    blame_section(&mut page, rec);
    for child in &report.processes {
        child_section(&mut page, child);
    }
    let _ = write!(
        page,
        "</main>\n<footer>Written by gilscope {}. The same figures are in report.json; \
         <code>gilscope report DIR</code> writes this page again from recording.json.\
         </footer>\n<script>\n{SCRIPT}</script>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION")
    );
    page
}

/// One process's verdict, figures, threads, event loops and recommendations.
/// `id` prefixes the sections' ids, so a child process's never clash with its parent's.
fn process_sections(page: &mut String, r: &Report, level: usize, id: &str) {
    if let Some(primary) = r.recommendations.first() {
        let _ = write!(
            page,
            "<section class=\"verdict kind-{0}\"><h{level}>What to do: <span class=\"kind\">{0}\
             </span></h{level}>\n<p>{1}</p>\n",
            primary.kind.name(),
            text(&primary.verdict)
        );
        if let Some(speedup) = primary.expected_speedup {
            let _ = writeln!(
                page,
                "<p class=\"speedup\">Expected: up to <strong>{speedup:.1}x</strong> the throughput.</p>"
            );
        }
        let _ = writeln!(
            page,
            "<p><a href=\"#{id}recommendations\">Evidence and code to look at</a></p></section>"
        );
    }
    figures(page, r, level, id);
    threads(page, &r.threads, level, id);
    event_loops(page, &r.threads, level, id);
    recommendations(page, &r.recommendations, level, id);
}

fn figures(page: &mut String, r: &Report, level: usize, id: &str) {
    let g = &r.gil;
    let _ = writeln!(
        page,
        "<section id=\"{id}figures\"><h{level}>GIL</h{level}>\n<div class=\"cards\">"
    );
    let cards = [
        (
            percent(g.held),
            "held",
            "of the time some thread held the GIL",
        ),
        (
            percent(g.contended),
            "contended",
            "of the time the GIL was held while another thread waited for it",
        ),
        (
            format!("{:.2}", g.mean_waiters),
            "waiting",
            "threads waiting for the GIL, on average",
        ),
        (
            format!("{:.0}/s", g.switches_per_s),
            "switches",
            "GIL hand-offs per second",
        ),
        (
            format!("{:.2}", g.parallelism),
            "on CPU",
            "threads on a CPU (holding the GIL or native without it), on average",
        ),
        (r.cpus.to_string(), "CPUs", "this process may run on"),
    ];
    for (value, name, meaning) in cards {
        let _ = writeln!(
            page,
            "<div class=\"card\"><div class=\"value\">{value}</div><div class=\"name\">{name}</div>\
             <div class=\"meaning\">{meaning}</div></div>"
        );
    }
    let p = &r.python;
    let _ = write!(
        page,
        "</div>\n<table class=\"facts\">\n<tr><th>Python</th><td>{} ({} build{}, GIL {})</td></tr>\n\
         <tr><th>Recorded</th><td>{:.1} s: {} samples at {:.0} Hz (asked {:.0} Hz; {} missed, {} torn)</td></tr>\n",
        text(&p.version),
        p.build.name(),
        if p.free_threaded {
            ", free-threaded"
        } else {
            ""
        },
        text(&p.gil),
        r.duration_s,
        r.samples,
        r.achieved_rate_hz,
        r.rate_hz,
        r.missed_samples,
        r.torn_samples
    );
    if r.stopped_samples > 0 {
        let _ = writeln!(
            page,
            "<tr><th>Target stopped</th><td>during {} samples (SIGSTOP or a debugger)</td></tr>",
            r.stopped_samples
        );
    }
    let _ = writeln!(
        page,
        "<tr><th>Stopped because</th><td>{}</td></tr>\n<tr><th>Interpreter</th><td><code>{}</code></td></tr>\n</table>\n</section>",
        text(&r.stop_reason),
        text(&p.binary)
    );
}

fn threads(page: &mut String, threads: &[ThreadFigures], level: usize, id: &str) {
    let _ = writeln!(
        page,
        "<section id=\"{id}threads\"><h{level}>Threads</h{level}>"
    );
    if threads.is_empty() {
        page.push_str("<p class=\"empty\">No Python thread was sampled.</p></section>\n");
        return;
    }
    page.push_str(
        "<table class=\"threads sortable\">\n<thead><tr><th>Thread</th><th class=\"num\">TID</th>\
         <th>Class</th><th>States</th><th class=\"num\">Held</th><th class=\"num\">Wait</th>\
         <th class=\"num\">Native</th><th class=\"num\">Idle</th><th class=\"num\">Wake-ups \
         waiting</th><th>Top function</th></tr></thead>\n<tbody>\n",
    );
    for t in threads {
        let s = &t.states;
        let shares = [s.gil_held, s.gil_wait, s.native_nogil, s.idle];
        let mut bar = String::from("<span class=\"bar\">");
        for (state, share) in ThreadState::ALL.into_iter().zip(shares) {
            if share > 0.0 {
                let _ = write!(
                    bar,
                    "<span style=\"width:{:.2}%;background:{}\" title=\"{} {}\"></span>",
                    share * 100.0,
                    palette::state_colour(state).hex(),
                    state.name(),
                    percent(share)
                );
            }
        }
        bar.push_str("</span>");
        let top = t
            .top_frames
            .first()
            .map(|f| {
                format!(
                    "<code>{}</code> <span class=\"where\" title=\"{}\">{}:{}</span>",
                    text(&f.function),
                    attr(&f.file),
                    text(short_path(&f.file)),
                    f.line
                )
            })
            .unwrap_or_default();
        let wakeups = if t.wakeups > 0 {
            percent(t.wakeups_waiting_for_gil)
        } else {
            "–".to_string()
        };
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{bar}</td>{}{}{}{}\
             <td class=\"num\" data-sort=\"{:.4}\">{wakeups}</td><td>{top}</td></tr>",
            text(t.name.as_deref().unwrap_or("-")),
            t.tid,
            class_badge(t.class.name(), palette::class_colour(t.class)),
            share_cell(s.gil_held),
            share_cell(s.gil_wait),
            share_cell(s.native_nogil),
            share_cell(s.idle),
            if t.wakeups > 0 {
                t.wakeups_waiting_for_gil
            } else {
                -1.0
            },
        );
    }
    page.push_str("</tbody></table>\n</section>\n");
}

fn share_cell(share: f64) -> String {
    format!(
        "<td class=\"num\" data-sort=\"{share:.4}\">{}</td>",
        percent(share)
    )
}

fn class_badge(name: &str, colour: palette::Rgb) -> String {
    format!(
        "<span class=\"badge\" style=\"background:{}\">{name}</span>",
        colour.hex()
    )
}

/// Event-loop figures (`event_loop` of a thread in report.json), for threads that have them.
/// Read through JSON so any field added to them shows without a change here.
fn event_loops(page: &mut String, threads: &[ThreadFigures], level: usize, id: &str) {
    let loops: Vec<(String, Value)> = threads
        .iter()
        .filter_map(|t| {
            let value = serde_json::to_value(t).ok()?;
            let event_loop = value.get("event_loop").filter(|v| v.is_object())?.clone();
            Some((
                t.name.clone().unwrap_or_else(|| format!("tid {}", t.tid)),
                event_loop,
            ))
        })
        .collect();
    event_loop_section(page, &loops, level, id);
}

fn event_loop_section(page: &mut String, loops: &[(String, Value)], level: usize, id: &str) {
    if loops.is_empty() {
        return;
    }
    let _ = writeln!(
        page,
        "<section id=\"{id}event-loops\"><h{level}>Event loops</h{level}>\n<table class=\"loops\">\n\
         <thead><tr><th>Thread</th><th>Kind</th><th class=\"num\">Busy</th><th class=\"num\">Stalls\
         </th><th class=\"num\">Stalls/s</th><th class=\"num\">Longest</th><th class=\"num\">p95</th>\
         <th class=\"num\">Stall threshold</th></tr></thead>\n<tbody>"
    );
    let number = |v: &Value, key: &str, format: &dyn Fn(f64) -> String| {
        v.get(key)
            .and_then(Value::as_f64)
            .map_or_else(|| "–".to_string(), format)
    };
    let ms = |x: f64| format!("{x:.1} ms");
    for (thread, v) in loops {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td></tr>",
            text(thread),
            text(v.get("kind").and_then(Value::as_str).unwrap_or("–")),
            number(v, "busy", &percent),
            number(v, "stalls", &|x| format!("{x:.0}")),
            number(v, "stalls_per_s", &|x| format!("{x:.1}")),
            number(v, "longest_stall_ms", &ms),
            number(v, "p95_stall_ms", &ms),
            number(v, "stall_threshold_ms", &ms),
        );
    }
    page.push_str("</tbody></table>\n");
    for (thread, v) in loops {
        let Some(blocking) = v.get("blocking").and_then(Value::as_array) else {
            continue;
        };
        if blocking.is_empty() {
            continue;
        }
        let _ = writeln!(
            page,
            "<p>Blocking the loop on <strong>{}</strong>:</p>\n<ul class=\"code\">",
            text(thread)
        );
        for b in blocking {
            let field = |key: &str| b.get(key).and_then(Value::as_str).unwrap_or("?");
            let task = b
                .get("task")
                .and_then(Value::as_str)
                .map(|t| format!(" (task {})", text(t)))
                .unwrap_or_default();
            let _ = writeln!(
                page,
                "<li><code>{}</code> at <code>{}:{}</code>{task}: {} of the stall time</li>",
                text(field("function")),
                text(field("file")),
                b.get("line").and_then(Value::as_u64).unwrap_or(0),
                b.get("fraction")
                    .and_then(Value::as_f64)
                    .map_or_else(|| "?".to_string(), percent)
            );
        }
        page.push_str("</ul>\n");
    }
    page.push_str("</section>\n");
}

fn recommendations(page: &mut String, recs: &[Recommendation], level: usize, id: &str) {
    let _ = writeln!(
        page,
        "<section id=\"{id}recommendations\"><h{level}>Recommendations</h{level}>"
    );
    for (i, rec) in recs.iter().enumerate() {
        let _ = write!(
            page,
            "<article class=\"recommendation kind-{0}\"><h{1}>{2}. <span class=\"kind\">{0}</span> \
             <span class=\"rule\">rule <code>{3}</code></span></h{1}>\n<p>{4}</p>\n",
            rec.kind.name(),
            (level + 1).min(6),
            i + 1,
            text(&rec.rule),
            text(&rec.verdict)
        );
        if let Some(speedup) = rec.expected_speedup {
            let _ = writeln!(
                page,
                "<p class=\"speedup\">Expected: up to <strong>{speedup:.1}x</strong> the throughput.</p>"
            );
        }
        if !rec.evidence.is_empty() {
            page.push_str(
                "<table class=\"evidence\"><thead><tr><th>Evidence</th><th class=\"num\">Value</th>\
                 <th>Meaning</th></tr></thead><tbody>\n",
            );
            for e in &rec.evidence {
                let _ = writeln!(
                    page,
                    "<tr><td><code>{}</code></td><td class=\"num\">{}</td><td>{}</td></tr>",
                    text(&e.figure),
                    text(&e.value_text()),
                    text(&e.note)
                );
            }
            page.push_str("</tbody></table>\n");
        }
        if !rec.code.is_empty() {
            page.push_str("<p>Code to look at:</p>\n<ul class=\"code\">\n");
            for c in &rec.code {
                let _ = writeln!(
                    page,
                    "<li><code>{}</code> at <code>{}:{}</code>: {} of {}</li>",
                    text(&c.function),
                    text(&c.file),
                    c.line,
                    percent(c.fraction),
                    c.role.share_of()
                );
            }
            page.push_str("</ul>\n");
        }
        page.push_str("</article>\n");
    }
    page.push_str("</section>\n");
}

/// Flamegraph tabs: every state, then one state at a time. Radio buttons and CSS switch them.
fn graphs_section(page: &mut String, rec: &Recording) {
    let mut totals = [0u64; 4];
    for t in &rec.threads {
        for (i, state) in ThreadState::ALL.into_iter().enumerate() {
            totals[i] += t.states.get(state);
        }
    }
    let all: u64 = totals.iter().sum();
    let mut tabs: Vec<(String, String, Graph)> = vec![(
        "all".to_string(),
        "All states".to_string(),
        flamegraph::all_states_graph(rec),
    )];
    for (i, state) in ThreadState::ALL.into_iter().enumerate() {
        let share = if all > 0 {
            totals[i] as f64 / all as f64
        } else {
            0.0
        };
        tabs.push((
            state.name().to_string(),
            format!("{} {}", state.name(), percent(share)),
            flamegraph::state_graph(rec, state, "state.svg"),
        ));
    }
    page.push_str(
        "<section id=\"flamegraphs\"><h2>Flamegraphs</h2>\n<p class=\"hint\">Width is samples. \
         Each thread's stacks stand on a frame for its state; code is drawn in the colours of \
         the state it ran in. Click a frame to zoom, hover for counts.</p>\n",
    );
    legend(page);
    page.push_str("<div class=\"tabs\">\n");
    for (i, (id, label, _)) in tabs.iter().enumerate() {
        let _ = writeln!(
            page,
            "<input type=\"radio\" name=\"flamegraph\" id=\"tab-{id}\"{}><label for=\"tab-{id}\">{}</label>",
            if i == 0 { " checked" } else { "" },
            text(label)
        );
    }
    for (id, _, graph) in &tabs {
        let _ = write!(
            page,
            "<div class=\"panel\" id=\"panel-{id}\">\n{}</div>\n",
            flame::render(graph, &format!("flame-{id}"))
        );
    }
    page.push_str("</div>\n</section>\n");
}

fn legend(page: &mut String) {
    page.push_str("<p class=\"legend\">Code by state: ");
    for state in ThreadState::ALL {
        let _ = write!(
            page,
            "<span class=\"swatch\" style=\"background:{}\"></span>{} ",
            palette::state_colour(state).hex(),
            state.name()
        );
    }
    page.push_str(" &nbsp; Threads by class: ");
    for class in CLASSES {
        let _ = write!(
            page,
            "<span class=\"swatch\" style=\"background:{}\"></span>{} ",
            palette::class_colour(class).hex(),
            class.name()
        );
    }
    page.push_str("</p>\n");
}

fn blame_section(page: &mut String, rec: &Recording) {
    let graph = flamegraph::blame_graph(rec);
    let _ = write!(
        page,
        "<section id=\"gil-blame\"><h2>GIL blame</h2>\n<p class=\"hint\">The stacks of the \
         thread holding the GIL, each sample weighted by the number of threads waiting for it \
         at that moment: the widest frames made others wait the most.</p>\n{}</section>\n",
        flame::render(&graph, "flame-blame")
    );
}

fn child_section(page: &mut String, child: &Report) {
    let _ = writeln!(
        page,
        "<details class=\"child\"><summary>Child process pid {}: <code>{}</code></summary>",
        child.pid,
        text(&child.command.join(" "))
    );
    process_sections(page, child, 3, &format!("pid-{}-", child.pid));
    for grandchild in &child.processes {
        child_section(page, grandchild);
    }
    page.push_str("</details>\n");
}

fn percent(fraction: f64) -> String {
    format!("{:.0}%", fraction * 100.0)
}

fn short_path(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests;
