//! The picture formats: `trace.json` and `speedscope.json` of a live recording parsed and
//! checked against `report.json`; GIL blame weights on a synthetic recording; and
//! `gilscope top` driven through a pseudo-terminal (tmux) and read off its screen.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use gilscope::model::python::{Build, FrameInfo, PythonInfo};
use gilscope::model::recording::{
    GilCounts, IdleCounts, RECORDING_FORMAT, Recording, StackCount, StateCounts, ThreadCounts,
};
use gilscope::model::state::{IdleReason, ThreadState};
use gilscope::output::collapsed::{Roots, in_state, lines};
use gilscope::output::flamegraph::{blame_graph, render};

use crate::support::{self, COMMAND_TIMEOUT, Child, Interpreter, THREAD_STATES};

/// How long a screen may take to show what a test waits for.
const SCREEN_TIMEOUT: Duration = Duration::from_secs(30);

/// One interpreter with a GIL is enough for the formats.
fn python() -> Interpreter {
    support::pythons()
        .into_iter()
        .find(|p| p.gil_enabled)
        .expect("an interpreter with a GIL")
}

/// Two threads fighting over the GIL; tids by thread name from the READY line.
fn cpu_workload(python: &Interpreter, seconds: &str) -> (Child, BTreeMap<String, i64>) {
    let child = Child::fixture(
        python,
        "workload.py",
        &["cpu_threads", "--threads", "2", "--seconds", seconds],
    );
    let tids = child.ready()["threads"]
        .as_object()
        .expect("READY names threads")
        .iter()
        .map(|(name, tid)| (name.clone(), tid.as_i64().expect("tid")))
        .collect();
    (child, tids)
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "gilscope-it-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Samples per thread id in report.json.
fn report_samples(report: &Value) -> BTreeMap<i64, u64> {
    report["threads"]
        .as_array()
        .expect("report threads")
        .iter()
        .map(|t| (t["tid"].as_i64().unwrap(), t["samples"].as_u64().unwrap()))
        .collect()
}

#[test]
fn trace_and_speedscope_agree_with_the_report() {
    let python = python();
    let (child, tids) = cpu_workload(&python, "120");
    let out = TempDir::new("formats");
    let pid = child.pid().to_string();
    let dir = out.0.to_str().unwrap();
    let run = support::gilscope([
        "record",
        "--pid",
        &pid,
        "--duration",
        "2",
        "--format",
        "trace,speedscope",
        "-o",
        dir,
    ]);
    assert_eq!(
        run.code,
        Some(0),
        "record failed on {}: {run}",
        python.label()
    );
    let report = read_json(&out.0.join("report.json"));
    let samples = report_samples(&report);
    check_trace(&read_json(&out.0.join("trace.json")), &tids, &samples);
    check_speedscope(&read_json(&out.0.join("speedscope.json")), &tids, &samples);
}

fn check_trace(trace: &Value, tids: &BTreeMap<String, i64>, samples: &BTreeMap<i64, u64>) {
    let events = trace["traceEvents"].as_array().expect("traceEvents array");
    let mut thread_names: BTreeMap<i64, String> = BTreeMap::new();
    let mut process_names = 0;
    // (tid) -> slices (ts, dur, state)
    let mut tracks: BTreeMap<i64, Vec<(u64, u64, String)>> = BTreeMap::new();
    let mut run_samples: BTreeMap<i64, u64> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        let ph = e["ph"]
            .as_str()
            .unwrap_or_else(|| panic!("event {i} has no ph: {e}"));
        assert!(e["name"].is_string(), "event {i} has no name: {e}");
        assert!(e["pid"].is_i64(), "event {i} has no pid: {e}");
        match ph {
            "M" => match e["name"].as_str().unwrap() {
                "process_name" => {
                    process_names += 1;
                    assert!(
                        e["args"]["name"].as_str().unwrap().contains("workload.py"),
                        "{e}"
                    );
                }
                "thread_name" => {
                    let tid = e["tid"].as_i64().expect("thread_name tid");
                    thread_names.insert(tid, e["args"]["name"].as_str().unwrap().to_string());
                }
                _ => {}
            },
            "X" => {
                let state = e["name"].as_str().unwrap().to_string();
                assert!(
                    THREAD_STATES.contains(&state.as_str()),
                    "event {i}: state {state}"
                );
                let tid = e["tid"].as_i64().expect("slice tid");
                let ts = e["ts"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("event {i}: ts {e}"));
                let dur = e["dur"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("event {i}: dur {e}"));
                let args = &e["args"];
                assert!(
                    args["stack"]
                        .as_array()
                        .is_some_and(|s| s.iter().all(Value::is_string)),
                    "event {i}: stack {e}"
                );
                assert_eq!(
                    args["idle_reason"].is_string(),
                    state == "idle",
                    "event {i}: idle reason only on idle slices: {e}"
                );
                *run_samples.entry(tid).or_default() += args["samples"].as_u64().expect("samples");
                tracks.entry(tid).or_default().push((ts, dur, state));
            }
            "C" => assert!(e["args"]["waiting"].is_u64(), "event {i}: {e}"),
            "i" => {}
            other => panic!("event {i}: unexpected ph {other:?}: {e}"),
        }
    }
    assert_eq!(process_names, 1, "one process");
    for (name, tid) in tids.iter().filter(|(n, _)| n.starts_with("worker-")) {
        assert_eq!(
            thread_names.get(tid).map(String::as_str),
            Some(format!("{name} (tid {tid})").as_str()),
            "thread names: {thread_names:?}"
        );
    }
    let mut states = BTreeSet::new();
    for (tid, slices) in &mut tracks {
        assert!(
            thread_names.contains_key(tid),
            "track {tid} has no thread_name"
        );
        slices.sort();
        for pair in slices.windows(2) {
            assert!(
                pair[0].0 + pair[0].1 <= pair[1].0,
                "tid {tid}: slices overlap: {:?} then {:?}",
                pair[0],
                pair[1]
            );
        }
        states.extend(slices.iter().map(|s| s.2.clone()));
    }
    assert!(
        states.contains("gil_held") && states.contains("gil_wait"),
        "states {states:?}"
    );
    assert_eq!(&run_samples, samples, "samples in slices vs report.json");
    // A hand-off: one worker's gil_held ends exactly where the other's begins.
    let held = |name: &str| -> Vec<(u64, u64)> {
        tracks[&tids[name]]
            .iter()
            .filter(|s| s.2 == "gil_held")
            .map(|s| (s.0, s.0 + s.1))
            .collect()
    };
    let (zero, one) = (held("worker-0"), held("worker-1"));
    let handoff = zero
        .iter()
        .any(|a| one.iter().any(|b| a.1 == b.0 || b.1 == a.0));
    assert!(
        handoff,
        "no GIL hand-off between the workers: {zero:?} / {one:?}"
    );
}

