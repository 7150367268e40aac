//! Flamegraph SVGs through inferno, coloured by state: each frame's colour comes from
//! inferno's `palette_map`, filled in here for every frame name. A frame above a state frame
//! takes that state's colour family, so in `flamegraph.svg` a function that appears under both
//! `gil_held` and `gil_wait` gets two names that differ only by an inferno annotation suffix
//! (`_[k]`, `_[w]`, `_[j]`, `_[i]`), which inferno strips from every label and tooltip. A
//! legend is added to the SVG, the one thing inferno has no option for.
//!
//! Frames narrower than [`MIN_FRAME_PERCENT`] of the width are left out, and so do not set
//! the graph's height. A graph with nothing to show is still a valid SVG that says so, so CI
//! artifacts and links never break.

use super::collapsed::{Roots, in_state, lines, thread_label};
use super::palette::{self, CLASSES, NEUTRAL, Rgb};
use crate::model::recording::{Recording, StackCount};
use crate::model::report::ThreadClass;
use crate::model::state::ThreadState;
use crate::profile::figures::classify_thread;
use anyhow::{Context, Result};
use inferno::flamegraph::color::{BackgroundColor, Color, PaletteMap};
use inferno::flamegraph::{self, Options};
use quick_xml::events::Event;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;

/// Frames narrower than this share of the graph (in percent) are not drawn: 2.4 px of the
/// default 1200 px, too narrow to see or point at.
pub const MIN_FRAME_PERCENT: f64 = 0.2;

pub struct Graph {
    pub file_name: &'static str,
    pub title: String,
    /// Collapsed stacks; in a graph of every state, frames above a state frame carry that
    /// state's annotation (see [`display_name`]).
    pub lines: Vec<String>,
    /// What to say instead when `lines` is empty.
    pub empty_message: String,
    pub count_name: &'static str,
    /// The states drawn, for the legend.
    pub states: Vec<ThreadState>,
    /// The colour of every frame name in `lines`.
    pub colours: HashMap<String, Rgb>,
}

/// The graphs `record` always writes.
pub fn standard_graphs(rec: &Recording) -> Vec<Graph> {
    let mut graphs = vec![all_states_graph(rec)];
    for (state, file_name) in [
        (ThreadState::GilHeld, "gil_held.svg"),
        (ThreadState::GilWait, "gil_wait.svg"),
        (ThreadState::NativeNogil, "native_nogil.svg"),
    ] {
        graphs.push(state_graph(rec, state, file_name));
    }
    graphs.push(blame_graph(rec));
    graphs
}

/// Every thread, each sample under a frame for its state.
pub fn all_states_graph(rec: &Recording) -> Graph {
    let collapsed = lines(rec, Roots::ThreadAndState, |_| true, |s| s.count);
    let (lines, colours) = colour(rec, collapsed, None);
    Graph {
        file_name: "flamegraph.svg",
        title: format!("gilscope: all threads by state, pid {}", rec.pid),
        lines,
        empty_message: "No samples were taken.".to_string(),
        count_name: "samples",
        states: ThreadState::ALL.to_vec(),
        colours,
    }
}

/// The stacks of one state, under their threads.
pub fn state_graph(rec: &Recording, state: ThreadState, file_name: &'static str) -> Graph {
    let collapsed = lines(rec, Roots::Thread, in_state(state), |s| s.count);
    let (lines, colours) = colour(rec, collapsed, Some(state));
    Graph {
        file_name,
        title: format!("gilscope: {} stacks, pid {}", state.name(), rec.pid),
        lines,
        empty_message: format!("No thread was ever in state {}.", state.name()),
        count_name: "samples",
        states: vec![state],
        colours,
    }
}

