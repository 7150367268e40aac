//! Every command-line misuse gives one line on stderr and its documented exit code
//! (docs/exit-codes.md, `gilscope --help`). One test per misuse.

use crate::support::{
    self, Child, ScratchDir, assert_one_line_error, gilscope, unsupported_pythons, unused_pid,
};
use std::process::Command;

const GENERAL: i32 = 1;
const USAGE: i32 = 2;
const NO_SUCH_PROCESS: i32 = 3;
const NOT_PYTHON: i32 = 5;
const UNSUPPORTED_VERSION: i32 = 6;

/// `record --pid PID -d 1 EXTRA...` and `dump --pid PID`, for misuses both share.
fn record_and_dump(pid: &str) -> [(String, support::Run); 2] {
    [
        (
            "record".into(),
            gilscope(["record", "--pid", pid, "--duration", "1"]),
        ),
        ("dump".into(), gilscope(["dump", "--pid", pid])),
    ]
}

#[test]
fn unknown_flag() {
    let run = gilscope(["record", "--no-such-flag", "--pid", "1"]);
    assert_one_line_error(&run, USAGE, &["--no-such-flag"]);
}

#[test]
fn rate_zero() {
    let run = gilscope(["record", "--pid", "1", "--rate", "0"]);
    assert_one_line_error(&run, USAGE, &["rate"]);
}

#[test]
fn stall_ms_not_positive() {
    let run = gilscope(["record", "--pid", "1", "--stall-ms", "-3"]);
    assert_one_line_error(&run, USAGE, &["stall-ms", "positive"]);
}

#[test]
fn rate_not_a_number() {
    let run = gilscope(["record", "--pid", "1", "--rate", "abc"]);
    assert_one_line_error(&run, USAGE, &["rate", "abc"]);
}

#[test]
fn rate_too_high() {
    let run = gilscope(["record", "--pid", "1", "--rate", "1e9"]);
    assert_one_line_error(&run, USAGE, &["rate"]);
}

#[test]
fn duration_not_a_number() {
    let run = gilscope(["record", "--pid", "1", "--duration", "soon"]);
    assert_one_line_error(&run, USAGE, &["duration", "soon"]);
}

#[test]
fn duration_zero() {
    let run = gilscope(["record", "--pid", "1", "--duration", "0"]);
    assert_one_line_error(&run, USAGE, &["duration"]);
}

/// The output directory is checked before the target is touched: with a pid that does not
/// exist, the directory's error (1) still comes first, not "no such process" (3).
#[test]
fn unwritable_output_dir() {
    let pid = unused_pid().to_string();
    let run = gilscope(["record", "--pid", &pid, "--output", "/proc/forbidden/out"]);
    assert_one_line_error(&run, GENERAL, &["/proc/forbidden/out"]);
}

/// An output "directory" that is a regular file: the same error, before any sampling.
#[test]
fn output_dir_is_a_file() {
    let scratch = ScratchDir::new("misuse-output-file");
    let file = scratch.join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let pid = unused_pid().to_string();
    let run = gilscope(["record", "--pid", &pid, "--output", file.to_str().unwrap()]);
    assert_one_line_error(&run, GENERAL, &["not-a-dir"]);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "x",
        "the file was touched"
    );
}

#[test]
fn pid_zero() {
    for (command, run) in record_and_dump("0") {
        println!("{command}");
        assert_one_line_error(&run, NO_SUCH_PROCESS, &["no such process"]);
    }
}

#[test]
fn no_such_process() {
    let pid = unused_pid().to_string();
    for (command, run) in record_and_dump(&pid) {
        println!("{command}");
        assert_one_line_error(&run, NO_SUCH_PROCESS, &["no such process", &pid]);
    }
}