fn check_speedscope(doc: &Value, tids: &BTreeMap<String, i64>, samples: &BTreeMap<i64, u64>) {
    assert_eq!(
        doc["$schema"],
        "https://www.speedscope.app/file-format-schema.json"
    );
    let frames = doc["shared"]["frames"].as_array().expect("shared.frames");
    assert!(
        frames.iter().all(|f| f["name"].is_string()),
        "frames need names"
    );
    let profiles = doc["profiles"].as_array().expect("profiles");
    let mut by_name: BTreeMap<String, u64> = BTreeMap::new();
    for p in profiles {
        let name = p["name"].as_str().expect("profile name").to_string();
        assert_eq!(p["type"], "sampled", "{name}");
        let stacks = p["samples"].as_array().expect("samples");
        let weights: Vec<u64> = p["weights"]
            .as_array()
            .expect("weights")
            .iter()
            .map(|w| w.as_u64().expect("integer weight"))
            .collect();
        assert_eq!(stacks.len(), weights.len(), "{name}: samples vs weights");
        let total: u64 = weights.iter().sum();
        let span = p["endValue"].as_u64().unwrap() - p["startValue"].as_u64().unwrap();
        assert_eq!(span, total, "{name}: endValue - startValue");
        for stack in stacks {
            let ids: Vec<usize> = stack
                .as_array()
                .expect("a sample is a list")
                .iter()
                .map(|i| i.as_u64().expect("frame index") as usize)
                .collect();
            assert!(
                ids.iter().all(|&i| i < frames.len()),
                "{name}: bad index in {ids:?}"
            );
            let root = frames[ids[0]]["name"].as_str().unwrap();
            assert!(
                THREAD_STATES.iter().any(|s| root.starts_with(s)),
                "{name}: root {root:?} is not a state"
            );
        }
        by_name.insert(name, total);
    }
    for (tid, &count) in samples {
        let label = match tids.iter().find(|(_, t)| *t == tid) {
            Some((name, _)) => format!("{name} (tid {tid})"),
            None => continue,
        };
        assert_eq!(
            by_name.get(&label),
            Some(&count),
            "{label}: weights vs report.json"
        );
    }
}