/// GIL blame: the holder's stacks, each sample weighted by how many threads were waiting.
pub fn blame_graph(rec: &Recording) -> Graph {
    let collapsed = lines(
        rec,
        Roots::Thread,
        in_state(ThreadState::GilHeld),
        |s: &StackCount| s.waiters,
    );
    let (lines, colours) = colour(rec, collapsed, Some(ThreadState::GilHeld));
    Graph {
        file_name: "gil_blame.svg",
        title: format!(
            "gilscope: GIL blame (holder stacks weighted by waiting threads), pid {}",
            rec.pid
        ),
        lines,
        empty_message: "No thread ever waited for the GIL: nothing to blame.".to_string(),
        count_name: "waiting threads",
        states: vec![ThreadState::GilHeld],
        colours,
    }
}

/// The inferno annotation that keeps a state's frames apart from the same function's frames
/// in other states. Inferno strips these four suffixes from what it shows.
fn annotation(state: ThreadState) -> &'static str {
    match state {
        ThreadState::GilHeld => "_[k]",
        ThreadState::GilWait => "_[w]",
        ThreadState::NativeNogil => "_[j]",
        ThreadState::Idle => "_[i]",
    }
}

/// A frame name as shown: without the state annotation.
pub fn display_name(name: &str) -> &str {
    ThreadState::ALL
        .into_iter()
        .find_map(|state| name.strip_suffix(annotation(state)))
        .unwrap_or(name)
}

/// The state a state frame's label names ("gil_wait", "idle: sleep").
fn state_of_label(label: &str) -> Option<ThreadState> {
    let name = label.split(':').next().unwrap_or(label);
    ThreadState::ALL.into_iter().find(|s| s.name() == name)
}

/// Colours the frames of collapsed `lines`: the thread frame by the thread's class, the state
/// frame by its state, and every frame above by that state's family. With `state` None, the
/// lines carry a state frame after the thread and the frames above it are annotated.
fn colour(
    rec: &Recording,
    lines: Vec<String>,
    state: Option<ThreadState>,
) -> (Vec<String>, HashMap<String, Rgb>) {
    let classes: HashMap<String, ThreadClass> = rec
        .threads
        .iter()
        .map(|t| (thread_label(rec, t.tid), classify_thread(t)))
        .collect();
    let mut colours = HashMap::new();
    let mut out = Vec::with_capacity(lines.len());
    for line in lines {
        let Some((stack, count)) = line.rsplit_once(' ') else {
            continue;
        };
        let parts: Vec<&str> = stack.split(';').collect();
        let thread_at = parts.iter().position(|p| classes.contains_key(*p));
        let mut frames: Vec<String> = Vec::with_capacity(parts.len());
        let mut frame_state = state;
        for (i, part) in parts.iter().enumerate() {
            let name = match (thread_at, frame_state) {
                (Some(t), _) if i == t => {
                    colours.insert(part.to_string(), palette::class_colour(classes[*part]));
                    part.to_string()
                }
                (Some(t), None) if i == t + 1 => {
                    frame_state = state_of_label(part);
                    let colour = frame_state.map_or(NEUTRAL, palette::state_colour);
                    colours.insert(part.to_string(), colour);
                    part.to_string()
                }
                (Some(t), Some(s)) if i > t => {
                    let name = match state {
                        None => format!("{part}{}", annotation(s)),
                        Some(_) => part.to_string(),
                    };
                    colours
                        .entry(name.clone())
                        .or_insert_with(|| palette::code_colour(s, part));
                    name
                }
                _ => {
                    colours.entry(part.to_string()).or_insert(NEUTRAL);
                    part.to_string()
                }
            };
            frames.push(name);
        }
        out.push(format!("{} {count}", frames.join(";")));
    }
    (out, colours)
}

