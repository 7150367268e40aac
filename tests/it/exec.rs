//! exec() under the profiler (issue 16): `record` follows the target into the program it
//! exec'd (the same interpreter, or another version), says so when the new program is not
//! Python and leaves it alone; `top` and `dump` end with a clear message.

use crate::support::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

/// (before, after): every interpreter exec'ing itself, and into the next one found of
/// another minor version (when there is one).
fn exec_pairs() -> Vec<(Interpreter, Interpreter)> {
    let all = pythons();
    let mut pairs = Vec::new();
    for (i, before) in all.iter().enumerate() {
        pairs.push((before.clone(), before.clone()));
        let other = all
            .iter()
            .cycle()
            .skip(i + 1)
            .take(all.len())
            .find(|after| after.major_minor() != before.major_minor());
        if let Some(after) = other {
            pairs.push((before.clone(), after.clone()));
        }
    }
    pairs
}

/// Waits until the gilscope process `profiler` has sampled thread `tid` of `pid` (it keeps
/// each sampled thread's /proc files open), then until it has made `reads` more reads.
fn wait_for_samples_of_thread(profiler: &mut Child, pid: i32, tid: i64, reads: u64) {
    let needle = format!("/proc/{pid}/task/{tid}/");
    let gilscope = profiler.pid();
    poll_until(
        &format!("gilscope to sample thread {tid} of {pid}"),
        COMMAND_TIMEOUT,
        || {
            assert!(
                profiler.is_running(),
                "gilscope exited: {}",
                profiler.stderr()
            );
            let fds = std::fs::read_dir(format!("/proc/{gilscope}/fd")).ok()?;
            fds.filter_map(Result::ok)
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .any(|link| link.to_string_lossy().contains(&needle))
                .then_some(())
        },
    );
    wait_for_reads(profiler, reads);
}

/// exec_chain.py under `before`: once `go` exists it execs `after` running
/// `exec_chain.py --after`, which prints an AFTER line once its spinner runs.
fn exec_chain_into_python(before: &Interpreter, after: &Interpreter, go: &Path) -> Child {
    let script = fixture("exec_chain.py");
    Child::fixture(
        before,
        "exec_chain.py",
        &[
            go.to_str().unwrap(),
            after.path.to_str().unwrap(),
            script.to_str().unwrap(),
            "--after",
        ],
    )
}

fn record_pid(pid: i32, dir: &Path) -> Child {
    Child::spawn(gilscope_command([
        "record",
        "--pid",
        &pid.to_string(),
        "--duration",
        "120",
        "--output",
        dir.to_str().unwrap(),
    ]))
}

