//! Every rule on synthetic recordings shaped like the workloads it is for.

use super::*;
use crate::model::python::{Build, FrameInfo, PythonInfo};
use crate::model::recording::{
    GilCounts, IdleCounts, RECORDING_FORMAT, StackCount, StateCounts, ThreadCounts,
};
use crate::model::state::IdleReason;

/// Samples in every synthetic recording, at 200 Hz (5 ms apart).
const N: u64 = 200;
const APP: &str = "/srv/app.py";
const BASE_EVENTS: &str = "/usr/lib/python3.12/asyncio/base_events.py";

/// A synthetic recording, built thread by thread.
struct Rec(Recording);

impl Rec {
    fn new() -> Rec {
        Rec(Recording {
            format: RECORDING_FORMAT.into(),
            pid: 4242,
            command: vec!["python".into(), "app.py".into()],
            python: PythonInfo {
                version: "3.12.1".into(),
                build: Build::Shared,
                free_threaded: false,
                gil: "enabled".into(),
                binary: "/usr/bin/python3.12".into(),
            },
            duration_s: 1.0,
            requested_rate_hz: 200.0,
            samples: N,
            missed_samples: 0,
            torn_samples: 0,
            stopped_samples: 0,
            stop_reason: "the duration elapsed".into(),
            cpus: 2,
            sampler_cpus: None,
            gil: GilCounts::default(),
            threads: Vec::new(),
            stacks: Vec::new(),
            children: Vec::new(),
            timeline: Default::default(),
            event_loops: Vec::new(),
            thread_flags: None,
            execs: Vec::new(),
        })
    }

    /// A thread with [held, wait, native, idle] samples (summing to N), idle for
    /// `reason`, whose innermost frame in every state is `function` in app.py, called
    /// from `outer` frames (file, function), outermost first.
    fn thread(
        mut self,
        name: &str,
        [held, wait, native, idle]: [u64; 4],
        reason: IdleReason,
        function: &str,
        outer: &[(&str, &str)],
    ) -> Rec {
        assert_eq!(held + wait + native + idle, N, "{name}");
        let tid = 100 + self.0.threads.len() as i32;
        let mut idle_reasons = IdleCounts::default();
        idle_reasons.add(reason, idle);
        self.0.threads.push(ThreadCounts {
            tid,
            name: Some(name.into()),
            samples: N,
            states: StateCounts {
                gil_held: held,
                gil_wait: wait,
                native_nogil: native,
                idle,
            },
            idle_reasons,
            wakeups: 0,
            wakeup_waits: 0,
            wakeup_wait_samples: 0,
        });
        let mut frames: Vec<FrameInfo> = outer
            .iter()
            .map(|(file, function)| frame(file, function, 1))
            .collect();
        frames.push(frame(APP, function, 10));
        for (state, count) in [
            (ThreadState::GilHeld, held),
            (ThreadState::GilWait, wait),
            (ThreadState::NativeNogil, native),
            (ThreadState::Idle, idle),
        ] {
            if count > 0 {
                self.0.stacks.push(StackCount {
                    tid,
                    state,
                    idle_reason: (state == ThreadState::Idle).then_some(reason),
                    frames: frames.clone(),
                    truncated: false,
                    waiters: 0,
                    count,
                });
            }
        }
        self
    }

    /// Wake-up counters of the thread added last.
    fn wakeups(mut self, wakeups: u64, waits: u64, wait_samples: u64) -> Rec {
        let t = self.0.threads.last_mut().unwrap();
        t.wakeups = wakeups;
        t.wakeup_waits = waits;
        t.wakeup_wait_samples = wait_samples;
        self
    }

    /// GIL counters in samples: held, contended, waiters and threads on a CPU.
    fn gil(mut self, held: u64, contended: u64, waiters: u64, on_cpu: u64) -> Rec {
        self.0.gil = GilCounts {
            held,
            contended,
            waiters,
            on_cpu,
            first_switch_number: Some(0),
            last_switch_number: Some(100),
            interval_us: 5000,
            modes: Default::default(),
        };
        self
    }

    fn main_sleeping(self) -> Rec {
        self.thread("MainThread", [0, 0, 0, N], IdleReason::Sleep, "main", &[])
    }
}

fn frame(file: &str, function: &str, line: u32) -> FrameInfo {
    FrameInfo {
        function: function.into(),
        qualname: None,
        file: file.into(),
        line,
    }
}

// One synthetic recording per rule, shaped like the fixture workload that embodies it.

