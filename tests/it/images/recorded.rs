//! Images recorded from the installed interpreters (`fixtures/images/*.img`, written by
//! `recorder.rs`), replayed with no interpreter running: each image is walked again and must
//! give exactly the walk saved next to it, which must match what the workload itself
//! reported (its READY line).

use gilscope::mem::{MemoryExt, MemoryImage};
use gilscope::model::python::{Build, FrameInfo};
use gilscope::python::attach::{PythonBinary, Runtime};
use gilscope::python::code::CodeTable;
use gilscope::python::debug_offsets::{DEBUG_OFFSETS_READ_SIZE, layout_from_debug_offsets};
use gilscope::python::tables;
use gilscope::python::version::Version;
use gilscope::python::walker::{PythonState, Walker};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The JSON saved next to an image: how to read it and what reading it gave.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recording {
    pub about: String,
    /// `platform.python_version()` of the recorded interpreter.
    pub version: String,
    pub build: Build,
    pub free_threaded: bool,
    pub binary: String,
    /// `_PyRuntime`.
    pub runtime_address: u64,
    /// `PyCode_Type`.
    pub code_type: Option<u64>,
    /// The workload's READY line: per role, its tid and Python stack.
    pub ready: Value,
    /// The walk of the live process, taken while it was paused.
    pub walk: Walk,
    /// `threading` names by ident, per interpreter address (empty when not recorded).
    #[serde(default)]
    pub names: BTreeMap<u64, BTreeMap<u64, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Walk {
    pub interpreters: Vec<Interpreter>,
    pub threads: Vec<Thread>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interpreter {
    pub address: u64,
    pub id: i64,
    pub gil_address: u64,
    pub gil_size: u64,
    pub locked: bool,
    pub last_holder: u64,
    pub switch_number: u64,
    pub interval_us: u64,
    pub enabled: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thread {
    pub tstate: u64,
    pub pthread_id: u64,
    pub tid: Option<i32>,
    pub interpreter: usize,
    pub frames: Vec<FrameInfo>,
    pub truncated: bool,
}

impl Walk {
    pub fn new(state: &PythonState, codes: &CodeTable) -> Walk {
        Walk {
            interpreters: state
                .interpreters
                .iter()
                .map(|i| Interpreter {
                    address: i.address,
                    id: i.id,
                    gil_address: i.gil.address,
                    gil_size: i.gil.size,
                    locked: i.gil.locked,
                    last_holder: i.gil.last_holder,
                    switch_number: i.gil.switch_number,
                    interval_us: i.gil.interval_us,
                    enabled: i.gil.enabled,
                })
                .collect(),
            threads: state
                .threads
                .iter()
                .map(|t| Thread {
                    tstate: t.tstate,
                    pthread_id: t.pthread_id,
                    tid: t.tid,
                    interpreter: t.interpreter,
                    frames: t.frames.iter().map(|f| codes.frame_info(f)).collect(),
                    truncated: t.truncated,
                })
                .collect(),
        }
    }

    /// The same walk without kernel tids (for targets where they come from /proc).
    pub fn without_tids(&self) -> Walk {
        let mut walk = self.clone();
        for thread in &mut walk.threads {
            thread.tid = None;
        }
        walk
    }
}

pub fn images_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/images")
}

/// Every recording in `fixtures/images`, by file stem, with its image.
pub fn recordings() -> Vec<(String, Recording, MemoryImage)> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(images_dir())
        .map(|dir| dir.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    found.retain(|p| p.extension().is_some_and(|e| e == "json"));
    found.sort();
    found
        .into_iter()
        .map(|json| {
            let stem = json.file_stem().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&json).expect("recording metadata");
            let recording: Recording =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", json.display()));
            let bytes = std::fs::read(json.with_extension("img")).expect("recorded image");
            let image = MemoryImage::load(&mut bytes.as_slice())
                .unwrap_or_else(|e| panic!("{stem}.img: {e}"));
            (stem, recording, image)
        })
        .collect()
}

impl Recording {
    pub fn version(&self) -> Version {
        Version::parse(&self.version).expect("a version")
    }

    /// Whether the thread state carries the kernel tid (3.11+); before, the walker finds
    /// it through glibc's `struct pthread` by matching the live process's /proc tids.
    pub fn has_native_tids(&self) -> bool {
        self.version().at_least(11)
    }

    /// The `Runtime` `attach` found, rebuilt for the image: the version's table, or for
    /// 3.13+ the `_Py_DebugOffsets` read from the image itself.
    pub fn runtime(&self, image: &MemoryImage) -> Result<Runtime, String> {
        let version = self.version();
        let layout = match tables::table(version) {
            Some(layout) => layout,
            None => {
                let bytes = image
                    .read_vec(self.runtime_address, DEBUG_OFFSETS_READ_SIZE)
                    .map_err(|e| e.to_string())?;
                layout_from_debug_offsets(&bytes).map_err(|e| e.to_string())?
            }
        };
        Ok(Runtime {
            pid: 0,
            binary: PythonBinary {
                version: layout.version,
                build: self.build,
                free_threaded: layout.free_threaded,
                path: PathBuf::from(&self.binary),
            },
            layout,
            address: self.runtime_address,
            code_type: self.code_type,
        })
    }
}

/// Each READY role's stack, innermost first, must be some thread's whole stack in `walk`
/// (that thread's, by tid, where tids are known).
pub fn check_against_ready(label: &str, ready: &Value, walk: &Walk) -> Result<(), String> {
    let roles = ready.as_object().ok_or("READY is not an object")?;
    for (role, report) in roles {
        let tid = report["tid"].as_i64().ok_or("READY without tid")?;
        let stack: Vec<(String, String, u32)> = report["stack"]
            .as_array()
            .ok_or("READY without stack")?
            .iter()
            .map(|f| {
                (
                    f["function"].as_str().unwrap_or_default().to_string(),
                    f["file"].as_str().unwrap_or_default().to_string(),
                    f["line"].as_u64().unwrap_or_default() as u32,
                )
            })
            .collect();
        let thread = walk
            .threads
            .iter()
            .find(|t| t.tid.map(i64::from) == Some(tid))
            .ok_or_else(|| format!("{label}: no thread with tid {tid} ({role})"))?;
        let frames: Vec<(String, String, u32)> = thread
            .frames
            .iter()
            .map(|f| (f.function.clone(), f.file.clone(), f.line))
            .collect();
        if frames != stack {
            return Err(format!(
                "{label}: {role} (tid {tid}): walked {frames:?}, READY says {stack:?}"
            ));
        }
    }
    Ok(())
}

/// Walks a recorded image as `gilscope` would walk the live process.
pub fn replay(recording: &Recording, image: &MemoryImage) -> Result<Walk, String> {
    let runtime = recording.runtime(image)?;
    let mut walker = Walker::new(image, runtime);
    let state = walker.read(true).map_err(|e| e.to_string())?;
    Ok(Walk::new(&state, &walker.codes))
}

#[test]
fn recorded_images_replay_to_the_recorded_walk() {
    let recordings = recordings();
    assert!(
        !recordings.is_empty(),
        "no recorded images in {}: run GILSCOPE_RECORD_IMAGES=1 cargo test --test it \
         images::recorder",
        images_dir().display()
    );
    for (label, recording, image) in &recordings {
        let walk = replay(recording, image).unwrap_or_else(|e| panic!("{label}: {e}"));
        check_against_ready(label, &recording.ready, &recording.walk)
            .unwrap_or_else(|e| panic!("{e}"));
        if recording.has_native_tids() {
            assert_eq!(&walk, &recording.walk, "{label}");
        } else {
            // A replay has no /proc to match `struct pthread` against: the walk is the
            // same but for tids (see `Walker::calibrate_tids`).
            assert_eq!(walk, recording.walk.without_tids(), "{label}");
        }
        assert!(
            walk.threads.len() >= 7,
            "{label}: the workload runs 7 threads"
        );
        let runtime = recording.runtime(image).unwrap();
        for (interp, expected) in &recording.names {
            let names = gilscope::python::names::read_thread_names(image, &runtime, *interp)
                .unwrap_or_else(|e| panic!("{label}: names: {e}"));
            let names: BTreeMap<u64, String> =
                names.into_iter().map(|t| (t.ident, t.name)).collect();
            assert_eq!(&names, expected, "{label}: thread names");
            check_names_against_ready(label, &recording.ready, &recording.walk, &names);
        }
    }
}

/// Each READY role's thread (by tid) is named as the workload named it.
fn check_names_against_ready(
    label: &str,
    ready: &Value,
    walk: &Walk,
    names: &BTreeMap<u64, String>,
) {
    for (role, report) in ready.as_object().expect("READY is an object") {
        let tid = report["tid"].as_i64().map(|t| t as i32);
        let thread = walk.threads.iter().find(|t| t.tid == tid).unwrap();
        assert_eq!(
            names.get(&thread.pthread_id).map(String::as_str),
            report["name"].as_str(),
            "{label}: name of {role}"
        );
    }
}

/// The set of recordings covers every minor version the walker reads from a table, and
/// the 3.13 debug offsets.
#[test]
fn recorded_images_cover_every_table_and_the_debug_offsets() {
    let minors: std::collections::BTreeSet<u8> = recordings()
        .iter()
        .map(|(_, r, _)| r.version().minor)
        .collect();
    for minor in 8..=13 {
        assert!(minors.contains(&minor), "no recorded image of 3.{minor}");
    }
}
