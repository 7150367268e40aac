//! Flamegraph SVGs through inferno. A graph with nothing to show is still a valid SVG that
//! says so, so CI artifacts and links never break.

use super::collapsed::{Roots, in_state, lines};
use crate::classify::ThreadState;
use crate::profile::recording::{Recording, StackCount};
use anyhow::Result;
use inferno::flamegraph::{self, Options, color::MultiPalette, color::Palette};
use std::io::Write;

pub struct Graph {
    pub file_name: &'static str,
    pub title: String,
    pub lines: Vec<String>,
    /// What to say instead when `lines` is empty.
    pub empty_message: String,
    pub count_name: &'static str,
}

/// The graphs `record` always writes.
pub fn standard_graphs(rec: &Recording) -> Vec<Graph> {
    let mut graphs = vec![Graph {
        file_name: "flamegraph.svg",
        title: format!("gilscope: all threads by state, pid {}", rec.pid),
        lines: lines(rec, Roots::ThreadAndState, |_| true, |s| s.count),
        empty_message: "No samples were taken.".to_string(),
        count_name: "samples",
    }];
    for (state, file_name) in [
        (ThreadState::GilHeld, "gil_held.svg"),
        (ThreadState::GilWait, "gil_wait.svg"),
        (ThreadState::NativeNogil, "native_nogil.svg"),
    ] {
        graphs.push(Graph {
            file_name,
            title: format!("gilscope: {} stacks, pid {}", state.name(), rec.pid),
            lines: lines(rec, Roots::Thread, in_state(state), |s| s.count),
            empty_message: format!("No thread was ever in state {}.", state.name()),
            count_name: "samples",
        });
    }
    graphs.push(blame_graph(rec));
    graphs
}

/// GIL blame: the holder's stacks, each sample weighted by how many threads were waiting.
pub fn blame_graph(rec: &Recording) -> Graph {
    Graph {
        file_name: "gil_blame.svg",
        title: format!(
            "gilscope: GIL blame (holder stacks weighted by waiting threads), pid {}",
            rec.pid
        ),
        lines: lines(
            rec,
            Roots::Thread,
            in_state(ThreadState::GilHeld),
            |s: &StackCount| s.waiters,
        ),
        empty_message: "No thread ever waited for the GIL: nothing to blame.".to_string(),
        count_name: "waiting threads",
    }
}

pub fn render(graph: &Graph, out: &mut impl Write) -> Result<()> {
    if graph.lines.is_empty() {
        out.write_all(empty_svg(&graph.title, &graph.empty_message).as_bytes())?;
        return Ok(());
    }
    let mut options = Options::default();
    options.title = graph.title.clone();
    options.count_name = graph.count_name.to_string();
    options.colors = Palette::Multi(MultiPalette::Python);
    options.deterministic = true;
    options.hash = true;
    flamegraph::from_lines(&mut options, graph.lines.iter().map(String::as_str), out)?;
    Ok(())
}

fn empty_svg(title: &str, message: &str) -> String {
    format!(
        r##"<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<svg version="1.1" width="1200" height="120" xmlns="http://www.w3.org/2000/svg">
<rect x="0" y="0" width="1200" height="120" fill="#f8f8f8"/>
<text x="600" y="40" font-family="Verdana" font-size="17" text-anchor="middle">{}</text>
<text x="600" y="80" font-family="Verdana" font-size="14" text-anchor="middle">{}</text>
</svg>
"##,
        xml_escape(title),
        xml_escape(message)
    )
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