fn cpu_threads() -> Recording {
    let mut rec = Rec::new().main_sleeping();
    for i in 0..4 {
        let name = format!("worker-{i}");
        rec = rec.thread(&name, [50, 150, 0, 0], IdleReason::Lock, "spin", &[]);
    }
    rec.gil(N, N, 3 * N, N).0
}

fn convoy() -> Recording {
    Rec::new()
        .main_sleeping()
        .thread("worker-0", [190, 5, 5, 0], IdleReason::Lock, "spin", &[])
        .thread("io-0", [2, 160, 2, 36], IdleReason::Io, "round_trip", &[])
        .wakeups(30, 29, 150)
        .thread("io-1", [2, 160, 2, 36], IdleReason::Io, "round_trip", &[])
        .wakeups(30, 28, 150)
        .thread("echo-0", [0, 0, 0, N], IdleReason::Io, "echo", &[])
        .gil(N, 180, 330, N)
        .0
}

fn sleepers() -> Recording {
    let mut rec = Rec::new().main_sleeping();
    for i in 0..3 {
        let name = format!("sleeper-{i}");
        rec = rec.thread(&name, [0, 0, 0, N], IdleReason::Sleep, "nap", &[]);
    }
    rec.thread("reader-0", [1, 0, 1, 198], IdleReason::Io, "read", &[])
        .wakeups(1, 0, 0)
        .gil(1, 0, 0, 2)
        .0
}

fn io_threads(count: usize, name: &str) -> Recording {
    let mut rec = Rec::new().main_sleeping();
    for i in 0..count {
        let name = format!("{name}-{i}");
        rec = rec.thread(&name, [2, 0, 0, 198], IdleReason::Io, "serve", &[]);
    }
    rec.gil(10, 0, 0, 10).0
}

fn socketserver_handlers() -> Recording {
    let server = [(
        "/usr/lib/python3.12/socketserver.py",
        "process_request_thread",
    )];
    let mut rec = Rec::new().main_sleeping();
    for i in 0..3 {
        let name = format!("Thread-{i}");
        rec = rec.thread(&name, [2, 0, 0, 198], IdleReason::Io, "handle", &server);
    }
    rec.gil(6, 0, 0, 6).0
}

fn asyncio_server() -> Recording {
    let event_loop = [(BASE_EVENTS, "run_forever"), (BASE_EVENTS, "_run_once")];
    Rec::new()
        .thread(
            "MainThread",
            [20, 0, 10, 170],
            IdleReason::Io,
            "select",
            &event_loop,
        )
        .wakeups(30, 0, 0)
        .gil(20, 0, 0, 30)
        .0
}

fn native_parallel() -> Recording {
    Rec::new()
        .main_sleeping()
        .thread(
            "native-0",
            [4, 2, 194, 0],
            IdleReason::Lock,
            "compress",
            &[],
        )
        .thread(
            "native-1",
            [2, 4, 194, 0],
            IdleReason::Lock,
            "compress",
            &[],
        )
        .gil(6, 6, 6, 394)
        .0
}

fn one_cpu() -> Recording {
    Rec::new()
        .main_sleeping()
        .thread("worker-0", [N, 0, 0, 0], IdleReason::Lock, "spin", &[])
        .gil(N, 0, 0, N)
        .0
}

fn rules(rec: &Recording) -> Vec<String> {
    recommend(rec).into_iter().map(|r| r.rule).collect()
}

#[test]
fn each_workload_fires_its_rules_and_no_other() {
    let cases: [(&str, Recording, &[&str]); 9] = [
        (
            "cpu_threads",
            cpu_threads(),
            &["cpu_threads_contend", "cpu_threads_native_offload"],
        ),
        ("convoy", convoy(), &["convoy"]),
        ("sleepers", sleepers(), &["io_threads_fine"]),
        (
            "io_threads",
            io_threads(16, "worker"),
            &["io_threads_async"],
        ),
        ("connections", io_threads(3, "conn"), &["io_threads_async"]),
        (
            "socketserver",
            socketserver_handlers(),
            &["io_threads_async"],
        ),
        ("asyncio_server", asyncio_server(), &["event_loop_idle"]),
        ("native_parallel", native_parallel(), &["native_parallel"]),
        (
            "one_cpu",
            one_cpu(),
            &["one_cpu_thread", "one_cpu_thread_native_offload"],
        ),
    ];
    for (name, rec, expected) in cases {
        assert_eq!(rules(&rec), expected, "{name}");
    }
}

