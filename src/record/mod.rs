//! `gilscope record`: sample a process (and optionally its children) at a fixed rate until
//! a duration passes, Ctrl-C, or the target exits; then hand the counts to the writers.

mod children;
mod exec;
mod launch;
pub mod schedule;
mod signals;
mod window;

use crate::error::Error;
use crate::model::recording::{ExecCounts, Recording};
use crate::process::maps::{ProgramImage, is_alive, program_path};
use crate::profile::{Aggregator, RunInfo};
use crate::sample::{Sample, SampleError, Sampler};
use anyhow::Result;
use launch::Launched;
use schedule::{Schedule, become_sampler, sleep_until};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    Pid(i32),
    Command(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct RecordConfig {
    pub target: TargetSpec,
    pub duration: Option<Duration>,
    pub rate_hz: f64,
    pub blocking: bool,
    pub subprocesses: bool,
    /// Keep the timeline of state changes (for trace.json); it grows with the recording.
    pub keep_timeline: bool,
    /// Show a progress line on stderr (only when stderr is a terminal).
    pub progress: bool,
    /// An event loop's stretch of running code longer than this (ms) is a stall.
    pub stall_ms: f64,
    /// 3.15+: read /proc for the threads the GIL flags settle too, to check the inference.
    pub verify_flags: bool,
    /// `--push`: send every window's profile to a Pyroscope server.
    pub push: Option<crate::push::PushConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Duration,
    Interrupted,
    TargetExited,
    /// The target (given by pid) exec'd into a program gilscope cannot sample (not Python,
    /// an unsupported version, no permission); what ran before is reported. An exec into a
    /// Python program is followed and does not stop the recording.
    TargetExec,
    /// Reading the target failed in a way retrying cannot fix (e.g. permission lost).
    Failed,
}

impl StopReason {
    pub fn describe(self) -> &'static str {
        match self {
            StopReason::Duration => "the duration elapsed",
            StopReason::Interrupted => "interrupted (Ctrl-C)",
            StopReason::TargetExited => "the target exited",
            StopReason::TargetExec => "the target called exec()",
            StopReason::Failed => "sampling failed",
        }
    }
}

pub struct RecordOutcome {
    pub recording: Recording,
    pub stop: StopReason,
    /// The target was given by --pid (its exit ends the recording early, an error for CI).
    pub attached_by_pid: bool,
    /// What `--push` got to the server.
    pub push: Option<crate::model::report::PushCounts>,
}

/// How long a launched program may take to become a Python process with a live interpreter.
const LAUNCH_ATTACH_TIMEOUT: Duration = Duration::from_secs(10);
/// How often thread names are re-read (new threads are named as they appear).
const NAME_REFRESH: Duration = Duration::from_secs(2);
const CHILD_SCAN: Duration = Duration::from_millis(250);
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// How often the target is checked for an exec() while its samples succeed (samples are
/// counted once a check after them finds the same program).
const EXEC_CHECK: Duration = Duration::from_millis(50);

pub fn record(config: &RecordConfig) -> Result<RecordOutcome> {
    signals::install();
    let mut launched = match &config.target {
        TargetSpec::Command(argv) => Some(Launched::start(argv)?),
        TargetSpec::Pid(_) => None,
    };
    let result = record_running(config, launched.as_mut());
    if let Some(program) = launched.as_mut() {
        program.stop(Duration::from_secs(3));
    }
    result
}

fn record_running(
    config: &RecordConfig,
    mut launched: Option<&mut Launched>,
) -> Result<RecordOutcome> {
    let pid = match (&config.target, launched.as_deref()) {
        (_, Some(program)) => program.pid(),
        (TargetSpec::Pid(pid), None) => *pid,
        (TargetSpec::Command(_), None) => unreachable!("a command is launched before recording"),
    };
    let target = match launched.as_deref_mut() {
        Some(program) => attach_launched(program)?,
        None => Sampler::attach(pid)?,
    };
    let command = match &config.target {
        TargetSpec::Command(argv) => argv.clone(),
        TargetSpec::Pid(pid) => command_line(*pid),
    };
    // After the launch, so that the program inherits none of the sampler's settings.
    let sampler_cpus = become_sampler(pid);
    let mut main = Profiled::new(target, command, config.keep_timeline);
    main.aggregator.set_stall_threshold_ms(config.stall_ms);
    main.target.set_verify_flags(config.verify_flags);
    let mut session = Session::new(config, main);
    session.sampler_cpus = sampler_cpus;
    let stop = session.run(launched)?;
    let push = session.finish_push();
    Ok(RecordOutcome {
        recording: session.finish(stop),
        stop,
        attached_by_pid: matches!(config.target, TargetSpec::Pid(_)),
        push,
    })
}

