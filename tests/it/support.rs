//! Helpers shared by the integration tests: finding interpreters, running fixture
//! workloads until they say they are ready, running the `gilscope` binary, and reading
//! `gilscope dump --json` output.
//!
//! Nothing here sleeps for a fixed time: waits are on channels with a deadline.

// Each test module uses its own subset of these helpers.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a fixture may take to print its READY line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one run of `gilscope` (or of a helper command) may take before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Debian's own interpreter: a static build (`_PyRuntime` in the executable).
pub const DEBIAN_PYTHON: &str = "/usr/bin/python3.11";
/// Where `.ci/debian-pythons` unpacks Debian unstable's static 3.13, 3.14 and 3.15
/// (`$GILSCOPE_DEBIAN_PYTHONS` moves it): `DIR/3.X/usr/bin/python3.X`.
pub const DEBIAN_UNSTABLE_PYTHONS: &str = "/opt/gilscope-pythons";

/// Debian unstable's interpreters that `.ci/debian-pythons` installed, oldest first.
pub fn debian_unstable_pythons() -> Vec<PathBuf> {
    let root = std::env::var_os("GILSCOPE_DEBIAN_PYTHONS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEBIAN_UNSTABLE_PYTHONS));
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Vec::new();
    };
    let mut found: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let minor: u32 = name.strip_prefix("3.")?.parse().ok()?;
            let python = entry.path().join(format!("usr/bin/python{name}"));
            python.is_file().then_some((minor, python))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, path)| path).collect()
}

// ---------------------------------------------------------------------------------------
// Interpreters

/// One CPython interpreter, described by itself.
#[derive(Debug, Clone)]
pub struct Interpreter {
    /// The path it is run by (as given or found; not canonicalized).
    pub path: PathBuf,
    /// `platform.python_version()`, e.g. "3.11.7".
    pub version: String,
    pub major: u32,
    pub minor: u32,
    /// Built with `Py_GIL_DISABLED` (3.13t and later).
    pub free_threaded: bool,
    /// `sys._is_gil_enabled()` (true before 3.13).
    pub gil_enabled: bool,
}

impl Interpreter {
    /// Asks the interpreter at `path` what it is. Panics if it cannot be run.
    pub fn probe(path: &Path) -> Interpreter {
        const SCRIPT: &str = "import json, platform, sys, sysconfig\n\
            print(json.dumps({'version': platform.python_version(),\n\
              'free_threaded': bool(sysconfig.get_config_var('Py_GIL_DISABLED')),\n\
              'gil_enabled': bool(getattr(sys, '_is_gil_enabled', lambda: True)())}))";
        let mut cmd = Command::new(path);
        cmd.arg("-c").arg(SCRIPT);
        let run = run_command(cmd, COMMAND_TIMEOUT);
        assert_eq!(
            run.code,
            Some(0),
            "cannot run {} to ask its version: {run}",
            path.display()
        );
        let info: Value = serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "{}: unexpected version output {:?}: {e}",
                path.display(),
                run.stdout
            )
        });
        let version = info["version"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no version in {info}", path.display()))
            .to_string();
        let (major, minor) = major_minor(&version)
            .unwrap_or_else(|| panic!("{}: cannot parse version {version:?}", path.display()));
        Interpreter {
            path: path.to_path_buf(),
            version,
            major,
            minor,
            free_threaded: info["free_threaded"].as_bool() == Some(true),
            gil_enabled: info["gil_enabled"].as_bool() != Some(false),
        }
    }

    /// "3.11.7 (/root/.pyenv/versions/3.11.7/bin/python3)".
    pub fn label(&self) -> String {
        format!("{} ({})", self.version, self.path.display())
    }

    /// "3.11"
    pub fn major_minor(&self) -> String {
        format!("{}.{}", self.major, self.minor)
    }
}

/// "3.11.7" or "3.13.0t" -> (3, 11) / (3, 13).
pub fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

/// `$PYENV_ROOT`, else `~/.pyenv`.
pub fn pyenv_root() -> Option<PathBuf> {
    if let Some(root) = std::env::var_os("PYENV_ROOT").filter(|r| !r.is_empty()) {
        return Some(PathBuf::from(root));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".pyenv"))
}