#[test]
fn primary_kinds_follow_the_issue() {
    let primary = |rec: Recording| recommend(&rec)[0].kind;
    assert_eq!(primary(cpu_threads()), Kind::Processes);
    assert_eq!(primary(convoy()), Kind::Processes);
    assert_eq!(primary(sleepers()), Kind::Threads);
    assert_eq!(primary(io_threads(16, "worker")), Kind::Async);
    assert_eq!(primary(asyncio_server()), Kind::Async);
    assert_eq!(primary(native_parallel()), Kind::Threads);
    assert_eq!(primary(one_cpu()), Kind::None);
}

#[test]
fn cpu_threads_name_the_hot_function_and_estimate_the_speedup() {
    let recs = recommend(&cpu_threads());
    let processes = &recs[0];
    // 4 threads each wanting a core, serialized to 1.0 on 2 CPUs: up to 2x.
    assert_eq!(processes.expected_speedup, Some(2.0));
    assert!(
        processes.verdict.contains("4 threads (worker-0"),
        "{}",
        processes.verdict
    );
    assert!(processes.verdict.contains("2.0x"), "{}", processes.verdict);
    let spin = &processes.code[0];
    assert_eq!((spin.function.as_str(), spin.file.as_str()), ("spin", APP));
    assert_eq!((spin.line, spin.role), (10, Role::HoldsGil));
    assert!((spin.fraction - 1.0).abs() < 1e-9);
    assert!(
        processes
            .code
            .iter()
            .any(|c| c.role == Role::WaitsForGil && c.function == "spin")
    );
    let figures: Vec<&str> = processes
        .evidence
        .iter()
        .map(|e| e.figure.as_str())
        .collect();
    for figure in ["gil.contended", "gil.parallelism", "cpu_demand", "cpus"] {
        assert!(figures.contains(&figure), "{figures:?}");
    }
    assert!(
        figures.contains(&"thread[worker-0].gil_wait"),
        "{figures:?}"
    );
    let offload = &recs[1];
    assert_eq!(offload.kind, Kind::NativeOffload);
    assert!(offload.verdict.contains("(spin)"), "{}", offload.verdict);
}

#[test]
fn more_cpus_than_demand_caps_the_speedup_at_the_demand() {
    let mut rec = cpu_threads();
    rec.cpus = 64;
    assert_eq!(recommend(&rec)[0].expected_speedup, Some(4.0));
    rec.cpus = 1;
    assert_eq!(
        recommend(&rec)[0].expected_speedup,
        None,
        "1x is no speedup"
    );
}

#[test]
fn convoy_gives_the_wait_per_wakeup_and_blames_the_holder() {
    let rec = &recommend(&convoy())[0];
    assert_eq!(rec.rule, "convoy");
    // 300 wait samples after 60 wake-ups, 5 ms apart: 25 ms per wake-up.
    assert!(
        rec.verdict.contains("25.0 ms per wake-up"),
        "{}",
        rec.verdict
    );
    assert!(
        rec.verdict.contains("2 threads (io-0, io-1)"),
        "{}",
        rec.verdict
    );
    assert!(rec.verdict.contains("thread worker-0"), "{}", rec.verdict);
    let wait = rec
        .evidence
        .iter()
        .find(|e| e.figure == "thread[io-0].mean_wait_per_wakeup_ms")
        .expect("wait per wake-up");
    assert_eq!(
        (wait.value, wait.value_text()),
        (25.0, "25.0 ms".to_string())
    );
    assert_eq!(rec.code[0].function, "spin");
    assert_eq!(rec.code[0].role, Role::HoldsGil);
    assert!(
        rec.code
            .iter()
            .any(|c| c.function == "round_trip" && c.role == Role::WaitsForGil)
    );
}

#[test]
fn waits_after_rare_wakeups_are_not_a_convoy() {
    let mut rec = convoy();
    for t in &mut rec.threads {
        t.wakeups = t.wakeups.min(MIN_WAKEUPS - 1);
    }
    assert!(!rules(&rec).contains(&"convoy".to_string()));
}

#[test]
fn an_event_loop_is_found_by_its_frames_and_selectors_alone_do_not_make_one() {
    assert_eq!(rules(&asyncio_server())[0], "event_loop_idle");
    // socketserver's serve_forever polls through selectors too: not an event loop.
    let selectors = [("/usr/lib/python3.12/selectors.py", "select")];
    let rec = Rec::new()
        .thread(
            "server",
            [2, 0, 0, 198],
            IdleReason::Io,
            "serve_forever",
            &selectors,
        )
        .thread("other", [2, 0, 0, 198], IdleReason::Io, "read", &[])
        .gil(4, 0, 0, 4)
        .0;
    assert_eq!(rules(&rec), ["io_threads_fine"]);
}