/// Attaches to a program gilscope just started, once its interpreter is up.
fn attach_launched(program: &mut Launched) -> Result<Sampler> {
    let pid = program.pid();
    let give_up = Instant::now() + LAUNCH_ATTACH_TIMEOUT;
    let mut wait = Duration::from_millis(1);
    loop {
        if program.has_exited() {
            return Err(Error::ProcessExited { pid }.into());
        }
        match Sampler::attach(pid) {
            Ok(mut target) => {
                if target.interpreter_started() {
                    return Ok(target);
                }
                if Instant::now() >= give_up {
                    return Err(anyhow::anyhow!(
                        "the Python interpreter in process {pid} did not start within 10 s"
                    ));
                }
            }
            Err(e) if Instant::now() >= give_up => return Err(e),
            Err(_) => {}
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_millis(50));
    }
}

/// One process being recorded.
struct Profiled {
    target: Sampler,
    aggregator: Aggregator,
    command: Vec<String>,
    torn: u64,
    missed: u64,
    /// When the recording of this process began.
    started: Instant,
    /// When the program sampled now was attached (after an exec(), later than `started`).
    program_started: Instant,
    ended: Option<Instant>,
    /// Why sampling had to stop, when it failed.
    failure: Option<String>,
    /// The program image attached to: exec() replaces it.
    image: Option<ProgramImage>,
    /// The target exec'd into a program gilscope cannot sample (not Python, an unsupported
    /// version, no permission): its path. Nothing more is sampled of this process.
    exec: Option<String>,
    names_read: Option<Instant>,
    /// The programs that ran before the last exec(), resolved and folded into one.
    earlier: Option<Recording>,
    /// Sampled time and samples (taken or torn) of each program, for the missed deadlines.
    programs: Vec<(f64, u64)>,
    /// Each exec() seen, in order.
    execs: Vec<ExecCounts>,
    /// Since the last exec(), until the new program's interpreter is attached.
    awaiting: Option<exec::Awaiting>,
    /// `--push`: the window's counts of the programs before an exec(), not pushed yet.
    window_before_exec: Option<Recording>,
    /// When a check last found the program attached to (see [`Profiled::confirm_program`]).
    confirmed_at: Instant,
    /// Samples taken since then.
    unconfirmed: Vec<Sample>,
    /// What the sampler released on the latest tick (kept for its capacity).
    released: Vec<Sample>,
}

impl Profiled {
    fn new(target: Sampler, command: Vec<String>, keep_timeline: bool) -> Self {
        let image = ProgramImage::of(target.pid);
        let now = Instant::now();
        Profiled {
            target,
            aggregator: if keep_timeline {
                Aggregator::with_timeline()
            } else {
                Aggregator::default()
            },
            command,
            torn: 0,
            missed: 0,
            started: now,
            program_started: now,
            ended: None,
            failure: None,
            image,
            exec: None,
            names_read: None,
            earlier: None,
            programs: Vec::new(),
            execs: Vec::new(),
            awaiting: None,
            window_before_exec: None,
            confirmed_at: now,
            unconfirmed: Vec::new(),
            released: Vec::new(),
        }
    }

    fn alive(&self) -> bool {
        self.ended.is_none()
    }

    /// Takes and aggregates one sample; a gone process is marked ended, a failure recorded
    /// (what was sampled so far is kept either way). After an exec() it looks for the new
    /// program's interpreter instead.
    fn sample(&mut self, blocking: bool) {
        if self.awaiting.is_some() {
            self.follow_exec();
            return;
        }
        if self.exec.is_some() {
            return;
        }
        let mut released = std::mem::take(&mut self.released);
        let result = self.target.resolved_sample(true, blocking, &mut released);
        if (result.is_err() || self.confirmed_at.elapsed() >= EXEC_CHECK) && !self.confirm_program()
        {
            self.on_exec(released);
            return;
        }
        match result {
            Ok(()) => {
                self.refresh_names_if_due();
                for sample in released.drain(..) {
                    self.add_unless_unconfirmed(sample);
                }
                self.released = released;
            }
            Err(SampleError::Torn) => self.torn += 1,
            Err(SampleError::Gone) => self.ended = Some(Instant::now()),
            Err(SampleError::Fatal(e)) => {
                self.failure = Some(format!("{e:#}"));
                self.ended = Some(Instant::now());
            }
        }
    }

