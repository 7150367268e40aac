//! Targets that change under the profiler (issue 16): thousands of short threads, a
//! thread-per-request server, and a closed pipe on every command.

use crate::support::*;
use serde_json::Value;
use std::collections::HashMap;
use std::process::Command;

/// The first interpreter found that has `threading.get_native_id` (3.8+: all supported).
fn python() -> Interpreter {
    pythons().into_iter().next().expect("an interpreter")
}

fn record(pid: i32, dir: &std::path::Path, rate: &str, seconds: &str) -> Run {
    gilscope([
        "record",
        "--pid",
        &pid.to_string(),
        "--rate",
        rate,
        "--duration",
        seconds,
        "--output",
        dir.to_str().unwrap(),
    ])
}

fn groups(report: &Value) -> HashMap<String, Value> {
    report["thread_groups"]
        .as_array()
        .expect("thread_groups")
        .iter()
        .map(|g| (g["name"].as_str().unwrap().to_string(), g.clone()))
        .collect()
}

/// Rows of the summary's thread table (between the header and the next blank line).
fn summary_rows(stderr: &str) -> usize {
    stderr
        .lines()
        .skip_while(|l| !l.starts_with("THREAD"))
        .skip(1)
        .take_while(|l| !l.is_empty() && !l.starts_with("Short-lived"))
        .count()
}

#[test]
fn churn_names_each_thread_as_it_named_itself_and_groups_them() {
    let py = python();
    let scratch = ScratchDir::new("churn");
    let truth_file = scratch.join("truth.txt");
    let child = Child::fixture(
        &py,
        "churn.py",
        &["--truth", truth_file.to_str().unwrap(), "--seconds", "30"],
    );
    let dir = scratch.join("out");
    let run = record(child.pid(), &dir, "200", "3");
    assert_eq!(run.code, Some(0), "{run}");
    drop(child);
    let truth: HashMap<i64, String> = std::fs::read_to_string(&truth_file)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (tid, name) = l.split_once(' ')?;
            Some((tid.parse().ok()?, name.to_string()))
        })
        .collect();
    let report = read_report(&dir);
    let threads = report["threads"].as_array().unwrap();
    let in_truth: Vec<&Value> = threads
        .iter()
        .filter(|t| truth.contains_key(&t["tid"].as_i64().unwrap()))
        .collect();
    assert!(
        in_truth.len() >= 500,
        "{} request threads seen",
        in_truth.len()
    );
    let wrong: Vec<String> = in_truth
        .iter()
        .filter(|t| {
            t["name"]
                .as_str()
                .is_some_and(|n| n != truth[&t["tid"].as_i64().unwrap()])
        })
        .map(|t| {
            format!(
                "{} named {} is {}",
                t["tid"],
                t["name"],
                truth[&t["tid"].as_i64().unwrap()]
            )
        })
        .collect();
    assert!(wrong.is_empty(), "{} wrong names: {wrong:?}", wrong.len());
    let named = in_truth.iter().filter(|t| t["name"].is_string()).count();
    assert!(
        named * 10 >= in_truth.len() * 7,
        "only {named} of {} request threads named",
        in_truth.len()
    );
    // Every thread says its group; the requests are one short-lived group.
    for t in in_truth.iter().filter(|t| t["name"].is_string()) {
        assert_eq!(t["group"], "req-*", "{t}");
    }
    let groups = groups(&report);
    let req = &groups["req-*"];
    // The group holds every request thread of the report (the fixture's truth may miss the
    // last ones, started as it wrote its record).
    let members = threads.iter().filter(|t| t["group"] == "req-*").count();
    assert!(
        members >= named,
        "{members} in the group, {named} named in the truth"
    );
    assert_eq!(req["threads"].as_u64().unwrap(), members as u64, "{req}");
    assert_eq!(req["short_lived"], true, "{req}");
    assert!(req["mean_life_ms"].as_f64().unwrap() < 100.0, "{req}");
    for field in ["samples", "states", "class", "top_frames"] {
        assert!(!req[field].is_null(), "group without {field}: {req}");
    }
    assert_eq!(groups["dispatcher"]["short_lived"], false);
    let rows = summary_rows(&run.stderr);
    assert!(rows <= 10, "{rows} rows in the summary:\n{}", run.stderr);
    // Samples stay whole: at most 2% torn, and the rate holds within 5%.
    let samples = report["samples"].as_f64().unwrap();
    let torn = report["torn_samples"].as_f64().unwrap();
    assert!(torn <= 0.02 * (samples + torn), "{torn} torn of {samples}");
    let rate = report["achieved_rate_hz"].as_f64().unwrap();
    assert!(rate >= 190.0, "achieved {rate} Hz of 200");
    // A group can fail a CI job.
    let failed = gilscope([
        "report",
        dir.to_str().unwrap(),
        "--fail-on",
        "group[req-*].threads>100",
    ]);
    assert_eq!(failed.code, Some(10), "{failed}");
    assert!(failed.stderr.contains("group[req-*].threads"), "{failed}");
}