/// Functions in the recording's stacks of the threads `keep` accepts.
fn functions(dir: &Path, keep: impl Fn(i64) -> bool) -> BTreeSet<String> {
    let text = std::fs::read_to_string(dir.join("recording.json")).unwrap();
    let recording: Value = serde_json::from_str(&text).unwrap();
    recording["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["count"].as_u64() > Some(0) && keep(s["tid"].as_i64().unwrap()))
        .flat_map(|s| s["frames"].as_array().unwrap().clone())
        .filter_map(|f| f["function"].as_str().map(str::to_string))
        .collect()
}

fn same_file(a: &str, b: &Path) -> bool {
    std::fs::canonicalize(a).ok() == std::fs::canonicalize(b).ok()
}

#[test]
fn record_follows_an_exec_into_python_of_the_same_or_another_version() {
    let scratch = ScratchDir::new("exec-follow");
    for (i, (before, after)) in exec_pairs().iter().enumerate() {
        let what = format!("{} exec'ing {}", before.label(), after.label());
        eprintln!("{what}");
        let go = scratch.join(&format!("go-{i}"));
        let mut child = exec_chain_into_python(before, after, &go);
        let pid = child.pid();
        let dir = scratch.join(&format!("out-{i}"));
        let mut profiler = record_pid(pid, &dir);
        wait_for_samples(&mut profiler, pid, 50);
        std::fs::write(&go, b"").unwrap();
        let ready = child.wait_for_line("AFTER");
        assert_eq!(ready["version"], after.version.as_str(), "{what}");
        let spinner = ready["spinner_tid"].as_i64().unwrap();
        // The new program's sampler has seen its spinner, then sampled some more: at about 5
        // syscalls a sample and 100 Hz, 800 syscalls is past the second after attaching,
        // when code read during the interpreter's start-up is read again.
        wait_for_samples_of_thread(&mut profiler, pid, spinner, 800);
        profiler.signal(nix::sys::signal::Signal::SIGINT);
        let status = profiler.wait_exit(COMMAND_TIMEOUT);
        let stderr = profiler.stderr();
        assert_eq!(status.code(), Some(0), "{what}: {stderr}");

        let report = read_report(&dir);
        assert_eq!(
            report["python"]["version"],
            before.version.as_str(),
            "{what}"
        );
        let execs = report["execs"].as_array().expect("execs");
        assert_eq!(execs.len(), 1, "{what}: {execs:?}");
        let exec = &execs[0];
        assert_eq!(exec["python"], after.version.as_str(), "{what}: {exec}");
        assert_eq!(
            exec["interpreter"]["version"],
            after.version.as_str(),
            "{what}"
        );
        assert!(
            same_file(exec["program"].as_str().unwrap(), &after.path),
            "{what}: {exec}"
        );
        assert!(exec["samples"].as_u64().unwrap() > 0, "{what}: {exec}");
        assert!(exec["at_s"].as_f64().unwrap() > 0.0, "{what}: {exec}");
        let reason = report["stop_reason"].as_str().unwrap();
        assert!(
            reason.starts_with("interrupted") && reason.contains("followed it into"),
            "{what}: {reason}"
        );
        let seen = functions(&dir, |_| true);
        for function in ["before_exec_work", "after_exec_work"] {
            assert!(seen.contains(function), "{what}: no {function} in {seen:?}");
        }
        // The new program's spinner is read with the new program's code tables only.
        let of_spinner = functions(&dir, |tid| tid == spinner);
        assert!(
            of_spinner.contains("after_exec_work"),
            "{what}: {of_spinner:?}"
        );
        assert!(
            !of_spinner.contains("before_exec_work"),
            "{what}: {of_spinner:?}"
        );
        // The exec'ing process keeps its pid: its main thread is one thread of the report.
        let main_threads = report["threads"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["tid"] == pid)
            .count();
        assert_eq!(main_threads, 1, "{what}");
        assert!(stderr.contains("exec() at "), "{what}: {stderr}");
        let markdown = std::fs::read_to_string(dir.join("report.md")).unwrap();
        assert!(markdown.contains("| exec() at "), "{what}: {markdown}");
    }
}

#[test]
fn record_says_when_the_target_execs_a_program_that_is_not_python_and_leaves_it_alone() {
    let scratch = ScratchDir::new("exec-not-python");
    let sleep = Path::new("/bin/sleep");
    for (i, py) in pythons().iter().enumerate() {
        let what = py.label();
        let go = scratch.join(&format!("go-{i}"));
        let mut child = Child::fixture(
            py,
            "exec_chain.py",
            &[go.to_str().unwrap(), sleep.to_str().unwrap(), "600"],
        );
        let pid = child.pid();
        let dir = scratch.join(&format!("out-{i}"));
        let mut profiler = record_pid(pid, &dir);
        wait_for_samples(&mut profiler, pid, 50);
        std::fs::write(&go, b"").unwrap();
        // It ends by itself (the duration is 120 s): the new program is not Python.
        let status = profiler.wait_exit(COMMAND_TIMEOUT);
        let stderr = profiler.stderr();
        assert_eq!(status.code(), Some(0), "{what}: {stderr}");
        assert!(child.is_running(), "{what}: the target was harmed");
        assert_eq!(
            std::fs::canonicalize(format!("/proc/{pid}/exe")).ok(),
            std::fs::canonicalize(sleep).ok(),
            "{what}"
        );

        let report = read_report(&dir);
        let reason = report["stop_reason"].as_str().unwrap();
        assert!(
            reason.contains("called exec()") && reason.contains("cannot sample"),
            "{what}: {reason}"
        );
        let execs = report["execs"].as_array().expect("execs");
        assert_eq!(execs.len(), 1, "{what}: {execs:?}");
        assert!(execs[0]["python"].is_null(), "{what}: {}", execs[0]);
        assert!(
            same_file(execs[0]["program"].as_str().unwrap(), sleep),
            "{what}: {}",
            execs[0]
        );
        let note = execs[0]["note"].as_str().unwrap();
        assert!(note.contains("not a Python process"), "{what}: {note}");
        assert!(
            functions(&dir, |_| true).contains("before_exec_work"),
            "{what}"
        );
        assert!(
            stderr.contains(&format!("pid {pid} called exec() into")),
            "{what}: {stderr}"
        );
    }
}

#[test]
fn top_ends_with_a_message_when_the_target_execs() {
    let py = pythons().into_iter().next().expect("an interpreter");
    let scratch = ScratchDir::new("exec-top");
    let go = scratch.join("go");
    let child = exec_chain_into_python(&py, &py, &go);
    let pid = child.pid();
    let mut top = Child::spawn(gilscope_command([
        "top",
        "--pid",
        &pid.to_string(),
        "--batch",
    ]));
    wait_for_samples(&mut top, pid, 50);
    std::fs::write(&go, b"").unwrap();
    let status = top.wait_exit(COMMAND_TIMEOUT);
    let stderr = top.stderr();
    assert_eq!(status.code(), Some(7), "{stderr}");
    assert!(
        stderr.contains(&format!("process {pid} called exec() and now runs"))
            && stderr.contains("top stopped"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
