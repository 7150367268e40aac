//! Writes `fixtures/images/*` from the installed interpreters. Runs only with
//! `GILSCOPE_RECORD_IMAGES=1` (the normal test run replays what is there):
//!
//! ```sh
//! GILSCOPE_RECORD_IMAGES=1 cargo test --test it images::recorder -- --nocapture
//! ```
//!
//! Each interpreter runs `fixtures/dump_workload.py`; once it is READY, every thread is
//! paused, and `attach` plus one walk (GIL, threads, frames; `threading` names for 3.13)
//! read it through a [`RecordingMemory`], which keeps each page the walk touched. The image
//! is replayed at once and must give the live walk back.

use super::recorded::{Recording, Walk, check_against_ready, images_dir, replay};
use crate::support::{Child, Interpreter, pythons};
use gilscope::mem::{LiveMemory, RecordingMemory};
use gilscope::process::Process;
use gilscope::process::maps::list_tids;
use gilscope::process::pause::PausedProcess;
use gilscope::python::attach::attach;
use gilscope::python::names::read_thread_names;
use gilscope::python::walker::Walker;
use std::collections::BTreeMap;

/// Thread names are recorded for this minor version only: reading `threading._active`
/// touches about 330 KiB of dict and string pages per image, and 3.13 is the one whose dict
/// layouts gilscope derives from `_Py_DebugOffsets` rather than from a checked table.
const NAMES_MINOR: u32 = 13;
/// Live walks can catch a thread between `ready()` and its loop: try again this often.
const ATTEMPTS: usize = 5;

#[test]
fn record_images() {
    if std::env::var_os("GILSCOPE_RECORD_IMAGES").is_none_or(|v| v != "1") {
        return;
    }
    let dir = images_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let mut total = 0;
    for python in pythons() {
        let (recording, image) = record_one(&python);
        let build = recording.build.name();
        let t = if recording.free_threaded { "t" } else { "" };
        let stem = format!("{}{t}-{build}", recording.version);
        std::fs::write(dir.join(format!("{stem}.img")), &image).unwrap();
        let json = serde_json::to_string_pretty(&recording).unwrap() + "\n";
        std::fs::write(dir.join(format!("{stem}.json")), json).unwrap();
        println!(
            "{stem}: {} KiB image, {} threads, names: {}",
            image.len() / 1024,
            recording.walk.threads.len(),
            !recording.names.is_empty()
        );
        total += image.len();
    }
    println!("{} KiB in all", total / 1024);
}

/// One interpreter: the recording and the saved image bytes.
fn record_one(python: &Interpreter) -> (Recording, Vec<u8>) {
    let child = Child::fixture(python, "dump_workload.py", &[]);
    let with_names = python.minor == NAMES_MINOR;
    let mut last_error = String::new();
    for _ in 0..ATTEMPTS {
        match try_record(python, &child, with_names) {
            Ok(recorded) => return recorded,
            Err(e) => last_error = e,
        }
    }
    panic!("{}: no consistent recording: {last_error}", python.label());
}

fn try_record(
    python: &Interpreter,
    child: &Child,
    with_names: bool,
) -> Result<(Recording, Vec<u8>), String> {
    let label = python.label();
    let pid = child.pid();
    let err = |e: &dyn std::fmt::Display| format!("{label}: {e}");
    let process = Process::open(pid).map_err(|e| err(&e))?;
    let memory = RecordingMemory::new(LiveMemory::new(pid));
    let tids = list_tids(pid).map_err(|e| err(&e))?;
    let paused = PausedProcess::pause(pid, &tids).map_err(|e| err(&e))?;
    let runtime = attach(&process, &memory).map_err(|e| err(&e))?;
    let mut walker = Walker::new(&memory, runtime.clone());
    let mut state = walker.read(true).map_err(|e| err(&e))?;
    walker.calibrate_tids(&mut state.threads, &tids);
    let walk = Walk::new(&state, &walker.codes);
    let mut names = BTreeMap::new();
    if with_names {
        for interp in &state.interpreters {
            let found =
                read_thread_names(&memory, &runtime, interp.address).map_err(|e| err(&e))?;
            names.insert(
                interp.address,
                found.into_iter().map(|t| (t.ident, t.name)).collect(),
            );
        }
    }
    drop(walker);
    drop(paused);
    let image = memory.into_image();

    let recording = Recording {
        about: "Recorded by tests/it/images/recorder.rs from fixtures/dump_workload.py; \
                regenerate with GILSCOPE_RECORD_IMAGES=1 cargo test --test it images::recorder"
            .into(),
        version: python.version.clone(),
        build: runtime.binary.build,
        free_threaded: runtime.binary.free_threaded,
        binary: runtime.binary.path.display().to_string(),
        runtime_address: runtime.address,
        code_type: runtime.code_type,
        ready: child.ready().clone(),
        walk,
        names,
    };
    check_against_ready(&label, &recording.ready, &recording.walk)?;
    let replayed = replay(&recording, &image)?;
    let expected = if recording.has_native_tids() {
        recording.walk.clone()
    } else {
        recording.walk.without_tids()
    };
    if replayed != expected {
        return Err(format!("{label}: the replay differs from the live walk"));
    }
    let mut bytes = Vec::new();
    image.save(&mut bytes).map_err(|e| err(&e))?;
    Ok((recording, bytes))
}