// ---------------------------------------------------------------------------------------
// GIL blame on a synthetic recording.

fn frame(function: &str, line: u32) -> FrameInfo {
    FrameInfo {
        function: function.to_string(),
        qualname: None,
        file: "app.py".to_string(),
        line,
    }
}

fn stack(tid: i32, state: ThreadState, function: &str, count: u64, waiters: u64) -> StackCount {
    StackCount {
        tid,
        state,
        idle_reason: (state == ThreadState::Idle).then_some(IdleReason::Sleep),
        frames: vec![frame("main", 1), frame(function, 10)],
        truncated: false,
        waiters,
        count,
    }
}

fn thread(tid: i32, name: &str, stacks: &[StackCount]) -> ThreadCounts {
    let mut states = StateCounts::default();
    for s in stacks.iter().filter(|s| s.tid == tid) {
        states.add(s.state, s.count);
    }
    ThreadCounts {
        tid,
        name: Some(name.to_string()),
        samples: states.total(),
        states,
        idle_reasons: IdleCounts::default(),
        wakeups: 0,
        wakeup_waits: 0,
        wakeup_wait_samples: 0,
    }
}

fn synthetic(stacks: Vec<StackCount>) -> Recording {
    let threads = vec![thread(1, "hog", &stacks), thread(2, "victim", &stacks)];
    Recording {
        format: RECORDING_FORMAT.to_string(),
        pid: 42,
        command: vec!["python".into(), "app.py".into()],
        python: PythonInfo {
            version: "3.12.1".into(),
            build: Build::Shared,
            free_threaded: false,
            gil: "enabled".into(),
            binary: "/usr/bin/python3".into(),
        },
        duration_s: 1.0,
        requested_rate_hz: 100.0,
        samples: 100,
        missed_samples: 0,
        torn_samples: 0,
        stopped_samples: 0,
        stop_reason: "the duration elapsed".into(),
        cpus: 2,
        sampler_cpus: None,
        gil: GilCounts::default(),
        threads,
        stacks,
        children: Vec::new(),
        timeline: Default::default(),
        event_loops: Vec::new(),
        thread_flags: None,
        execs: Vec::new(),
    }
}

#[test]
fn gil_blame_weights_holder_stacks_by_waiting_threads() {
    let rec = synthetic(vec![
        // The hog held the GIL in `crunch` for 10 samples while 3 threads waited each time.
        stack(1, ThreadState::GilHeld, "crunch", 10, 30),
        // ... and in `tidy` for 50 samples while nobody waited: no blame.
        stack(1, ThreadState::GilHeld, "tidy", 50, 0),
        stack(2, ThreadState::GilHeld, "render", 5, 5),
        // Waiting and idle samples are never blamed, whatever their counts.
        stack(2, ThreadState::GilWait, "render", 40, 0),
        stack(2, ThreadState::Idle, "sleepy", 20, 0),
    ]);
    let graph = blame_graph(&rec);
    assert_eq!(graph.file_name, "gil_blame.svg");
    assert_eq!(
        graph.lines,
        vec![
            "hog (tid 1);main (app.py:1);crunch (app.py:10) 30".to_string(),
            "victim (tid 2);main (app.py:1);render (app.py:10) 5".to_string(),
        ]
    );
    // The same weights straight from the collapsed-lines function.
    let direct = lines(&rec, Roots::Thread, in_state(ThreadState::GilHeld), |s| {
        s.waiters
    });
    assert_eq!(direct, graph.lines);
    let mut svg = Vec::new();
    render(&graph, &mut svg).expect("render blame");
    let svg = String::from_utf8(svg).unwrap();
    assert!(
        svg.contains("<svg") && svg.contains("crunch"),
        "blame SVG lacks crunch"
    );
    assert!(!svg.contains("tidy"), "a stack nobody waited on is blamed");
    assert!(svg.contains("waiting threads"), "the count is named");
}