/// `bin/python3` of every pyenv install `3.X...` whose minor version `keep` accepts,
/// in version order.
fn pyenv_pythons(keep: impl Fn(u32) -> bool) -> Vec<PathBuf> {
    let Some(versions) = pyenv_root().map(|root| root.join("versions")) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(&versions) else {
        return Vec::new();
    };
    let mut found: Vec<((u32, u32), PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let (major, minor) = major_minor(&name)?;
            let python = entry.path().join("bin").join("python3");
            (major == 3 && keep(minor) && python.is_file()).then_some(((major, minor), python))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, path)| path).collect()
}

/// Keeps the first of paths that resolve to the same file.
fn dedupe(paths: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut seen = BTreeSet::new();
    paths
        .into_iter()
        .filter(|path| seen.insert(std::fs::canonicalize(path).unwrap_or_else(|_| path.clone())))
        .collect()
}

/// The interpreters to test, not yet probed: `GILSCOPE_PYTHONS` (colon-separated) if
/// set, else every pyenv `3.X` with X >= 8, Debian's static `/usr/bin/python3.11`, and
/// Debian unstable's static 3.13, 3.14 and 3.15 from [`DEBIAN_UNSTABLE_PYTHONS`].
pub fn discover_python_paths() -> Vec<PathBuf> {
    if let Some(list) = std::env::var_os("GILSCOPE_PYTHONS").filter(|l| !l.is_empty()) {
        let list = list.to_string_lossy().into_owned();
        return dedupe(
            list.split(':')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect(),
        );
    }
    let mut paths = pyenv_pythons(|minor| minor >= 8);
    if Path::new(DEBIAN_PYTHON).is_file() {
        paths.push(PathBuf::from(DEBIAN_PYTHON));
    }
    paths.extend(debian_unstable_pythons());
    dedupe(paths)
}

/// The interpreters to test, each asked for its version. Panics if there is none.
pub fn pythons() -> Vec<Interpreter> {
    let paths = discover_python_paths();
    assert!(
        !paths.is_empty(),
        "no Python interpreter found: set GILSCOPE_PYTHONS"
    );
    paths.iter().map(|path| Interpreter::probe(path)).collect()
}

/// Interpreters gilscope must refuse: pyenv 3.6 and 3.7 (possibly none).
pub fn unsupported_pythons() -> Vec<Interpreter> {
    dedupe(pyenv_pythons(|minor| minor < 8))
        .iter()
        .map(|path| Interpreter::probe(path))
        .collect()
}

/// Absolute path of a file in `fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    assert!(path.is_file(), "missing fixture {}", path.display());
    path
}

// ---------------------------------------------------------------------------------------
// Processes

/// What a finished command did.
#[derive(Debug, Clone)]
pub struct Run {
    /// Exit code; None if killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {:?}, stdout {:?}, stderr {:?}",
            self.code,
            truncate(&self.stdout, 2000),
            truncate(&self.stderr, 2000)
        )
    }
}

/// The first `max` characters of `text`, with a marker if cut.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...[{} bytes in all]", &text[..cut], text.len()),
        None => text.to_string(),
    }
}

/// Runs `cmd` (stdin closed, stdout and stderr captured) and waits at most `timeout`;
/// past that the command is killed and the test fails.
pub fn run_command(mut cmd: Command, timeout: Duration) -> Run {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let pid = child_pid(&child);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(timeout) {
        Ok(output) => output,
        Err(RecvTimeoutError::Timeout) => {
            // Not reaped yet (the waiter has not returned), so the pid is still ours.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let output = rx.recv().expect("waiter thread");
            panic!(
                "{what} did not finish within {timeout:?}; killed it. Output so far: {}",
                Run::from(output.expect("wait"))
            );
        }
        Err(RecvTimeoutError::Disconnected) => unreachable!("the waiter always sends"),
    };
    Run::from(output.unwrap_or_else(|e| panic!("waiting for {what}: {e}")))
}

impl From<std::process::Output> for Run {
    fn from(output: std::process::Output) -> Run {
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

fn child_pid(child: &std::process::Child) -> i32 {
    i32::try_from(child.id()).expect("pid fits in i32")
}

/// A `Command` for the gilscope binary under test.
pub fn gilscope_command<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gilscope"));
    cmd.args(args);
    cmd
}

/// Runs `gilscope ARGS...` to completion (bounded by [`COMMAND_TIMEOUT`]).
pub fn gilscope<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    run_command(gilscope_command(args), COMMAND_TIMEOUT)
}

