//! `profile.pb.gz`: a gzipped pprof profile (google/pprof's profile.proto), the format
//! `go tool pprof`, Grafana Pyroscope and Parca read. Every distinct (stack, labels) is one
//! sample; the GIL state is a label (`gil_state`), so a continuous-profiling server can
//! filter or group any flamegraph by it. See docs/formats/pprof.md.

pub mod proto;

use crate::model::python::FrameInfo;
use crate::model::recording::{Recording, StackCount};
use anyhow::Result;
use flate2::Compression;
use flate2::write::GzEncoder;
use prost::Message;
use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const FILE: &str = "profile.pb.gz";

/// Root frames that stand for what was not read, as in stacks.txt.
const NO_PYTHON_FRAME: &str = "[no Python frame]";
const DEEPER_FRAMES: &str = "[deeper frames not read]";
const MAPPING_ID: u64 = 1;

/// What the recording itself does not say.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// When the recorded span began (`time_nanos`).
    pub start: SystemTime,
    /// Label every sample with `process` (the command line): with --subprocesses, where one
    /// profile holds several processes.
    pub process_label: bool,
}

impl Options {
    /// For a recording that just ended: it began `duration_s` ago.
    pub fn ended_now(rec: &Recording) -> Options {
        let span = Duration::try_from_secs_f64(rec.duration_s).unwrap_or_default();
        Options {
            start: SystemTime::now()
                .checked_sub(span)
                .unwrap_or(SystemTime::now()),
            process_label: !rec.children.is_empty(),
        }
    }
}

/// Writes `profile.pb.gz` for a finished recording.
pub fn write(rec: &Recording, out: &mut impl Write) -> Result<()> {
    out.write_all(&encode_gzip(rec, &Options::ended_now(rec))?)?;
    Ok(())
}

/// The profile, serialized and gzipped.
pub fn encode_gzip(rec: &Recording, options: &Options) -> Result<Vec<u8>> {
    let bytes = profile(rec, options).encode_to_vec();
    let mut gz = GzEncoder::new(Vec::with_capacity(bytes.len() / 4), Compression::default());
    gz.write_all(&bytes)?;
    Ok(gz.finish()?)
}

/// The profile of `rec` and its child processes.
pub fn profile(rec: &Recording, options: &Options) -> proto::Profile {
    let mut b = Builder::default();
    let period_ns = period_ns(rec.requested_rate_hz);
    let wall = b.value_type("wall", "nanoseconds");
    let sample_type = vec![b.value_type("samples", "count"), wall];
    for process in std::iter::once(rec).chain(&rec.children) {
        for stack in process.stacks.iter().filter(|s| s.count > 0) {
            b.add(process, stack, options.process_label, period_ns);
        }
    }
    // One mapping, the interpreter, whose frames come already symbolized: readers must not
    // try to symbolize addresses.
    let mapping = vec![proto::Mapping {
        id: MAPPING_ID,
        filename: b.string(&rec.python.binary),
        has_functions: true,
        has_filenames: true,
        has_line_numbers: true,
        ..Default::default()
    }];
    let default_sample_type = wall.r#type;
    let comment = vec![b.string(&format!(
        "gilscope {}: pid {} {}",
        env!("CARGO_PKG_VERSION"),
        rec.pid,
        rec.command.join(" ")
    ))];
    proto::Profile {
        sample_type,
        sample: b.samples.into_iter().map(|(_, s)| s).collect(),
        mapping,
        location: b.locations,
        function: b.functions,
        string_table: b.strings.table,
        time_nanos: options
            .start
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64),
        duration_nanos: (rec.duration_s.max(0.0) * 1e9) as i64,
        period_type: Some(wall),
        period: period_ns,
        comment,
        default_sample_type,
        ..Default::default()
    }
}

/// Nanoseconds between two samples at `rate_hz`: each sample stands for that much wall time.
pub fn period_ns(rate_hz: f64) -> i64 {
    if rate_hz > 0.0 {
        (1e9 / rate_hz).round() as i64
    } else {
        0
    }
}

#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn id(&mut self, text: &str) -> i64 {
        if self.table.is_empty() {
            self.table.push(String::new());
            self.index.insert(String::new(), 0);
        }
        if let Some(&id) = self.index.get(text) {
            return id;
        }
        let id = self.table.len() as i64;
        self.table.push(text.to_string());
        self.index.insert(text.to_string(), id);
        id
    }
}

/// A Python function as pprof names it: display name, code name, file.
#[derive(PartialEq, Eq, Hash)]
struct FunctionKey {
    name: String,
    system_name: String,
    file: String,
}

/// A distinct stack (leaf first) with distinct labels.
#[derive(PartialEq, Eq, Hash)]
struct SampleKey {
    locations: Vec<u64>,
    labels: Vec<proto::Label>,
}

