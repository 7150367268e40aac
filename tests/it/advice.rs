//! Recommendations on live workloads: each fixture workload that embodies a rule is
//! recorded, and its recommendations must start with the expected kind and hold no rule
//! that does not belong to that workload (no other rule fires wrongly).
//!
//! To keep the suite short this runs one interpreter (the newest with a GIL) plus Debian's
//! static /usr/bin/python3.11 when present, ~2 s per workload at 200 Hz.

use crate::support::{self, Child, Interpreter, gilscope};
use serde_json::Value;
use std::path::PathBuf;

/// What recording one workload must produce.
struct Case {
    /// `fixtures/workload.py KIND`.
    workload: &'static str,
    /// Kinds the primary recommendation may have.
    primary_kinds: &'static [&'static str],
    /// The rule the primary recommendation must come from.
    primary_rule: &'static str,
    /// Every rule allowed to fire on this workload.
    rules: &'static [&'static str],
}

const CASES: [Case; 8] = [
    Case {
        workload: "cpu_threads",
        primary_kinds: &["processes"],
        primary_rule: "cpu_threads_contend",
        rules: &["cpu_threads_contend", "cpu_threads_native_offload"],
    },
    Case {
        workload: "convoy",
        primary_kinds: &["processes"],
        primary_rule: "convoy",
        rules: &["convoy"],
    },
    Case {
        workload: "sleepers",
        primary_kinds: &["threads"],
        primary_rule: "io_threads_fine",
        rules: &["io_threads_fine"],
    },
    Case {
        workload: "io_threads",
        primary_kinds: &["async"],
        primary_rule: "io_threads_async",
        rules: &["io_threads_async"],
    },
    Case {
        workload: "asyncio_server",
        primary_kinds: &["async"],
        primary_rule: "event_loop_idle",
        rules: &["event_loop_idle"],
    },
    Case {
        workload: "hashers",
        primary_kinds: &["threads"],
        primary_rule: "native_parallel",
        rules: &["native_parallel"],
    },
    Case {
        workload: "native_parallel",
        primary_kinds: &["threads"],
        primary_rule: "native_parallel",
        rules: &["native_parallel"],
    },
    Case {
        workload: "one_cpu",
        primary_kinds: &["none", "native_offload"],
        primary_rule: "one_cpu_thread",
        rules: &["one_cpu_thread", "one_cpu_thread_native_offload"],
    },
];

const RECORD_SECONDS: &str = "2";
const RATE_HZ: &str = "200";
/// How long the workload runs; it is killed once recorded.
const WORKLOAD_SECONDS: &str = "60";

/// The newest interpreter with a GIL, plus Debian's static build if present.
fn advice_pythons() -> Vec<Interpreter> {
    let all = support::pythons();
    let mut chosen: Vec<Interpreter> = all
        .iter()
        .filter(|p| p.gil_enabled)
        .max_by_key(|p| (p.major, p.minor))
        .cloned()
        .into_iter()
        .collect();
    let debian = all
        .iter()
        .find(|p| p.path == std::path::Path::new(support::DEBIAN_PYTHON));
    if let Some(debian) = debian
        && chosen.iter().all(|c| c.path != debian.path)
    {
        chosen.push(debian.clone());
    }
    assert!(!chosen.is_empty(), "no interpreter with a GIL found");
    chosen
}

/// A fresh directory for one recording, removed when dropped.
struct OutputDir(PathBuf);

impl OutputDir {
    fn new(label: &str) -> OutputDir {
        let dir =
            std::env::temp_dir().join(format!("gilscope-advice-{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        OutputDir(dir)
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Records `case`'s workload under `python`; returns what is wrong with the result, if
/// anything.
fn check(python: &Interpreter, case: &Case) -> Result<(), String> {
    let child = Child::fixture(
        python,
        "workload.py",
        &[case.workload, "--seconds", WORKLOAD_SECONDS],
    );
    let dir = OutputDir::new(&format!("{}-{}", python.major_minor(), case.workload));
    let pid = child.pid().to_string();
    let output = dir.0.to_str().expect("temp dir is UTF-8");
    let run = gilscope([
        "record",
        "--pid",
        &pid,
        "--duration",
        RECORD_SECONDS,
        "--rate",
        RATE_HZ,
        "--output",
        output,
    ]);
    if run.code != Some(0) {
        return Err(format!("gilscope record failed: {run}"));
    }
    let json = std::fs::read_to_string(dir.0.join("report.json"))
        .map_err(|e| format!("no report.json: {e}"))?;
    let report: Value = serde_json::from_str(&json).map_err(|e| format!("report.json: {e}"))?;
    let recs = report["recommendations"]
        .as_array()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| format!("no recommendations in {json}"))?;
    let rules: Vec<&str> = recs.iter().filter_map(|r| r["rule"].as_str()).collect();
    let primary = &recs[0];
    let kind = primary["kind"].as_str().unwrap_or("?");
    let verdict = primary["verdict"].as_str().unwrap_or("?");
    let mut wrong = Vec::new();
    if !case.primary_kinds.contains(&kind) {
        wrong.push(format!(
            "primary kind {kind}, expected one of {:?}",
            case.primary_kinds
        ));
    }
    if rules[0] != case.primary_rule {
        wrong.push(format!(
            "primary rule {}, expected {}",
            rules[0], case.primary_rule
        ));
    }
    let stray: Vec<&&str> = rules.iter().filter(|r| !case.rules.contains(r)).collect();
    if !stray.is_empty() {
        wrong.push(format!("rules that do not belong here fired: {stray:?}"));
    }
    if !run
        .stderr
        .contains(&format!("What to do ({kind}): {verdict}"))
    {
        wrong.push("the summary does not show the primary recommendation".into());
    }
    match std::fs::read_to_string(dir.0.join("report.md")) {
        Ok(md) if md.contains("**What to do**") && md.contains("](flamegraph.svg)") => {}
        Ok(md) => wrong.push(format!("report.md lacks the advice or graph links:\n{md}")),
        Err(e) => wrong.push(format!("no report.md: {e}")),
    }
    if wrong.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{}\n  rules fired: {rules:?}\n  primary: {verdict}\n  summary:\n{}",
        wrong.join("; "),
        run.stderr
    ))
}

#[test]
fn each_workload_gets_its_recommendation_and_no_stray_rule() {
    let mut failures = Vec::new();
    for python in advice_pythons() {
        for case in &CASES {
            if let Err(why) = check(&python, case) {
                failures.push(format!("{} on {}: {why}", case.workload, python.label()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
