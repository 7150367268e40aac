//! Faults a profiler pointed at production must survive (issue 6): the target exits, is
//! stopped, has a thousand threads or a 10,000-frame stack; gilscope is killed while it
//! holds the target paused; another tracer is attached; the memory it reads is hostile.
//! And gilscope only reads: the target computes the same with or without it, and under
//! sudo a launched program runs as the invoking user.
//!
//! The targets are one Python script (`TARGET`, run with `-c`), so every interpreter runs
//! the same code. Nothing sleeps for a fixed time: every wait polls something observable
//! (a READY line, an open file, a thread's state) with a deadline.

use crate::support::{
    self, COMMAND_TIMEOUT, Child, Interpreter, Run, ScratchDir, gilscope, gilscope_command,
    parse_dump, poll_until, read_report, task_state, wait_for_samples, wait_until_sampling,
};
use gilscope::mem::{MemoryImage, RemoteMemory};
use gilscope::model::python::Build;
use gilscope::python::attach::{PythonBinary, Runtime};
use gilscope::python::layout::{FrameKind, FramePointer, Layout};
use gilscope::python::strings::MAX_STRING_CHARS;
use gilscope::python::walker::{MAX_FRAMES, PythonState, Walker};
use gilscope::python::{Version, tables};
use gilscope::sample::Sampler;
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROCESS_EXITED: i32 = 7;

/// The target workloads. `python -c TARGET MODE N`:
///
/// - `spin N`: N threads spin in pure Python; the main thread waits.
/// - `threads N`: N threads wait on an Event, beside one spinner (`spin-0`).
/// - `deep N`: the main thread recurses N frames deep (`down`), then waits (`bottom`).
/// - `checksum N`: N iterations of arithmetic, then `CHECKSUM <value>` and exit.
/// - `whoami`: reports its uid, gid and groups, then waits.
///
/// Each prints `READY {"pid": ..., "uid": ..., "gid": ..., "groups": [...], "tids": {...}}`
/// (`tids`: name -> native id of the threads it started) once every thread runs. None runs
/// longer than 10 minutes.
const TARGET: &str = r#"
import json, os, sys, threading

def ready(**extra):
    info = {"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(),
            "groups": sorted(os.getgroups())}
    info.update(extra)
    sys.stdout.write("READY " + json.dumps(info) + "\n")
    sys.stdout.flush()

def spin():
    x = 1
    while True:
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF

def start(name, target, tids, started):
    def run():
        tids[name] = threading.get_native_id()
        started.release()
        target()
    threading.Thread(target=run, name=name, daemon=True).start()

def down(n, then):
    if n > 1:
        return down(n - 1, then)
    return then()

mode, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0
never = threading.Event()
tids, started = {}, threading.Semaphore(0)
if mode == "spin":
    for i in range(n):
        start("spin-%d" % i, spin, tids, started)
    for _ in range(n):
        started.acquire()
    ready(tids=tids)
    never.wait(600)
elif mode == "threads":
    threading.stack_size(256 * 1024)
    start("spin-0", spin, tids, started)
    for i in range(n):
        start("waiter-%d" % i, lambda: never.wait(600), tids, started)
    for _ in range(n + 1):
        started.acquire()
    ready(tids=tids)
    never.wait(600)
elif mode == "deep":
    sys.setrecursionlimit(n + 1000)
    def bottom():
        ready(depth=n)
        never.wait(600)
    down(n, bottom)
elif mode == "checksum":
    ready()
    x, total = 1, 0
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        total = (total * 31 + x % 1000003) % (1 << 61)
    print("CHECKSUM %d" % total, flush=True)
elif mode == "whoami":
    ready()
    never.wait(600)
else:
    sys.exit("unknown mode " + mode)
"#;

fn target_command(python: &Path, mode: &str, n: usize) -> Command {
    let mut cmd = Command::new(python);
    cmd.arg("-c").arg(TARGET).arg(mode).arg(n.to_string());
    cmd
}

fn start_target(python: &Interpreter, mode: &str, n: usize) -> Child {
    Child::spawn_until_ready(target_command(&python.path, mode, n))
}

/// The native thread id of a thread the target started, from its READY line.
fn tid_of(target: &Child, name: &str) -> i64 {
    target.ready()["tids"][name]
        .as_i64()
        .unwrap_or_else(|| panic!("no tid for {name} in {}", target.ready()))
}

fn one_python() -> Interpreter {
    support::pythons().pop().expect("an interpreter")
}

/// `gilscope record --pid PID --rate HZ --duration S -o DIR`, in the background.
fn record_in_background(pid: i32, rate: u32, seconds: u32, out: &Path) -> Child {
    Child::spawn(gilscope_command([
        "record",
        "--pid",
        &pid.to_string(),
        "--rate",
        &rate.to_string(),
        "--duration",
        &seconds.to_string(),
        "--output",
        out.to_str().expect("utf-8 path"),
    ]))
}

