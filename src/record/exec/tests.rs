use super::*;
use serde_json::json;

fn recording(value: serde_json::Value) -> Recording {
    serde_json::from_value(value).unwrap()
}

fn program(version: &str, function: &str, samples: u64, started_us: u64) -> Recording {
    let frame = |f: &str| json!({"function": f, "file": "/app/p.py", "line": 1});
    recording(json!({
        "format": "gilscope.recording/1", "pid": 7, "command": ["python", "p.py"],
        "python": {"version": version, "build": "shared", "free_threaded": false,
                   "gil": "enabled", "binary": "/usr/lib/libpython.so"},
        "duration_s": 1.0, "requested_rate_hz": 100.0, "samples": samples,
        "missed_samples": 0, "torn_samples": 1, "stopped_samples": 0,
        "stop_reason": "", "cpus": 2,
        "gil": {"held": samples, "contended": 0, "waiters": 0, "on_cpu": samples,
                "first_switch_number": 1000, "last_switch_number": 1010, "interval_us": 5000},
        "threads": [{"tid": 7, "name": "MainThread", "samples": samples,
                     "states": {"gil_held": samples, "gil_wait": 0, "native_nogil": 0, "idle": 0},
                     "idle_reasons": {"sleep": 0, "io": 0, "lock": 0, "other": 0}}],
        "stacks": [{"tid": 7, "state": "gil_held", "idle_reason": null,
                    "frames": [frame("<module>"), frame(function)], "count": samples}],
        "timeline": {"start_unix_us": started_us, "end_us": 1_000_000,
                     "stacks": [{"frames": [frame(function)]}],
                     "threads": [{"tid": 7, "runs": [{"state": "gil_held", "stack": 0,
                                  "start_us": 0, "end_us": 1_000_000, "samples": samples}]}]},
        "children": []
    }))
}

#[test]
fn a_later_program_adds_its_counts_and_keeps_its_frames_apart() {
    let mut into = program("3.11.7", "before", 100, 5_000_000);
    append_program(&mut into, program("3.15.2", "after", 50, 7_000_000));
    assert_eq!(
        into.python.version, "3.11.7",
        "the first interpreter is kept"
    );
    assert_eq!((into.samples, into.torn_samples), (150, 2));
    assert_eq!(into.duration_s, 2.0);
    // One thread per tid: the exec'ing thread lives on as the main thread.
    assert_eq!(into.threads.len(), 1);
    assert_eq!(into.threads[0].samples, 150);
    assert_eq!(into.threads[0].states.gil_held, 150);
    let functions: Vec<(&str, u64)> = into
        .stacks
        .iter()
        .map(|s| (s.frames[1].function.as_str(), s.count))
        .collect();
    assert_eq!(functions, [("after", 50), ("before", 100)]);
    // Hand-offs of both interpreters add up; their switch numbers are not compared.
    assert_eq!(into.gil.first_switch_number, Some(1000));
    assert_eq!(into.gil.last_switch_number, Some(1020));
    assert_eq!(into.gil.held, 150);
}

#[test]
fn a_program_that_execs_itself_counts_identical_stacks_once() {
    let mut into = program("3.12.1", "same", 10, 0);
    append_program(&mut into, program("3.12.1", "same", 5, 2_000_000));
    assert_eq!(into.stacks.len(), 1);
    assert_eq!(into.stacks[0].count, 15);
}

#[test]
fn the_later_timeline_follows_on_the_first_ones_clock() {
    let mut into = program("3.12.1", "before", 10, 5_000_000);
    append_program(&mut into, program("3.12.1", "after", 5, 7_000_000));
    let t = &into.timeline;
    assert_eq!(t.start_unix_us, 5_000_000);
    assert_eq!(t.end_us, 3_000_000);
    assert_eq!(t.threads.len(), 1);
    let runs = &t.threads[0].runs;
    assert_eq!(runs.len(), 2);
    assert_eq!((runs[1].start_us, runs[1].end_us), (2_000_000, 3_000_000));
    assert_eq!(t.stacks[runs[1].stack as usize].frames[0].function, "after");
}

#[test]
fn the_stop_reason_names_each_exec() {
    let exec = |python: Option<&str>, note: &str| ExecCounts {
        at_s: 1.25,
        program: "/usr/bin/sleep".to_string(),
        command: vec![],
        python: python.map(str::to_string),
        interpreter: None,
        samples: 0,
        note: note.to_string(),
    };
    let text = describe(&[
        exec(Some("3.15.2"), "followed"),
        exec(None, "not followed: not a Python process"),
    ]);
    assert!(
        text.contains("followed it into /usr/bin/sleep (Python 3.15.2)"),
        "{text}"
    );
    assert!(
        text.contains("into /usr/bin/sleep, which was not sampled: not followed"),
        "{text}"
    );
}