    /// Whether the target still runs the program attached to (a read of /proc/PID/auxv: an
    /// open, a read and a close, so not after every sample). If it does, every sample taken
    /// so far is confirmed and counted.
    fn confirm_program(&mut self) -> bool {
        let checked_at = Instant::now();
        if self
            .image
            .as_ref()
            .is_some_and(|image| image.replaced_in(self.target.pid))
        {
            return false;
        }
        self.confirmed_at = checked_at;
        let mut unconfirmed = std::mem::take(&mut self.unconfirmed);
        for sample in unconfirmed.drain(..) {
            self.count(sample);
        }
        self.unconfirmed = unconfirmed;
        true
    }

    /// Counts a sample and hands it back to the sampler for reuse.
    fn count(&mut self, sample: Sample) {
        self.aggregator.add(&sample);
        self.target.recycle(sample);
    }

    /// Counts a sample taken before the last check that the program is the same; holds back
    /// a later one until the next check. A static, non-PIE interpreter exec'd again has its
    /// `_PyRuntime` at the same address, so reads of the new image can succeed: such samples
    /// must not be counted as the old program's.
    fn add_unless_unconfirmed(&mut self, sample: Sample) {
        if sample.time <= self.confirmed_at {
            self.count(sample);
        } else {
            self.unconfirmed.push(sample);
        }
    }

    /// The target called exec(): the samples taken before the last check that found the old
    /// program are counted (resolved with its code tables and names), later ones dropped,
    /// and the new image is looked for from now on. `released`: what the sampler gave back
    /// on this tick.
    fn on_exec(&mut self, released: Vec<Sample>) {
        let at = Instant::now();
        let held = self.target.last_samples();
        let taken = std::mem::take(&mut self.unconfirmed)
            .into_iter()
            .chain(released)
            .chain(held);
        for sample in taken.filter(|s| s.time <= self.confirmed_at) {
            self.aggregator.add(&sample);
        }
        self.close_program(at);
        self.expect_program(at);
    }

    /// A new image: its exec entry, and the wait for its interpreter.
    fn expect_program(&mut self, at: Instant) {
        let pid = self.target.pid;
        self.image = ProgramImage::of(pid);
        self.execs.push(ExecCounts {
            at_s: at.duration_since(self.started).as_secs_f64(),
            program: program_path(pid),
            command: command_line(pid),
            python: None,
            interpreter: None,
            samples: 0,
            note: String::new(),
        });
        self.awaiting = Some(exec::Awaiting::new(at));
    }

    /// One try (bounded, backing off) at attaching to the program the target exec'd into.
    fn follow_exec(&mut self) {
        let pid = self.target.pid;
        let now = Instant::now();
        let Some(awaiting) = self.awaiting.as_mut() else {
            return;
        };
        if !is_alive(pid) {
            self.awaiting = None;
            self.ended = Some(now);
            if let Some(entry) = self.execs.last_mut() {
                entry.note = "it exited before its interpreter could be attached".to_string();
            }
            return;
        }
        let Some(image) = self.image.as_ref() else {
            // Read in the middle of the exec: the new image is settled now, or next time.
            self.image = ProgramImage::of(pid);
            return;
        };
        if image.replaced_in(pid) {
            // A wrapper (a shell, `env`) that execs again: the next program is the one.
            if let Some(entry) = self.execs.last_mut() {
                entry.note = "it called exec() again before an interpreter was found".to_string();
            }
            self.expect_program(now);
            return;
        }
        match awaiting.attempt(pid) {
            exec::Attempt::Waiting => {}
            exec::Attempt::Attached(target) => {
                self.awaiting = None;
                self.target = *target;
                self.program_started = now;
                self.confirmed_at = now;
                self.names_read = None;
                if let Some(entry) = self.execs.last_mut() {
                    entry.program = program_path(pid);
                    entry.command = command_line(pid);
                    let python = self.target.runtime().python_info(None);
                    entry.python = Some(python.version.clone());
                    entry.interpreter = Some(python);
                    entry.note = "followed: the new interpreter was sampled".to_string();
                }
            }
            exec::Attempt::GaveUp(why) => {
                self.awaiting = None;
                let entry = self.execs.last_mut().expect("an exec is awaited");
                entry.program = program_path(pid);
                entry.command = command_line(pid);
                entry.note = format!("not followed: {why}");
                self.exec = Some(entry.program.clone());
            }
        }
    }

