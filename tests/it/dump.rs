//! `gilscope dump` against `fixtures/dump_workload.py`, on every interpreter found (see
//! `support::pythons`), plus its error exits.
//!
//! The workload's threads and where each spins or blocks are described by the workload
//! itself (its READY line: tid, name and the Python stack as the interpreter sees it), so
//! the expectations below are exact: names, states, idle reasons, frames and lines.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Command;

use serde_json::Value;

use crate::support::{self, Child, Dump, Frame, Interpreter, Run};

/// Dumps taken once the workload has settled; each is checked in full.
const DUMPS: usize = 40;
/// Dumps allowed for the blocking threads to reach their blocking calls after READY.
const SETTLE_ATTEMPTS: usize = 100;
/// Dumps allowed, after the `--blocking` one, for the GIL to change hands again.
const RESUME_ATTEMPTS: usize = 20;
/// CPython's default switch interval (`sys.getswitchinterval()`), which the workload keeps.
const DEFAULT_INTERVAL_US: u64 = 5000;
/// The workload exits by itself after this long, should the test leak it.
const WORKLOAD_MAX_SECONDS: &str = "300";

/// The CPU threads spin in pure Python: without the GIL such a thread can only be
/// waiting for it, whatever the kernel says. A waiter that was just woken and has not
/// been scheduled yet is runnable ("running" in /proc/PID/task/TID/syscall) while not
/// holding the GIL; judging by the kernel alone calls that native code, which on this
/// 2-CPU machine happens in ~25-30% of non-blocking dumps. The interpreter's own state
/// (the thread executes bytecode, not a call into C) says gil_wait. Only the racy
/// instants of a non-blocking dump (kernel and memory read at slightly different times)
/// excuse another answer, so each CPU thread must be gil_held or gil_wait in at least
/// this share of non-blocking dumps (and never idle), and always in a `--blocking` one.
const CPU_GIL_MIN_SHARE: f64 = 0.9;
/// The hasher spends most of its time in OpenSSL with the GIL released; it takes the GIL
/// back between hashes (a few ms against about 200 ms per 256 MiB hash).
const HASHER_NATIVE_MIN_SHARE: f64 = 0.6;

const CPU_ROLES: [&str; 2] = ["cpu-0", "cpu-1"];
const HASHER: &str = "hasher";

/// Role in the workload -> thread name.
const ROLES: [(&str, &str); 7] = [
    ("cpu-0", "cpu-0"),
    ("cpu-1", "cpu-1"),
    ("sleeper", "sleeper"),
    ("reader", "reader"),
    ("locked", "locked"),
    ("hasher", "hasher"),
    ("main", "MainThread"),
];

/// Threads blocked for good once settled: (role, state, idle_reason). The main thread
/// sits in `threading.Lock.acquire(timeout=...)` of a lock nobody releases: a futex
/// that is not the GIL's, i.e. a lock.
const BLOCKED: [(&str, &str, &str); 4] = [
    ("sleeper", "idle", "sleep"),
    ("reader", "idle", "io"),
    ("locked", "idle", "lock"),
    ("main", "idle", "lock"),
];

/// One thread of the workload, as the workload describes it.
#[derive(Debug, Clone)]
struct Role {
    tid: i64,
    name: String,
    /// The thread's Python stack while it spins or blocks, innermost first.
    stack: Vec<Frame>,
}

/// Everything a dump of one workload is checked against.
struct Expect {
    pid: i64,
    version: String,
    build: &'static str,
    free_threaded: bool,
    gil_enabled: bool,
    roles: BTreeMap<String, Role>,
}

impl Expect {
    fn role(&self, role: &str) -> &Role {
        &self.roles[role]
    }
}

/// Failure messages of one interpreter, each kept once with the number of times seen.
#[derive(Default)]
struct Failures(BTreeMap<String, usize>);

impl Failures {
    fn add(&mut self, msg: impl Into<String>) {
        *self.0.entry(msg.into()).or_default() += 1;
    }

    fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.add(msg());
        }
    }

    /// Adds `other`'s messages, each prefixed with `prefix`.
    fn merge(&mut self, prefix: &str, other: Failures) {
        for (msg, n) in other.0 {
            *self.0.entry(format!("{prefix}{msg}")).or_default() += n;
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn report(&self) -> String {
        self.0
            .iter()
            .map(|(msg, n)| {
                if *n > 1 {
                    format!("    ({n} times) {msg}")
                } else {
                    format!("    {msg}")
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[test]
fn dump_matches_the_workload_on_every_interpreter() {
    let pythons = support::pythons();
    let mut failed = Vec::new();
    for python in &pythons {
        println!("checking Python {}", python.label());
        let outcome = catch_unwind(AssertUnwindSafe(|| check_interpreter(python)));
        let report = match outcome {
            Ok(failures) if failures.is_empty() => {
                println!("  ok: Python {}", python.label());
                continue;
            }
            Ok(failures) => failures.report(),
            Err(panic) => format!("    panicked: {}", panic_message(&panic)),
        };
        println!("  FAILED: Python {}\n{report}", python.label());
        failed.push(format!("Python {}:\n{report}", python.label()));
    }
    assert!(
        failed.is_empty(),
        "gilscope dump failed on {} of {} interpreters:\n{}",
        failed.len(),
        pythons.len(),
        failed.join("\n")
    );
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(non-string panic)".into())
}

fn check_interpreter(python: &Interpreter) -> Failures {
    let mut f = Failures::default();
    let mut workload = Child::fixture(
        python,
        "dump_workload.py",
        &["--max-seconds", WORKLOAD_MAX_SECONDS],
    );
    let expect = expectations(python, &workload);
    let pid = workload.pid();

    // The fixture itself: exactly the threads it describes, nothing else.
    let role_tids: BTreeSet<i64> = expect.roles.values().map(|r| r.tid).collect();
    assert_eq!(
        workload.task_ids(),
        role_tids,
        "the workload's OS threads are not the ones its READY line lists"
    );

    // READY comes just before the threads block: wait (bounded) until a dump shows every
    // blocking thread blocked. From then on they stay put and every dump must say so.
    let mut settled = None;
    let mut last = String::from("no dump");
    for _ in 0..SETTLE_ATTEMPTS {
        let dump = match take_dump(pid, &[]) {
            Ok(dump) => dump,
            Err(e) => {
                f.add(e);
                return f;
            }
        };
        if BLOCKED.iter().all(|(role, state, reason)| {
            dump.thread(expect.role(role).tid)
                .is_some_and(|t| t.state == *state && t.idle_reason.as_deref() == Some(*reason))
        }) {
            settled = Some(dump);
            break;
        }
        last = dump.summary();
    }
    if settled.is_none() {
        f.add(format!(
            "the blocked threads never showed as blocked in {SETTLE_ATTEMPTS} dumps; last: {last}"
        ));
        return f;
    }

    // The sampled dumps.
    let mut cpu_states: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    let mut hasher_states: BTreeMap<String, usize> = BTreeMap::new();
    let mut switch_numbers = Vec::new();
    for i in 0..DUMPS {
        let dump = match take_dump(pid, &[]) {
            Ok(dump) => dump,
            Err(e) => {
                f.add(format!("dump {i}: {e}"));
                continue;
            }
        };
        check_dump(&dump, &expect, false, &mut f);
        for role in CPU_ROLES {
            if let Some(t) = dump.thread(expect.role(role).tid) {
                *cpu_states
                    .entry(role)
                    .or_default()
                    .entry(t.state.clone())
                    .or_default() += 1;
            }
        }
        if let Some(t) = dump.thread(expect.role(HASHER).tid) {
            *hasher_states.entry(t.state.clone()).or_default() += 1;
        }
        switch_numbers.push(dump.gil.switch_number);
    }
    println!(
        "  {} sampled dumps: cpu threads {cpu_states:?}, hasher {hasher_states:?}",
        DUMPS
    );

    if expect.gil_enabled {
        for role in CPU_ROLES {
            let states = cpu_states.get(role).cloned().unwrap_or_default();
            let total: usize = states.values().sum();
            let count = |s: &str| states.get(s).copied().unwrap_or(0);
            for state in ["gil_held", "gil_wait"] {
                f.check(count(state) > 0, || {
                    format!("{role} never seen {state} in {total} dumps: {states:?}")
                });
            }
            let on_gil = count("gil_held") + count("gil_wait");
            f.check(share(on_gil, total) >= CPU_GIL_MIN_SHARE, || {
                format!(
                    "{role} is gil_held or gil_wait in only {on_gil} of {total} dumps \
                     (need {CPU_GIL_MIN_SHARE}): {states:?}"
                )
            });
        }
        f.check(switch_numbers.windows(2).all(|w| w[0] <= w[1]), || {
            format!("gil.switch_number went backwards: {switch_numbers:?}")
        });
        f.check(
            switch_numbers.first() < switch_numbers.last(),
            || format!("gil.switch_number never grew while two threads fought over the GIL: {switch_numbers:?}"),
        );
    }
    let total: usize = hasher_states.values().sum();
    let native = hasher_states.get("native_nogil").copied().unwrap_or(0);
    f.check(share(native, total) >= HASHER_NATIVE_MIN_SHARE, || {
        format!(
            "hasher is native_nogil in only {native} of {total} dumps \
             (need {HASHER_NATIVE_MIN_SHARE}): {hasher_states:?}"
        )
    });

    check_blocking(&mut workload, &expect, &mut f);
    check_text(pid, &expect, &mut f);

    f.check(workload.is_running(), || {
        format!(
            "the workload died during the test; stderr: {}",
            workload.stderr()
        )
    });
    f
}

fn share(part: usize, total: usize) -> f64 {
    if total == 0 {
        0.0
    } else {
        part as f64 / total as f64
    }
}

/// Reads the workload's READY line and what the interpreter says about itself.
fn expectations(python: &Interpreter, workload: &Child) -> Expect {
    let ready = workload.ready();
    let script = support::fixture("dump_workload.py");
    let script = script.to_str().expect("utf-8 path");
    let mut roles = BTreeMap::new();
    for (role, name) in ROLES {
        let info = &ready[role];
        let stack: Vec<Frame> = info["stack"]
            .as_array()
            .unwrap_or_else(|| panic!("READY line has no stack for {role}: {ready}"))
            .iter()
            .map(|f| Frame {
                function: f["function"].as_str().expect("frame function").to_string(),
                file: f["file"].as_str().expect("frame file").to_string(),
                line: f["line"].as_i64().expect("frame line"),
            })
            .collect();
        let innermost = stack.first().expect("non-empty stack");
        // The READY line is internally consistent and names this very script.
        assert_eq!(info["name"].as_str(), Some(name), "{role}: {info}");
        assert_eq!(info["function"].as_str(), Some(innermost.function.as_str()));
        assert_eq!(info["line"].as_i64(), Some(innermost.line));
        assert_eq!(info["file"].as_str(), Some(script), "{role}: {info}");
        assert_eq!(innermost.file, script, "{role}: {info}");
        roles.insert(
            role.to_string(),
            Role {
                tid: info["tid"].as_i64().expect("tid"),
                name: name.to_string(),
                stack,
            },
        );
    }
    // The chain the CPU threads spin in.
    for role in CPU_ROLES {
        let functions: Vec<&str> = roles[role]
            .stack
            .iter()
            .map(|f| f.function.as_str())
            .collect();
        assert_eq!(functions[..3], ["inner", "outer", "cpu_main"], "{role}");
    }
    let build = workload.python_build();
    // Known layouts of this machine: the memory map must agree with them.
    if python.path == std::path::Path::new(support::DEBIAN_PYTHON) {
        assert_eq!(build, "static", "{} maps a libpython", python.label());
    }
    if support::pyenv_root().is_some_and(|root| python.path.starts_with(root)) {
        assert_eq!(build, "shared", "{} maps no libpython", python.label());
    }
    Expect {
        pid: i64::from(workload.pid()),
        version: python.version.clone(),
        build,
        free_threaded: python.free_threaded,
        gil_enabled: python.gil_enabled,
        roles,
    }
}

/// `gilscope dump --pid PID --json EXTRA...`, which must succeed with a valid document.
fn take_dump(pid: i32, extra: &[&str]) -> Result<Dump, String> {
    let run = support::dump_json(pid, extra);
    if run.code != Some(0) {
        return Err(format!("gilscope dump {extra:?} failed: {run}"));
    }
    support::parse_dump(&run.stdout).map_err(|e| format!("gilscope dump {extra:?}: {e}"))
}

/// Everything one dump must get right. `consistent`: taken with `--blocking`.
fn check_dump(dump: &Dump, expect: &Expect, consistent: bool, f: &mut Failures) {
    let py = &dump.python;
    f.check(dump.pid == expect.pid, || {
        format!("pid {} instead of {}", dump.pid, expect.pid)
    });
    f.check(py.version == expect.version, || {
        format!(
            "python.version {:?} instead of {:?}",
            py.version, expect.version
        )
    });
    f.check(py.build == expect.build, || {
        format!("python.build {:?} instead of {:?}", py.build, expect.build)
    });
    f.check(py.free_threaded == expect.free_threaded, || {
        format!(
            "python.free_threaded {} instead of {}",
            py.free_threaded, expect.free_threaded
        )
    });
    let gil_mode = if expect.gil_enabled {
        "enabled"
    } else {
        "disabled"
    };
    f.check(py.gil == gil_mode, || {
        format!("python.gil {:?} instead of {gil_mode:?}", py.gil)
    });
    f.check(dump.gil.interval_us == DEFAULT_INTERVAL_US, || {
        format!(
            "gil.interval_us {} instead of {DEFAULT_INTERVAL_US}",
            dump.gil.interval_us
        )
    });

    // Exactly the workload's threads, each once.
    let tids: Vec<i64> = dump.threads.iter().map(|t| t.tid).collect();
    let unique: BTreeSet<i64> = tids.iter().copied().collect();
    let expected: BTreeSet<i64> = expect.roles.values().map(|r| r.tid).collect();
    f.check(unique.len() == tids.len() && unique == expected, || {
        format!("thread tids {tids:?} instead of {expected:?}")
    });

    for t in &dump.threads {
        f.check((t.state == "idle") == t.idle_reason.is_some(), || {
            format!(
                "thread {:?}: idle_reason {:?} with state {}",
                t.name, t.idle_reason, t.state
            )
        });
    }

    // Who holds the GIL.
    if expect.gil_enabled {
        let held: Vec<i64> = dump
            .threads
            .iter()
            .filter(|t| t.state == "gil_held")
            .map(|t| t.tid)
            .collect();
        if dump.gil.source.as_deref() == Some("thread_flags") {
            // The threads' own flags (3.15+): the GIL struct's `locked` runs ahead of
            // `holds_gil` in take_gil and behind it in drop_gil, so a locked GIL may have
            // no flagged holder for an instant; never more than one.
            f.check(
                held.len() <= 1 && dump.gil.holder_tid == held.first().copied(),
                || {
                    format!(
                        "holder {:?} by the flags, gil_held threads {held:?}",
                        dump.gil.holder_tid
                    )
                },
            );
        } else if dump.gil.locked {
            f.check(
                held.len() == 1 && dump.gil.holder_tid == Some(held[0]),
                || {
                    format!(
                        "gil locked by {:?} but gil_held threads are {held:?}: {}",
                        dump.gil.holder_tid,
                        dump.summary()
                    )
                },
            );
        } else {
            f.check(held.is_empty(), || {
                format!(
                    "gil unlocked but gil_held threads are {held:?}: {}",
                    dump.summary()
                )
            });
        }
    }

    for (role, role_info) in &expect.roles {
        let Some(t) = dump.thread(role_info.tid) else {
            f.add(format!("{role} (tid {}) missing", role_info.tid));
            continue;
        };
        f.check(t.name.as_deref() == Some(role_info.name.as_str()), || {
            format!("{role}: name {:?} instead of {:?}", t.name, role_info.name)
        });
        // Every thread of the workload sits on one line for good, so its whole stack is
        // known: function, file and line of each frame, innermost first.
        f.check(t.frames == role_info.stack, || {
            format!(
                "{role}: frames\n      {}\n    instead of\n      {}",
                frames_text(&t.frames),
                frames_text(&role_info.stack)
            )
        });
    }

    for (role, state, reason) in BLOCKED {
        if let Some(t) = dump.thread(expect.role(role).tid) {
            f.check(
                t.state == state && t.idle_reason.as_deref() == Some(reason),
                || format!("{role} is {} instead of {state}/{reason}", t.state_label()),
            );
        }
    }

    if expect.gil_enabled {
        for role in CPU_ROLES {
            if let Some(t) = dump.thread(expect.role(role).tid) {
                let on_gil = t.state == "gil_held" || t.state == "gil_wait";
                if consistent {
                    f.check(on_gil, || {
                        format!(
                            "{role} is {} instead of gil_held or gil_wait",
                            t.state_label()
                        )
                    });
                } else {
                    f.check(t.state != "idle", || {
                        format!("{role} (spinning in Python) is {}", t.state_label())
                    });
                }
            }
        }
    }
    if let Some(t) = dump.thread(expect.role(HASHER).tid) {
        f.check(t.state != "idle", || {
            format!("hasher (hashing in a loop) is {}", t.state_label())
        });
    }
}

fn frames_text(frames: &[Frame]) -> String {
    frames
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n      ")
}

/// One `--blocking` dump: same checks, the CPU threads strictly on the GIL; afterwards
/// no thread of the target is left stopped and the GIL keeps changing hands.
fn check_blocking(workload: &mut Child, expect: &Expect, f: &mut Failures) {
    let pid = workload.pid();
    let dump = match take_dump(pid, &["--blocking"]) {
        Ok(dump) => dump,
        Err(e) => {
            f.add(e);
            return;
        }
    };
    let mut blocking = Failures::default();
    check_dump(&dump, expect, true, &mut blocking);
    f.merge("--blocking: ", blocking);
    f.check(workload.is_running(), || {
        "--blocking: the target died".into()
    });
    let states = workload.task_states();
    f.check(
        states.len() == expect.roles.len() && states.values().all(|s| !matches!(s, 'T' | 't')),
        || format!("--blocking: threads left stopped or gone after the dump: {states:?}"),
    );
    f.check(
        !matches!(workload.process_state(), Some('T' | 't') | None),
        || {
            format!(
                "--blocking: process state {:?} after the dump",
                workload.process_state()
            )
        },
    );
    // The target keeps running: the GIL changes hands again. The dumps after the pause
    // must be as right as the ones before it (a pause interrupts blocking syscalls; a
    // timed futex wait, for one, comes back as restart_syscall).
    let before = dump.gil.switch_number;
    let mut seen = Vec::new();
    for _ in 0..RESUME_ATTEMPTS {
        match take_dump(pid, &[]) {
            Ok(next) => {
                let mut after = Failures::default();
                check_dump(&next, expect, false, &mut after);
                f.merge("after --blocking: ", after);
                seen.push(next.gil.switch_number);
            }
            Err(e) => {
                f.add(format!("after --blocking: {e}"));
                return;
            }
        }
        if !expect.gil_enabled || seen.last() > Some(&before) {
            break;
        }
    }
    if expect.gil_enabled {
        f.check(seen.last() > Some(&before), || {
            format!(
                "after --blocking the GIL never changed hands again: switch_number {before}, then {seen:?}"
            )
        });
    }
}

/// The text form: not JSON; for each thread a line with its tid and name, and for the
/// blocked ones "idle" and the reason on that line too (the name cut out first, since
/// "sleeper" and "locked" contain "sleep" and "lock").
fn check_text(pid: i32, expect: &Expect, f: &mut Failures) {
    let run = support::gilscope(["dump", "--pid", &pid.to_string()]);
    if run.code != Some(0) {
        f.add(format!("text dump failed: {run}"));
        return;
    }
    let text = &run.stdout;
    f.check(serde_json::from_str::<Value>(text).is_err(), || {
        "text dump (no --json) printed JSON".into()
    });
    for (role, info) in &expect.roles {
        let tid = info.tid.to_string();
        let header = text.lines().find(|line| {
            line.contains(&info.name)
                && line
                    .split(|c: char| !c.is_ascii_digit())
                    .any(|number| number == tid)
        });
        let Some(header) = header else {
            f.add(format!(
                "text dump has no line with thread {:?} and its tid {tid}:\n{text}",
                info.name
            ));
            continue;
        };
        if let Some((_, state, reason)) = BLOCKED.iter().find(|(r, _, _)| r == role) {
            let rest = header.replace(&info.name, "");
            f.check(rest.contains(state) && rest.contains(reason), || {
                format!(
                    "text dump: the line of {role} does not say {state} and {reason}: {header:?}"
                )
            });
        }
    }
}

// ---------------------------------------------------------------------------------------
// Error exits: one line on stderr, nothing on stdout, the documented code.

fn assert_error(run: &Run, code: i32, what: &str) {
    assert_eq!(run.code, Some(code), "{what}: {run}");
    assert!(
        support::is_one_line(&run.stderr),
        "{what}: stderr should be one line: {run}"
    );
    assert!(
        run.stdout.is_empty(),
        "{what}: stdout should be empty: {run}"
    );
}

#[test]
fn dump_of_a_missing_process_exits_3() {
    let pid = support::unused_pid();
    let run = support::dump_json(pid, &[]);
    assert_error(&run, 3, &format!("dump of unused pid {pid}"));
    assert!(
        run.stderr.contains(&pid.to_string()),
        "stderr names the pid: {run}"
    );
}

#[test]
fn dump_of_a_non_python_process_exits_5() {
    let mut cmd = Command::new("sleep");
    cmd.arg("100");
    let sleeper = Child::spawn(cmd);
    let run = support::dump_json(sleeper.pid(), &[]);
    assert_error(&run, 5, "dump of `sleep 100`");
}

#[test]
fn dump_of_an_unsupported_python_exits_6() {
    let pythons = support::unsupported_pythons();
    if pythons.is_empty() {
        println!("skipped: no unsupported (3.6/3.7) interpreter installed");
        return;
    }
    for python in &pythons {
        println!("checking unsupported Python {}", python.label());
        let target = Child::fixture(python, "idle.py", &["--max-seconds", WORKLOAD_MAX_SECONDS]);
        let run = support::dump_json(target.pid(), &[]);
        let what = format!("dump of Python {}", python.label());
        assert_error(&run, 6, &what);
        assert!(
            run.stderr.contains("3.8"),
            "{what}: stderr should name the supported versions: {run}"
        );
        assert!(
            run.stderr.contains(&python.major_minor()),
            "{what}: stderr should name the target's version: {run}"
        );
    }
}

/// Run as an unprivileged user, gilscope cannot read a root-owned process: exit 4. Needs
/// root (to switch user) and a binary that user can reach; skipped otherwise.
#[test]
fn dump_without_permission_exits_4() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    const NOBODY: u32 = 65534;

    if !nix::unistd::Uid::effective().is_root() {
        println!("skipped: not root, cannot run gilscope as another user");
        return;
    }
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_gilscope"));
    let reachable = binary
        .ancestors()
        .skip(1)
        .all(|dir| std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
        && std::fs::metadata(binary).is_ok_and(|m| m.permissions().mode() & 0o001 != 0);
    if !reachable {
        println!(
            "skipped: {} is not reachable by uid {NOBODY}",
            binary.display()
        );
        return;
    }
    let python = support::pythons().remove(0);
    let target = Child::fixture(&python, "idle.py", &["--max-seconds", WORKLOAD_MAX_SECONDS]);
    let mut cmd = support::gilscope_command(["dump", "--pid", &target.pid().to_string(), "--json"]);
    cmd.uid(NOBODY).gid(NOBODY);
    let run = support::run_command(cmd, support::COMMAND_TIMEOUT);
    assert_error(&run, 4, "dump of a root process as uid 65534");
}
