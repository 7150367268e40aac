//! Across a fleet: `--format pprof` read back by Go's own `go tool pprof`, and `--push` to a
//! local stand-in for Pyroscope's /ingest (fixtures/push_receiver.py) that checks what
//! arrives, plus servers that refuse, fail or never answer.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::support::{self, Child, IDLE_REASONS, Interpreter, THREAD_STATES};

/// One interpreter with a GIL is enough.
fn python() -> Interpreter {
    support::pythons()
        .into_iter()
        .find(|p| p.gil_enabled)
        .expect("an interpreter with a GIL")
}

/// Two threads fighting over the GIL and an idle main thread; tids from the READY line.
fn workload(python: &Interpreter) -> (Child, BTreeSet<i64>) {
    let child = Child::fixture(
        python,
        "workload.py",
        &["cpu_threads", "--threads", "2", "--seconds", "120"],
    );
    let tids = child.ready()["threads"]
        .as_object()
        .expect("READY names threads")
        .values()
        .map(|tid| tid.as_i64().expect("tid"))
        .collect();
    (child, tids)
}

/// A stand-in for Pyroscope: `mode` is ok (200), error (500) or hang (never answers).
fn receiver(python: &Interpreter, dir: &Path, mode: &str) -> (Child, String) {
    let mut cmd = Command::new(&python.path);
    cmd.arg(support::fixture("push_receiver.py"))
        .arg("--dir")
        .arg(dir)
        .args(["--mode", mode]);
    let child = Child::spawn_until_ready(cmd);
    let port = child.ready()["port"].as_u64().expect("port");
    (child, format!("http://127.0.0.1:{port}"))
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "gilscope-it-fleet-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
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

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// One sample as `go tool pprof -raw` prints it.
#[derive(Debug)]
struct RawSample {
    count: i64,
    wall_ns: i64,
    labels: BTreeMap<String, String>,
}

/// What `go tool pprof -raw` says about a profile: its header lines and its samples.
struct GoPprof {
    header: String,
    samples: Vec<RawSample>,
}

/// Decodes `path` with Go's pprof (Debian's golang-go, installed by .ci/setup).
fn go_pprof(path: &Path) -> GoPprof {
    let mut cmd = Command::new("go");
    cmd.args(["tool", "pprof", "-raw"]).arg(path);
    let run = support::run_command(cmd, support::COMMAND_TIMEOUT);
    assert_eq!(
        run.code,
        Some(0),
        "go tool pprof cannot read {} (is golang-go installed? run .ci/setup): {run}",
        path.display()
    );
    let text = run.stdout;
    let (header, rest) = text
        .split_once("Samples:\n")
        .unwrap_or_else(|| panic!("no Samples section in: {text}"));
    let body = rest.split("\nLocations").next().unwrap_or_default();
    let mut samples: Vec<RawSample> = Vec::new();
    for line in body.lines().skip(1) {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let values = trimmed
            .split_once(':')
            .filter(|(v, _)| v.split_whitespace().all(|n| n.parse::<i64>().is_ok()));
        match values {
            Some((values, _)) => {
                let numbers: Vec<i64> = values
                    .split_whitespace()
                    .map(|n| n.parse().unwrap())
                    .collect();
                assert_eq!(numbers.len(), 2, "two values per sample: {line}");
                samples.push(RawSample {
                    count: numbers[0],
                    wall_ns: numbers[1],
                    labels: BTreeMap::new(),
                });
            }
            None => {
                let sample = samples.last_mut().expect("labels follow a sample");
                for (key, value) in labels_in(trimmed) {
                    sample.labels.insert(key, value);
                }
            }
        }
    }
    GoPprof {
        header: header.to_string(),
        samples,
    }
}

/// `key:[value]` pairs of a -raw label line (values may hold spaces).
fn labels_in(line: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(open) = rest.find(":[") {
        let key = rest[..open].trim().to_string();
        let after = &rest[open + 2..];
        let close = after.find(']').expect("label value closes");
        found.push((key, after[..close].to_string()));
        rest = &after[close + 1..];
    }
    found
}

#[test]
fn pprof_holds_the_reports_gil_state_shares_per_thread() {
    let python = python();
    let (child, tids) = workload(&python);
    let out = TempDir::new("pprof");
    let pid = child.pid().to_string();
    let run = support::gilscope([
        "record",
        "--pid",
        &pid,
        "--duration",
        "2",
        "--format",
        "pprof",
        "-o",
        out.0.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "record failed: {run}");
    assert!(run.stderr.contains("profile.pb.gz"), "{run}");
    let report = read_json(&out.path("report.json"));
    let pprof = go_pprof(&out.path("profile.pb.gz"));
    assert!(
        pprof.header.contains("PeriodType: wall nanoseconds")
            && pprof.header.contains("Period: 10000000"),
        "{}",
        pprof.header
    );
    // counts[tid][state]
    let mut counts: BTreeMap<i64, BTreeMap<String, i64>> = BTreeMap::new();
    let mut names: BTreeMap<i64, String> = BTreeMap::new();
    for s in &pprof.samples {
        assert_eq!(s.wall_ns, s.count * 10_000_000, "{s:?}");
        assert_eq!(s.labels.get("pid"), Some(&pid), "{s:?}");
        let state = s.labels.get("gil_state").expect("gil_state label");
        assert!(THREAD_STATES.contains(&state.as_str()), "{s:?}");
        match s.labels.get("idle_reason") {
            Some(reason) => assert!(state == "idle" && IDLE_REASONS.contains(&reason.as_str())),
            None => assert_ne!(state, "idle", "an idle sample without a reason: {s:?}"),
        }
        let tid: i64 = s.labels["thread_id"].parse().expect("numeric thread_id");
        assert!(tids.contains(&tid), "thread {tid} is not the workload's");
        *counts
            .entry(tid)
            .or_default()
            .entry(state.clone())
            .or_default() += s.count;
        if let Some(name) = s.labels.get("thread_name") {
            names.insert(tid, name.clone());
        }
    }
    let threads = report["threads"].as_array().expect("report threads");
    assert_eq!(threads.len(), counts.len(), "threads in report and pprof");
    for t in threads {
        let tid = t["tid"].as_i64().unwrap();
        let by_state = &counts[&tid];
        let total: i64 = by_state.values().sum();
        assert_eq!(total as u64, t["samples"].as_u64().unwrap(), "thread {tid}");
        for state in THREAD_STATES {
            let share = *by_state.get(state).unwrap_or(&0) as f64 / total as f64;
            let reported = t["states"][state].as_f64().unwrap();
            assert!(
                (share - reported).abs() < 1e-9,
                "thread {tid} {state}: pprof {share}, report.json {reported}"
            );
        }
        assert_eq!(names.get(&tid).map(String::as_str), t["name"].as_str());
    }
    // The workers contend, so both states the issue is about are in the profile.
    let all: BTreeSet<&str> = counts
        .values()
        .flat_map(|m| m.keys().map(String::as_str))
        .collect();
    assert!(
        all.contains("gil_held") && all.contains("gil_wait"),
        "{all:?}"
    );
}

#[test]
fn push_sends_every_window_to_the_ingest_endpoint() {
    let python = python();
    let received = TempDir::new("received");
    let (_server, url) = receiver(&python, &received.0, "ok");
    let (child, tids) = workload(&python);
    let out = TempDir::new("push");
    let pid = child.pid().to_string();
    let began = unix_now();
    let run = support::gilscope([
        "record",
        "--pid",
        &pid,
        "--duration",
        "3",
        "--push",
        &url,
        "--push-window",
        "1",
        "--app-name",
        "fleet-test",
        "--push-label",
        "env=ci",
        "--push-header",
        "Authorization: Bearer t0ken-123",
        "-o",
        out.0.to_str().unwrap(),
    ]);
    let ended = unix_now();
    assert_eq!(run.code, Some(0), "record failed: {run}");
    assert!(
        !run.stderr.contains("t0ken-123") && !run.stdout.contains("t0ken-123"),
        "a header value was printed: {run}"
    );
    let report = read_json(&out.path("report.json"));
    let windows = report["push"]["windows"].as_u64().expect("push.windows");
    assert!(windows >= 2, "3 s in 1 s windows: {}", report["push"]);
    assert_eq!(
        report["push"],
        serde_json::json!({"windows": windows, "sent": windows, "failed": 0, "dropped": 0})
    );
    assert!(
        run.stderr
            .contains(&format!("Pushed: {windows} of {windows} windows sent")),
        "{run}"
    );
    let mut pushed: BTreeMap<i64, i64> = BTreeMap::new();
    let mut previous_from = 0;
    for n in 1..=windows {
        let request = read_json(&received.path(&format!("request-{n}.json")));
        assert_eq!(request["path"], "/ingest");
        assert_eq!(request["content_type"], "multipart/form-data");
        assert_eq!(request["fields"], serde_json::json!(["profile"]));
        assert_eq!(request["authorization"], "Bearer t0ken-123");
        let q = &request["query"];
        let keys: BTreeSet<&str> = q.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["name", "from", "until", "format", "sampleRate", "spyName"])
        );
        assert_eq!(q["name"], "fleet-test{env=ci}");
        assert_eq!(q["format"], "pprof");
        assert_eq!(q["sampleRate"], "100");
        assert_eq!(q["spyName"], "gilscope");
        let from: u64 = q["from"].as_str().unwrap().parse().unwrap();
        let until: u64 = q["until"].as_str().unwrap().parse().unwrap();
        assert!(
            began <= from && from < until && until <= ended + 1,
            "window {n}: {from}..{until} outside the run {began}..{ended}"
        );
        assert!(from >= previous_from, "windows in order");
        previous_from = from;
        let pprof = go_pprof(&received.path(&format!("request-{n}.pb.gz")));
        assert!(!pprof.samples.is_empty(), "window {n} is empty");
        for s in &pprof.samples {
            assert_eq!(s.labels.get("pid"), Some(&pid));
            assert!(THREAD_STATES.contains(&s.labels["gil_state"].as_str()));
            let tid: i64 = s.labels["thread_id"].parse().unwrap();
            assert!(tids.contains(&tid), "thread {tid} is not the workload's");
            *pushed.entry(tid).or_default() += s.count;
        }
    }
    assert!(
        !received
            .path(&format!("request-{}.json", windows + 1))
            .exists(),
        "more requests than windows"
    );
    // Every sample went out in some window, except at most the very last one (it is
    // resolved after the last window closed).
    for t in report["threads"].as_array().unwrap() {
        let tid = t["tid"].as_i64().unwrap();
        let local = t["samples"].as_i64().unwrap();
        let sent = pushed.get(&tid).copied().unwrap_or(0);
        assert!(
            sent <= local && sent >= local - 1,
            "thread {tid}: {sent} samples pushed, {local} recorded"
        );
    }
}