#[test]
fn a_free_threaded_build_without_the_gil_gets_no_gil_advice() {
    let mut rec = cpu_threads();
    rec.python.free_threaded = true;
    rec.python.gil = "disabled".into();
    let recs = recommend(&rec);
    assert_eq!(recs.len(), 1);
    assert_eq!(
        (recs[0].rule.as_str(), recs[0].kind),
        ("free_threaded", Kind::None)
    );
    assert!(
        recs[0].verdict.contains("GIL disabled"),
        "{}",
        recs[0].verdict
    );
    // With the GIL switched back on (transient), the GIL rules apply again.
    rec.python.gil = "transient".into();
    assert_eq!(rules(&rec)[0], "cpu_threads_contend");
}

#[test]
fn too_few_samples_and_no_pattern_still_say_something() {
    let mut rec = one_cpu();
    rec.samples = MIN_SAMPLES - 1;
    assert_eq!(rules(&rec), ["too_few_samples"]);
    let rec = Rec::new()
        .thread("MainThread", [0, 0, 0, N], IdleReason::Lock, "join", &[])
        .0;
    assert_eq!(rules(&rec), ["nothing_stands_out"]);
}

#[test]
fn a_lone_io_thread_is_not_judged() {
    let rec = Rec::new().main_sleeping().gil(0, 0, 0, 0).0;
    assert_eq!(rules(&rec), ["nothing_stands_out"]);
}

#[test]
fn the_json_names_are_the_contract() {
    let rec = &recommend(&cpu_threads())[0];
    let json = serde_json::to_value(rec).unwrap();
    for key in [
        "kind",
        "verdict",
        "evidence",
        "code",
        "expected_speedup",
        "rule",
    ] {
        assert!(json.get(key).is_some(), "{key} in {json}");
    }
    assert_eq!(json["kind"], "processes");
    assert_eq!(json["code"][0]["role"], "holds_gil");
    for key in ["function", "file", "line", "fraction"] {
        assert!(json["code"][0].get(key).is_some(), "{key}");
    }
    for key in ["figure", "value", "note", "unit"] {
        assert!(json["evidence"][0].get(key).is_some(), "{key}");
    }
    let offload = serde_json::to_value(Kind::NativeOffload).unwrap();
    assert_eq!(offload, "native_offload");
    assert_eq!(serde_json::to_value(Kind::None).unwrap(), "none");
    assert_eq!(
        serde_json::to_value(Role::WaitsForGil).unwrap(),
        "waits_for_gil"
    );
}

// ---------------------------------------------------------------------------------------
// Event loops (issue 14)

/// The asyncio server, its loop stalled 15 times in 3 s by `function`, which did `state`
/// during the stalls.
fn stalled_server(function: &str, state: ThreadState, reason: Option<IdleReason>) -> Recording {
    use crate::model::event_loop::{BlockingCount, EventLoopCounts};
    let mut rec = asyncio_server();
    let tid = rec.threads[0].tid;
    let mut states = StateCounts::default();
    states.add(state, 120);
    let mut idle_reasons = IdleCounts::default();
    if let Some(reason) = reason {
        idle_reasons.add(reason, 120);
    }
    rec.event_loops.push(EventLoopCounts {
        tid,
        kind: "asyncio".into(),
        method: "pass_start".into(),
        stamped_stretches: 60,
        unstamped_stretches: 0,
        stall_threshold_ms: 20.0,
        samples: N,
        selector_samples: 150,
        blocked_in_selector: 150,
        blocked_elsewhere: 0,
        wall_ns: 3_000_000_000,
        cpu_ns: 700_000_000,
        run_delay_ns: 0,
        stalls: 15,
        stalls_ms: vec![41.0; 15],
        stalls_measured: true,
        blocking: vec![BlockingCount {
            frame: frame(APP, function, 36),
            states,
            idle_reasons,
            samples: 120,
            tasks: Vec::new(),
        }],
    });
    rec
}

#[test]
fn a_stalled_loop_is_told_to_move_the_blocking_code_off_it_first() {
    let rec = stalled_server("crunch", ThreadState::GilHeld, None);
    let list = recommend(&rec);
    let first = &list[0];
    assert_eq!(first.rule, "event_loop_stalled");
    assert_eq!(first.kind, Kind::Processes);
    assert!(first.verdict.contains("crunch"), "{}", first.verdict);
    assert!(
        first.verdict.contains("run_in_executor"),
        "{}",
        first.verdict
    );
    assert!(
        first.verdict.contains("ProcessPoolExecutor"),
        "{}",
        first.verdict
    );
    let figures: Vec<&str> = first.evidence.iter().map(|e| e.figure.as_str()).collect();
    for figure in [
        "thread[MainThread].event_loop.stalls_per_s",
        "thread[MainThread].event_loop.longest_stall_ms",
        "thread[MainThread].event_loop.blocked",
    ] {
        assert!(figures.contains(&figure), "{figures:?}");
    }
    assert_eq!(first.code[0].function, "crunch");
    assert_eq!(first.code[0].role, Role::BlocksLoop);
    // The loop is stalled, so "async is already right" must not be said of it.
    assert!(list.iter().all(|r| r.rule != "event_loop_idle"), "{list:?}");
}