    /// Resolves what was sampled of the current program (up to `end`) and folds it into
    /// [`Profiled::earlier`]; the aggregator starts afresh for the next program.
    fn close_program(&mut self, end: Instant) {
        let fresh = self.aggregator.empty_like();
        let mut a = std::mem::replace(&mut self.aggregator, fresh);
        if let Some(window) = a.take_window() {
            let resolved = self.program_recording(&window, end);
            match self.window_before_exec.as_mut() {
                Some(kept) => exec::append_program(kept, resolved),
                None => self.window_before_exec = Some(resolved),
            }
        }
        let program = self.program_recording(&a, end);
        self.programs
            .push((program.duration_s, program.samples + program.torn_samples));
        self.torn = 0;
        if let Some(entry) = self.execs.last_mut().filter(|e| e.python.is_some()) {
            entry.samples = program.samples;
            entry.interpreter = Some(program.python.clone());
        }
        match self.earlier.as_mut() {
            Some(earlier) => exec::append_program(earlier, program),
            None => self.earlier = Some(program),
        }
    }

    /// The counts of `a` as a recording of the program attached now, from its start to
    /// `end` (frames resolved with its code tables, threads named by its `threading`).
    fn program_recording(&self, a: &Aggregator, end: Instant) -> Recording {
        let run = RunInfo {
            command: self.command.clone(),
            duration_s: end
                .saturating_duration_since(self.program_started)
                .as_secs_f64(),
            torn_samples: self.torn,
            cpus: cpus_of(self.target.pid),
            ..RunInfo::default()
        };
        a.recording(&self.target, run)
    }

    /// New threads are named as they appear (see `Sampler::sample`); this re-reads every
    /// name now and then, for threads renamed while they run.
    fn refresh_names_if_due(&mut self) {
        let due = self
            .names_read
            .is_none_or(|at| at.elapsed() >= NAME_REFRESH);
        if due {
            self.target.refresh_names();
            self.names_read = Some(Instant::now());
        }
    }

    fn into_recording(
        mut self,
        config: &RecordConfig,
        stop: StopReason,
        now: Instant,
        children: Vec<Recording>,
    ) -> Recording {
        let end = self.ended.unwrap_or(now);
        if self.awaiting.is_none() && self.exec.is_none() {
            if self.confirm_program() {
                for last in self.target.last_samples() {
                    self.aggregator.add(&last);
                }
                self.close_program(end);
            } else {
                self.on_exec(Vec::new());
            }
        }
        if let Some(awaiting) = self.awaiting.take()
            && let Some(entry) = self.execs.last_mut().filter(|e| e.note.is_empty())
        {
            entry.note = awaiting.unfinished();
        }
        let mut rec = self.earlier.take().expect("the first program was attached");
        // Deadlines that fell after the last one scheduled (the loop ended first) count too.
        let short: u64 = self
            .programs
            .iter()
            .map(|&(seconds, taken)| ((seconds * config.rate_hz) as u64).saturating_sub(taken))
            .sum();
        rec.missed_samples = self.missed.max(short);
        rec.requested_rate_hz = config.rate_hz;
        rec.stop_reason = self.stop_reason(stop);
        rec.execs = std::mem::take(&mut self.execs);
        rec.children = children;
        rec
    }

    fn stop_reason(&self, stop: StopReason) -> String {
        let base = match (&self.failure, self.ended, &self.exec) {
            (Some(failure), _, _) => format!("sampling failed: {failure}"),
            (None, Some(_), _) => StopReason::TargetExited.describe().to_string(),
            (None, None, Some(program)) if stop == StopReason::TargetExec => format!(
                "the target called exec() and now runs {program}, which gilscope cannot \
                 sample; the recording covers the Python program before the exec"
            ),
            (None, None, _) => stop.describe().to_string(),
        };
        if self.execs.is_empty() {
            base
        } else {
            format!("{base}; {}", exec::describe(&self.execs))
        }
    }
}

struct Session<'a> {
    config: &'a RecordConfig,
    main: Profiled,
    children: children::Children,
    progress: Option<Progress>,
    windows: Option<window::Windows>,
    /// See [`Recording::sampler_cpus`].
    sampler_cpus: Option<Vec<usize>>,
}

impl<'a> Session<'a> {
    fn new(config: &'a RecordConfig, mut main: Profiled) -> Self {
        let progress = (config.progress && std::io::stderr().is_terminal()).then(Progress::new);
        let mut children = children::Children::new(main.target.pid, config.keep_timeline);
        children.stall_ms = config.stall_ms;
        children.verify_flags = config.verify_flags;
        let windows = config
            .push
            .as_ref()
            .map(|push| window::Windows::start(config, push, &mut main, &mut children));
        Session {
            config,
            main,
            children,
            progress,
            windows,
            sampler_cpus: None,
        }
    }