// ---------------------------------------------------------------------------------------
// The target exits, or is stopped, while it is recorded

#[test]
fn target_exits_mid_recording() {
    for python in support::pythons() {
        println!("{}", python.label());
        let scratch = ScratchDir::new("fault-exit");
        let out = scratch.join("out");
        let target = start_target(&python, "spin", 1);
        let pid = target.pid();
        let mut recorder = record_in_background(pid, 200, 60, &out);
        wait_for_samples(&mut recorder, pid, 50);
        drop(target); // SIGKILL, and reaped
        let status = recorder.wait_exit(COMMAND_TIMEOUT);
        let stderr = recorder.stderr();
        assert_eq!(
            status.code(),
            Some(PROCESS_EXITED),
            "{}: exit status {status}; stderr {stderr}",
            python.label()
        );
        assert!(
            stderr.contains("exited"),
            "the summary does not say the target exited: {stderr}"
        );
        let report = read_report(&out);
        assert_eq!(report["stop_reason"], "the target exited", "{report}");
        assert!(report["samples"].as_u64().unwrap() > 0, "{report}");
        assert!(out.join("stacks.txt").is_file());
    }
}

/// Continues the target when dropped, whatever happened.
struct ContinueOnDrop(i32);

impl Drop for ContinueOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), Signal::SIGCONT);
    }
}

#[test]
fn target_stopped_with_sigstop_during_a_recording() {
    for python in support::pythons() {
        println!("{}", python.label());
        let scratch = ScratchDir::new("fault-sigstop");
        let out = scratch.join("out");
        let mut target = start_target(&python, "spin", 2);
        let pid = target.pid();
        // The recording lasts 3 s; the target is stopped from its first sample to its end.
        let mut recorder = record_in_background(pid, 200, 3, &out);
        wait_until_sampling(&mut recorder, pid);
        let _continue = ContinueOnDrop(pid);
        target.signal(Signal::SIGSTOP);
        poll_until("the target to stop", COMMAND_TIMEOUT, || {
            (target.process_state() == Some('T')).then_some(())
        });
        let status = recorder.wait_exit(COMMAND_TIMEOUT);
        let stderr = recorder.stderr();
        target.signal(Signal::SIGCONT);
        assert_eq!(status.code(), Some(0), "{}: {stderr}", python.label());
        let report = read_report(&out);
        let samples = report["samples"].as_u64().unwrap();
        let stopped = report["stopped_samples"].as_u64().unwrap();
        assert_eq!(report["stop_reason"], "the duration elapsed", "{report}");
        assert!(stopped > 0, "no stopped samples: {report}");
        assert!(stopped <= samples, "{report}");
        assert!(
            stderr.contains("stopped (SIGSTOP"),
            "the summary does not say the target was stopped: {stderr}"
        );
        poll_until("the target to run again", COMMAND_TIMEOUT, || {
            (target.process_state() != Some('T')).then_some(())
        });
        assert!(target.is_running());
    }
}

// ---------------------------------------------------------------------------------------
// Big targets

#[test]
fn a_thousand_threads() {
    let python = one_python();
    let target = start_target(&python, "threads", 1000);
    let pid = target.pid();
    let tasks = target.task_ids();
    assert_eq!(tasks.len(), 1002, "main + spinner + 1000 waiters");

    let run = support::dump_json(pid, &[]);
    assert_eq!(run.code, Some(0), "{run}");
    let dump = parse_dump(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run}"));
    let dumped: std::collections::BTreeSet<i64> = dump.threads.iter().map(|t| t.tid).collect();
    assert_eq!(
        dumped, tasks,
        "dump's threads are not the process's threads"
    );
    let waiting = dump
        .threads
        .iter()
        .filter(|t| t.name.as_deref().is_some_and(|n| n.starts_with("waiter-")))
        .count();
    assert_eq!(
        waiting,
        1000,
        "{}",
        support::truncate(&dump.summary(), 2000)
    );

    let scratch = ScratchDir::new("fault-1000-threads");
    let out = scratch.join("out");
    let run = record(pid, &out, &["--duration", "1", "--rate", "50"]);
    assert_eq!(run.code, Some(0), "{run}");
    let report = read_report(&out);
    let threads = report["threads"].as_array().expect("threads");
    assert_eq!(threads.len(), 1002, "threads in report.json");
    assert!(report["samples"].as_u64().unwrap() > 0, "{report}");
}

