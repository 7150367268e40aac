//! CI diagnostics: `record --fail-on`, `report` and `diff`, and their exit codes
//! (docs/exit-codes.md).

use crate::support::{self, Child, Interpreter, Run, gilscope};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

const OK: i32 = 0;
const GENERAL: i32 = 1;
const USAGE: i32 = 2;
const CONDITION_FAILED: i32 = 10;
const REGRESSION: i32 = 11;

/// What `record` writes into its output directory (and `report` re-writes).
const OUTPUTS: [&str; 10] = [
    "report.html",
    "report.md",
    "flamegraph.svg",
    "gil_held.svg",
    "gil_wait.svg",
    "native_nogil.svg",
    "gil_blame.svg",
    "stacks.txt",
    "report.json",
    "recording.json",
];

/// A fresh directory under the system temp dir, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let path =
            std::env::temp_dir().join(format!("gilscope-it-ci-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create scratch dir");
        Scratch(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn python() -> Interpreter {
    support::pythons().pop().expect("an interpreter")
}

/// Threads spinning in pure Python: workload.py cpu_threads (worker-0, worker-1) where it
/// exists, else dump_workload.py (cpu-0, cpu-1 beside blocked threads).
fn cpu_threads(python: &Interpreter) -> Child {
    let workload = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/workload.py");
    if workload.is_file() {
        Child::fixture(
            python,
            "workload.py",
            &["cpu_threads", "--threads", "2", "--seconds", "300"],
        )
    } else {
        Child::fixture(python, "dump_workload.py", &[])
    }
}

/// `gilscope record --pid PID -d 1 -o DIR EXTRA...`
fn record(pid: i32, dir: &Path, extra: &[&str]) -> Run {
    let pid = pid.to_string();
    let dir = dir.to_str().expect("utf-8 path");
    let mut args = vec!["record", "--pid", &pid, "--duration", "1", "--output", dir];
    args.extend_from_slice(extra);
    gilscope(args)
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn assert_outputs(dir: &Path, run: &Run) {
    for name in OUTPUTS {
        let path = dir.join(name);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(size > 0, "{} missing or empty after {run}", path.display());
    }
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn write_json(path: &Path, value: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_string_pretty(value).unwrap()).unwrap();
}

#[test]
fn fail_on_exits_10_when_a_condition_holds_and_0_when_none_does() {
    let python = python();
    let child = cpu_threads(&python);
    let scratch = Scratch::new("fail-on");
    let (failing, passing) = (scratch.join("failing"), scratch.join("passing"));

    let run = record(
        child.pid(),
        &failing,
        &[
            "--fail-on",
            "samples>0",
            "--fail-on",
            "thread[*-0].gil_held > 0",
            "--fail-on",
            "gil.contended>1",
            "--fail-on",
            "thread[no-such-*].gil_wait>=0",
        ],
    );
    assert_eq!(
        run.code,
        Some(CONDITION_FAILED),
        "{}: {run}",
        python.label()
    );
    assert_outputs(&failing, &run);
    let samples = read_json(&failing.join("report.json"))["samples"]
        .as_u64()
        .unwrap();
    assert!(
        run.stderr.contains(&format!(
            "gilscope: --fail-on 'samples>0' holds: samples = {samples}\n"
        )),
        "{run}"
    );
    assert!(
        run.stderr
            .contains("--fail-on 'thread[*-0].gil_held > 0' holds: thread["),
        "{run}"
    );
    assert!(!run.stderr.contains("'gil.contended>1' holds"), "{run}");
    assert!(
        run.stderr.contains(
            "warning: --fail-on 'thread[no-such-*].gil_wait>=0': no thread matches 'no-such-*'"
        ),
        "{run}"
    );

    let run = record(
        child.pid(),
        &passing,
        &[
            "--fail-on",
            "gil.contended>1",
            "--fail-on",
            "thread[*].gil_wait>100%",
        ],
    );
    assert_eq!(run.code, Some(OK), "{}: {run}", python.label());
    assert!(!run.stderr.contains("holds:"), "{run}");
    assert_outputs(&passing, &run);
    // A condition that held changes the exit code, not what is written.
    assert_eq!(files_in(&failing), files_in(&passing));
}

#[test]
fn malformed_fail_on_is_refused_before_the_target_is_touched() {
    let scratch = Scratch::new("malformed");
    let out = scratch.join("out");
    // A pid with no process: had gilscope tried to attach, it would exit 3 (no such process).
    let pid = support::unused_pid().to_string();
    let cases = [
        ("gil.contended 0.3", "expected a comparison"),
        ("gil.contended>0.3x", "'0.3x' is not a number"),
        ("gil.contented>0.3", "unknown GIL figure 'contented'"),
        (
            "thread[worker-*].gil_waiting>0.5",
            "unknown thread field 'gil_waiting'",
        ),
        ("thread[].gil_wait>0.5", "empty thread pattern"),
        ("thread[worker-*.gil_wait>0.5", "unclosed '['"),
        (
            "gil.contended>0.3 and more",
            "unexpected text after the number",
        ),
    ];
    for (expr, problem) in cases {
        let run = gilscope([
            "record",
            "--pid",
            &pid,
            "--output",
            out.to_str().unwrap(),
            "--fail-on",
            "samples>0",
            "--fail-on",
            expr,
        ]);
        assert_eq!(run.code, Some(USAGE), "{expr}: {run}");
        assert!(support::is_one_line(&run.stderr), "{expr}: {run}");
        assert!(run.stderr.contains(&format!("'{expr}'")), "{expr}: {run}");
        assert!(run.stderr.contains(problem), "{expr}: {run}");
        assert!(
            !out.exists(),
            "{expr}: the output directory was created: {run}"
        );
    }

    // A program to launch is not started either.
    let marker = scratch.join("started");
    let script = format!("open({:?}, 'w').close()", marker.to_str().unwrap());
    let python = python();
    let run = gilscope([
        "record",
        "--output",
        out.to_str().unwrap(),
        "--fail-on",
        "gil.held>>0.5",
        "--",
        python.path.to_str().unwrap(),
        "-c",
        &script,
    ]);
    assert_eq!(run.code, Some(USAGE), "{run}");
    assert!(!marker.exists(), "the program was started: {run}");
    assert!(!out.exists(), "the output directory was created: {run}");
}

#[test]
fn report_rerenders_a_recording_with_the_same_figures() {
    let python = python();
    let child = cpu_threads(&python);
    let scratch = Scratch::new("report");
    let recorded = scratch.join("recorded");
    let run = record(child.pid(), &recorded, &[]);
    assert_eq!(run.code, Some(OK), "{}: {run}", python.label());
    drop(child);

    let rendered = scratch.join("rendered");
    let run = gilscope([
        "report",
        recorded.to_str().unwrap(),
        "--output",
        rendered.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(OK), "{run}");
    assert_outputs(&rendered, &run);
    assert!(
        run.stderr.contains("GIL: held"),
        "the summary is printed: {run}"
    );
    let (before, after) = (
        read_json(&recorded.join("report.json")),
        read_json(&rendered.join("report.json")),
    );
    assert_same_figures(&before, &after);

    // From report.json (its recording.json beside it) into the same directory.
    let run = gilscope(["report", recorded.join("report.json").to_str().unwrap()]);
    assert_eq!(run.code, Some(OK), "{run}");
    assert_same_figures(&before, &read_json(&recorded.join("report.json")));

    // --fail-on works on a saved recording too.
    let out = scratch.join("checked");
    let out = out.to_str().unwrap();
    let path = recorded.to_str().unwrap();
    let run = gilscope(["report", path, "-o", out, "--fail-on", "samples>0"]);
    assert_eq!(run.code, Some(CONDITION_FAILED), "{run}");
    assert!(
        run.stderr
            .contains("--fail-on 'samples>0' holds: samples = "),
        "{run}"
    );
    let run = gilscope(["report", path, "-o", out, "--fail-on", "samples<0"]);
    assert_eq!(run.code, Some(OK), "{run}");
    let run = gilscope(["report", path, "-o", out, "--fail-on", "samples<"]);
    assert_eq!(run.code, Some(USAGE), "{run}");

    // A recording compared with itself has not regressed.
    let run = gilscope(["diff", path, rendered.to_str().unwrap()]);
    assert_eq!(run.code, Some(OK), "{run}");
    assert!(
        run.stdout.contains("No regression beyond the thresholds."),
        "{run}"
    );
}

fn assert_same_figures(before: &Value, after: &Value) {
    let close = |a: &Value, b: &Value, what: &str| {
        let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
        assert!(
            (a - b).abs() <= 1e-9 * a.abs().max(1.0),
            "{what}: {a} != {b}"
        );
    };
    for key in ["samples", "missed_samples", "torn_samples", "pid"] {
        assert_eq!(before[key], after[key], "{key}");
    }
    for key in [
        "held",
        "contended",
        "mean_waiters",
        "switches_per_s",
        "parallelism",
    ] {
        close(&before["gil"][key], &after["gil"][key], key);
    }
    let (tb, ta) = (
        before["threads"].as_array().unwrap(),
        after["threads"].as_array().unwrap(),
    );
    assert_eq!(tb.len(), ta.len());
    for (b, a) in tb.iter().zip(ta) {
        assert_eq!(
            (&b["tid"], &b["name"], &b["class"]),
            (&a["tid"], &a["name"], &a["class"])
        );
        for state in support::THREAD_STATES {
            close(&b["states"][state], &a["states"][state], state);
        }
    }
}

/// A recording.json of 100 samples over one second, built by hand: one thread per entry
/// of `threads` (name, gil_held, gil_wait, native_nogil, idle samples).
fn synthetic(contended: u64, threads: &[(&str, u64, u64, u64, u64)]) -> Value {
    let held: u64 = threads.iter().map(|t| t.1).sum();
    let waiters: u64 = threads.iter().map(|t| t.2).sum();
    let on_cpu: u64 = threads.iter().map(|t| t.1 + t.3).sum();
    let thread_values: Vec<Value> = threads
        .iter()
        .enumerate()
        .map(|(i, (name, h, w, n, idle))| {
            json!({
                "tid": 1000 + i, "name": name, "samples": 100,
                "states": {"gil_held": h, "gil_wait": w, "native_nogil": n, "idle": idle},
                "idle_reasons": {"sleep": 0, "io": idle, "lock": 0, "other": 0},
                "wakeups": 0, "wakeup_waits": 0, "wakeup_wait_samples": 0,
            })
        })
        .collect();
    let stacks: Vec<Value> = threads
        .iter()
        .enumerate()
        .filter(|(_, t)| t.1 > 0)
        .map(|(i, (name, h, ..))| {
            json!({
                "tid": 1000 + i, "state": "gil_held", "idle_reason": null, "count": h, "waiters": 0,
                "truncated": false,
                "frames": [{"function": format!("{name}_loop"), "qualname": null,
                            "file": "/srv/app.py", "line": 10}],
            })
        })
        .collect();
    json!({
        "format": "gilscope.recording/1",
        "pid": 4242,
        "command": ["python", "app.py"],
        "python": {"version": "3.12.1", "build": "shared", "free_threaded": false,
                   "gil": "enabled", "binary": "/usr/lib/libpython3.12.so.1.0"},
        "duration_s": 1.0,
        "requested_rate_hz": 100.0,
        "samples": 100,
        "missed_samples": 0,
        "torn_samples": 0,
        "stopped_samples": 0,
        "stop_reason": "the duration elapsed",
        "cpus": 4,
        "gil": {"held": held.min(100), "contended": contended, "waiters": waiters, "on_cpu": on_cpu,
                "first_switch_number": 0, "last_switch_number": 500, "interval_us": 5000},
        "threads": thread_values,
        "stacks": stacks,
        "children": [],
    })
}

/// A busy worker-0 waiting `wait` samples (at most 30) for the GIL, a mostly idle
/// worker-1 and an idle main thread.
fn workers(wait: u64) -> Vec<(&'static str, u64, u64, u64, u64)> {
    vec![
        ("worker-0", 70, wait, 0, 30 - wait),
        ("worker-1", 20, 10, 0, 70),
        ("MainThread", 0, 0, 0, 100),
    ]
}

#[test]
fn report_renders_a_synthetic_recording_and_its_figures() {
    let scratch = Scratch::new("synthetic-report");
    write_json(
        &scratch.join("rec/recording.json"),
        &synthetic(30, &workers(10)),
    );
    let run = gilscope(["report", scratch.join("rec").to_str().unwrap()]);
    assert_eq!(run.code, Some(OK), "{run}");
    assert_outputs(&scratch.join("rec"), &run);
    let report = read_json(&scratch.join("rec/report.json"));
    assert_eq!(report["gil"]["contended"], json!(0.3));
    assert_eq!(report["gil"]["held"], json!(0.9));
    assert_eq!(report["threads"][0]["states"]["gil_wait"], json!(0.1));
    let run = gilscope([
        "report",
        scratch.join("rec/recording.json").to_str().unwrap(),
        "--fail-on",
        "thread[worker-?].gil_wait>=10%",
    ]);
    assert_eq!(run.code, Some(CONDITION_FAILED), "{run}");
    assert!(
        run.stderr
            .contains("holds: thread[worker-0].gil_wait = 0.1, thread[worker-1].gil_wait = 0.1\n"),
        "{run}"
    );
}

#[test]
fn report_refuses_what_it_cannot_read() {
    let scratch = Scratch::new("refused");
    let mut future = synthetic(30, &workers(10));
    future["format"] = json!("gilscope.recording/99");
    write_json(&scratch.join("future/recording.json"), &future);
    let run = gilscope(["report", scratch.join("future").to_str().unwrap()]);
    assert_eq!(run.code, Some(GENERAL), "{run}");
    assert!(run.stderr.contains("gilscope.recording/99"), "{run}");
    assert!(
        run.stderr.contains("it reads gilscope.recording/1"),
        "{run}"
    );
    assert!(!scratch.join("future/report.json").exists(), "{run}");
    let run = gilscope([
        "diff",
        scratch.join("future").to_str().unwrap(),
        scratch.join("future").to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(GENERAL), "{run}");

    write_json(
        &scratch.join("other/recording.json"),
        &json!({"format": "something/1"}),
    );
    let run = gilscope(["report", scratch.join("other").to_str().unwrap()]);
    assert_eq!(run.code, Some(GENERAL), "{run}");
    assert!(run.stderr.contains("is not a gilscope recording"), "{run}");

    write_json(
        &scratch.join("lonely/report.json"),
        &json!({"schema": "gilscope.report/1"}),
    );
    let run = gilscope([
        "report",
        scratch.join("lonely/report.json").to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(GENERAL), "{run}");
    assert!(run.stderr.contains("no recording.json beside it"), "{run}");

    let run = gilscope(["report", scratch.join("lonely").to_str().unwrap()]);
    assert_eq!(run.code, Some(GENERAL), "{run}");
    assert!(run.stderr.contains("holds no recording.json"), "{run}");
}

#[test]
fn diff_exits_11_on_a_regression_beyond_the_thresholds() {
    let scratch = Scratch::new("diff");
    let write = |name: &str, rec: Value| {
        write_json(&scratch.join(name).join("recording.json"), &rec);
        scratch.join(name).to_str().unwrap().to_string()
    };
    let base = write("base", synthetic(30, &workers(10)));
    let slightly = write("slightly", synthetic(35, &workers(10)));
    let contended = write("contended", synthetic(50, &workers(10)));
    let waiting = write("waiting", synthetic(30, &workers(30)));

    let run = gilscope(["diff", &base, &base]);
    assert_eq!(run.code, Some(OK), "{run}");
    let run = gilscope(["diff", &base, &slightly]);
    assert_eq!(run.code, Some(OK), "below the default +10 pp: {run}");
    assert!(run.stdout.contains("+5.0 pp"), "{run}");

    let run = gilscope(["diff", &base, &contended]);
    assert_eq!(run.code, Some(REGRESSION), "{run}");
    assert!(
        run.stderr.contains(
            "gilscope: regression: gil.contended rose from 30.0% to 50.0% \
             (+20.0 pp, limit +10.0 pp)"
        ),
        "{run}"
    );
    let run = gilscope([
        "diff",
        &base,
        &contended,
        "--max-contended-increase",
        "0.25",
    ]);
    assert_eq!(run.code, Some(OK), "{run}");
    let run = gilscope(["diff", &base, &contended, "--max-contended-increase", "off"]);
    assert_eq!(run.code, Some(OK), "{run}");
    let run = gilscope(["diff", &base, &slightly, "--max-contended-increase", "2%"]);
    assert_eq!(run.code, Some(REGRESSION), "{run}");
    // Less contention is an improvement.
    let run = gilscope(["diff", &contended, &base]);
    assert_eq!(run.code, Some(OK), "{run}");

    let run = gilscope(["diff", &base, &waiting]);
    assert_eq!(run.code, Some(REGRESSION), "{run}");
    assert!(
        run.stderr
            .contains("regression: thread[worker-0].gil_wait rose from 10.0% to 30.0%"),
        "{run}"
    );
    let run = gilscope(["diff", &base, &waiting, "--max-wait-increase", "off"]);
    assert_eq!(run.code, Some(OK), "{run}");
    let run = gilscope([
        "diff",
        &base,
        &waiting,
        "--max-wait-increase",
        "off",
        "--fail-on-class-change",
    ]);
    assert_eq!(
        run.code,
        Some(REGRESSION),
        "worker-0 turns gil_bound: {run}"
    );
    assert!(
        run.stderr
            .contains("thread[worker-0].class changed from cpu_bound to gil_bound"),
        "{run}"
    );

    let run = gilscope(["diff", &base, &contended, "--json"]);
    assert_eq!(run.code, Some(REGRESSION), "{run}");
    let diff: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run}"));
    assert_eq!(diff["schema"], "gilscope.diff/1");
    assert_eq!(diff["gil"]["contended"]["base"], json!(0.3));
    assert_eq!(diff["gil"]["contended"]["new"], json!(0.5));
    assert_eq!(diff["regressions"][0]["figure"], "gil.contended");
    assert_eq!(diff["threads"][0]["matched_by"], "name");
    assert_eq!(diff["top_functions"][0]["function"], "worker-0_loop");

    let run = gilscope(["diff", &base, &contended, "--max-held-increase", "lots"]);
    assert_eq!(run.code, Some(2), "a bad limit is a usage error: {run}");
}