/// A port nothing listens on: bound, then closed.
fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[test]
fn a_refusing_failing_or_silent_server_changes_nothing_but_the_push_counts() {
    let python = python();
    let (child, _) = workload(&python);
    let pid = child.pid().to_string();
    let record = |out: &TempDir, push: Option<&str>| {
        let mut args = vec![
            "record".to_string(),
            "--pid".into(),
            pid.clone(),
            "--duration".into(),
            "2".into(),
            // Holds on any recording: the exit code must stay 10 whatever the server does.
            "--fail-on".into(),
            "gil.held>=0".into(),
            "-o".into(),
            out.0.to_str().unwrap().into(),
        ];
        if let Some(url) = push {
            args.extend(["--push".into(), url.to_string()]);
            args.extend(["--push-window".into(), "1".into()]);
        }
        support::gilscope(args)
    };
    let baseline = record(&TempDir::new("baseline"), None);
    assert_eq!(baseline.code, Some(10), "{baseline}");

    let error_dir = TempDir::new("error-server");
    let (_error_server, error_url) = receiver(&python, &error_dir.0, "error");
    let hang_dir = TempDir::new("hang-server");
    let (_hang_server, hang_url) = receiver(&python, &hang_dir.0, "hang");
    for (what, url) in [
        ("refused", refused_url()),
        ("error", error_url),
        ("hang", hang_url),
    ] {
        let out = TempDir::new(what);
        // support::gilscope fails the test if gilscope does not end within its timeout.
        let run = record(&out, Some(&url));
        assert_eq!(run.code, baseline.code, "{what}: {run}");
        for file in [
            "report.json",
            "recording.json",
            "flamegraph.svg",
            "report.md",
        ] {
            assert!(out.path(file).is_file(), "{what}: {file} not written");
        }
        let push = &read_json(&out.path("report.json"))["push"];
        let windows = push["windows"].as_u64().unwrap();
        assert!(windows >= 1, "{what}: {push}");
        assert_eq!(push["sent"], 0, "{what}: {push}");
        assert_eq!(push["dropped"].as_u64(), Some(windows), "{what}: {push}");
        let last_error = push["last_error"].as_str().unwrap_or_default();
        match what {
            "hang" => assert!(last_error.contains("had not answered"), "{push}"),
            "refused" => {
                assert!(push["failed"].as_u64().unwrap() >= 1, "{push}");
                assert!(last_error.contains("refused"), "{push}");
            }
            _ => {
                assert!(push["failed"].as_u64().unwrap() >= 1, "{push}");
                assert!(last_error.contains("HTTP 500"), "{push}");
            }
        }
        assert!(
            run.stderr
                .contains(&format!("Pushed: 0 of {windows} windows sent")),
            "{what}: {run}"
        );
    }
    // What reached the failing server was still a readable profile.
    let first = go_pprof(&error_dir.path("request-1.pb.gz"));
    assert!(!first.samples.is_empty());
}