fn record(pid: i32, out: &Path, extra: &[&str]) -> Run {
    let pid = pid.to_string();
    let mut args = vec!["record", "--pid", &pid, "--output", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    gilscope(args)
}

const DEPTH: usize = 10_000;
const TRUNCATION_MARKER: &str = "[deeper frames not read]";

#[test]
fn recursion_ten_thousand_frames_deep() {
    for python in support::pythons() {
        println!("{}", python.label());
        let target = start_target(&python, "deep", DEPTH);
        let pid = target.pid();
        let started = Instant::now();
        let run = support::dump_json(pid, &[]);
        assert_eq!(run.code, Some(0), "{}: {run}", python.label());
        let dump = parse_dump(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run}"));
        let main = dump
            .thread(i64::from(pid))
            .unwrap_or_else(|| panic!("no main thread: {}", dump.summary()));
        assert!(
            main.frames.len() <= MAX_FRAMES,
            "{} frames, more than MAX_FRAMES ({MAX_FRAMES})",
            main.frames.len()
        );
        assert!(
            main.frames.len() >= MAX_FRAMES / 2,
            "only {} frames of {DEPTH}",
            main.frames.len()
        );
        let raw_main = dump.raw["threads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tid"] == pid)
            .unwrap();
        assert_eq!(
            raw_main["truncated"], true,
            "dump does not say the stack was cut"
        );
        // The innermost frames are the ones kept.
        assert!(
            main.frames.iter().take(4).any(|f| f.function == "bottom"),
            "innermost frames: {:?}",
            &main.frames[..4.min(main.frames.len())]
        );
        assert!(main.frames.iter().all(|f| f.function != "<module>"));

        let scratch = ScratchDir::new("fault-deep");
        let out = scratch.join("out");
        let run = record(pid, &out, &["--duration", "1", "--rate", "100"]);
        assert_eq!(run.code, Some(0), "{}: {run}", python.label());
        let stacks = std::fs::read_to_string(out.join("stacks.txt")).unwrap();
        let deep = stacks
            .lines()
            .find(|line| line.contains(";bottom ("))
            .unwrap_or_else(|| panic!("no stack through bottom in stacks.txt"));
        assert!(
            deep.contains(TRUNCATION_MARKER),
            "no {TRUNCATION_MARKER} marker: {}",
            support::truncate(deep, 300)
        );
        assert!(deep.matches(";down (").count() <= MAX_FRAMES);
        assert!(
            started.elapsed() < COMMAND_TIMEOUT,
            "took {:?}",
            started.elapsed()
        );
    }
}

// ---------------------------------------------------------------------------------------
// --blocking: killed mid-pause; another tracer

/// A process spawned with output discarded, killed and reaped on drop.
struct Quiet(std::process::Child);

impl Quiet {
    fn spawn(cmd: Command) -> Quiet {
        Quiet::spawn_with_stdin(cmd, Stdio::null())
    }