    /// Pushes the last window and waits (a bounded time) for the sender.
    fn finish_push(&mut self) -> Option<crate::model::report::PushCounts> {
        let windows = self.windows.take()?;
        // Samples still waiting for an exec() check go into the last window too.
        for process in std::iter::once(&mut self.main).chain(self.children.profiled_mut()) {
            if process.awaiting.is_none() && process.exec.is_none() {
                process.confirm_program();
            }
        }
        Some(windows.finish(self.config, &mut self.main, &mut self.children))
    }

    fn run(&mut self, mut launched: Option<&mut Launched>) -> Result<StopReason> {
        let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let seed = std::process::id() as u64
            ^ clock.map_or(0, |d| d.as_nanos() as u64)
            ^ 0x9e37_79b9_7f4a_7c15;
        let mut schedule = Schedule::new(self.config.rate_hz, seed);
        let mut last_scan = Instant::now();
        let stop = loop {
            if signals::interrupted() {
                break StopReason::Interrupted;
            }
            if self
                .config
                .duration
                .is_some_and(|d| self.main.started.elapsed() >= d)
            {
                break StopReason::Duration;
            }
            let deadline = schedule.next_deadline(Instant::now());
            sleep_until(deadline);
            self.main.sample(self.config.blocking);
            self.children.sample_all(self.config.blocking);
            if let Some(windows) = self.windows.as_mut() {
                windows.tick(self.config, &mut self.main, &mut self.children);
            }
            if self.main.failure.is_some() {
                break StopReason::Failed;
            }
            // A program gilscope started is waited for (its lifetime is the recording's);
            // one attached by pid is left alone from here.
            if self.main.exec.is_some() && launched.is_none() {
                break StopReason::TargetExec;
            }
            if !self.main.alive() || launched.as_deref_mut().is_some_and(Launched::has_exited) {
                self.main.ended.get_or_insert_with(Instant::now);
                break StopReason::TargetExited;
            }
            if self.config.subprocesses && last_scan.elapsed() >= CHILD_SCAN {
                self.children.discover();
                last_scan = Instant::now();
            }
            if let Some(progress) = self.progress.as_mut() {
                progress.show(&self.main);
            }
        };
        self.main.missed = schedule.missed;
        if let Some(progress) = self.progress.take() {
            progress.clear();
        }
        Ok(stop)
    }

    fn finish(self, stop: StopReason) -> Recording {
        let now = Instant::now();
        let config = self.config;
        let sampler_cpus = self.sampler_cpus;
        let children = self
            .children
            .into_profiled()
            .into_iter()
            .map(|c| Recording {
                sampler_cpus: sampler_cpus.clone(),
                ..c.into_recording(config, stop, now, Vec::new())
            })
            .collect();
        Recording {
            sampler_cpus,
            ..self.main.into_recording(config, stop, now, children)
        }
    }
}

/// A one-line status on a terminal, redrawn in place.
struct Progress {
    shown: Instant,
}

impl Progress {
    fn new() -> Self {
        Progress {
            shown: Instant::now(),
        }
    }

    fn show(&mut self, p: &Profiled) {
        if self.shown.elapsed() < PROGRESS_EVERY {
            return;
        }
        self.shown = Instant::now();
        let a = &p.aggregator;
        let held = crate::profile::figures::ratio(a.gil().held, a.samples) * 100.0;
        let line = match &p.exec {
            Some(program) => format!(
                "gilscope: pid {} exec'd {program}, which gilscope cannot sample | {:.1} s | \
                 waiting for it to exit | Ctrl-C to stop",
                p.target.pid,
                p.started.elapsed().as_secs_f64()
            ),
            None => format!(
                "gilscope: recording pid {} | {:.1} s | {} samples | GIL held {held:.0}% | Ctrl-C to stop",
                p.target.pid,
                p.started.elapsed().as_secs_f64(),
                a.samples + p.earlier.as_ref().map_or(0, |e| e.samples)
            ),
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K{line}");
        let _ = err.flush();
    }

    fn clear(self) {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K");
        let _ = err.flush();
    }
}

/// The target's argv from /proc/PID/cmdline.
fn command_line(pid: i32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// CPUs the target may run on (its affinity mask), which bounds real parallelism.
fn cpus_of(pid: i32) -> u32 {
    nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(pid))
        .map(|set| crate::process::maps::cpus_in(&set).count() as u32)
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32))
}