/// kthreadd (pid 2) where the machine has it, else any kernel thread.
fn kernel_thread() -> i32 {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let is_kernel_thread = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let flags = stat.rsplit_once(')')?.1.split_whitespace().nth(6)?;
                flags.parse::<u64>().ok()
            })
            .is_some_and(|flags| flags & PF_KTHREAD != 0)
    };
    if is_kernel_thread(2) {
        return 2;
    }
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .find(|&pid| is_kernel_thread(pid))
        .expect("no kernel thread visible in /proc (a pid namespace?)")
}

#[test]
fn pid_of_a_kernel_thread() {
    let pid = kernel_thread().to_string();
    for (command, run) in record_and_dump(&pid) {
        println!("{command}");
        assert_one_line_error(&run, NOT_PYTHON, &["not a Python process"]);
    }
}

#[test]
fn pid_of_a_program_that_is_not_python() {
    let mut cmd = Command::new("sleep");
    cmd.arg("600");
    let sleeper = Child::spawn(cmd);
    // `sleep` is exec'd when spawn returns; its maps show /usr/bin/sleep from then on.
    support::poll_until("sleep to be exec'd", support::COMMAND_TIMEOUT, || {
        std::fs::read_link(format!("/proc/{}/exe", sleeper.pid()))
            .ok()
            .filter(|exe| exe.ends_with("sleep"))
    });
    for (command, run) in record_and_dump(&sleeper.pid().to_string()) {
        println!("{command}");
        assert_one_line_error(&run, NOT_PYTHON, &["not a Python process"]);
    }
}

/// A process that has exited but is not reaped yet (a zombie): nothing is left to read, so
/// it is "no such process", not "not a Python process".
#[test]
fn pid_of_a_zombie() {
    // A forked child that exits at once, under a parent that never reaps it (SIGCHLD back
    // to its default: an ignored SIGCHLD, which children inherit, would reap it).
    const SCRIPT: &str = "import json, os, signal, time\n\
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)\n\
        pid = os.fork()\n\
        if pid == 0:\n    os._exit(0)\n\
        print('READY ' + json.dumps({'pid': pid}), flush=True)\n\
        time.sleep(600)\n";
    let python = support::pythons().pop().expect("an interpreter");
    let mut cmd = Command::new(&python.path);
    cmd.arg("-c").arg(SCRIPT);
    let parent = Child::spawn_until_ready(cmd);
    let zombie = parent.ready()["pid"].as_i64().expect("pid") as i32;
    support::poll_until(
        "the child to become a zombie",
        support::COMMAND_TIMEOUT,
        || {
            let stat = std::fs::read_to_string(format!("/proc/{zombie}/stat")).ok()?;
            (stat.rsplit_once(')')?.1.trim_start().starts_with('Z')).then_some(())
        },
    );
    for (command, run) in record_and_dump(&zombie.to_string()) {
        println!("{command}");
        assert_one_line_error(&run, NO_SUCH_PROCESS, &[&zombie.to_string()]);
    }
}

/// pyenv's 3.6 and 3.7, where installed; nothing to check otherwise.
#[test]
fn python_not_supported() {
    let old = unsupported_pythons();
    if old.is_empty() {
        println!("no Python 3.6 or 3.7 installed: nothing to check");
    }
    for python in old {
        let child = Child::fixture(&python, "idle.py", &[]);
        let pid = child.pid().to_string();
        for (command, run) in record_and_dump(&pid) {
            println!("{command} on {}", python.label());
            assert_one_line_error(
                &run,
                UNSUPPORTED_VERSION,
                &["unsupported Python version", &python.major_minor()],
            );
        }
    }
}

#[test]
fn record_without_a_target() {
    let run = gilscope(["record", "--duration", "1"]);
    assert_one_line_error(&run, USAGE, &["--pid"]);
}

#[test]
fn record_a_program_that_does_not_exist() {
    let scratch = ScratchDir::new("misuse-no-program");
    let out = scratch.join("out");
    let run = gilscope([
        "record",
        "--output",
        out.to_str().unwrap(),
        "--",
        "/nonexistent/program",
    ]);
    assert_one_line_error(&run, GENERAL, &["/nonexistent/program"]);
}