#[test]
fn a_loop_stalled_by_sleep_or_io_gets_threads_and_by_native_code_native_offload() {
    let sleep = stalled_server("nap", ThreadState::Idle, Some(IdleReason::Sleep));
    assert_eq!(recommend(&sleep)[0].kind, Kind::Threads);
    let io = stalled_server("fetch", ThreadState::Idle, Some(IdleReason::Io));
    assert_eq!(recommend(&io)[0].kind, Kind::Threads);
    let native = stalled_server("compress", ThreadState::NativeNogil, None);
    let first = &recommend(&native)[0];
    assert_eq!(first.kind, Kind::NativeOffload);
    assert!(first.verdict.contains("to_thread"), "{}", first.verdict);
}

#[test]
fn a_loop_without_stalls_keeps_the_async_verdict() {
    let mut rec = stalled_server("crunch", ThreadState::GilHeld, None);
    let l = &mut rec.event_loops[0];
    l.stalls = 0;
    l.stalls_ms.clear();
    l.blocking.clear();
    let list = recommend(&rec);
    assert_eq!(list[0].rule, "event_loop_idle");
    assert_eq!(list[0].kind, Kind::Async);
    assert!(list.iter().all(|r| r.rule != "event_loop_stalled"));
}

// ---------------------------------------------------------------------------------------
// Native threads starved by a Python loop, and a contended GIL never shrugged off

/// Two hashers releasing the GIL for each short hash beside a pure-Python loop: they wait
/// 94% of the time and run native code 5-6% (fixtures/workload.py native_convoy).
fn native_convoy() -> Recording {
    Rec::new()
        .main_sleeping()
        .thread("worker-0", [190, 5, 5, 0], IdleReason::Lock, "spin", &[])
        .thread(
            "hasher-0",
            [2, 188, 10, 0],
            IdleReason::Lock,
            "hash_forever",
            &[],
        )
        .thread(
            "hasher-1",
            [2, 186, 12, 0],
            IdleReason::Lock,
            "hash_forever",
            &[],
        )
        .gil(N, 190, 374, 221)
        .0
}

/// NumPy matmul threads waiting 40% of their time beside a loop (numpy_convoy).
fn numpy_convoy() -> Recording {
    Rec::new()
        .main_sleeping()
        .thread("worker-0", [178, 12, 10, 0], IdleReason::Lock, "spin", &[])
        .thread("matmul-0", [2, 80, 118, 0], IdleReason::Lock, "dot", &[])
        .thread("matmul-1", [2, 78, 120, 0], IdleReason::Lock, "dot", &[])
        .gil(N, 150, 170, 430)
        .0
}

const NATIVE_CONVOY_RULES: [&str; 3] = [
    "native_convoy",
    "native_convoy_native_offload",
    "native_convoy_switch_interval",
];