#[test]
fn bad_push_options_are_usage_errors_that_never_echo_a_header() {
    let cases: [&[&str]; 5] = [
        &["--push", "https://pyroscope:4040"],
        &["--push", "http://user:pw@pyroscope:4040"],
        &["--push", "http://127.0.0.1:4040", "--push-label", "env"],
        &["--push", "http://127.0.0.1:4040", "--app-name", "my app"],
        &[
            "--push",
            "http://127.0.0.1:4040",
            "--push-header",
            "Bearer s3cret",
        ],
    ];
    for extra in cases {
        let mut args = vec!["record", "--pid", "1", "--duration", "1"];
        args.extend_from_slice(extra);
        let run = support::gilscope(&args);
        assert_eq!(run.code, Some(2), "{extra:?}: {run}");
        assert!(support::is_one_line(&run.stderr), "{extra:?}: {run}");
        assert!(!run.stderr.contains("s3cret"), "{run}");
    }
    let run = support::gilscope(["record", "--pid", "1", "--push-window", "5"]);
    assert_eq!(run.code, Some(2), "--push-window needs --push: {run}");
}

/// `process` of every sample, by pid label.
fn processes_by_pid(pprof: &GoPprof) -> BTreeMap<String, BTreeSet<String>> {
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in &pprof.samples {
        let process = s
            .labels
            .get("process")
            .unwrap_or_else(|| panic!("no process label with --subprocesses: {s:?}"));
        found
            .entry(s.labels["pid"].clone())
            .or_default()
            .insert(process.clone());
    }
    found
}