    /// With `Stdio::piped()`, the child's stdin stays open until it is dropped.
    fn spawn_with_stdin(mut cmd: Command, stdin: Stdio) -> Quiet {
        let what = format!("{cmd:?}");
        Quiet(
            cmd.stdin(stdin)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {what}: {e}")),
        )
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    fn exited(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Quiet {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Threads of `pid` in a stop: 't' (ptrace) or 'T' (job control).
fn stopped_threads(pid: i32) -> Vec<(i64, char)> {
    support::task_ids(pid)
        .into_iter()
        .filter_map(|tid| Some((tid, task_state(pid, tid)?)))
        .filter(|(_, state)| matches!(state, 't' | 'T'))
        .collect()
}

#[test]
fn sigkill_while_blocking_dump_holds_the_target_paused() {
    let python = one_python();
    // Seizing and interrupting a thousand threads one by one takes a while: a window to
    // catch gilscope in.
    let target = start_target(&python, "threads", 1000);
    let pid = target.pid();
    let spinner = tid_of(&target, "spin-0");
    let mut caught = false;
    for attempt in 0..20 {
        let mut dump = Quiet::spawn(gilscope_command([
            "dump",
            "--blocking",
            "--pid",
            &pid.to_string(),
        ]));
        let paused = poll_until(
            "dump --blocking to pause or finish",
            COMMAND_TIMEOUT,
            || {
                if task_state(pid, i64::from(pid)) == Some('t') {
                    Some(true)
                } else if dump.exited() {
                    Some(false)
                } else {
                    None
                }
            },
        );
        if paused {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(dump.pid()), Signal::SIGKILL)
                .expect("kill gilscope");
            let _ = dump.0.wait();
            println!("caught gilscope with the target paused on attempt {attempt}");
            caught = true;
            break;
        }
    }
    assert!(
        caught,
        "never caught dump --blocking with the target paused"
    );
    // The kernel detaches a dead tracer's tracees; seized ones resume.
    poll_until("every thread to leave its stop", COMMAND_TIMEOUT, || {
        stopped_threads(pid).is_empty().then_some(())
    });
    for tid in [i64::from(pid), spinner] {
        assert_eq!(
            support::status_field(pid, tid, "TracerPid").as_deref(),
            Some("0"),
            "thread {tid} is still traced"
        );
    }
    let before = support::thread_cpu_ns(pid, spinner).expect("spinner's schedstat");
    poll_until("the spinner to run on", COMMAND_TIMEOUT, || {
        let now = support::thread_cpu_ns(pid, spinner)?;
        (now > before + 10_000_000).then_some(())
    });
}

/// gdb attached (it stops the target), or strace -f where gdb is missing. gdb waits in
/// `shell cat` on a pipe that closes when the tracer is dropped.
fn attach_second_tracer(pid: i32) -> Quiet {
    let tracer = if Path::new("/usr/bin/gdb").is_file() {
        let mut cmd = Command::new("gdb");
        cmd.args(["-nx", "-batch", "-p", &pid.to_string()])
            .args(["-ex", "shell cat"])
            .env("HOME", "/nonexistent")
            .env("DEBUGINFOD_URLS", "");
        Quiet::spawn_with_stdin(cmd, Stdio::piped())
    } else {
        let mut cmd = Command::new("strace");
        cmd.args(["-f", "-qq", "-o", "/dev/null", "-p", &pid.to_string()]);
        Quiet::spawn(cmd)
    };
    let tracer_pid = tracer.pid().to_string();
    poll_until(
        "the second tracer to attach every thread",
        COMMAND_TIMEOUT,
        || {
            support::task_ids(pid)
                .into_iter()
                .all(|tid| {
                    support::status_field(pid, tid, "TracerPid").as_deref() == Some(&*tracer_pid)
                })
                .then_some(())
        },
    );
    tracer
}

#[test]
fn a_second_tracer_on_the_target() {
    let python = one_python();
    let target = start_target(&python, "spin", 1);
    let pid = target.pid();
    let _tracer = attach_second_tracer(pid);

    let run = support::dump_json(pid, &[]);
    assert_eq!(
        run.code,
        Some(0),
        "non-blocking dump beside a tracer: {run}"
    );
    let dump = parse_dump(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run}"));
    assert!(dump.thread(i64::from(pid)).is_some(), "{}", dump.summary());
    assert!(
        dump.thread(tid_of(&target, "spin-0")).is_some(),
        "{}",
        dump.summary()
    );

    let run = gilscope(["dump", "--blocking", "--pid", &pid.to_string()]);
    assert_ne!(run.code, Some(0), "dump --blocking beside a tracer: {run}");
    assert!(run.code.is_some(), "gilscope died of a signal: {run}");
    assert!(support::is_one_line(&run.stderr), "not one line: {run}");
    assert!(run.stderr.contains("another tracer"), "{run}");
    assert!(run.stdout.is_empty(), "{run}");
}

// ---------------------------------------------------------------------------------------
// Read-only; sudo

fn checksum_of(stdout: &str) -> &str {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("CHECKSUM "))
        .unwrap_or_else(|| panic!("no CHECKSUM line in {stdout:?}"))
}

#[test]
fn recording_does_not_change_what_the_target_computes() {
    let python = one_python();
    const ITERATIONS: usize = 3_000_000;
    let alone = support::run_command(
        target_command(&python.path, "checksum", ITERATIONS),
        COMMAND_TIMEOUT,
    );
    assert_eq!(alone.code, Some(0), "{alone}");
    let expected = checksum_of(&alone.stdout);
    for extra in [
        &["--rate", "1000"][..],
        &["--rate", "200", "--blocking"][..],
    ] {
        let scratch = ScratchDir::new("fault-readonly");
        let out = scratch.join("out");
        let mut args: Vec<&str> = vec!["record", "--output", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.extend([
            "--",
            python.path.to_str().unwrap(),
            "-c",
            TARGET,
            "checksum",
        ]);
        let iterations = ITERATIONS.to_string();
        args.push(&iterations);
        let run = gilscope(args);
        assert_eq!(run.code, Some(0), "{extra:?}: {run}");
        assert_eq!(
            checksum_of(&run.stdout),
            expected,
            "{extra:?}: the result changed"
        );
        assert!(read_report(&out)["samples"].as_u64().unwrap() > 0);
    }
}

#[test]
fn recording_does_not_change_the_targets_memory_map() {
    let python = one_python();
    let target = start_target(&python, "spin", 1);
    let pid = target.pid();
    let maps = || std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let before = maps();
    let scratch = ScratchDir::new("fault-maps");
    for extra in [
        &["--rate", "1000"][..],
        &["--rate", "200", "--blocking"][..],
    ] {
        let mut args = vec!["--duration", "1"];
        args.extend_from_slice(extra);
        let run = record(pid, &scratch.join("out"), &args);
        assert_eq!(run.code, Some(0), "{extra:?}: {run}");
    }
    let run = gilscope(["dump", "--blocking", "--pid", &pid.to_string()]);
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(maps(), before, "the target's memory map changed");
    assert!(stopped_threads(pid).is_empty());
}

/// Whether every directory on the way to `path` lets others in, and `path` lets them run it.
fn usable_by_anyone(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Ok(path) = std::fs::canonicalize(path) else {
        return false;
    };
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode())
            .unwrap_or(0)
    };
    path.ancestors().skip(1).all(|dir| mode(dir) & 0o001 != 0) && mode(&path) & 0o005 == 0o005
}

#[test]
fn under_sudo_a_launched_program_runs_as_the_invoking_user() {
    if !nix::unistd::geteuid().is_root() {
        println!("not root: sudo cannot be simulated");
        return;
    }
    let python: PathBuf = support::discover_python_paths()
        .into_iter()
        .find(|p| usable_by_anyone(p))
        .expect("no interpreter that user 65534 may run (/usr/bin/python3.11?)");
    let scratch = ScratchDir::new("fault-sudo");
    let out = scratch.join("out");
    let mut cmd = gilscope_command([
        "record",
        "--duration",
        "1",
        "--output",
        out.to_str().unwrap(),
        "--",
        python.to_str().unwrap(),
        "-c",
        TARGET,
        "whoami",
    ]);
    cmd.env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534")
        .current_dir("/");
    let run = support::run_command(cmd, COMMAND_TIMEOUT);
    assert_eq!(run.code, Some(0), "{run}");
    let ready = run
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("READY "))
        .unwrap_or_else(|| panic!("no READY line: {run}"));
    let ready: serde_json::Value = serde_json::from_str(ready).unwrap();
    assert_eq!(ready["uid"], 65534, "{ready}");
    assert_eq!(ready["gid"], 65534, "{ready}");
    let groups = ready["groups"].as_array().unwrap();
    assert!(
        !groups.contains(&serde_json::json!(0)),
        "kept root's group: {ready}"
    );
    assert!(read_report(&out)["samples"].as_u64().unwrap() > 0);
}