#[test]
fn native_threads_behind_a_python_loop_blame_the_loop() {
    for (name, rec) in [("hashers", native_convoy()), ("numpy", numpy_convoy())] {
        assert_eq!(rules(&rec), NATIVE_CONVOY_RULES, "{name}");
        let kinds: Vec<Kind> = recommend(&rec).iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [Kind::Processes, Kind::NativeOffload, Kind::Threads],
            "{name}"
        );
    }
    let recs = recommend(&native_convoy());
    let primary = &recs[0];
    for words in [
        "2 threads (hasher-0, hasher-1) release the GIL for native work",
        "wait for it 94% of their time",
        "thread worker-0 holds it 95% of its time (spin)",
        "out of this process",
    ] {
        assert!(
            primary.verdict.contains(words),
            "{words}: {}",
            primary.verdict
        );
    }
    // On a CPU now: hasher-0 6%, hasher-1 7% (13% together). Unstarved they would want two
    // CPUs, but worker-0 keeps 97.5% of one of the two: 1.025 / 0.13 = 7.9x.
    assert_eq!(primary.expected_speedup, Some(7.9));
    assert!(
        primary.verdict.contains("up to 7.9x"),
        "{}",
        primary.verdict
    );
    let holder = &primary.code[0];
    assert_eq!(
        (holder.function.as_str(), holder.role),
        ("spin", Role::HoldsGil)
    );
    assert!(
        primary
            .code
            .iter()
            .any(|c| c.function == "hash_forever" && c.role == Role::WaitsForGil)
    );
    let figures: Vec<&str> = primary.evidence.iter().map(|e| e.figure.as_str()).collect();
    for figure in [
        "gil.contended",
        "thread[hasher-0].gil_wait",
        "thread[hasher-0].native_nogil",
        "thread[hasher-1].gil_wait",
        "thread[worker-0].gil_held",
    ] {
        assert!(figures.contains(&figure), "{figure} in {figures:?}");
    }

    let offload = &recs[1];
    assert!(
        offload
            .verdict
            .contains("loop of thread worker-0 (spin) into native code"),
        "{}",
        offload.verdict
    );
    assert_eq!(offload.expected_speedup, Some(7.9));

    // 5 ms now, 1 ms suggested: each hasher's wait is cut 5x. hasher-0: 0.06 on a CPU,
    // 0.94 / 5 waiting -> busy share on a CPU 0.06 / 0.248 = 0.242; hasher-1: 0.07 / 0.256
    // = 0.273; together 0.515 against 0.13 now: 4.0x.
    let interval = &recs[2];
    assert!(
        interval
            .verdict
            .contains("sys.setswitchinterval(0.001) (now 5 ms)"),
        "{}",
        interval.verdict
    );
    assert!(interval.verdict.contains("cost"), "{}", interval.verdict);
    assert_eq!(interval.expected_speedup, Some(4.0));
    let current = interval
        .evidence
        .iter()
        .find(|e| e.figure == "gil.interval_us")
        .expect("the switch interval in the evidence");
    assert_eq!(current.value, 5000.0);
}

#[test]
fn the_switch_interval_is_suggested_from_the_one_read() {
    let mut rec = native_convoy();
    rec.gil.interval_us = 2000;
    let recs = recommend(&rec);
    assert!(
        recs[2]
            .verdict
            .contains("sys.setswitchinterval(0.0005) (now 2 ms)"),
        "{}",
        recs[2].verdict
    );
    // Already at the floor: no shorter interval to suggest, the other two stand.
    rec.gil.interval_us = MIN_SUGGESTED_INTERVAL_US;
    assert_eq!(rules(&rec), NATIVE_CONVOY_RULES[..2]);
    // Not read (0): nothing to suggest from.
    rec.gil.interval_us = 0;
    assert_eq!(rules(&rec), NATIVE_CONVOY_RULES[..2]);
}

#[test]
fn native_threads_running_in_parallel_are_no_native_convoy() {
    // The same threads when nothing holds the GIL on them: native code scales.
    assert_eq!(rules(&native_parallel()), ["native_parallel"]);
    // A Python loop beside native threads that rarely wait: not starved.
    let rec = Rec::new()
        .main_sleeping()
        .thread("worker-0", [190, 5, 5, 0], IdleReason::Lock, "spin", &[])
        .thread(
            "native-0",
            [2, 10, 188, 0],
            IdleReason::Lock,
            "compress",
            &[],
        )
        .thread(
            "native-1",
            [2, 10, 188, 0],
            IdleReason::Lock,
            "compress",
            &[],
        )
        .gil(N, 20, 20, 585)
        .0;
    let fired = rules(&rec);
    assert!(
        fired.iter().all(|r| !r.starts_with("native_convoy")),
        "{fired:?}"
    );
}

#[test]
fn a_starved_native_thread_is_not_counted_as_python_compute() {
    // The hashers hold the GIL 6% of their time (above MIN_HELD_SHARE) around each call:
    // still native threads queueing, not Python threads taking turns.
    let rec = Rec::new()
        .main_sleeping()
        .thread("worker-0", [180, 10, 10, 0], IdleReason::Lock, "spin", &[])
        .thread("hasher-0", [12, 160, 28, 0], IdleReason::Lock, "hash", &[])
        .thread("hasher-1", [12, 160, 28, 0], IdleReason::Lock, "hash", &[])
        .gil(N, 180, 330, 270)
        .0;
    assert_eq!(rules(&rec)[0], "native_convoy");
}

/// A holder in `spin` and a thread that waits for the GIL when it wakes up, rarely (too
/// few wake-ups for a convoy), idle the rest of the time on a lock: no pattern fits.
fn contended_without_pattern() -> Recording {
    Rec::new()
        .main_sleeping()
        .thread("worker-0", [190, 0, 10, 0], IdleReason::Lock, "spin", &[])
        .thread("consumer", [4, 76, 0, 120], IdleReason::Lock, "take", &[])
        .wakeups(2, 2, 76)
        .gil(N, 76, 76, 200)
        .0
}