#[test]
fn push_without_duration_follows_subprocesses_until_the_program_exits() {
    let python = python();
    let received = TempDir::new("received-children");
    let (_server, url) = receiver(&python, &received.0, "ok");
    let out = TempDir::new("push-children");
    let run = support::gilscope([
        "record",
        "--subprocesses",
        "--format",
        "pprof",
        "--push",
        &url,
        "--push-window",
        "1",
        "-o",
        out.0.to_str().unwrap(),
        "--",
        python.path.to_str().unwrap(),
        support::fixture("subprocesses.py").to_str().unwrap(),
        "--seconds",
        "3",
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    let report = read_json(&out.path("report.json"));
    assert_eq!(report["stop_reason"], "the target exited");
    let push = &report["push"];
    let windows = push["windows"].as_u64().unwrap();
    assert!(windows >= 1 && push["sent"] == windows, "{push}");
    // The command line of every process recorded, by pid.
    let mut commands: BTreeMap<String, String> = BTreeMap::new();
    for process in std::iter::once(&report).chain(report["processes"].as_array().unwrap()) {
        let command: Vec<&str> = process["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        commands.insert(process["pid"].to_string(), command.join(" "));
    }
    assert!(
        commands.len() >= 3,
        "the parent and two workers: {commands:?}"
    );
    let local = processes_by_pid(&go_pprof(&out.path("profile.pb.gz")));
    for (pid, labels) in &local {
        let expected = BTreeSet::from([commands[pid].clone()]);
        assert_eq!(labels, &expected, "process label of pid {pid}");
    }
    assert_eq!(
        local.keys().collect::<BTreeSet<_>>(),
        commands.keys().collect::<BTreeSet<_>>()
    );
    let mut pushed_pids = BTreeSet::new();
    for n in 1..=windows {
        let window = processes_by_pid(&go_pprof(&received.path(&format!("request-{n}.pb.gz"))));
        for (pid, labels) in window {
            assert_eq!(labels, BTreeSet::from([commands[&pid].clone()]));
            pushed_pids.insert(pid);
        }
    }
    assert_eq!(pushed_pids.len(), commands.len(), "{pushed_pids:?}");
}

#[test]
fn ctrl_c_with_a_silent_server_still_ends_and_writes_everything() {
    let python = python();
    let received = TempDir::new("received-silent");
    let (_server, url) = receiver(&python, &received.0, "hang");
    let (target, _) = workload(&python);
    let out = TempDir::new("ctrl-c");
    let mut cmd = support::gilscope_command([
        "record",
        "--pid",
        &target.pid().to_string(),
        "--push",
        &url,
        "--push-window",
        "1",
        "-o",
        out.0.to_str().unwrap(),
    ]);
    cmd.env(
        "GILSCOPE_PUSH_HEADERS",
        "Authorization: Bearer env-s3cret\nX-Scope-OrgID: team",
    );
    let mut gilscope = Child::spawn(cmd);
    // The first window reached the server, which keeps it without answering.
    support::poll_until("the first push request", support::COMMAND_TIMEOUT, || {
        received.path("request-1.json").exists().then_some(())
    });
    gilscope.signal(nix::sys::signal::Signal::SIGINT);
    let status = gilscope.wait_exit(support::COMMAND_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", gilscope.stderr());
    let stderr = gilscope.stderr();
    assert!(!stderr.contains("env-s3cret"), "{stderr}");
    let report = read_json(&out.path("report.json"));
    assert_eq!(report["stop_reason"], "interrupted (Ctrl-C)");
    let push = &report["push"];
    assert_eq!(push["sent"], 0, "{push}");
    assert!(
        push["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("had not answered")),
        "{push}"
    );
    let first = read_json(&received.path("request-1.json"));
    assert_eq!(first["authorization"], "Bearer env-s3cret");
    assert!(out.path("flamegraph.svg").is_file() && out.path("recording.json").is_file());
}