#[test]
fn a_thread_per_request_server_is_one_group() {
    let py = python();
    let scratch = ScratchDir::new("http-server");
    let child = Child::fixture(&py, "http_server.py", &["--seconds", "30"]);
    let dir = scratch.join("out");
    let run = record(child.pid(), &dir, "200", "3");
    assert_eq!(run.code, Some(0), "{run}");
    let report = read_report(&dir);
    let groups = groups(&report);
    let handlers = &groups["Thread-* (process_request_thread)"];
    assert!(handlers["threads"].as_u64().unwrap() >= 20, "{handlers}");
    assert_eq!(handlers["short_lived"], true, "{handlers}");
    assert_eq!(groups["client-*"]["threads"], 4);
    assert_eq!(groups["client-*"]["short_lived"], false);
    let rows = summary_rows(&run.stderr);
    assert!(rows <= 12, "{rows} rows in the summary:\n{}", run.stderr);
    assert!(
        run.stderr.contains("Thread-* (process_request_thread)"),
        "{}",
        run.stderr
    );
}

/// `gilscope ARGS 2>&1 | head -1`: the exit status of gilscope itself.
fn through_head(args: &[&str]) -> (Option<i32>, String) {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = format!(
        "'{}' {} 2>&1 | head -1; exit ${{PIPESTATUS[0]}}",
        env!("CARGO_BIN_EXE_gilscope"),
        quoted.join(" ")
    );
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(script);
    let run = run_command(cmd, COMMAND_TIMEOUT);
    (run.code, run.stdout)
}

#[test]
fn a_closed_pipe_ends_every_command_quietly() {
    let py = python();
    let scratch = ScratchDir::new("closed-pipe");
    let child = Child::fixture(&py, "workload.py", &["cpu_threads", "--seconds", "30"]);
    let pid = child.pid().to_string();
    let dir = scratch.join("out");
    let dir = dir.to_str().unwrap();
    let (code, _) = through_head(&["record", "--pid", &pid, "-d", "1", "-o", dir]);
    assert_eq!(code, Some(0), "record");
    for file in [
        "report.json",
        "report.md",
        "recording.json",
        "flamegraph.svg",
    ] {
        assert!(
            scratch.join("out").join(file).is_file(),
            "record wrote no {file}"
        );
    }
    for args in [
        vec!["dump", "--pid", &pid],
        vec!["dump", "--pid", &pid, "--json"],
        vec!["report", dir],
        vec!["diff", dir, dir],
    ] {
        let (code, first) = through_head(&args);
        assert_eq!(code, Some(0), "{args:?}: {first}");
        assert!(!first.is_empty(), "{args:?} printed nothing");
    }
}

#[test]
fn an_exec_mid_recording_is_reported_as_an_exec() {
    let py = python();
    let scratch = ScratchDir::new("exec");
    let go = scratch.join("go");
    let child = Child::fixture(&py, "exec_midway.py", &[go.to_str().unwrap()]);
    let dir = scratch.join("out");
    let mut profiler = Child::spawn(gilscope_command([
        "record",
        "--pid",
        &child.pid().to_string(),
        "--duration",
        "30",
        "--output",
        dir.to_str().unwrap(),
    ]));
    wait_for_samples(&mut profiler, child.pid(), 50);
    std::fs::write(&go, b"").unwrap();
    let status = profiler.wait_exit(COMMAND_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", profiler.stderr());
    let report = read_report(&dir);
    let reason = report["stop_reason"].as_str().unwrap();
    assert!(reason.contains("exec()"), "{reason}");
    assert!(
        profiler.stderr().contains("called exec()"),
        "{}",
        profiler.stderr()
    );
    let spinner = report["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "spinner");
    assert!(spinner.is_some(), "the program before the exec is reported");
}