// ---------------------------------------------------------------------------------------
// Hostile memory: the walker on synthetic images, mutated and random

/// A synthetic CPython 3.8-3.12 runtime laid out by `tables::table`: one interpreter,
/// `threads` thread states, each with a stack of `depth` frames over distinct code objects.
struct Synthetic {
    image: MemoryImage,
    layout: Layout,
    runtime: u64,
    next_free: u64,
    /// Every struct written: (address, size), for mutations.
    objects: Vec<(u64, u64)>,
}

const HEAP: u64 = 0x5555_0000_0000;
const COMPACT_ASCII: u32 = 1 | 1 << 3 | 1 << 4; // kind 1, compact, ascii

impl Synthetic {
    fn new(minor: u8, threads: usize, depth: usize) -> Synthetic {
        let layout = tables::table(Version::new(3, minor, 0)).expect("a table");
        let mut s = Synthetic {
            image: MemoryImage::new(),
            layout,
            runtime: 0,
            next_free: HEAP,
            objects: Vec::new(),
        };
        s.build(threads, depth);
        s
    }

    fn alloc(&mut self, size: u64) -> u64 {
        let addr = self.next_free;
        self.image.write(addr, &vec![0u8; size as usize]);
        self.next_free += (size + 63) & !15;
        self.objects.push((addr, size));
        addr
    }

    fn str(&mut self, text: &str) -> u64 {
        let ol = self.layout.object.clone();
        let addr = self.alloc(ol.unicode_ascii_size + text.len() as u64 + 1);
        self.image.write_u32(
            addr + ol.unicode_state,
            COMPACT_ASCII << ol.unicode_kind_shift,
        );
        self.image
            .write_u64(addr + ol.unicode_length, text.len() as u64);
        self.image
            .write(addr + ol.unicode_ascii_size, text.as_bytes());
        addr
    }

    fn bytes(&mut self, data: &[u8]) -> u64 {
        let ol = self.layout.object.clone();
        let addr = self.alloc(ol.bytes_data + data.len() as u64 + 1);
        self.image
            .write_u64(addr + ol.bytes_size, data.len() as u64);
        self.image.write(addr + ol.bytes_data, data);
        addr
    }

    fn code(&mut self, name: &str) -> u64 {
        let c = self.layout.code.clone();
        let size = span(&[
            c.filename,
            c.name,
            c.qualname.unwrap_or(0),
            c.firstlineno,
            c.linetable,
        ])
        .max(c.code_adaptive.unwrap_or(0) + 72);
        let addr = self.alloc(size);
        let (name_obj, file_obj) = (self.str(name), self.str("/synthetic/app.py"));
        let table = self.bytes(&[]);
        self.image.write_u64(addr + c.name, name_obj);
        self.image.write_u64(addr + c.filename, file_obj);
        if let Some(off) = c.qualname {
            self.image.write_u64(addr + off, name_obj);
        }
        self.image.write_i32(addr + c.firstlineno, 10);
        self.image.write_u64(addr + c.linetable, table);
        addr
    }