#[test]
fn an_empty_gil_blame_says_so() {
    let rec = synthetic(vec![
        stack(1, ThreadState::GilHeld, "alone", 60, 0),
        stack(2, ThreadState::Idle, "sleepy", 60, 0),
    ]);
    let graph = blame_graph(&rec);
    assert!(graph.lines.is_empty());
    let mut svg = Vec::new();
    render(&graph, &mut svg).expect("render empty blame");
    let svg = String::from_utf8(svg).unwrap();
    assert!(svg.starts_with("<?xml") && svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("nothing to blame"), "{svg}");
}

// ---------------------------------------------------------------------------------------
// `gilscope top` in a pseudo-terminal.

/// A tmux server of its own (never the user's), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(tag: &str, width: u16, height: u16, command: &str) -> Tmux {
        let tmux = Tmux {
            socket: format!("gilscope-it-{tag}-{}", std::process::id()),
        };
        let _ = tmux.run(&["kill-server"]);
        let (w, h) = (width.to_string(), height.to_string());
        // remain-on-exit keeps the pane (and its exit status) after the command ends.
        let run = tmux.run(&[
            "new-session",
            "-d",
            "-x",
            &w,
            "-y",
            &h,
            "sh",
            "-c",
            "sleep 3600",
            ";",
            "set-option",
            "remain-on-exit",
            "on",
            ";",
            "respawn-pane",
            "-k",
            command,
        ]);
        assert_eq!(run.code, Some(0), "tmux failed (is tmux installed?): {run}");
        tmux
    }

    fn run(&self, args: &[&str]) -> support::Run {
        let mut cmd = Command::new("tmux");
        cmd.arg("-L").arg(&self.socket).args(args);
        support::run_command(cmd, COMMAND_TIMEOUT)
    }

    /// The pane's text, scrollback included (a line printed as the alternate screen is left
    /// can land in the scrollback).
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-J", "-S", "-"]).stdout
    }

    /// `#{pane_dead} #{pane_dead_status}`.
    fn pane_status(&self) -> String {
        self.run(&["display-message", "-p", "#{pane_dead} #{pane_dead_status}"])
            .stdout
            .trim()
            .to_string()
    }

    /// Polls until `done` accepts the screen; fails the test after [`SCREEN_TIMEOUT`].
    fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + SCREEN_TIMEOUT;
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "waited {SCREEN_TIMEOUT:?} for {what}; screen:\n{screen}\nstatus {}",
                self.pane_status()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls until a command started by [`with_exit_code`] has printed its exit status.
    /// (tmux's own `pane_dead` status proved unreliable under load.)
    fn wait_exit_code(&self) -> i32 {
        let screen = self.wait_for("the exit code", |s| s.contains(EXIT_MARK));
        let after = screen.split(EXIT_MARK).nth(1).unwrap_or("");
        let code: String = after
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        code.parse()
            .unwrap_or_else(|_| panic!("no exit code after the mark:\n{screen}"))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

const EXIT_MARK: &str = "top exit code";

/// `command` under a shell that prints its exit status after it, then stays.
fn with_exit_code(command: &str) -> String {
    format!("sh -c '{command}; echo \"{EXIT_MARK} $?\"; exec sleep 3600'")
}

fn top_command(pid: i32) -> String {
    format!("{} top --pid {pid}", env!("CARGO_BIN_EXE_gilscope"))
}

/// The screen shows both workers with a class, a bar and their shares.
fn shows_workers(screen: &str) -> bool {
    ["worker-0", "worker-1"].iter().all(|name| {
        screen.lines().any(|l| {
            l.starts_with(name)
                && (l.contains("gil_bound") || l.contains("cpu_bound"))
                && l.contains('%')
                && l.contains('█')
        })
    })
}

#[test]
fn top_shows_threads_and_quits_on_q_restoring_the_terminal() {
    let python = python();
    let (child, tids) = cpu_workload(&python, "120");
    let tmux = Tmux::start("top-q", 120, 40, &with_exit_code(&top_command(child.pid())));
    let screen = tmux.wait_for("both workers", shows_workers);
    for (name, tid) in &tids {
        assert!(
            screen.contains(&tid.to_string()),
            "{name} tid {tid} missing:\n{screen}"
        );
    }
    for state in THREAD_STATES {
        assert!(screen.contains(state), "legend lacks {state}:\n{screen}");
    }
    assert!(
        screen.contains("GIL held") && screen.contains("switches"),
        "{screen}"
    );
    assert!(
        screen.contains("spin (workload.py)"),
        "GIL holders:\n{screen}"
    );
    tmux.run(&["send-keys", "q"]);
    assert_eq!(tmux.wait_exit_code(), 0, "q is a clean exit");
    // Back on the main screen: none of the view is left.
    let screen = tmux.screen();
    assert!(
        !screen.contains("worker-0"),
        "the alternate screen was not left:\n{screen}"
    );
}

#[test]
fn top_quits_on_ctrl_c_and_fits_a_tiny_terminal() {
    let python = python();
    let (child, _) = cpu_workload(&python, "120");
    let tmux = Tmux::start(
        "top-ctrl-c",
        12,
        3,
        &with_exit_code(&top_command(child.pid())),
    );
    tmux.wait_for("the title", |s| s.starts_with("gilscope top"));
    tmux.run(&["resize-window", "-x", "100", "-y", "30"]);
    tmux.wait_for("both workers after a resize", shows_workers);
    tmux.run(&["send-keys", "C-c"]);
    assert_eq!(tmux.wait_exit_code(), 0, "Ctrl-C is a clean exit");
}

#[test]
fn top_says_so_when_the_target_exits() {
    let python = python();
    let (mut child, _) = cpu_workload(&python, "5");
    let command = format!("{}; echo \"top exit code $?\"", top_command(child.pid()));
    let tmux = Tmux::start("top-exit", 100, 30, &format!("sh -c '{command}'"));
    tmux.wait_for("both workers", shows_workers);
    let screen = tmux.wait_for("the exit message", |s| s.contains("top exit code"));
    assert!(
        screen.contains(&format!("process {} exited", child.pid())),
        "{screen}"
    );
    assert!(screen.contains("top exit code 7"), "{screen}");
    assert!(!child.is_running());
}

/// Regression: when its terminal hung up, `top` spun inside crossterm's input reader and
/// never looked at signals or its target again; it must end on its own instead.
#[test]
fn top_ends_when_its_terminal_hangs_up() {
    let python = python();
    let (child, _) = cpu_workload(&python, "120");
    let tmux = Tmux::start("top-hangup", 100, 30, &top_command(child.pid()));
    tmux.wait_for("both workers", shows_workers);
    let top_pid = top_pids(child.pid());
    assert_eq!(top_pid.len(), 1, "expected one top process: {top_pid:?}");
    let _ = tmux.run(&["kill-server"]);
    let deadline = Instant::now() + SCREEN_TIMEOUT;
    while std::path::Path::new(&format!("/proc/{}", top_pid[0])).exists() && !is_zombie(top_pid[0])
    {
        assert!(
            Instant::now() < deadline,
            "top {} still runs after its terminal hung up",
            top_pid[0]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Pids of `gilscope top --pid TARGET` processes.
fn top_pids(target: i32) -> Vec<i32> {
    let wanted = format!("top\0--pid\0{target}\0");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&wanted))
        })
        .collect()
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

// ---------------------------------------------------------------------------------------
// `gilscope top` without a screen: batch frames on a pipe, and a pty that reports no size.

/// `gilscope top ARGS...` with stdout on a pipe, its frames read as they come.
struct BatchTop {
    process: std::process::Child,
    frames: std::sync::mpsc::Receiver<String>,
}

impl BatchTop {
    fn start(args: &[&str]) -> BatchTop {
        let mut process =
            support::gilscope_command(std::iter::once("top").chain(args.iter().copied()))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn gilscope top");
        let stdout = process.stdout.take().expect("piped stdout");
        let (tx, frames) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut frame = String::new();
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.is_empty() {
                    if tx.send(std::mem::take(&mut frame)).is_err() {
                        break;
                    }
                } else {
                    frame.push_str(&line);
                    frame.push('\n');
                }
            }
        });
        BatchTop { process, frames }
    }

    /// The next whole frame; fails the test past [`SCREEN_TIMEOUT`].
    fn next_frame(&self) -> String {
        self.frames
            .recv_timeout(SCREEN_TIMEOUT)
            .expect("top printed no frame in time")
    }

    /// The first frame printed from now on (frames printed before are skipped).
    fn frame_from_now(&self) -> String {
        while self.frames.try_recv().is_ok() {}
        self.next_frame()
    }

    /// Waits for the exit; returns its code and stderr.
    fn finish(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + SCREEN_TIMEOUT;
        let status = loop {
            if let Some(status) = self.process.try_wait().expect("try_wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "top did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        use std::io::Read;
        let _ = self
            .process
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr);
        (status.code(), stderr)
    }

    fn interrupt(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.process.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .expect("SIGINT top");
    }
}