pub fn render(graph: &Graph, out: &mut impl Write) -> Result<()> {
    if graph.lines.is_empty() {
        out.write_all(empty_svg(&graph.title, &graph.empty_message).as_bytes())?;
        return Ok(());
    }
    let mut palette = PaletteMap::default();
    for (name, rgb) in &graph.colours {
        palette.insert(name, inferno_colour(*rgb));
    }
    // Inferno's root frame ("all") is named by the empty string.
    palette.insert("", inferno_colour(NEUTRAL));
    let mut options = Options::default();
    options.title = graph.title.clone();
    // Keeps a row free under the title; the legend is drawn there.
    options.subtitle = Some(String::new());
    options.count_name = graph.count_name.to_string();
    options.bgcolors = Some(BackgroundColor::Grey);
    options.palette_map = Some(&mut palette);
    options.min_width = MIN_FRAME_PERCENT;
    options.deterministic = true;
    options.hash = true;
    let font_size = options.font_size;
    let mut svg = Vec::new();
    flamegraph::from_lines(
        &mut options,
        graph.lines.iter().map(String::as_str),
        &mut svg,
    )?;
    let legend = legend(&graph.states, font_size);
    insert_before_frames(&svg, &legend, out)
}

fn inferno_colour(rgb: Rgb) -> Color {
    Color {
        r: rgb.r,
        g: rgb.g,
        b: rgb.b,
    }
}