/// Runs `gilscope dump --pid PID --json [EXTRA...]`.
pub fn dump_json(pid: i32, extra: &[&str]) -> Run {
    let pid = pid.to_string();
    let mut args = vec!["dump", "--pid", pid.as_str(), "--json"];
    args.extend_from_slice(extra);
    gilscope(args)
}

/// A spawned process that is killed and reaped when dropped (also when a test panics).
pub struct Child {
    child: std::process::Child,
    pid: i32,
    what: String,
    ready: Option<Value>,
    stderr: Arc<Mutex<String>>,
    /// Lines of stdout printed before the READY line.
    early_stdout: Vec<String>,
    /// Lines of stdout after the READY line, for [`Child::wait_for_line`].
    later_stdout: Option<mpsc::Receiver<String>>,
}

impl Child {
    /// Spawns `cmd` (stdin closed, stdout and stderr captured) without waiting for
    /// anything. On return the program has been exec'd.
    pub fn spawn(cmd: Command) -> Child {
        Child::start(cmd)
    }

    /// Spawns `cmd` and waits (at most [`READY_TIMEOUT`]) for a stdout line
    /// `READY <json>`; fails the test if the process exits or stays silent instead.
    pub fn spawn_until_ready(cmd: Command) -> Child {
        let mut child = Child::start(cmd);
        let stdout = child.child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel::<String>();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // After READY nobody listens any more: keep draining so the child never
                // blocks on a full pipe.
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(json) = line.strip_prefix("READY ") {
                        let value = serde_json::from_str(json).unwrap_or_else(|e| {
                            panic!("{}: bad READY line {line:?}: {e}", child.what)
                        });
                        child.ready = Some(value);
                        child.later_stdout = Some(rx);
                        return child;
                    }
                    child.early_stdout.push(line);
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{} printed no READY line within {READY_TIMEOUT:?}; stdout {:?}, stderr {:?}",
                    child.what,
                    child.early_stdout,
                    child.stderr()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = child.child.wait();
                    // The stderr reader may still be copying the last bytes; it ends at EOF.
                    panic!(
                        "{} closed stdout without a READY line ({status:?}); stdout {:?}, stderr {:?}",
                        child.what,
                        child.early_stdout,
                        child.stderr()
                    )
                }
            }
        }
    }

    /// Runs `python FIXTURE ARGS...` (the fixture by absolute path) until it is ready.
    pub fn fixture(python: &Interpreter, fixture_name: &str, args: &[&str]) -> Child {
        let mut cmd = Command::new(&python.path);
        cmd.arg(fixture(fixture_name)).args(args);
        Child::spawn_until_ready(cmd)
    }

    fn start(mut cmd: Command) -> Child {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {what}: {e}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Child {
            pid: child_pid(&child),
            child,
            what,
            ready: None,
            stderr,
            early_stdout: Vec::new(),
            later_stdout: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The JSON of the READY line (panics for a child spawned without waiting for one).
    pub fn ready(&self) -> &Value {
        self.ready
            .as_ref()
            .unwrap_or_else(|| panic!("{} was not spawned with a READY line", self.what))
    }

    /// Waits (at most [`READY_TIMEOUT`]) for a later stdout line `PREFIX <json>` (a second
    /// readiness line, e.g. from the program the child exec'd into) and returns the JSON.
    pub fn wait_for_line(&mut self, prefix: &str) -> Value {
        let lines = self
            .later_stdout
            .as_ref()
            .unwrap_or_else(|| panic!("{} was not spawned with a READY line", self.what));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(json) = line.strip_prefix(prefix).and_then(|l| l.strip_prefix(' '))
                    {
                        return serde_json::from_str(json).unwrap_or_else(|e| {
                            panic!("{}: bad {prefix} line {line:?}: {e}", self.what)
                        });
                    }
                }
                Err(e) => panic!(
                    "{} printed no {prefix} line ({e:?}); stderr {:?}",
                    self.what,
                    self.stderr()
                ),
            }
        }
    }

    /// What the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Whether the child has not exited yet (reaps it if it has).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The OS thread ids of the child's threads, from `/proc/PID/task`.
    pub fn task_ids(&self) -> BTreeSet<i64> {
        task_ids(self.pid)
    }

    /// Scheduler state letter (R, S, D, T, t, Z...) of each thread, by tid.
    pub fn task_states(&self) -> BTreeMap<i64, char> {
        self.task_ids()
            .into_iter()
            .filter_map(|tid| Some((tid, task_state(self.pid, tid)?)))
            .collect()
    }

    /// The child's state letter from `/proc/PID/stat`.
    pub fn process_state(&self) -> Option<char> {
        stat_state(&format!("/proc/{}/stat", self.pid))
    }

    /// How the child's interpreter is built, judged from its memory map: "shared" if a
    /// `libpython3*.so*` is mapped, else "static".
    pub fn python_build(&self) -> &'static str {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.pid))
            .unwrap_or_else(|e| panic!("reading maps of {}: {e}", self.what));
        let shared = maps.lines().any(|line| {
            line.split_whitespace()
                .nth(5)
                .and_then(|path| Path::new(path).file_name())
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("libpython3") && name.contains(".so"))
        });
        if shared { "shared" } else { "static" }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// OS thread ids listed in `/proc/PID/task` (empty if the process is gone).