#[derive(Default)]
struct Builder {
    strings: Strings,
    functions: Vec<proto::Function>,
    function_ids: HashMap<FunctionKey, u64>,
    locations: Vec<proto::Location>,
    location_ids: HashMap<(u64, i64), u64>,
    /// In first-seen order, so the output is deterministic.
    samples: Vec<(SampleKey, proto::Sample)>,
    sample_index: HashMap<SampleKey, usize>,
}

impl Builder {
    fn string(&mut self, text: &str) -> i64 {
        self.strings.id(text)
    }

    fn value_type(&mut self, kind: &str, unit: &str) -> proto::ValueType {
        proto::ValueType {
            r#type: self.string(kind),
            unit: self.string(unit),
        }
    }

    fn function(&mut self, key: FunctionKey) -> u64 {
        if let Some(&id) = self.function_ids.get(&key) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        let function = proto::Function {
            id,
            name: self.string(&key.name),
            system_name: self.string(&key.system_name),
            filename: self.string(&key.file),
            start_line: 0,
        };
        self.functions.push(function);
        self.function_ids.insert(key, id);
        id
    }

    /// One location per (function, line).
    fn location(&mut self, function_id: u64, line: i64) -> u64 {
        if let Some(&id) = self.location_ids.get(&(function_id, line)) {
            return id;
        }
        let id = self.locations.len() as u64 + 1;
        self.locations.push(proto::Location {
            id,
            mapping_id: MAPPING_ID,
            line: vec![proto::Line {
                function_id,
                line,
                column: 0,
            }],
            ..Default::default()
        });
        self.location_ids.insert((function_id, line), id);
        id
    }

    fn frame(&mut self, frame: &FrameInfo) -> u64 {
        let function = self.function(FunctionKey {
            name: frame
                .qualname
                .clone()
                .filter(|q| !q.is_empty())
                .unwrap_or_else(|| frame.function.clone()),
            system_name: frame.function.clone(),
            file: frame.file.clone(),
        });
        self.location(function, i64::from(frame.line))
    }

    fn marker(&mut self, name: &str) -> u64 {
        let function = self.function(FunctionKey {
            name: name.to_string(),
            system_name: name.to_string(),
            file: String::new(),
        });
        self.location(function, 0)
    }

    fn add(&mut self, process: &Recording, stack: &StackCount, process_label: bool, period: i64) {
        // Leaf first; the stack's frames are outermost first.
        let mut locations: Vec<u64> = stack.frames.iter().rev().map(|f| self.frame(f)).collect();
        if stack.frames.is_empty() {
            locations.push(self.marker(NO_PYTHON_FRAME));
        }
        if stack.truncated {
            locations.push(self.marker(DEEPER_FRAMES));
        }
        let labels = self.labels(process, stack, process_label);
        let key = SampleKey { locations, labels };
        let count = stack.count as i64;
        match self.sample_index.get(&key) {
            Some(&i) => {
                let value = &mut self.samples[i].1.value;
                value[0] += count;
                value[1] += count * period;
            }
            None => {
                let sample = proto::Sample {
                    location_id: key.locations.clone(),
                    value: vec![count, count * period],
                    label: key.labels.clone(),
                };
                self.sample_index.insert(
                    SampleKey {
                        locations: key.locations.clone(),
                        labels: key.labels.clone(),
                    },
                    self.samples.len(),
                );
                self.samples.push((key, sample));
            }
        }
    }

    fn labels(
        &mut self,
        process: &Recording,
        stack: &StackCount,
        process_label: bool,
    ) -> Vec<proto::Label> {
        let mut labels = Vec::with_capacity(6);
        let name = process
            .threads
            .iter()
            .find(|t| t.tid == stack.tid)
            .and_then(|t| t.name.as_deref());
        if let Some(name) = name {
            labels.push(self.text_label("thread_name", name));
        }
        labels.push(self.number_label("thread_id", i64::from(stack.tid)));
        labels.push(self.text_label("gil_state", stack.state.name()));
        if let Some(reason) = stack.idle_reason {
            labels.push(self.text_label("idle_reason", reason.name()));
        }
        labels.push(self.number_label("pid", i64::from(process.pid)));
        if process_label {
            let command = process.command.join(" ");
            labels.push(self.text_label("process", &command));
        }
        labels
    }

    fn text_label(&mut self, key: &str, value: &str) -> proto::Label {
        proto::Label {
            key: self.string(key),
            str: self.string(value),
            ..Default::default()
        }
    }