#[test]
fn a_contended_gil_with_no_pattern_names_who_holds_it_and_who_waits() {
    let recs = recommend(&contended_without_pattern());
    let primary = &recs[0];
    assert_eq!(primary.rule, "gil_contended");
    assert_eq!(primary.kind, Kind::Processes);
    for words in [
        "contended 38%",
        "thread worker-0 holds it 95% of its time (spin)",
        "thread consumer waits for it 38% of its time (take)",
    ] {
        assert!(
            primary.verdict.contains(words),
            "{words}: {}",
            primary.verdict
        );
    }
    let figures: Vec<&str> = primary.evidence.iter().map(|e| e.figure.as_str()).collect();
    for figure in [
        "gil.contended",
        "thread[worker-0].gil_held",
        "thread[consumer].gil_wait",
    ] {
        assert!(figures.contains(&figure), "{figure} in {figures:?}");
    }
    assert!(
        primary
            .code
            .iter()
            .any(|c| c.function == "take" && c.role == Role::WaitsForGil)
    );
}

#[test]
fn a_rule_that_does_not_blame_cannot_be_primary_on_a_contended_gil() {
    // Two I/O threads "rarely waiting for the GIL" by their class, while the GIL is
    // contended half the time: io_threads_fine still fires, but gil_contended comes first.
    let rec = Rec::new()
        .main_sleeping()
        .thread("worker-0", [190, 0, 10, 0], IdleReason::Lock, "spin", &[])
        .thread("reader-0", [2, 60, 0, 138], IdleReason::Io, "read", &[])
        .thread("reader-1", [2, 60, 0, 138], IdleReason::Io, "read", &[])
        .gil(N, 100, 120, 200)
        .0;
    assert_eq!(rules(&rec), ["gil_contended", "io_threads_fine"]);
    // Uncontended, the same rule stands alone.
    assert_eq!(rules(&sleepers()), ["io_threads_fine"]);
}

/// A deterministic stream of numbers for the sweep below (an LCG: no crate needed).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn no_shrug_on_a_contended_gil_across_many_shapes() {
    let mut rng = Lcg(17);
    let mut contended_cases = 0;
    for case in 0..2000 {
        let mut rec = Rec::new().main_sleeping();
        let (mut held, mut wait, mut on_cpu) = (0, 0, 0);
        for i in 0..1 + rng.below(5) {
            let h = rng.below(N + 1);
            let w = rng.below(N - h + 1);
            let n = rng.below(N - h - w + 1);
            let idle = N - h - w - n;
            let reason =
                [IdleReason::Io, IdleReason::Lock, IdleReason::Sleep][rng.below(3) as usize];
            rec = rec.thread(&format!("t-{i}"), [h, w, n, idle], reason, "f", &[]);
            let wakeups = rng.below(40);
            let waits = rng.below(wakeups + 1);
            rec = rec.wakeups(wakeups, waits, rng.below(w + 1));
            (held, wait, on_cpu) = (held + h, wait + w, on_cpu + h + n);
        }
        let held = held.min(N);
        let rec = rec.gil(held, wait.min(held), wait, on_cpu).0;
        let recs = recommend(&rec);
        let contended = gil_figures(&rec).contended;
        let primary = &recs[0];
        if contended >= CONTENDED_SHARE {
            contended_cases += 1;
            assert!(
                BLAMING_RULES.contains(&primary.rule.as_str()),
                "case {case}: contended {contended:.2} but the primary is {}: {}",
                primary.rule,
                primary.verdict
            );
            assert_ne!(primary.kind, Kind::None, "case {case}: {}", primary.verdict);
            assert!(
                primary
                    .evidence
                    .iter()
                    .any(|e| e.figure.ends_with(".gil_wait")
                        || e.figure.ends_with(".wakeups_waiting_for_gil")),
                "case {case}: no waiter in the evidence of {}",
                primary.rule
            );
        } else if primary.kind == Kind::None {
            assert_ne!(primary.rule, "gil_contended", "case {case}");
        }
    }
    assert!(
        contended_cases > 200,
        "the sweep hit {contended_cases} contended cases"
    );
}