pub fn task_ids(pid: i32) -> BTreeSet<i64> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// State letter of one thread, from `/proc/PID/task/TID/stat`.
pub fn task_state(pid: i32, tid: i64) -> Option<char> {
    stat_state(&format!("/proc/{pid}/task/{tid}/stat"))
}

/// The state field of a `stat` file: the first character after the `)` closing comm.
fn stat_state(path: &str) -> Option<char> {
    let stat = std::fs::read_to_string(path).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// A pid with no process: counts down from the kernel's pid_max.
pub fn unused_pid() -> i32 {
    let pid_max: i32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    (2..pid_max)
        .rev()
        .find(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        .expect("some pid is free")
}

/// `text` holds exactly one non-empty line (a trailing newline allowed).
pub fn is_one_line(text: &str) -> bool {
    let text = text.strip_suffix('\n').unwrap_or(text);
    !text.trim().is_empty() && !text.contains('\n')
}

// ---------------------------------------------------------------------------------------
// `gilscope dump --json` output, checked against the contract's schema while parsed.

pub const THREAD_STATES: [&str; 4] = ["gil_held", "gil_wait", "native_nogil", "idle"];
pub const IDLE_REASONS: [&str; 4] = ["sleep", "io", "lock", "other"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub function: String,
    pub file: String,
    pub line: i64,
}

impl std::fmt::Display for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}:{})", self.function, self.file, self.line)
    }
}

#[derive(Debug, Clone)]
pub struct PythonInfo {
    pub version: String,
    pub build: String,
    pub free_threaded: bool,
    pub gil: String,
}

#[derive(Debug, Clone)]
pub struct GilInfo {
    pub locked: bool,
    pub holder_tid: Option<i64>,
    /// "thread_flags" or "gil_struct".
    pub source: Option<String>,
    pub switch_number: u64,
    pub interval_us: u64,
}

#[derive(Debug, Clone)]
pub struct ThreadInfo {
    pub tid: i64,
    pub name: Option<String>,
    /// One of [`THREAD_STATES`].
    pub state: String,
    /// One of [`IDLE_REASONS`], or None.
    pub idle_reason: Option<String>,
    /// Innermost first.
    pub frames: Vec<Frame>,
}

impl ThreadInfo {
    /// "idle/sleep", "gil_held", ...
    pub fn state_label(&self) -> String {
        match &self.idle_reason {
            Some(reason) => format!("{}/{reason}", self.state),
            None => self.state.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Dump {
    pub pid: i64,
    pub python: PythonInfo,
    pub gil: GilInfo,
    pub threads: Vec<ThreadInfo>,
    pub raw: Value,
}

impl Dump {
    pub fn thread(&self, tid: i64) -> Option<&ThreadInfo> {
        self.threads.iter().find(|t| t.tid == tid)
    }

    /// One line per thread, for failure messages.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "gil locked={} holder={:?} switch={};",
            self.gil.locked, self.gil.holder_tid, self.gil.switch_number
        );
        for t in &self.threads {
            out.push_str(&format!(
                " [{} {:?} {} {}]",
                t.tid,
                t.name.as_deref().unwrap_or("?"),
                t.state_label(),
                t.frames
                    .first()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "no frames".into())
            ));
        }
        out
    }
}

