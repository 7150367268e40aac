//! `speedscope.json` (https://www.speedscope.app/file-format-schema.json): one "sampled"
//! profile per thread, child processes included. Each distinct stack is one sample weighted
//! by its sample count, rooted at a frame naming the thread's state ("gil_held", "idle:
//! sleep") so states show as the first level of every view.

use super::collapsed::{state_label, thread_label};
use crate::model::recording::{Recording, StackCount};
use anyhow::Result;
use serde::Serialize;
use std::collections::HashMap;
use std::io::Write;

pub const SCHEMA: &str = "https://www.speedscope.app/file-format-schema.json";

#[derive(Debug, Serialize)]
pub struct File {
    #[serde(rename = "$schema")]
    pub schema: &'static str,
    pub shared: Shared,
    pub profiles: Vec<Profile>,
    pub name: String,
    #[serde(rename = "activeProfileIndex")]
    pub active_profile_index: usize,
    pub exporter: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Shared {
    pub frames: Vec<Frame>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Frame {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct Profile {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub name: String,
    pub unit: &'static str,
    #[serde(rename = "startValue")]
    pub start_value: u64,
    #[serde(rename = "endValue")]
    pub end_value: u64,
    /// Frame indices, outermost first.
    pub samples: Vec<Vec<usize>>,
    pub weights: Vec<u64>,
}

pub fn write(rec: &Recording, out: &mut impl Write) -> Result<()> {
    serde_json::to_writer(&mut *out, &file(rec))?;
    out.write_all(b"\n")?;
    Ok(())
}

/// The whole document for `rec` and its child processes.
pub fn file(rec: &Recording) -> File {
    let mut frames = FrameTable::default();
    let mut profiles = Vec::new();
    for (index, process) in std::iter::once(rec).chain(&rec.children).enumerate() {
        for thread in &process.threads {
            let stacks: Vec<&StackCount> = process
                .stacks
                .iter()
                .filter(|s| s.tid == thread.tid && s.count > 0)
                .collect();
            if stacks.is_empty() {
                continue;
            }
            let mut name = thread_label(process, thread.tid);
            if index > 0 {
                name = format!("{name} in pid {}", process.pid);
            }
            let samples: Vec<Vec<usize>> = stacks.iter().map(|s| frames.stack(s)).collect();
            let weights: Vec<u64> = stacks.iter().map(|s| s.count).collect();
            profiles.push(Profile {
                kind: "sampled",
                name,
                unit: "none",
                start_value: 0,
                end_value: weights.iter().sum(),
                samples,
                weights,
            });
        }
    }
    File {
        schema: SCHEMA,
        shared: Shared {
            frames: frames.frames,
        },
        profiles,
        name: format!("gilscope: pid {} {}", rec.pid, rec.command.join(" "))
            .trim_end()
            .to_string(),
        active_profile_index: 0,
        exporter: concat!("gilscope@", env!("CARGO_PKG_VERSION")),
    }
}

#[derive(Default)]
struct FrameTable {
    frames: Vec<Frame>,
    index: HashMap<Frame, usize>,
}

impl FrameTable {
    fn id(&mut self, frame: Frame) -> usize {
        if let Some(&id) = self.index.get(&frame) {
            return id;
        }
        let id = self.frames.len();
        self.frames.push(frame.clone());
        self.index.insert(frame, id);
        id
    }

    fn marker(&mut self, name: &str) -> usize {
        self.id(Frame {
            name: name.to_string(),
            file: None,
            line: None,
        })
    }

    /// State first, then the Python frames outermost first (markers as in stacks.txt).
    fn stack(&mut self, stack: &StackCount) -> Vec<usize> {
        let mut ids = Vec::with_capacity(stack.frames.len() + 2);
        ids.push(self.marker(&state_label(stack)));
        if stack.truncated {
            ids.push(self.marker("[deeper frames not read]"));
        }
        for f in &stack.frames {
            ids.push(self.id(Frame {
                name: f.qualname.clone().unwrap_or_else(|| f.function.clone()),
                file: Some(f.file.clone()),
                line: Some(f.line),
            }));
        }
        if stack.frames.is_empty() {
            ids.push(self.marker("[no Python frame]"));
        }
        ids
    }
}
