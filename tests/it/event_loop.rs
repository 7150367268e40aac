//! asyncio event loops against the truth the fixture measures in-process
//! (fixtures/event_loop.py): it times every stretch between two selects of its loop's
//! selector, so the stalls gilscope reports can be checked one by one.
//!
//! Every mode runs on every interpreter found: a loop blocked by pure-Python CPU work in a
//! handler, a healthy loop busy about a quarter of the time in short stretches, and loops
//! blocked by `time.sleep` or by a blocking socket in a handler.
//!
//! Tolerances: a stall's length is known to within one sampling period (its start is the
//! loop's own clock; its end lies between two samples), so lengths are compared within
//! one period plus 2 ms, and the count within what that allows for stretches near the
//! threshold. `busy` counts a loop woken by an event but still waiting for a CPU as busy,
//! which the fixture's clock counts as waiting: it may read higher by that share.

use crate::support::{self, Interpreter};
use gilscope::advice::{LONG_STALL_FACTOR, MIN_LOOP_STALLS};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Mutex;

const RATE_HZ: f64 = 200.0;
const STALL_MS: f64 = 20.0;
/// How far a stall's measured length may be from the fixture's.
const LENGTH_TOLERANCE_MS: f64 = 1000.0 / RATE_HZ + 2.0;
/// Recordings per interpreter and mode before a failure is final (the machine is shared).
const ATTEMPTS: usize = 3;
/// A recording that missed more than this share of its deadlines was starved of CPU: its
/// samples have gaps longer than the tolerances assume.
const STARVED_SHARE: f64 = 0.05;
/// One recording at a time: the truth is about time, and the machine has few CPUs.
static MACHINE: Mutex<()> = Mutex::new(());

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Cpu,
    Healthy,
    Sleep,
    Socket,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::Cpu => "cpu",
            Mode::Healthy => "healthy",
            Mode::Sleep => "sleep",
            Mode::Socket => "socket",
        }
    }
}

#[test]
fn event_loop_blocked_by_cpu_work_in_a_handler() {
    for_each_python(Mode::Cpu, |run, f| {
        run.check_stalls_match_truth(f);
        run.check_busy(f);
        run.check_blocking("crunch", "python", f);
        run.check_task(f);
        run.check_advice("processes", f);
        let code = run.gilscope.code;
        f.check(code == Some(10), || {
            format!("--fail-on longest_stall_ms>30 should exit 10, got {code:?}")
        });
    });
}

/// Busy samples in a row are common here (a quarter of the time busy, at 200 Hz), yet
/// the loop goes back to its selector within a few ms each time: no stall unless the
/// fixture saw one too (a loaded machine can hold the loop off a CPU for that long).
#[test]
fn event_loop_healthy_and_busy_shows_no_stalls() {
    for_each_python(Mode::Healthy, |run, f| {
        run.check_stalls_match_truth(f);
        run.check_busy(f);
        let rules = run.rules();
        let stalled = rules.contains(&"event_loop_stalled".to_string());
        // The fixture's stretches over the threshold, by how sure each is to count.
        let load = run.truth("stretches_ms");
        let sure = load
            .iter()
            .filter(|&&x| x > STALL_MS + LENGTH_TOLERANCE_MS)
            .count() as u64;
        let maybe = load
            .iter()
            .filter(|&&x| x > STALL_MS - LENGTH_TOLERANCE_MS)
            .count() as u64;
        let longest = load.last().copied().unwrap_or(0.0);
        let long = LONG_STALL_FACTOR * STALL_MS;
        if maybe < MIN_LOOP_STALLS && longest < long - LENGTH_TOLERANCE_MS {
            f.check(!stalled, || {
                format!("a healthy loop got the stall advice: {rules:?}")
            });
            // The async verdict is for a loop that mostly waits (idle at least half the
            // time); a loaded machine can make this one busier than that.
            let idle = run.main_thread().and_then(|t| t["states"]["idle"].as_f64());
            if idle.is_some_and(|idle| idle >= 0.5) {
                f.check(rules.contains(&"event_loop_idle".to_string()), || {
                    format!("a healthy loop lost its async verdict: {rules:?}")
                });
            }
        } else if sure >= MIN_LOOP_STALLS || longest > long + LENGTH_TOLERANCE_MS {
            f.check(stalled, || {
                format!("the machine stalled the loop {sure} times, but no stall advice: {rules:?}")
            });
        }
    });
}