/// Parses stdout of `gilscope dump --json`: exactly one JSON document with every field
/// of the contract, each of the right type and, for enums, one of the allowed values.
pub fn parse_dump(stdout: &str) -> Result<Dump, String> {
    let raw: Value = serde_json::from_str(stdout).map_err(|e| {
        format!(
            "stdout is not one JSON document ({e}): {}",
            truncate(stdout, 500)
        )
    })?;
    let python = field(&raw, "python")?;
    let gil = field(&raw, "gil")?;
    let threads = field(&raw, "threads")?
        .as_array()
        .ok_or("threads is not an array")?
        .iter()
        .enumerate()
        .map(|(i, t)| parse_thread(t).map_err(|e| format!("threads[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Dump {
        pid: int(&raw, "pid")?,
        python: PythonInfo {
            version: string(python, "version")?,
            build: one_of(python, "build", &["shared", "static"])?,
            free_threaded: boolean(python, "free_threaded")?,
            gil: string(python, "gil")?,
        },
        gil: GilInfo {
            locked: boolean(gil, "locked")?,
            holder_tid: nullable(gil, "holder_tid", Value::as_i64)?,
            source: gil
                .get("source")
                .and_then(Value::as_str)
                .map(str::to_string),
            switch_number: unsigned(gil, "switch_number")?,
            interval_us: unsigned(gil, "interval_us")?,
        },
        threads,
        raw,
    })
}

fn parse_thread(t: &Value) -> Result<ThreadInfo, String> {
    let idle_reason = nullable(t, "idle_reason", |v| v.as_str().map(str::to_string))?;
    if let Some(reason) = &idle_reason
        && !IDLE_REASONS.contains(&reason.as_str())
    {
        return Err(format!(
            "idle_reason {reason:?} is not one of {IDLE_REASONS:?}"
        ));
    }
    let frames = field(t, "frames")?
        .as_array()
        .ok_or("frames is not an array")?
        .iter()
        .enumerate()
        .map(|(i, f)| {
            Ok(Frame {
                function: string(f, "function")?,
                file: string(f, "file")?,
                line: int(f, "line")?,
            })
            .map_err(|e: String| format!("frames[{i}]: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ThreadInfo {
        tid: int(t, "tid")?,
        name: nullable(t, "name", |v| v.as_str().map(str::to_string))?,
        state: one_of(t, "state", &THREAD_STATES)?,
        idle_reason,
        frames,
    })
}

fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value, String> {
    v.get(key).ok_or_else(|| format!("missing field {key:?}"))
}

fn typed<T>(
    v: &Value,
    key: &str,
    kind: &str,
    get: impl Fn(&Value) -> Option<T>,
) -> Result<T, String> {
    let value = field(v, key)?;
    get(value).ok_or_else(|| format!("{key} is not {kind}: {value}"))
}

fn int(v: &Value, key: &str) -> Result<i64, String> {
    typed(v, key, "an integer", Value::as_i64)
}

fn unsigned(v: &Value, key: &str) -> Result<u64, String> {
    typed(v, key, "a non-negative integer", Value::as_u64)
}

fn boolean(v: &Value, key: &str) -> Result<bool, String> {
    typed(v, key, "a boolean", Value::as_bool)
}

fn string(v: &Value, key: &str) -> Result<String, String> {
    typed(v, key, "a string", |v| v.as_str().map(str::to_string))
}

fn one_of(v: &Value, key: &str, allowed: &[&str]) -> Result<String, String> {
    let s = string(v, key)?;
    if allowed.contains(&s.as_str()) {
        Ok(s)
    } else {
        Err(format!("{key} {s:?} is not one of {allowed:?}"))
    }
}

/// A field that must be present, holding null or a value `get` accepts.
fn nullable<T>(
    v: &Value,
    key: &str,
    get: impl Fn(&Value) -> Option<T>,
) -> Result<Option<T>, String> {
    let value = field(v, key)?;
    if value.is_null() {
        return Ok(None);
    }
    get(value)
        .map(Some)
        .ok_or_else(|| format!("{key} has an unexpected type: {value}"))
}

// ---------------------------------------------------------------------------------------
// XML well-formedness (for the SVGs), without a dependency.

/// What [`parse_xml`] saw in a well-formed document.
#[derive(Debug, Clone, Default)]
pub struct XmlDoc {
    /// Name of the root element, e.g. "svg".
    pub root: String,
    /// Elements in the document.
    pub elements: usize,
    /// Character data (entities decoded, CDATA excluded), each with the name of the element
    /// that directly contains it, in document order.
    pub texts: Vec<(String, String)>,
}

impl XmlDoc {
    /// Text directly inside elements named `element`.
    pub fn texts_of<'a>(&'a self, element: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.texts
            .iter()
            .filter(move |(e, _)| e == element)
            .map(|(_, t)| t.as_str())
    }

    /// All character data, joined by newlines.
    pub fn all_text(&self) -> String {
        self.texts
            .iter()
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Checks that `text` is a well-formed XML document: one root element, every tag closed
/// in order, attributes quoted and not repeated, `<` and `&` only as markup or valid
/// references, comments, CDATA sections, processing instructions and a DOCTYPE (with an
/// optional internal subset) where XML allows them. Not a validating parser.
pub fn parse_xml(text: &str) -> Result<XmlDoc, String> {
    let mut doc = XmlDoc::default();
    let mut open: Vec<String> = Vec::new();
    let mut seen_root = false;
    let mut rest = text;
    let at = |rest: &str| text.len() - rest.len();
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            // Trailing character data.
            if !open.is_empty() {
                return Err(format!(
                    "unclosed <{}> at end of document",
                    open.join("> <")
                ));
            }
            if !rest.trim().is_empty() {
                return Err(format!("text after the root element at byte {}", at(rest)));
            }
            break;
        };
        let (chars, markup) = rest.split_at(lt);
        if !chars.is_empty() {
            let decoded = decode_chars(chars).map_err(|e| format!("{e} at byte {}", at(rest)))?;
            match open.last() {
                Some(element) => doc.texts.push((element.clone(), decoded)),
                None if chars.trim().is_empty() => {}
                None => {
                    return Err(format!(
                        "text outside the root element at byte {}",
                        at(rest)
                    ));
                }
            }
        }
        rest = markup;
        let here = at(rest);
        if let Some(body) = rest.strip_prefix("<!--") {
            let end = body
                .find("-->")
                .ok_or_else(|| format!("unterminated comment at byte {here}"))?;
            if body[..end].contains("--") || body[..end].ends_with('-') {
                return Err(format!("'--' inside a comment at byte {here}"));
            }
            rest = &body[end + 3..];
        } else if let Some(body) = rest.strip_prefix("<![CDATA[") {
            if open.is_empty() {
                return Err(format!("CDATA outside the root element at byte {here}"));
            }
            let end = body
                .find("]]>")
                .ok_or_else(|| format!("unterminated CDATA at byte {here}"))?;
            rest = &body[end + 3..];
        } else if let Some(body) = rest.strip_prefix("<?") {
            let end = body
                .find("?>")
                .ok_or_else(|| format!("unterminated processing instruction at byte {here}"))?;
            let target = body[..end].split_whitespace().next().unwrap_or("");
            if !is_xml_name(target) {
                return Err(format!(
                    "bad processing instruction target {target:?} at byte {here}"
                ));
            }
            if target.eq_ignore_ascii_case("xml") && here != 0 {
                return Err(format!("XML declaration not at the start (byte {here})"));
            }
            rest = &body[end + 2..];
        } else if let Some(body) = rest.strip_prefix("<!DOCTYPE") {
            if seen_root || !open.is_empty() {
                return Err(format!("DOCTYPE after the root element at byte {here}"));
            }
            rest =
                skip_doctype(body).ok_or_else(|| format!("unterminated DOCTYPE at byte {here}"))?;
        } else if let Some(body) = rest.strip_prefix("</") {
            let end = body
                .find('>')
                .ok_or_else(|| format!("unterminated end tag at byte {here}"))?;
            let name = body[..end].trim_end();
            match open.pop() {
                Some(expected) if expected == name => {}
                Some(expected) => {
                    return Err(format!("</{name}> closes <{expected}> at byte {here}"));
                }
                None => return Err(format!("</{name}> with nothing open at byte {here}")),
            }
            rest = &body[end + 1..];
        } else {
            let body = &rest[1..];
            let (name, after, self_closing) =
                parse_start_tag(body).map_err(|e| format!("{e} at byte {here}"))?;
            if open.is_empty() {
                if seen_root {
                    return Err(format!("a second root element <{name}> at byte {here}"));
                }
                seen_root = true;
                doc.root = name.to_string();
            }
            doc.elements += 1;
            if !self_closing {
                open.push(name.to_string());
            }
            rest = after;
        }
    }
    if !open.is_empty() {
        return Err(format!(
            "unclosed <{}> at end of document",
            open.join("> <")
        ));
    }
    if !seen_root {
        return Err("no root element".to_string());
    }
    Ok(doc)
}

fn is_xml_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | ':' | '.' | '-'))
}

