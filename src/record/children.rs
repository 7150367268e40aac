//! `--subprocesses`: find the target's descendants (multiprocessing workers, spawned
//! interpreters) and sample each Python one as a process of its own.

use super::{Profiled, command_line};
use crate::sample::Sampler;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

pub struct Children {
    root: i32,
    keep_timeline: bool,
    /// Children found from now on count their samples into `--push` windows too.
    pub push_windows: bool,
    profiled: Vec<Profiled>,
    /// Descendants that were not Python when last tried, with the executable they had then,
    /// tried again if they exec something else.
    not_python: HashMap<i32, Option<PathBuf>>,
    /// `--stall-ms`, for the children's event loops.
    pub stall_ms: f64,
    pub verify_flags: bool,
}

impl Children {
    pub fn new(root: i32, keep_timeline: bool) -> Self {
        Children {
            root,
            keep_timeline,
            push_windows: false,
            profiled: Vec::new(),
            not_python: HashMap::new(),
            stall_ms: crate::profile::event_loop::DEFAULT_STALL_MS,
            verify_flags: false,
        }
    }

    pub fn sample_all(&mut self, blocking: bool) {
        for child in self.profiled.iter_mut().filter(|c| c.alive()) {
            // A child's failure never ends the recording of the main target.
            child.sample(blocking);
        }
    }

    /// Attaches to descendants not seen before.
    pub fn discover(&mut self) {
        let known: HashSet<i32> = self.profiled.iter().map(|c| c.target.pid).collect();
        for pid in descendants(self.root) {
            if known.contains(&pid) {
                continue;
            }
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            if self.not_python.get(&pid).is_some_and(|seen| *seen == exe) {
                continue;
            }
            match Sampler::attach(pid) {
                Ok(mut target) => {
                    target.set_verify_flags(self.verify_flags);
                    self.not_python.remove(&pid);
                    let mut child = Profiled::new(target, command_line(pid), self.keep_timeline);
                    child.aggregator.set_stall_threshold_ms(self.stall_ms);
                    if self.push_windows {
                        child.aggregator.keep_windows();
                    }
                    self.profiled.push(child);
                }
                Err(_) => {
                    self.not_python.insert(pid, exe);
                }
            }
        }
    }

    pub fn profiled_mut(&mut self) -> impl Iterator<Item = &mut Profiled> {
        self.profiled.iter_mut()
    }

    pub fn into_profiled(self) -> Vec<Profiled> {
        self.profiled
    }
}

/// Every live descendant of `root`, from the parent ids in /proc/*/stat.
fn descendants(root: i32) -> Vec<i32> {
    let mut children_of: HashMap<i32, Vec<i32>> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = parent_of(pid) {
            children_of.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        for &child in children_of.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            if !found.contains(&child) {
                found.push(child);
                queue.push(child);
            }
        }
    }
    found
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}