    fn frame(&mut self, code: u64, previous: u64, index: u64) -> u64 {
        let fl = self.layout.frame.clone();
        let size = span(&[fl.previous, fl.code, fl.instr, fl.owner.unwrap_or(0)]);
        let addr = self.alloc(size);
        self.image.write_u64(addr + fl.previous, previous);
        self.image.write_u64(addr + fl.code, code);
        match fl.kind {
            FrameKind::Object { .. } => self.image.write_i32(addr + fl.instr, 2 * index as i32),
            FrameKind::Interpreter => {
                let start = code + self.layout.code.code_adaptive.unwrap_or(0);
                self.image.write_u64(addr + fl.instr, start + 2 * index);
            }
        }
        addr
    }

    fn build(&mut self, threads: usize, depth: usize) {
        let l = self.layout.clone();
        let gil_size = l.gil.size;
        let runtime_size = l
            .runtime
            .interpreters_head
            .max(l.runtime.gil.unwrap_or(0) + gil_size)
            + 8;
        self.runtime = self.alloc(runtime_size);
        let interp_size = span(&[
            l.interp.id,
            l.interp.next,
            l.interp.threads_head,
            l.interp.gil_ptr.unwrap_or(0),
            l.interp.modules,
        ]);
        let interp = self.alloc(interp_size);
        self.image
            .write_u64(self.runtime + l.runtime.interpreters_head, interp);
        let gil = match (l.runtime.gil, l.interp.gil_ptr) {
            (Some(off), _) => self.runtime + off,
            (None, Some(ptr)) => {
                let gil = self.alloc(gil_size);
                self.image.write_u64(interp + ptr, gil);
                gil
            }
            (None, None) => unreachable!("tables give one or the other"),
        };
        let codes: Vec<u64> = (0..depth)
            .map(|i| self.code(&format!("level{i}")))
            .collect();
        let t = l.tstate.clone();
        let (frame_off, cframe) = match t.frame {
            FramePointer::Direct(off) => (off, None),
            FramePointer::ViaCFrame {
                cframe,
                current_frame,
            } => (cframe, Some(current_frame)),
        };
        let tstate_size = span(&[
            t.next,
            t.interp,
            t.thread_id,
            t.native_thread_id.unwrap_or(0),
            frame_off,
        ]);
        let mut next = 0;
        let mut first = 0;
        for k in (0..threads).rev() {
            let tstate = self.alloc(tstate_size);
            let mut previous = 0;
            for (level, &code) in codes.iter().enumerate() {
                previous = self.frame(code, previous, level as u64);
            }
            match cframe {
                None => self.image.write_u64(tstate + frame_off, previous),
                Some(current) => {
                    let cf = self.alloc(current + 8);
                    self.image.write_u64(cf + current, previous);
                    self.image.write_u64(tstate + frame_off, cf);
                }
            }
            self.image.write_u64(tstate + t.next, next);
            self.image.write_u64(tstate + t.interp, interp);
            self.image
                .write_u64(tstate + t.thread_id, 0x7f00_0000_0000 + 0x1000 * k as u64);
            if let Some(off) = t.native_thread_id {
                self.image.write_u64(tstate + off, 100_000 + k as u64);
            }
            next = tstate;
            first = tstate;
        }
        self.image.write_u64(interp + l.interp.threads_head, first);
        self.image.write_i32(gil + l.gil.locked, 1);
        self.image.write_u64(gil + l.gil.last_holder, first);
        self.image.write_u64(gil + l.gil.interval, 5000);
    }

    fn runtime(&self) -> Runtime {
        Runtime {
            // Our own pid: pre-3.11 tid resolution scans for our (real) thread ids.
            pid: std::process::id() as i32,
            binary: PythonBinary {
                version: self.layout.version,
                build: Build::Static,
                free_threaded: false,
                path: PathBuf::from("/synthetic/python"),
            },
            layout: self.layout.clone(),
            address: self.runtime,
            code_type: None,
        }
    }
}

/// Bytes from a struct's start to the end of its last 8-byte field at one of `offsets`.
fn span(offsets: &[u64]) -> u64 {
    offsets.iter().max().copied().unwrap_or(0) + 8
}