/// The legend: a swatch per state drawn, then one per thread class, on the row under the
/// title (the subtitle's row). Pixel positions from the left, as inferno's own controls.
fn legend(states: &[ThreadState], font_size: usize) -> String {
    let char_width = font_size as f64 * 0.59;
    let baseline = (font_size * 4) as f64;
    let top = baseline - font_size as f64 + 2.0;
    let mut x = 10.0;
    let mut svg = String::from(r#"<g id="legend">"#);
    let label = |svg: &mut String, x: &mut f64, text: &str| {
        let _ = write!(
            svg,
            r#"<text x="{x:.1}" y="{baseline:.1}" fill="rgb(80,80,80)">{text}</text>"#
        );
        *x += text.len() as f64 * char_width + 8.0;
    };
    let swatch = |svg: &mut String, x: &mut f64, colour: Rgb, text: &str| {
        let _ = write!(
            svg,
            r#"<rect x="{x:.1}" y="{top:.1}" width="{size}" height="{size}" fill="{}" rx="2"/><text x="{:.1}" y="{baseline:.1}">{text}</text>"#,
            colour.hex(),
            *x + font_size as f64 + 4.0,
            size = font_size,
        );
        *x += font_size as f64 + 4.0 + text.len() as f64 * char_width + 14.0;
    };
    let heading = if states.len() == 1 {
        "code in state:"
    } else {
        "code by state:"
    };
    label(&mut svg, &mut x, heading);
    for &state in states {
        swatch(&mut svg, &mut x, palette::state_colour(state), state.name());
    }
    x += 12.0;
    label(&mut svg, &mut x, "threads by class:");
    for class in CLASSES {
        swatch(&mut svg, &mut x, palette::class_colour(class), class.name());
    }
    svg.push_str("</g>");
    svg
}

/// Copies inferno's SVG to `out`, with `legend` inserted just before the frames (`<svg
/// id="frames">`), so it is drawn beneath them and outside their zoom. Fails if inferno's
/// output has no such element.
fn insert_before_frames(svg: &[u8], legend: &str, out: &mut impl Write) -> Result<()> {
    let mut reader = quick_xml::Reader::from_reader(svg);
    let mut writer = quick_xml::Writer::new(out);
    let mut inserted = false;
    loop {
        let event = reader
            .read_event()
            .context("inferno wrote an SVG that does not parse")?;
        if let Event::Start(start) = &event
            && !inserted
            && start.name().as_ref() == b"svg"
            && start
                .try_get_attribute("id")
                .ok()
                .flatten()
                .is_some_and(|id| id.value.as_ref() == b"frames")
        {
            writer.get_mut().write_all(legend.as_bytes())?;
            inserted = true;
        }
        if let Event::Eof = event {
            break;
        }
        writer.write_event(event)?;
    }
    anyhow::ensure!(
        inserted,
        "inferno's SVG has no frames element to put a legend by"
    );
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
        html_escape::encode_text(title),
        html_escape::encode_text(message)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::palette::family_of;
    use quick_xml::events::BytesStart;
    use serde_json::{Value, json};

    fn stack(tid: i32, state: &str, functions: &[&str], count: u64) -> Value {
        let frames: Vec<Value> = functions
            .iter()
            .map(|f| json!({"function": f, "qualname": null, "file": "app.py", "line": 1}))
            .collect();
        json!({"tid": tid, "state": state, "idle_reason": null, "count": count,
               "waiters": count, "frames": frames})
    }

    /// A CPU-bound thread "hog" and a GIL-bound thread "victim" running the same `crunch`,
    /// plus any `extra` stacks.
    fn recording(extra: Vec<Value>) -> Recording {
        let mut stacks = vec![
            stack(1, "gil_held", &["main", "crunch"], 900),
            stack(2, "gil_held", &["main", "crunch"], 300),
            stack(2, "gil_wait", &["main", "crunch"], 700),
        ];
        stacks.extend(extra);
        let thread = |tid: i32, name: &str, held: u64, wait: u64| {
            json!({"tid": tid, "name": name, "samples": held + wait,
                   "states": {"gil_held": held, "gil_wait": wait, "native_nogil": 0, "idle": 0},
                   "idle_reasons": {"sleep": 0, "io": 0, "lock": 0, "other": 0}})
        };
        serde_json::from_value(json!({
            "format": "gilscope.recording/1", "pid": 7, "command": ["python", "app.py"],
            "python": {"version": "3.12.1", "build": "shared", "free_threaded": false,
                       "gil": "enabled", "binary": "/usr/bin/python3"},
            "duration_s": 10.0, "requested_rate_hz": 100.0, "samples": 1000,
            "missed_samples": 0, "torn_samples": 0, "stopped_samples": 0,
            "stop_reason": "the duration elapsed", "cpus": 2,
            "gil": {"held": 1000, "contended": 700, "waiters": 700, "on_cpu": 1000,
                    "first_switch_number": 0, "last_switch_number": 10, "interval_us": 5000},
            "threads": [thread(1, "hog", 900, 0), thread(2, "victim", 300, 700)],
            "stacks": stacks, "children": [],
        }))
        .expect("a valid recording")
    }

    struct Svg {
        height: u64,
        /// (title, fill) of every frame.
        frames: Vec<(String, Rgb)>,
        legend: Vec<String>,
    }

    fn attribute(start: &BytesStart, name: &str) -> Option<String> {
        let value = start.try_get_attribute(name).ok().flatten()?;
        Some(String::from_utf8(value.value.to_vec()).unwrap())
    }

    fn fill(text: &str) -> Rgb {
        let inner = text.trim_start_matches("rgb(").trim_end_matches(')');
        let [r, g, b] = <[u8; 3]>::try_from(
            inner
                .split(',')
                .map(|v| v.trim().parse().unwrap())
                .collect::<Vec<u8>>(),
        )
        .unwrap();
        Rgb { r, g, b }
    }

    fn draw(graph: &Graph) -> Svg {
        let mut bytes = Vec::new();
        render(graph, &mut bytes).expect("render");
        let mut reader = quick_xml::Reader::from_reader(&bytes[..]);
        let mut svg = Svg {
            height: 0,
            frames: Vec::new(),
            legend: Vec::new(),
        };
        let (mut in_legend, mut in_title, mut title) = (false, false, String::new());
        loop {
            match reader
                .read_event()
                .expect("inferno's SVG with a legend parses")
            {
                Event::Start(e) if e.name().as_ref() == b"svg" && svg.height == 0 => {
                    svg.height = attribute(&e, "height").unwrap().parse().unwrap();
                }
                Event::Start(e) if e.name().as_ref() == b"g" => {
                    in_legend = attribute(&e, "id").as_deref() == Some("legend");
                }
                Event::Start(e) if e.name().as_ref() == b"title" => in_title = true,
                Event::Text(t) if in_title => title = t.decode().unwrap().into_owned(),
                Event::Text(t) if in_legend => svg.legend.push(t.decode().unwrap().into_owned()),
                Event::End(e) if e.name().as_ref() == b"title" => in_title = false,
                Event::End(e) if e.name().as_ref() == b"g" => in_legend = false,
                Event::Empty(e) if e.name().as_ref() == b"rect" && !title.is_empty() => {
                    if let Some(colour) = attribute(&e, "fill") {
                        svg.frames.push((std::mem::take(&mut title), fill(&colour)));
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        svg
    }

    fn fills_of<'a>(svg: &'a Svg, prefix: &'a str) -> impl Iterator<Item = Rgb> + 'a {
        svg.frames
            .iter()
            .filter(move |(title, _)| title.starts_with(prefix))
            .map(|(_, fill)| *fill)
    }

    #[test]
    fn code_takes_the_colour_family_of_the_state_it_ran_in() {
        let svg = draw(&all_states_graph(&recording(Vec::new())));
        let families: Vec<Option<ThreadState>> =
            fills_of(&svg, "crunch (app.py:1)").map(family_of).collect();
        assert_eq!(
            families.len(),
            3,
            "crunch under hog/held, victim/held, victim/wait"
        );
        assert_eq!(
            families
                .iter()
                .filter(|f| **f == Some(ThreadState::GilWait))
                .count(),
            1
        );
        assert_eq!(
            families
                .iter()
                .filter(|f| **f == Some(ThreadState::GilHeld))
                .count(),
            2
        );
        for state in [ThreadState::GilHeld, ThreadState::GilWait] {
            let own: Vec<Rgb> = fills_of(&svg, &format!("{} (", state.name())).collect();
            assert!(!own.is_empty() && own.iter().all(|c| *c == palette::state_colour(state)));
        }
        let thread = |label| fills_of(&svg, label).next().unwrap();
        assert_eq!(
            thread("hog (tid 1)"),
            palette::class_colour(ThreadClass::CpuBound)
        );
        assert_eq!(
            thread("victim (tid 2)"),
            palette::class_colour(ThreadClass::GilBound)
        );
        assert!(
            svg.frames.iter().all(|(title, _)| !title.contains("_[")),
            "annotations never show: {:?}",
            svg.frames
        );
    }

    #[test]
    fn every_svg_has_a_legend_of_its_states_and_the_thread_classes() {
        let rec = recording(Vec::new());
        let all = draw(&all_states_graph(&rec));
        for name in [
            "gil_held",
            "gil_wait",
            "native_nogil",
            "idle",
            "cpu_bound",
            "io_bound",
        ] {
            assert!(
                all.legend.iter().any(|l| l == name),
                "{name} not in {:?}",
                all.legend
            );
        }
        let wait = draw(&state_graph(&rec, ThreadState::GilWait, "gil_wait.svg"));
        assert!(wait.legend.iter().any(|l| l == "gil_wait"));
        assert!(
            !wait.legend.iter().any(|l| l == "gil_held"),
            "{:?}",
            wait.legend
        );
        assert!(fills_of(&wait, "crunch (").all(|c| family_of(c) == Some(ThreadState::GilWait)));
        let blame = draw(&blame_graph(&rec));
        assert!(fills_of(&blame, "crunch (").all(|c| family_of(c) == Some(ThreadState::GilHeld)));
    }

    #[test]
    fn stacks_too_narrow_to_draw_do_not_set_the_height() {
        let deep: Vec<String> = (0..40).map(|i| format!("startup{i}")).collect();
        let deep: Vec<&str> = deep.iter().map(String::as_str).collect();
        let height = |extra| draw(&all_states_graph(&recording(extra))).height;
        let plain = height(Vec::new());
        // One sample in 1901: 0.05% of the width.
        assert_eq!(height(vec![stack(1, "gil_held", &deep, 1)]), plain);
        // Forty samples: 2%, drawn: 40 frames where the others have 2, 16 px a row.
        let tall = height(vec![stack(1, "gil_held", &deep, 40)]);
        assert_eq!(tall, plain + 38 * 16);
    }
}