/// Character data with its references decoded; a bare `&` or `>` after `]]` is an error.
fn decode_chars(chars: &str) -> Result<String, String> {
    if chars.contains("]]>") {
        return Err("']]>' in character data".to_string());
    }
    let mut out = String::with_capacity(chars.len());
    let mut rest = chars;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after
            .find(';')
            .ok_or_else(|| "'&' that starts no reference".to_string())?;
        let entity = &after[..semi];
        let decoded = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| format!("unknown reference &{entity};"))?
            }
        };
        out.push(decoded);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses `name attr="v" ...>` or `.../>`; returns the name, what follows the tag and
/// whether it closed itself.
fn parse_start_tag(body: &str) -> Result<(&str, &str, bool), String> {
    let name_end = body
        .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
        .ok_or("unterminated start tag")?;
    let name = &body[..name_end];
    if !is_xml_name(name) {
        return Err(format!("bad element name {name:?}"));
    }
    let mut rest = &body[name_end..];
    let mut attributes: Vec<&str> = Vec::new();
    loop {
        let trimmed = rest.trim_start();
        let had_space = trimmed.len() != rest.len();
        rest = trimmed;
        if let Some(after) = rest.strip_prefix("/>") {
            return Ok((name, after, true));
        }
        if let Some(after) = rest.strip_prefix('>') {
            return Ok((name, after, false));
        }
        if rest.is_empty() {
            return Err(format!("unterminated start tag <{name}"));
        }
        if !had_space {
            return Err(format!("no space before an attribute of <{name}>"));
        }
        let eq = rest
            .find('=')
            .ok_or_else(|| format!("attribute without a value in <{name}>"))?;
        let attr = rest[..eq].trim_end();
        if !is_xml_name(attr) {
            return Err(format!("bad attribute name {attr:?} in <{name}>"));
        }
        if attributes.contains(&attr) {
            return Err(format!("attribute {attr} twice in <{name}>"));
        }
        attributes.push(attr);
        let value = rest[eq + 1..].trim_start();
        let quote = value
            .chars()
            .next()
            .filter(|q| *q == '"' || *q == '\'')
            .ok_or_else(|| format!("unquoted value of {attr} in <{name}>"))?;
        let close = value[1..]
            .find(quote)
            .ok_or_else(|| format!("unterminated value of {attr} in <{name}>"))?;
        let raw = &value[1..1 + close];
        if raw.contains('<') {
            return Err(format!("'<' in the value of {attr} in <{name}>"));
        }
        decode_chars(raw).map_err(|e| format!("{e} in the value of {attr} in <{name}>"))?;
        rest = &value[close + 2..];
    }
}