/// xorshift64*: deterministic, so a failure names the seed that reproduces it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// How long one walk of a hostile image may take (a debug build, on a loaded machine).
const WALK_LIMIT: Duration = Duration::from_secs(2);
const MIN_MINOR: u8 = 8;
const MAX_MINOR: u8 = 12;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Walks `image` (and samples it through `Sampler`), checking the documented bounds; the
/// walk's result, how long it took.
fn walk(image: &MemoryImage, runtime: &Runtime, context: &str) -> (Option<PythonState>, Duration) {
    let started = Instant::now();
    let mut walker = Walker::new(image.clone(), runtime.clone());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| walker.read(true)))
        .unwrap_or_else(|_| panic!("the walker panicked: {context}"));
    let took = started.elapsed();
    assert!(took < WALK_LIMIT, "one walk took {took:?}: {context}");
    let state = result.ok();
    if let Some(state) = &state {
        assert!(state.interpreters.len() <= 256, "{context}");
        assert!(state.threads.len() <= 256 * 8192, "{context}");
        for thread in &state.threads {
            assert!(thread.frames.len() <= MAX_FRAMES, "{context}");
        }
        for id in 0..walker.codes.len() as u32 {
            let info = walker.codes.info(id);
            assert!(
                info.name.chars().count() as u64 <= MAX_STRING_CHARS,
                "{context}"
            );
            assert!(
                info.file.chars().count() as u64 <= MAX_STRING_CHARS,
                "{context}"
            );
        }
    }
    let mut target = Sampler::new(runtime.pid, image.clone(), runtime.clone());
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = target.sample(true);
    }))
    .unwrap_or_else(|_| panic!("Sampler::sample panicked: {context}"));
    (state, took)
}

#[test]
fn synthetic_images_walk_as_built() {
    for minor in MIN_MINOR..=MAX_MINOR {
        let s = Synthetic::new(minor, 3, 5);
        let (state, _) = walk(&s.image, &s.runtime(), &format!("3.{minor} as built"));
        let state = state.unwrap_or_else(|| panic!("3.{minor}: the unmutated image does not walk"));
        assert_eq!(state.interpreters.len(), 1, "3.{minor}");
        assert!(state.interpreters[0].gil.locked, "3.{minor}");
        assert_eq!(state.threads.len(), 3, "3.{minor}");
        for thread in &state.threads {
            assert_eq!(thread.frames.len(), 5, "3.{minor}");
            assert!(!thread.truncated);
        }
    }
}

/// A walk that fails after one that succeeded leaves no threads behind, so that the next
/// sample, which reads the last walk's threads first, finds none naming an interpreter
/// the failed walk cleared (it panicked on an exec, when the memory went away mid-walk).
#[test]
fn a_failed_walk_leaves_no_threads_behind() {
    for minor in MIN_MINOR..=MAX_MINOR {
        let s = Synthetic::new(minor, 3, 5);
        let mut walker = Walker::new(s.image.clone(), s.runtime());
        let mut state = PythonState::default();
        walker
            .read_threads_into(&mut state)
            .expect("the image walks");
        assert_eq!(state.threads.len(), 3, "3.{minor}");
        walker.mem = MemoryImage::new();
        assert!(walker.read_threads_into(&mut state).is_err(), "3.{minor}");
        assert!(
            state.threads.is_empty() && state.interpreters.is_empty(),
            "3.{minor}: {} threads and {} interpreters left",
            state.threads.len(),
            state.interpreters.len()
        );
    }
}

/// One random change: a flipped bit, a random word, a pointer to another struct or to the
/// struct itself (a cycle), or an extreme value, at a random 8-aligned offset of a struct.
fn mutate(s: &Synthetic, image: &mut MemoryImage, rng: &mut Rng) {
    let (addr, size) = s.objects[rng.below(s.objects.len() as u64) as usize];
    let at = addr + (rng.below(size.max(8) / 8) * 8).min(size.saturating_sub(8));
    let value = match rng.below(6) {
        0 => {
            let mut word = [0u8; 8];
            let _ = image.read(at, &mut word);
            u64::from_le_bytes(word) ^ (1 << rng.below(64))
        }
        1 => rng.next(),
        2 => {
            let (other, other_size) = s.objects[rng.below(s.objects.len() as u64) as usize];
            other + rng.below(other_size) / 8 * 8
        }
        3 => addr,
        4 => [
            0,
            u64::MAX,
            i64::MAX as u64,
            1 << 31,
            u32::MAX as u64,
            0xffff_ffff_8000_0000,
        ][rng.below(6) as usize],
        _ => rng.below(1 << 16),
    };
    image.write_u64(at, value);
}