impl Drop for BatchTop {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A batch frame's row for `name`: (class, [held, wait, native, idle] as fractions).
fn frame_row(frame: &str, name: &str) -> Option<(String, [f64; 4])> {
    let line = frame
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let [_, _, class, shares @ ..] = words.as_slice() else {
        return None;
    };
    let shares: Vec<f64> = shares
        .iter()
        .map(|s| s.strip_suffix('%')?.parse::<f64>().ok().map(|p| p / 100.0))
        .collect::<Option<_>>()?;
    Some((class.to_string(), shares.try_into().ok()?))
}

fn check_frame(frame: &str, pid: i32, workers: &[&str]) {
    assert!(
        !frame.contains('\x1b'),
        "escape codes in a batch frame:\n{frame:?}"
    );
    let lines: Vec<&str> = frame.lines().collect();
    assert!(
        lines[0].starts_with(&format!("gilscope top | pid {pid}")),
        "{frame}"
    );
    assert!(
        lines[1].starts_with("GIL held") && lines[1].contains("switches"),
        "{frame}"
    );
    assert!(
        lines[2]
            .split_whitespace()
            .eq(["THREAD", "TID", "CLASS", "HELD", "WAIT", "NATIVE", "IDLE"]),
        "{frame}"
    );
    for name in workers {
        let (class, shares) =
            frame_row(frame, name).unwrap_or_else(|| panic!("no {name}:\n{frame}"));
        assert!(
            class == "gil_bound" || class == "cpu_bound",
            "{name} is {class}:\n{frame}"
        );
        let total: f64 = shares.iter().sum();
        assert!(
            (total - 1.0).abs() <= 0.03,
            "{name}'s shares add up to {total}:\n{frame}"
        );
    }
}

#[test]
fn top_batch_prints_plain_frames_until_the_target_exits() {
    let python = python();
    let (mut child, _) = cpu_workload(&python, "4");
    let pid = child.pid();
    let top = BatchTop::start(&["--pid", &pid.to_string(), "--batch"]);
    let mut frames = 0;
    // Frames come once a second until the workload ends itself; each is whole and plain.
    while let Ok(frame) = top.frames.recv_timeout(SCREEN_TIMEOUT) {
        if frame_row(&frame, "worker-0").is_some() && frame_row(&frame, "worker-1").is_some() {
            check_frame(&frame, pid, &["worker-0", "worker-1"]);
            frames += 1;
        }
    }
    assert!(frames >= 1, "no frame showed both workers");
    let (code, stderr) = top.finish();
    assert_eq!(
        code,
        Some(7),
        "the target's exit ends top with code 7: {stderr}"
    );
    assert!(
        stderr.contains(&format!("process {pid} exited")),
        "{stderr}"
    );
    // top sees the target go as soon as its memory does; the kernel may need a moment more
    // to finish the exit and make it a zombie that can be reaped.
    let deadline = std::time::Instant::now() + SCREEN_TIMEOUT;
    while child.is_running() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        !child.is_running(),
        "the workload still runs after top said it exited"
    );
}