#[test]
fn event_loop_blocked_by_time_sleep_in_a_handler() {
    for_each_python(Mode::Sleep, |run, f| {
        run.check_stalls_match_truth(f);
        run.check_blocking("block", "sleep", f);
        run.check_task(f);
        run.check_advice("threads", f);
    });
}

#[test]
fn event_loop_blocked_by_a_blocking_socket_in_a_handler() {
    for_each_python(Mode::Socket, |run, f| {
        run.check_stalls_match_truth(f);
        run.check_blocking("blocking_fetch", "io", f);
        run.check_task(f);
        run.check_advice("threads", f);
    });
}

/// The interpreter with uvloop that `.ci/setup` installs (pyenv 3.12 and uvloop from PyPI);
/// `GILSCOPE_UVLOOP_PYTHON` names another.
const UVLOOP_PYTHON: &str = "/opt/gilscope-venvs/uvloop-3.12/bin/python";

/// uvloop runs its loop in C: gilscope finds it from the thread's running loop, reports
/// how busy it was and the code that kept it busy (with its task), and leaves the stall
/// figures `null` rather than guess them (docs/event-loops.md). The fixture times its own
/// handlers: `busy` is at least that share, and at most that plus what uvloop and the
/// stream callbacks add and the time the loop waited for a CPU.
#[test]
fn event_loop_on_uvloop_reports_busy_and_blocking_code_without_stalls() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let path = std::env::var_os("GILSCOPE_UVLOOP_PYTHON")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(UVLOOP_PYTHON), PathBuf::from);
    assert!(
        path.is_file(),
        "{} is missing: `bash .ci/setup` creates it (pyenv 3.12 and uvloop from PyPI), or set \
         GILSCOPE_UVLOOP_PYTHON to a Python with uvloop",
        path.display()
    );
    let python = Interpreter::probe(&path);
    let mut attempts = Vec::new();
    for attempt in 1..=ATTEMPTS {
        let run = LoopRun::record_on(&python, Mode::Cpu, "uvloop");
        let mut f = Failures::default();
        match run.event_loop() {
            None => f.check(false, || {
                format!("MainThread has no event_loop ({})", run.gilscope)
            }),
            Some(l) => {
                f.check(l["kind"] == "uvloop", || format!("kind {}", l["kind"]));
                for key in ["stalls", "stalls_per_s", "longest_stall_ms", "p95_stall_ms"] {
                    f.check(l[key].is_null(), || {
                        format!("{key} is {}, not null", l[key])
                    });
                }
                let busy = l["busy"].as_f64().unwrap_or(-1.0);
                let truth = run.truth["busy"].as_f64().unwrap_or(0.0);
                let c = run.loop_counts();
                let wall = c.and_then(|c| c["wall_ns"].as_f64()).unwrap_or(0.0);
                let queued =
                    c.and_then(|c| c["run_delay_ns"].as_f64()).unwrap_or(0.0) / wall.max(1.0);
                f.check(
                    busy >= truth - 0.05 && busy <= truth + queued + 0.10,
                    || {
                        format!(
                            "busy {busy:.3}, the handlers ran {truth:.3} of the time \
                         (+ {queued:.3} waiting for a CPU)"
                        )
                    },
                );
            }
        }
        run.check_blocking("crunch", "python", &mut f);
        run.check_task(&mut f);
        let stalled = run.rules().contains(&"event_loop_stalled".to_string());
        f.check(!stalled, || {
            "stall advice without measured stalls".to_string()
        });
        // The async verdict (a loop mostly waiting) must not claim there is nothing to
        // offload: it names the busy code instead.
        let verdicts = run.report["recommendations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(idle) = verdicts.iter().find(|r| r["rule"] == "event_loop_idle") {
            let text = idle["verdict"].as_str().unwrap_or_default();
            f.check(
                text.contains("not measured") && text.contains("crunch"),
                || format!("the uvloop verdict hides what keeps the loop busy: {text}"),
            );
        }
        run.print();
        if f.0.is_empty() {
            return;
        }
        println!("  attempt {attempt} failed: {:?}", f.0);
        attempts.push(format!("attempt {attempt}: {}", f.0.join("; ")));
    }
    panic!("uvloop on {}: {}", python.label(), attempts.join(" | "));
}

// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.0.push(msg());
        }
    }
}

/// Records `mode` on every interpreter and runs `check`; a failed check is recorded again
/// (up to [`ATTEMPTS`] in all), and the test fails with every interpreter's failures.
fn for_each_python(mode: Mode, check: impl Fn(&LoopRun, &mut Failures)) {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let pythons = support::pythons();
    let mut failed = Vec::new();
    for python in &pythons {
        let mut attempts = Vec::new();
        for attempt in 1..=ATTEMPTS {
            let run = LoopRun::record(python, mode);
            let mut f = Failures::default();
            let requests = run.truth["requests"].as_u64().unwrap_or(0);
            f.check(requests > 0, || {
                format!("the fixture served no request: {}", run.gilscope)
            });
            check(&run, &mut f);
            run.print();
            if let Some(why) = run.starved() {
                f.0.iter_mut().for_each(|m| *m = format!("{m} ({why})"));
            }
            if f.0.is_empty() {
                println!(
                    "  ok: {mode:?} on Python {} (attempt {attempt})",
                    python.version
                );
                attempts.clear();
                break;
            }
            println!("  attempt {attempt} failed: {:?}", f.0);
            attempts.push(format!("attempt {attempt}: {}", f.0.join("; ")));
        }
        if !attempts.is_empty() {
            failed.push(format!(
                "Python {}: {}",
                python.label(),
                attempts.join(" | ")
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{mode:?} failed on {} of {} interpreters:\n{}",
        failed.len(),
        pythons.len(),
        failed.join("\n")
    );
}

/// One recording of the fixture, with its in-process truth.
struct LoopRun {
    dir: PathBuf,
    gilscope: support::Run,
    report: Value,
    recording: Value,
    truth: Value,
}

impl LoopRun {
    fn record(python: &Interpreter, mode: Mode) -> LoopRun {
        Self::record_on(python, mode, "asyncio")
    }

    /// [`LoopRun::record`] with the fixture's `--loop` (`asyncio` or `uvloop`).
    fn record_on(python: &Interpreter, mode: Mode, event_loop: &str) -> LoopRun {
        let dir = std::env::temp_dir().join(format!(
            "gilscope-event-loop-{}-{}-{}-{event_loop}",
            std::process::id(),
            python.version,
            mode.arg()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let truth_path = dir.with_extension("truth.json");
        let out = dir.to_str().unwrap().to_string();
        let truth_arg = truth_path.to_str().unwrap().to_string();
        let fixture = support::fixture("event_loop.py");
        let gilscope = support::gilscope([
            "record",
            "--rate",
            &RATE_HZ.to_string(),
            "--stall-ms",
            &STALL_MS.to_string(),
            "--fail-on",
            "thread[MainThread].event_loop.longest_stall_ms>30",
            "-o",
            &out,
            "--",
            python.path.to_str().unwrap(),
            fixture.to_str().unwrap(),
            "--mode",
            mode.arg(),
            "--seconds",
            "3",
            "--truth",
            &truth_arg,
            "--loop",
            event_loop,
        ]);
        let read = |path: PathBuf| -> Value {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (gilscope: {gilscope})", path.display()));
            serde_json::from_str(&text).unwrap()
        };
        let run = LoopRun {
            report: read(dir.join("report.json")),
            recording: read(dir.join("recording.json")),
            truth: read(truth_path.clone()),
            gilscope,
            dir,
        };
        let _ = std::fs::remove_file(truth_path);
        run
    }

    /// Why the recording's samples may be too far apart for the tolerances, if they are.
    fn starved(&self) -> Option<String> {
        let missed = self.report["missed_samples"].as_f64()?;
        let samples = self.report["samples"].as_f64()?;
        (missed > STARVED_SHARE * (samples + missed)).then(|| {
            format!(
                "disturbed: gilscope missed {missed} of {} deadlines",
                samples + missed
            )
        })
    }

    fn main_thread(&self) -> Option<&Value> {
        self.report["threads"]
            .as_array()?
            .iter()
            .find(|t| t["name"] == "MainThread")
    }

    fn event_loop(&self) -> Option<&Value> {
        self.main_thread()
            .map(|t| &t["event_loop"])
            .filter(|l| l.is_object())
    }

    fn loop_counts(&self) -> Option<&Value> {
        let tid = self.main_thread()?["tid"].as_i64()?;
        self.recording["event_loops"]
            .as_array()?
            .iter()
            .find(|l| l["tid"].as_i64() == Some(tid))
    }

    fn truth(&self, key: &str) -> Vec<f64> {
        let mut v: Vec<f64> = self.truth[key]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        v.sort_by(f64::total_cmp);
        v
    }

    fn rules(&self) -> Vec<String> {
        self.report["recommendations"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["rule"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stalls: as many as the fixture's stretches over the threshold (within what the
    /// length tolerance allows near it), and of the same lengths, longest and p95.
    fn check_stalls_match_truth(&self, f: &mut Failures) {
        let Some(l) = self.event_loop() else {
            f.check(false, || {
                format!(
                    "MainThread has no event_loop in report.json ({})",
                    self.gilscope
                )
            });
            return;
        };
        f.check(l["kind"] == "asyncio", || format!("kind {}", l["kind"]));
        let load = self.truth("stretches_ms");
        let startup = self.truth("startup_stretches_ms");
        let over = |v: &[f64], ms: f64| v.iter().filter(|&&x| x > ms).count() as u64;
        let least = over(&load, STALL_MS + LENGTH_TOLERANCE_MS);
        let most = over(&load, STALL_MS - LENGTH_TOLERANCE_MS)
            + over(&startup, STALL_MS - LENGTH_TOLERANCE_MS);
        let stalls = l["stalls"].as_u64().unwrap_or(u64::MAX);
        f.check((least..=most).contains(&stalls), || {
            format!("{stalls} stalls; the fixture's stretches allow {least} to {most}")
        });
        let measured: Vec<f64> = self
            .loop_counts()
            .and_then(|c| c["stalls_ms"].as_array())
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        let mut measured_sorted = measured.clone();
        measured_sorted.sort_by(f64::total_cmp);
        // The load's stalls, with the start-up's if gilscope saw as many.
        let mut truth_stalls: Vec<f64> = load.iter().copied().filter(|&x| x > STALL_MS).collect();
        let mut with_startup: Vec<f64> = truth_stalls.clone();
        with_startup.extend(startup.iter().copied().filter(|&x| x > STALL_MS));
        with_startup.sort_by(f64::total_cmp);
        if measured_sorted.len() == with_startup.len() {
            truth_stalls = with_startup;
        }
        if measured_sorted.len() == truth_stalls.len() {
            for (m, t) in measured_sorted.iter().zip(&truth_stalls) {
                f.check((m - t).abs() <= LENGTH_TOLERANCE_MS, || {
                    format!(
                        "stall lengths differ by more than {LENGTH_TOLERANCE_MS} ms: \
                         measured {measured_sorted:.1?}, fixture {truth_stalls:.1?}"
                    )
                });
            }
        }
        if let Some(&longest) = truth_stalls.last() {
            let got = l["longest_stall_ms"].as_f64().unwrap_or(0.0);
            f.check((got - longest).abs() <= LENGTH_TOLERANCE_MS, || {
                format!("longest_stall_ms {got:.1}, fixture {longest:.1}")
            });
        }
    }

    /// busy: at least the fixture's share, at most that plus the time it waited for a CPU.
    fn check_busy(&self, f: &mut Failures) {
        let (Some(l), Some(c)) = (self.event_loop(), self.loop_counts()) else {
            return;
        };
        let busy = l["busy"].as_f64().unwrap_or(-1.0);
        let truth = self.truth["busy"].as_f64().unwrap_or(0.0);
        let wall = c["wall_ns"].as_f64().unwrap_or(0.0);
        let queued = c["run_delay_ns"].as_f64().unwrap_or(0.0) / wall.max(1.0);
        // 0.05, plus three standard errors of a share measured from this many samples.
        let samples = c["samples"].as_f64().unwrap_or(0.0).max(1.0);
        let tolerance = 0.05 + 3.0 * (truth * (1.0 - truth) / samples).max(0.0).sqrt();
        f.check(
            busy >= truth - tolerance && busy <= truth + queued + tolerance,
            || {
                format!(
                    "busy {busy:.3}, fixture {truth:.3} (+ {queued:.3} waiting for a CPU), \
                 ± {tolerance:.3} ({samples} samples)"
                )
            },
        );
    }

    fn check_blocking(&self, function: &str, cause: &str, f: &mut Failures) {
        let Some(top) = self.event_loop().map(|l| &l["blocking"][0]) else {
            return;
        };
        // The qualified name where the interpreter records one (3.11+): Server.block.
        let named = top["function"]
            .as_str()
            .is_some_and(|f| f == function || f.ends_with(&format!(".{function}")));
        f.check(named && top["cause"] == cause, || {
            format!("blocking[0] is {top}, expected {function} ({cause})")
        });
        let fraction = top["fraction"].as_f64().unwrap_or(0.0);
        f.check(fraction >= 0.8, || {
            format!("{function} has {fraction:.2} of stall time, expected >= 0.8")
        });
    }

    /// `blocking[0].task`: the task that made most of the fixture's blocking calls, by the
    /// name the fixture read in-process ("client-1" in --mode cpu, which names its handler
    /// tasks; asyncio's default "Task-N" in the other modes). Every interpreter tested has
    /// task offsets (docs/event-loops.md), so the name must be there.
    fn check_task(&self, f: &mut Failures) {
        let Some(top) = self.event_loop().map(|l| &l["blocking"][0]) else {
            return;
        };
        let mut names: Vec<&str> = self.truth["blocking_tasks"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        names.sort();
        let most = names
            .chunk_by(|a, b| a == b)
            .max_by_key(|run| run.len())
            .and_then(|run| run.first().copied());
        f.check(most.is_some() && top["task"].as_str() == most, || {
            format!(
                "blocking[0].task is {}, the fixture's blocking calls ran in {most:?}",
                top["task"]
            )
        });
    }

    fn check_advice(&self, kind: &str, f: &mut Failures) {
        let first = &self.report["recommendations"][0];
        f.check(
            first["rule"] == "event_loop_stalled" && first["kind"] == kind,
            || format!("first recommendation {first}, expected event_loop_stalled ({kind})"),
        );
    }

    fn print(&self) {
        let l = self.event_loop().cloned().unwrap_or(Value::Null);
        let measured = self.loop_counts().map(|c| c["stalls_ms"].clone());
        println!(
            "    gilscope: {} samples, {} missed; busy {} stalls {} longest {} p95 {} method {} \
             measured {}\n    \
             fixture: busy {:.3} stretches > 10 ms {:.1?} (startup {:.1?})",
            self.report["samples"],
            self.report["missed_samples"],
            l["busy"],
            l["stalls"],
            l["longest_stall_ms"],
            l["p95_stall_ms"],
            l["method"],
            measured.unwrap_or(Value::Null),
            self.truth["busy"].as_f64().unwrap_or(0.0),
            self.truth("stretches_ms")
                .into_iter()
                .filter(|&x| x > 10.0)
                .collect::<Vec<_>>(),
            self.truth("startup_stretches_ms")
                .into_iter()
                .filter(|&x| x > 10.0)
                .collect::<Vec<_>>(),
        );
    }
}

impl Drop for LoopRun {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