    fn number_label(&mut self, key: &str, num: i64) -> proto::Label {
        proto::Label {
            key: self.string(key),
            num,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::python::{Build, PythonInfo};
    use crate::model::recording::{GilCounts, ThreadCounts};
    use crate::model::state::{IdleReason, ThreadState};
    use std::io::Read;

    fn frame(function: &str, line: u32) -> FrameInfo {
        FrameInfo {
            function: function.to_string(),
            qualname: None,
            file: "app.py".to_string(),
            line,
        }
    }

    fn stack(tid: i32, state: ThreadState, frames: Vec<FrameInfo>, count: u64) -> StackCount {
        StackCount {
            tid,
            state,
            idle_reason: (state == ThreadState::Idle).then_some(IdleReason::Sleep),
            frames,
            truncated: false,
            waiters: 0,
            count,
        }
    }

    fn recording(stacks: Vec<StackCount>) -> Recording {
        Recording {
            format: crate::model::recording::RECORDING_FORMAT.to_string(),
            pid: 42,
            command: vec!["python3".into(), "app.py".into()],
            python: PythonInfo {
                version: "3.12.0".into(),
                build: Build::Shared,
                gil: "enabled".into(),
                free_threaded: false,
                binary: "/usr/lib/libpython3.12.so".into(),
            },
            duration_s: 2.0,
            requested_rate_hz: 100.0,
            samples: 200,
            missed_samples: 0,
            torn_samples: 0,
            stopped_samples: 0,
            stop_reason: "the duration elapsed".into(),
            cpus: 2,
            sampler_cpus: None,
            gil: GilCounts::default(),
            threads: vec![ThreadCounts {
                tid: 7,
                name: Some("worker".into()),
                samples: 0,
                states: Default::default(),
                idle_reasons: Default::default(),
                wakeups: 0,
                wakeup_waits: 0,
                wakeup_wait_samples: 0,
            }],
            stacks,
            children: Vec::new(),
            timeline: Default::default(),
            event_loops: Vec::new(),
            thread_flags: None,
            execs: Vec::new(),
        }
    }

    fn label<'a>(p: &'a proto::Profile, s: &proto::Sample, key: &str) -> Option<&'a str> {
        s.label
            .iter()
            .find(|l| p.string_table[l.key as usize] == key && l.str != 0)
            .map(|l| p.string_table[l.str as usize].as_str())
    }

    #[test]
    fn one_sample_per_stack_and_labels_with_leaf_first() {
        let rec = recording(vec![
            stack(
                7,
                ThreadState::GilHeld,
                vec![frame("main", 1), frame("work", 5)],
                30,
            ),
            stack(
                7,
                ThreadState::GilWait,
                vec![frame("main", 1), frame("work", 5)],
                10,
            ),
            stack(7, ThreadState::Idle, vec![], 5),
        ]);
        let options = Options {
            start: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            process_label: false,
        };
        let p = profile(&rec, &options);
        assert_eq!(p.string_table[0], "");
        assert_eq!(p.sample.len(), 3);
        assert_eq!(p.period, 10_000_000);
        assert_eq!(p.duration_nanos, 2_000_000_000);
        assert_eq!(p.time_nanos, 1_700_000_000_000_000_000);
        let held = &p.sample[0];
        assert_eq!(held.value, vec![30, 300_000_000]);
        assert_eq!(label(&p, held, "gil_state"), Some("gil_held"));
        assert_eq!(label(&p, held, "thread_name"), Some("worker"));
        assert_eq!(label(&p, held, "idle_reason"), None);
        assert_eq!(label(&p, held, "process"), None);
        // Leaf first: work, then main; both samples share the locations.
        let leaf = &p.location[(held.location_id[0] - 1) as usize];
        let function = &p.function[(leaf.line[0].function_id - 1) as usize];
        assert_eq!(p.string_table[function.name as usize], "work");
        assert_eq!(leaf.line[0].line, 5);
        assert_eq!(p.sample[1].location_id, held.location_id);
        let idle = &p.sample[2];
        assert_eq!(label(&p, idle, "idle_reason"), Some("sleep"));
        let marker = &p.location[(idle.location_id[0] - 1) as usize];
        let function = &p.function[(marker.line[0].function_id - 1) as usize];
        assert_eq!(p.string_table[function.name as usize], NO_PYTHON_FRAME);
        let tid = idle
            .label
            .iter()
            .find(|l| p.string_table[l.key as usize] == "thread_id")
            .expect("thread_id label");
        assert_eq!((tid.num, tid.str), (7, 0));
    }

    #[test]
    fn equal_stacks_and_labels_merge_and_the_output_is_gzipped_protobuf() {
        let rec = recording(vec![
            stack(7, ThreadState::GilHeld, vec![frame("f", 1)], 3),
            stack(7, ThreadState::GilHeld, vec![frame("f", 1)], 4),
        ]);
        let options = Options {
            start: SystemTime::now(),
            process_label: true,
        };
        let gz = encode_gzip(&rec, &options).unwrap();
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut bytes)
            .unwrap();
        let p = proto::Profile::decode(&bytes[..]).unwrap();
        assert_eq!(p.sample.len(), 1);
        assert_eq!(p.sample[0].value, vec![7, 70_000_000]);
        assert_eq!(label(&p, &p.sample[0], "process"), Some("python3 app.py"));
    }
}
