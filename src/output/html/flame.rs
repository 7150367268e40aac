//! A flamegraph drawn as inline SVG for report.html, from the same coloured lines as the SVG
//! files. Each frame is a nested `<svg>` positioned in percent, so the graph fills the page
//! at any width and a frame clips its own label. It reads without any script (tooltips are
//! `<title>`s); report.js adds zoom, search and a details line.

use super::{attr, text};
use crate::output::flamegraph::{Graph, MIN_FRAME_PERCENT, display_name};
use crate::output::palette::NEUTRAL;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Height of a frame's row, in px.
const ROW: usize = 17;

#[derive(Default)]
struct Node {
    value: u64,
    children: BTreeMap<String, Node>,
}

fn tree(lines: &[String]) -> Node {
    let mut root = Node::default();
    for line in lines {
        let Some((stack, count)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(count) = count.parse::<u64>() else {
            continue;
        };
        root.value += count;
        let mut node = &mut root;
        for part in stack.split(';') {
            node = node.children.entry(part.to_string()).or_default();
            node.value += count;
        }
    }
    root
}

struct Frame<'a> {
    name: &'a str,
    start: u64,
    value: u64,
    depth: usize,
}

/// Frames wide enough to draw, in drawing order (parents before children).
fn drawable(root: &Node) -> Vec<Frame<'_>> {
    let min_value = root.value as f64 * MIN_FRAME_PERCENT / 100.0;
    let mut frames = vec![Frame {
        name: "",
        start: 0,
        value: root.value,
        depth: 0,
    }];
    let mut pending: Vec<(&Node, u64, usize)> = vec![(root, 0, 0)];
    while let Some((node, start, depth)) = pending.pop() {
        let mut x = start;
        for (name, child) in &node.children {
            if child.value as f64 >= min_value {
                frames.push(Frame {
                    name,
                    start: x,
                    value: child.value,
                    depth: depth + 1,
                });
                pending.push((child, x, depth + 1));
            }
            x += child.value;
        }
    }
    frames
}

/// The graph with its toolbar, or the graph's empty message. `id` must be unique in the page.
pub fn render(graph: &Graph, id: &str) -> String {
    if graph.lines.is_empty() {
        return format!("<p class=\"empty\">{}</p>\n", text(&graph.empty_message));
    }
    let root = tree(&graph.lines);
    let frames = drawable(&root);
    let depth = frames.iter().map(|f| f.depth).max().unwrap_or(0);
    let height = (depth + 1) * ROW;
    let total = root.value.max(1);
    let mut out = String::new();
    let _ = write!(
        out,
        "<div class=\"flame\" id=\"{id}\">\n<div class=\"toolbar\"><button type=\"button\" \
         class=\"reset\" disabled>Reset zoom</button><input type=\"search\" class=\"search\" \
         placeholder=\"Search functions\" aria-label=\"Search functions\"><span \
         class=\"matched\"></span></div>\n<svg class=\"graph\" width=\"100%\" \
         height=\"{height}\" data-total=\"{total}\" role=\"img\" aria-label=\"{}\">\n",
        attr(&graph.title)
    );
    for frame in &frames {
        let name = display_name(frame.name);
        let label = if frame.depth == 0 { "all" } else { name };
        let colour = graph.colours.get(frame.name).copied().unwrap_or(NEUTRAL);
        let share = frame.value as f64 * 100.0 / total as f64;
        let _ = writeln!(
            out,
            "<svg class=\"fr\" x=\"{:.4}%\" y=\"{}\" width=\"{:.4}%\" height=\"{}\" \
             data-x=\"{}\" data-w=\"{}\" data-d=\"{}\"><title>{} ({} {}, {share:.2}%)</title>\
             <rect width=\"100%\" height=\"100%\" fill=\"{}\"/><text x=\"3\" y=\"12\">{}</text></svg>",
            frame.start as f64 * 100.0 / total as f64,
            height - (frame.depth + 1) * ROW,
            share,
            ROW - 1,
            frame.start,
            frame.value,
            frame.depth,
            text(label),
            frame.value,
            graph.count_name,
            colour.hex(),
            text(label),
        );
    }
    out.push_str("</svg>\n<p class=\"details\">&nbsp;</p>\n</div>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn graph(lines: &[&str]) -> Graph {
        Graph {
            file_name: "test.svg",
            title: "t".into(),
            lines: lines.iter().map(|l| l.to_string()).collect(),
            empty_message: "nothing".into(),
            count_name: "samples",
            states: Vec::new(),
            colours: HashMap::new(),
        }
    }

    #[test]
    fn frames_too_narrow_to_draw_do_not_set_the_height() {
        let deep: Vec<String> = (0..30).map(|i| format!("f{i}")).collect();
        let deep_line = format!("t;{} 1", deep.join(";"));
        let shallow = graph(&["t;a;b 999"]);
        let with_deep = graph(&["t;a;b 999", &deep_line]);
        let height = |g: &Graph| {
            let page = render(g, "g");
            let at = page.find("height=\"").unwrap() + 8;
            page[at..at + page[at..].find('"').unwrap()].to_string()
        };
        assert_eq!(height(&shallow), (4 * ROW).to_string());
        assert_eq!(
            height(&with_deep),
            height(&shallow),
            "one sample in 1000 is 0.1%"
        );
        let wide_deep = format!("t;{} 10", deep.join(";"));
        let drawn = graph(&["t;a;b 990", &wide_deep]);
        assert_eq!(height(&drawn), (32 * ROW).to_string(), "1% is drawn");
    }

    #[test]
    fn names_are_escaped_and_positions_add_up() {
        let page = render(&graph(&["t;<script>x</script> 3", "t;a&b 1"]), "g");
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;x&lt;/script&gt;"), "{page}");
        assert!(page.contains(">a&amp;b<"), "{page}");
        // Children are sorted by name ('<' before 'a') and laid out left to right.
        assert!(
            page.contains("x=\"75.0000%\" y=\"0\" width=\"25.0000%\""),
            "{page}"
        );
    }
}