#[test]
fn busy_cpus_turn_the_estimate_into_what_more_cpus_would_give() {
    // The matmul threads are on a CPU 60% of their time each (1.2 CPUs), worker-0 94%: the
    // 2 CPUs are full, so no gain is promised here, only with 3 CPUs: 2.0 / 1.2 = 1.7x.
    let rec = numpy_convoy();
    let primary = &recommend(&rec)[0];
    assert_eq!(primary.rule, "native_convoy");
    assert_eq!(primary.expected_speedup, None);
    assert!(
        primary
            .verdict
            .contains("the 2 CPUs are busy already (2.1 threads on a CPU on average)"),
        "{}",
        primary.verdict
    );
    assert!(
        primary
            .verdict
            .contains("up to 1.7x the native work with 3 CPUs"),
        "{}",
        primary.verdict
    );
    let mut rec = numpy_convoy();
    rec.cpus = 4;
    assert_eq!(recommend(&rec)[0].expected_speedup, Some(1.7));
}

#[test]
fn native_threads_waiting_a_quarter_of_their_time_are_starved_not_parallel() {
    // Waiting 25% of their busy time they are `native` by class, which native_parallel
    // looks for; behind worker-0 they are still starved, and only native_convoy speaks.
    let rec = Rec::new()
        .main_sleeping()
        .thread("worker-0", [178, 12, 10, 0], IdleReason::Lock, "spin", &[])
        .thread("matmul-0", [2, 50, 148, 0], IdleReason::Lock, "dot", &[])
        .thread("matmul-1", [2, 50, 148, 0], IdleReason::Lock, "dot", &[])
        .gil(N, 90, 100, 488)
        .0;
    let classes: Vec<ThreadClass> = thread_figures(&rec).iter().map(|t| t.class).collect();
    assert_eq!(classes[2], ThreadClass::Native);
    assert_eq!(rules(&rec), NATIVE_CONVOY_RULES);
}

#[test]
fn io_threads_behind_a_loop_are_no_native_convoy_even_without_enough_wakeups() {
    // The I/O convoy with too few wake-ups seen to judge it: the I/O threads' time without
    // the GIL is system calls, not native work, so native_convoy does not claim them.
    let mut rec = convoy();
    for t in &mut rec.threads {
        t.wakeups = t.wakeups.min(MIN_WAKEUPS - 1);
    }
    let fired = rules(&rec);
    assert!(
        fired.iter().all(|r| !r.starts_with("native_convoy")),
        "{fired:?}"
    );
}

#[test]
fn hashers_seen_only_waiting_are_still_starved_native_threads() {
    // On an idle machine a hash shorter than a scheduler tick that ends in a GIL wait is
    // counted as that wait: the hashers show no native time, hold the GIL 1% of their
    // time and wait 99% of it.
    let rec = Rec::new()
        .main_sleeping()
        .thread("worker-0", [196, 2, 2, 0], IdleReason::Lock, "spin", &[])
        .thread("hasher-0", [2, 198, 0, 0], IdleReason::Lock, "hash", &[])
        .thread("hasher-1", [2, 198, 0, 0], IdleReason::Lock, "hash", &[])
        .gil(N, 198, 396, 202)
        .0;
    assert_eq!(rules(&rec), NATIVE_CONVOY_RULES);
    let primary = &recommend(&rec)[0];
    // 1% on a CPU each is below what sampling resolves: no factor is promised, the CPUs
    // are: 0.02 now, up to 2 - 0.99 = 1.01 for them.
    assert_eq!(primary.expected_speedup, None);
    assert!(
        primary
            .verdict
            .contains("they use 0.02 CPUs now and could use up to 1.0"),
        "{}",
        primary.verdict
    );
    // A pure-Python thread starved as badly still holds the GIL for whole intervals when it
    // gets it: it is not taken for a native one.
    let rec = Rec::new()
        .main_sleeping()
        .thread("worker-0", [180, 20, 0, 0], IdleReason::Lock, "spin", &[])
        .thread("worker-1", [20, 180, 0, 0], IdleReason::Lock, "spin", &[])
        .gil(N, 200, 200, 200)
        .0;
    assert_eq!(rules(&rec)[0], "cpu_threads_contend");
}

#[test]
fn the_new_rules_evidence_names_fail_on_figures() {
    // Every figure but the CPU count and the switch interval (report fields that --fail-on
    // does not judge) is a --fail-on path.
    let mut recs = recommend(&native_convoy());
    recs.extend(recommend(&contended_without_pattern()));
    let mut checked = 0;
    for rec in &recs {
        for e in &rec.evidence {
            if ["cpus", "gil.interval_us"].contains(&e.figure.as_str()) {
                continue;
            }
            let condition = format!("{}>0", e.figure);
            assert!(
                crate::conditions::Condition::parse(&condition).is_ok(),
                "{} ({}): {condition}",
                rec.rule,
                e.figure
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "{checked} figures checked");
}
