//! Collapsed stacks ("a;b;c 12"), the lingua franca of flamegraph tools: `stacks.txt`, and
//! the input gilscope feeds to inferno.

use crate::model::python::FrameInfo;
use crate::model::recording::{Recording, StackCount};
use crate::model::state::ThreadState;
use std::collections::BTreeMap;

/// How a thread is named at the root of its stacks: "worker-0 (tid 1234)".
pub fn thread_label(rec: &Recording, tid: i32) -> String {
    match rec
        .threads
        .iter()
        .find(|t| t.tid == tid)
        .and_then(|t| t.name.as_deref())
    {
        Some(name) => format!("{name} (tid {tid})"),
        None => format!("thread (tid {tid})"),
    }
}

pub fn frame_label(frame: &FrameInfo) -> String {
    let function = frame.qualname.as_deref().unwrap_or(&frame.function);
    format!("{function} ({}:{})", frame.file, frame.line)
}

/// The state frame under a thread: "gil_held", or "idle: sleep".
pub fn state_label(stack: &StackCount) -> String {
    match stack.idle_reason {
        Some(reason) => format!("{}: {}", stack.state.name(), reason.name()),
        None => stack.state.name().to_string(),
    }
}

/// What goes between the root and the Python frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roots {
    /// thread;state;frames — every state in one graph.
    ThreadAndState,
    /// thread;frames — for a graph of a single state.
    Thread,
    /// frames only.
    None,
}

/// Collapsed lines for the stacks that `keep` selects, weighted by `weight` (zero drops a
/// stack). Semicolons in names are replaced, since they separate frames.
pub fn lines(
    rec: &Recording,
    roots: Roots,
    keep: impl Fn(&StackCount) -> bool,
    weight: impl Fn(&StackCount) -> u64,
) -> Vec<String> {
    let mut merged: BTreeMap<String, u64> = BTreeMap::new();
    for stack in rec.stacks.iter().filter(|s| keep(s)) {
        let w = weight(stack);
        if w == 0 {
            continue;
        }
        let mut parts = Vec::with_capacity(stack.frames.len() + 3);
        if roots != Roots::None {
            parts.push(thread_label(rec, stack.tid));
        }
        if roots == Roots::ThreadAndState {
            parts.push(state_label(stack));
        }
        if stack.truncated {
            parts.push("[deeper frames not read]".to_string());
        }
        parts.extend(stack.frames.iter().map(frame_label));
        if stack.frames.is_empty() {
            parts.push("[no Python frame]".to_string());
        }
        let line = parts
            .iter()
            .map(|p| p.replace(';', ","))
            .collect::<Vec<_>>()
            .join(";");
        *merged.entry(line).or_default() += w;
    }
    merged
        .into_iter()
        .map(|(stack, count)| format!("{stack} {count}"))
        .collect()
}

/// `stacks.txt`: every thread and state.
pub fn all_stacks(rec: &Recording) -> String {
    let mut text = lines(rec, Roots::ThreadAndState, |_| true, |s| s.count).join("\n");
    text.push('\n');
    text
}

pub fn in_state(state: ThreadState) -> impl Fn(&StackCount) -> bool {
    move |s| s.state == state
}