#[test]
fn mutated_images_never_panic_or_hang() {
    let seed = env_u64("GILSCOPE_FUZZ_SEED", 0x6a09_e667_f3bc_c908);
    let iterations = env_u64("GILSCOPE_FUZZ_ITERATIONS", 300);
    let budget = Duration::from_secs(env_u64("GILSCOPE_FUZZ_SECONDS", 20));
    let started = Instant::now();
    let mut rng = Rng(seed);
    let mut slowest = Duration::ZERO;
    let mut walked = 0u64;
    for minor in MIN_MINOR..=MAX_MINOR {
        let s = Synthetic::new(minor, 4, 12);
        let runtime = s.runtime();
        for i in 0..iterations {
            if started.elapsed() > budget {
                break;
            }
            let mut image = s.image.clone();
            for _ in 0..=rng.below(8) {
                mutate(&s, &mut image, &mut rng);
            }
            let context = format!("3.{minor}, iteration {i}, GILSCOPE_FUZZ_SEED={seed}");
            let (_, took) = walk(&image, &runtime, &context);
            slowest = slowest.max(took);
            walked += 1;
        }
    }
    println!("{walked} mutated images walked; slowest walk {slowest:?}");
    assert!(
        walked >= 5 * 20,
        "only {walked} images walked within {budget:?}"
    );
}

#[test]
fn random_images_never_panic_or_hang() {
    let seed = env_u64("GILSCOPE_FUZZ_SEED", 0xbb67_ae85_84ca_a73b);
    let iterations = env_u64("GILSCOPE_FUZZ_ITERATIONS", 300);
    let mut rng = Rng(seed);
    for i in 0..iterations {
        let minor = MIN_MINOR + rng.below(u64::from(MAX_MINOR - MIN_MINOR + 1)) as u8;
        let layout = tables::table(Version::new(3, minor, 0)).unwrap();
        // Pages of random words, a quarter of them pointers into the pages themselves.
        let pages = 1 + rng.below(16);
        let mut image = MemoryImage::new();
        for word in 0..pages * 512 {
            let value = if rng.below(4) == 0 {
                HEAP + rng.below(pages * 4096)
            } else {
                rng.next()
            };
            image.write_u64(HEAP + word * 8, value);
        }
        let runtime = Runtime {
            pid: std::process::id() as i32,
            binary: PythonBinary {
                version: layout.version,
                build: Build::Shared,
                free_threaded: false,
                path: PathBuf::from("/synthetic/libpython.so"),
            },
            layout,
            address: HEAP + rng.below(pages * 4096) / 8 * 8,
            code_type: None,
        };
        walk(
            &image,
            &runtime,
            &format!("random image {i}, 3.{minor}, GILSCOPE_FUZZ_SEED={seed}"),
        );
    }
}

/// Cycles a torn or hostile target can present: the walk must end fast, and a cycle must not
/// be reported as a real stack.
#[test]
fn cyclic_structures_end_the_walk_quickly() {
    for minor in MIN_MINOR..=MAX_MINOR {
        let s = Synthetic::new(minor, 4, 12);
        let l = s.layout.clone();
        let runtime = s.runtime();
        let first_tstate = {
            let interp = read_u64(&s.image, s.runtime + l.runtime.interpreters_head);
            read_u64(&s.image, interp + l.interp.threads_head)
        };
        let top_frame = |image: &MemoryImage| match l.tstate.frame {
            FramePointer::Direct(off) => read_u64(image, first_tstate + off),
            FramePointer::ViaCFrame {
                cframe,
                current_frame,
            } => read_u64(
                image,
                read_u64(image, first_tstate + cframe) + current_frame,
            ),
        };

        // A frame whose `previous` is itself.
        let mut frame_loop = s.image.clone();
        let top = top_frame(&frame_loop);
        frame_loop.write_u64(top + l.frame.previous, top);
        let (state, took) = walk(&frame_loop, &runtime, &format!("3.{minor}: frame cycle"));
        if let Some(state) = state {
            assert!(
                state
                    .threads
                    .iter()
                    .all(|t| t.frames.len() <= 12 && !t.truncated),
                "3.{minor}: a frame cycle was reported as a {}-frame stack (in {took:?})",
                state
                    .threads
                    .iter()
                    .map(|t| t.frames.len())
                    .max()
                    .unwrap_or(0)
            );
        }

        // A thread state whose `next` is itself.
        let mut thread_loop = s.image.clone();
        thread_loop.write_u64(first_tstate + l.tstate.next, first_tstate);
        let (state, took) = walk(&thread_loop, &runtime, &format!("3.{minor}: thread cycle"));
        assert!(
            state.as_ref().is_none_or(|s| s.threads.len() <= 4),
            "3.{minor}: a thread cycle gave {} threads (in {took:?})",
            state.map_or(0, |s| s.threads.len())
        );

        // Both at once: every pass round the thread cycle walks the frame cycle.
        let mut both = thread_loop.clone();
        let top = top_frame(&both);
        both.write_u64(top + l.frame.previous, top);
        walk(
            &both,
            &runtime,
            &format!("3.{minor}: thread and frame cycles"),
        );
    }
}

fn read_u64(image: &MemoryImage, addr: u64) -> u64 {
    let mut word = [0u8; 8];
    image
        .read(addr, &mut word)
        .unwrap_or_else(|e| panic!("synthetic image: {e}"));
    u64::from_le_bytes(word)
}