#[test]
fn top_without_a_terminal_prints_frames_and_stops_on_ctrl_c() {
    let python = python();
    let (child, _) = cpu_workload(&python, "120");
    let top = BatchTop::start(&["--pid", &child.pid().to_string()]);
    let frame = loop {
        let frame = top.next_frame();
        if frame_row(&frame, "worker-0").is_some() && frame_row(&frame, "worker-1").is_some() {
            break frame;
        }
    };
    check_frame(&frame, child.pid(), &["worker-0", "worker-1"]);
    top.interrupt();
    let (code, stderr) = top.finish();
    assert_eq!(code, Some(0), "Ctrl-C is a clean exit: {stderr}");
}

#[test]
fn top_draws_in_a_terminal_that_reports_no_size() {
    let python = python();
    let (child, _) = cpu_workload(&python, "120");
    // `stty` makes the pty report 0x0, as `script` and some CI runners do.
    let command = format!(
        "sh -c 'stty rows 0 cols 0; COLUMNS=100 LINES=30 exec {}'",
        top_command(child.pid())
    );
    let tmux = Tmux::start("top-0x0", 100, 30, &command);
    tmux.wait_for("both workers in a 0x0 terminal", shows_workers);
}

/// `top` and `record` classify through the same sampler: on one target, over the same
/// seconds, each CPU thread's waiting share agrees within 0.05. Each figure is a share of
/// 1600 samples (8 s at 200 Hz): its sampling error alone is about 0.011, so 0.05 is over
/// three standard deviations of the difference.
#[test]
fn top_agrees_with_record_on_cpu_threads() {
    const SECONDS: &str = "8";
    const RATE: &str = "200";
    let python = python();
    let child = Child::fixture(&python, "workload.py", &["cpu_threads", "--seconds", "120"]);
    let tids: BTreeMap<String, i64> = child.ready()["threads"]
        .as_object()
        .expect("READY names threads")
        .iter()
        .map(|(name, tid)| (name.clone(), tid.as_i64().expect("tid")))
        .collect();
    let pid = child.pid().to_string();
    let out = TempDir::new("top-vs-record");
    let top = BatchTop::start(&[
        "--pid", &pid, "--batch", "--window", SECONDS, "--rate", RATE,
    ]);
    top.next_frame();
    let record = support::gilscope_command([
        "record",
        "--pid",
        &pid,
        "--duration",
        SECONDS,
        "--rate",
        RATE,
        "-o",
        out.0.to_str().unwrap(),
    ]);
    let run = support::run_command(record, COMMAND_TIMEOUT);
    assert_eq!(run.code, Some(0), "record failed: {run}");
    // The first frame drawn after the recording ended covers about the same seconds.
    let frame = top.frame_from_now();
    let report = read_json(&out.0.join("report.json"));
    for (name, tid) in tids.iter().filter(|(n, _)| n.starts_with("worker-")) {
        let recorded = report["threads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tid"].as_i64() == Some(*tid))
            .unwrap_or_else(|| panic!("{name} not in report.json"))["states"]["gil_wait"]
            .as_f64()
            .unwrap();
        let (_, shares) = frame_row(&frame, name).unwrap_or_else(|| panic!("no {name}:\n{frame}"));
        assert!(
            (shares[1] - recorded).abs() <= 0.05,
            "{name}: top shows WAIT {:.2}, record {recorded:.2}\n{frame}",
            shares[1]
        );
    }
}