/// Skips a DOCTYPE's body (after `<!DOCTYPE`), quoted strings and an internal subset
/// included; returns what follows it.
fn skip_doctype(body: &str) -> Option<&str> {
    let mut quote: Option<char> = None;
    let mut depth = 0usize;
    for (i, c) in body.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[') => depth += 1,
            (None, ']') => depth = depth.checked_sub(1)?,
            (None, '>') if depth == 0 => return Some(&body[i + 1..]),
            _ => {}
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// Waiting on conditions, processes in the background, scratch directories (faults and
// CLI-misuse tests).

/// Polls `check` until it returns `Some`, at most `timeout`; panics naming `what` past that.
/// Between polls it sleeps briefly: a polling interval, not a wait for something to happen.
pub fn poll_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(2));
    }
}

impl Child {
    /// Waits (at most `timeout`) for the child to exit and returns its status; fails the
    /// test if it is still running then (it is killed on drop). Also waits (at most 10 s:
    /// a grandchild may hold the pipe) for the stderr reader to reach the end, so that
    /// [`Child::stderr`] holds everything the child wrote.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let what = self.what.clone();
        let status = poll_until(&format!("{what} to exit"), timeout, || {
            self.child.try_wait().expect("try_wait")
        });
        // The reader thread holds the other reference until it has read EOF.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&self.stderr) > 1 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(2));
        }
        status
    }

    /// Sends `signal` to the child.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), signal)
            .unwrap_or_else(|e| panic!("kill -{signal} {}: {e}", self.what));
    }
}

