//! `gilscope record`: sample a process (and optionally its children) at a fixed rate until
//! a duration passes, Ctrl-C, or the target exits; then hand the counts to the writers.

mod children;
mod launch;
pub mod schedule;
mod signals;
mod window;

use crate::error::Error;
use crate::model::recording::Recording;
use crate::profile::{Aggregator, RunInfo};
use crate::sample::{SampleError, Sampler};
use anyhow::Result;
use launch::Launched;
use schedule::{Schedule, sample_on_time, sleep_until, tighten_timer_slack};
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
    /// The target replaced its program with exec(); what ran before it is reported.
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

pub fn record(config: &RecordConfig) -> Result<RecordOutcome> {
    signals::install();
    tighten_timer_slack();
    sample_on_time();
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
    let mut main = Profiled::new(target, command, config.keep_timeline);
    main.aggregator.set_stall_threshold_ms(config.stall_ms);
    main.target.set_verify_flags(config.verify_flags);
    let mut session = Session::new(config, main);
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
                if target
                    .walker
                    .read(false)
                    .is_ok_and(|s| !s.threads.is_empty())
                {
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
    started: Instant,
    ended: Option<Instant>,
    /// Why sampling had to stop, when it failed.
    failure: Option<String>,
    /// /proc/PID/auxv when attached: exec() gives a process a new one (new entry point,
    /// new random stack), even when it runs the same binary again.
    auxv: Vec<u8>,
    /// The program the target exec'd into, once it did.
    exec: Option<String>,
    names_read: Option<Instant>,
}

impl Profiled {
    fn new(target: Sampler, command: Vec<String>, keep_timeline: bool) -> Self {
        let auxv = std::fs::read(format!("/proc/{}/auxv", target.pid)).unwrap_or_default();
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
            started: Instant::now(),
            ended: None,
            failure: None,
            auxv,
            exec: None,
            names_read: None,
        }
    }

    fn alive(&self) -> bool {
        self.ended.is_none()
    }

    /// Takes and aggregates one sample; a gone process is marked ended, a failure recorded
    /// (what was sampled so far is kept either way).
    fn sample(&mut self, blocking: bool) {
        match self.target.resolved_sample(true, blocking) {
            Ok(samples) => {
                self.refresh_names_if_due();
                for sample in samples {
                    self.aggregator.add(sample);
                }
            }
            Err(SampleError::Torn | SampleError::Gone) if self.exec_happened() => {
                let exe = std::fs::read_link(format!("/proc/{}/exe", self.target.pid))
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| "another program".to_string());
                self.exec = Some(exe);
                self.ended = Some(Instant::now());
            }
            Err(SampleError::Torn) => self.torn += 1,
            Err(SampleError::Gone) => self.ended = Some(Instant::now()),
            Err(SampleError::Fatal(e)) => {
                self.failure = Some(format!("{e:#}"));
                self.ended = Some(Instant::now());
            }
        }
    }

    /// Whether the target is alive and has called exec() since it was attached: its
    /// memory is another program's, so reads fault or its threads are gone.
    fn exec_happened(&self) -> bool {
        !self.auxv.is_empty()
            && crate::process::maps::is_alive(self.target.pid)
            && std::fs::read(format!("/proc/{}/auxv", self.target.pid))
                .is_ok_and(|now| !now.is_empty() && now != self.auxv)
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
        let duration_s = end.duration_since(self.started).as_secs_f64();
        for last in self.target.last_samples() {
            self.aggregator.add(last);
        }
        let a = &self.aggregator;
        // Deadlines that fell after the last one scheduled (the loop ended first) count too.
        let deadlines = (duration_s * config.rate_hz) as u64;
        let missed = self
            .missed
            .max(deadlines.saturating_sub(a.samples + self.torn));
        let stop_reason = match (&self.failure, self.ended) {
            (Some(failure), _) => format!("sampling failed: {failure}"),
            (None, Some(_)) if self.exec.is_some() => format!(
                "the target called exec() and now runs {}; the recording covers the program \
                 before the exec",
                self.exec.as_deref().unwrap_or("another program")
            ),
            (None, Some(_)) => StopReason::TargetExited.describe().to_string(),
            (None, None) => stop.describe().to_string(),
        };
        let run = RunInfo {
            command: self.command.clone(),
            duration_s,
            requested_rate_hz: config.rate_hz,
            missed_samples: missed,
            torn_samples: self.torn,
            stop_reason,
            cpus: cpus_of(self.target.pid),
        };
        Recording {
            children,
            ..a.recording(&self.target, run)
        }
    }
}

struct Session<'a> {
    config: &'a RecordConfig,
    main: Profiled,
    children: children::Children,
    progress: Option<Progress>,
    windows: Option<window::Windows>,
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
        }
    }

    /// Pushes the last window and waits (a bounded time) for the sender.
    fn finish_push(&mut self) -> Option<crate::model::report::PushCounts> {
        let windows = self.windows.take()?;
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
            if self.main.exec.is_some() {
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
        let children = self
            .children
            .into_profiled()
            .into_iter()
            .map(|c| c.into_recording(config, stop, now, Vec::new()))
            .collect();
        self.main.into_recording(config, stop, now, children)
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
        let line = format!(
            "gilscope: recording pid {} | {:.1} s | {} samples | GIL held {held:.0}% | Ctrl-C to stop",
            p.target.pid,
            p.started.elapsed().as_secs_f64(),
            a.samples
        );
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
        .map(|set| {
            (0..nix::sched::CpuSet::count())
                .filter(|&c| set.is_set(c).unwrap_or(false))
                .count() as u32
        })
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32))
}