/// Whether the gilscope process `profiler` is sampling `target`: it keeps the target's
/// /proc/PID/task/TID/syscall files open from its first sample on (docs/ARCHITECTURE.md).
pub fn is_sampling(profiler: i32, target: i32) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{profiler}/fd")) else {
        return false;
    };
    let needle = format!("/proc/{target}/task/");
    fds.filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|link| link.to_string_lossy().contains(&needle))
}

/// Waits until the gilscope process `profiler` samples `target` (see [`is_sampling`]).
pub fn wait_until_sampling(profiler: &mut Child, target: i32) {
    poll_until(
        &format!("gilscope (pid {}) to sample pid {target}", profiler.pid()),
        COMMAND_TIMEOUT,
        || {
            assert!(
                profiler.is_running(),
                "gilscope exited before sampling: {}",
                profiler.stderr()
            );
            is_sampling(profiler.pid(), target).then_some(())
        },
    )
}

/// How many read syscalls a process has made (`syscr` in /proc/PID/io).
pub fn read_syscalls(pid: i32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("syscr:"))?
        .trim()
        .parse()
        .ok()
}

/// Waits until the gilscope process `profiler` has sampled `target` several times: it
/// samples (see [`is_sampling`]), then has made `reads` more read syscalls (each sample
/// preads every thread's /proc files).
pub fn wait_for_samples(profiler: &mut Child, target: i32, reads: u64) {
    wait_until_sampling(profiler, target);
    wait_for_reads(profiler, reads);
}

/// Waits until the gilscope process `profiler` has made `reads` more read syscalls from
/// now (each sample preads every thread's /proc files).
pub fn wait_for_reads(profiler: &mut Child, reads: u64) {
    let pid = profiler.pid();
    let start = read_syscalls(pid).expect("/proc/PID/io of gilscope");
    poll_until(
        &format!("gilscope (pid {pid}) to take samples"),
        COMMAND_TIMEOUT,
        || {
            assert!(
                profiler.is_running(),
                "gilscope exited: {}",
                profiler.stderr()
            );
            (read_syscalls(pid)? >= start + reads).then_some(())
        },
    )
}

/// A line of `/proc/PID/status` ("TracerPid", "Uid", ...), without the key.
pub fn status_field(pid: i32, tid: i64, key: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .map(|value| value.trim().to_string())
}

/// CPU time a thread has used, in ns (`/proc/PID/task/TID/schedstat`).
pub fn thread_cpu_ns(pid: i32, tid: i64) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A fresh directory under the system temp dir, removed when dropped.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(name: &str) -> ScratchDir {
        let path = std::env::temp_dir().join(format!("gilscope-it-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create scratch dir");
        ScratchDir(path)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads `DIR/report.json`.
pub fn read_report(dir: &Path) -> Value {
    let path = dir.join("report.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Checks that a gilscope run failed with `code` and exactly one line on stderr (nothing on
/// stdout) that contains every one of `mentions` (case-insensitive).
pub fn assert_one_line_error(run: &Run, code: i32, mentions: &[&str]) {
    assert_eq!(run.code, Some(code), "wrong exit code: {run}");
    assert!(
        is_one_line(&run.stderr),
        "the error is not one line ({} lines): {run}",
        run.stderr.lines().count()
    );
    assert!(run.stdout.is_empty(), "unexpected stdout: {run}");
    let lower = run.stderr.to_lowercase();
    for word in mentions {
        assert!(
            lower.contains(&word.to_lowercase()),
            "the error does not mention {word:?}: {run}"
        );
    }
}

/// Taken exclusively by tests whose figures need the CPU (recordings, accuracy checks),
/// shared by the others that record.
static MACHINE: RwLock<()> = RwLock::new(());

pub enum MachineGuard {
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
}

pub fn machine(exclusive: bool) -> MachineGuard {
    if exclusive {
        MachineGuard::Exclusive(MACHINE.write().unwrap_or_else(|e| e.into_inner()))
    } else {
        MachineGuard::Shared(MACHINE.read().unwrap_or_else(|e| e.into_inner()))
    }
}
