//! `gilscope record`.

use super::console;
use crate::conditions::{self, Condition};
use crate::error::{Error, exit_code};
use crate::model::report::Report;
use crate::output::{self, OutputFormat, summary};
use crate::push::{PushConfig, ingest};
use crate::record::{RecordConfig, StopReason, TargetSpec};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Process id of a running Python program.
    #[arg(
        long,
        short,
        conflicts_with = "command",
        required_unless_present = "command"
    )]
    pub pid: Option<i32>,
    /// Stop after this many seconds (default: until Ctrl-C or the program exits).
    #[arg(long, short, value_parser = parse_duration, allow_negative_numbers = true)]
    pub duration: Option<f64>,
    /// Samples per second.
    #[arg(long, short, default_value_t = 100.0, value_parser = parse_rate, allow_negative_numbers = true)]
    pub rate: f64,
    /// Directory for the outputs (created if missing) [default: gilscope-PID].
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Extra output formats, comma-separated: trace (Perfetto / chrome://tracing), speedscope,
    /// pprof (profile.pb.gz, with the GIL state of every sample as a label).
    #[arg(long, value_delimiter = ',', value_parser = OutputFormat::parse)]
    pub format: Vec<OutputFormat>,
    /// Exit with code 10 if this condition holds, e.g. 'gil.contended>0.3' or
    /// 'thread[worker-*].gil_wait>0.5' (repeatable). All outputs are still written.
    #[arg(long = "fail-on", value_name = "EXPR", value_parser = Condition::try_parse)]
    pub fail_on: Vec<Condition>,
    /// An asyncio event loop running code this long (ms) without going back to its
    /// selector is stalled.
    #[arg(long, value_name = "MS", default_value_t = crate::profile::event_loop::DEFAULT_STALL_MS, value_parser = parse_stall_ms, allow_negative_numbers = true)]
    pub stall_ms: f64,
    /// Pause the target for each sample (consistent, but slows it down).
    #[arg(long)]
    pub blocking: bool,
    /// Python 3.15+: read /proc for every thread, also those whose own GIL flags say they
    /// hold or wait for the GIL, and report how often gilscope's inference agrees with the
    /// flags (gil.thread_flags). Costs a /proc read per thread per sample.
    #[arg(long)]
    pub verify_flags: bool,
    /// Also record child processes (multiprocessing workers, spawned interpreters).
    #[arg(long)]
    pub subprocesses: bool,
    /// Continuous mode: every --push-window seconds, send that window's pprof profile to
    /// this Pyroscope server (http://HOST:4040). Runs until Ctrl-C, the program's exit or
    /// --duration; the local outputs are written at the end. See docs/fleet.md.
    #[arg(long, value_name = "URL", value_parser = parse_push_url)]
    pub push: Option<String>,
    /// Seconds of recording per pushed profile.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0, value_parser = parse_push_window, requires = "push")]
    pub push_window: f64,
    /// Application name on the server [default: the target's command name].
    #[arg(long, value_name = "NAME", value_parser = parse_app_name, requires = "push")]
    pub app_name: Option<String>,
    /// A static label for the pushed profiles, e.g. env=prod (repeatable).
    #[arg(long = "push-label", value_name = "KEY=VALUE", value_parser = parse_push_label, requires = "push")]
    pub push_labels: Vec<(String, String)>,
    /// An HTTP header for every push request, e.g. 'Authorization: Bearer TOKEN'
    /// (repeatable; more in $GILSCOPE_PUSH_HEADERS, one per line). Never printed.
    #[arg(long = "push-header", value_name = "NAME: VALUE", requires = "push")]
    pub push_headers: Vec<String>,
    /// The program to start and record, after `--`: gilscope record -- python app.py
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Highest sampling rate accepted.
pub const MAX_RATE_HZ: f64 = 20_000.0;

fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number"))?;
    if !(rate.is_finite() && rate > 0.0 && rate <= MAX_RATE_HZ) {
        return Err(format!(
            "the rate must be above 0 and at most {MAX_RATE_HZ} Hz"
        ));
    }
    Ok(rate)
}

fn parse_stall_ms(text: &str) -> Result<f64, String> {
    let ms: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number of milliseconds"))?;
    if !(ms.is_finite() && ms > 0.0) {
        return Err("the stall threshold must be a positive number of milliseconds".to_string());
    }
    Ok(ms)
}

fn parse_push_url(text: &str) -> Result<String, String> {
    ingest::check_url(text)
}

fn parse_push_window(text: &str) -> Result<f64, String> {
    let seconds = parse_duration(text)?;
    if seconds < MIN_PUSH_WINDOW_S {
        return Err(format!(
            "the push window must be at least {MIN_PUSH_WINDOW_S} s"
        ));
    }
    Ok(seconds)
}

fn parse_app_name(text: &str) -> Result<String, String> {
    ingest::check_app_name(text).map(|()| text.to_string())
}

fn parse_push_label(text: &str) -> Result<(String, String), String> {
    ingest::parse_label(text)
}

/// Shortest `--push-window`: Pyroscope's `from` and `until` are whole seconds.
const MIN_PUSH_WINDOW_S: f64 = 1.0;

fn parse_duration(text: &str) -> Result<f64, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err("the duration must be a positive number of seconds".to_string());
    }
    Ok(seconds)
}

impl RecordArgs {
    /// The push settings, headers from the command line and the environment checked. An
    /// error never repeats a header's value.
    fn push_config(&self) -> Result<Option<PushConfig>, String> {
        let Some(url) = &self.push else {
            return Ok(None);
        };
        let mut headers = self
            .push_headers
            .iter()
            .map(|h| ingest::Header::parse(h).map_err(|e| format!("--push-header: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if let Ok(text) = std::env::var(ingest::HEADERS_ENV) {
            let more = ingest::Header::parse_lines(&text)
                .map_err(|e| format!("{}: {e}", ingest::HEADERS_ENV))?;
            headers.extend(more);
        }
        Ok(Some(PushConfig {
            url: url.clone(),
            app_name: self.app_name.clone(),
            labels: self.push_labels.clone(),
            headers,
            window: Duration::from_secs_f64(self.push_window),
        }))
    }

    fn config(&self, push: Option<PushConfig>) -> RecordConfig {
        let target = match self.pid {
            Some(pid) => TargetSpec::Pid(pid),
            None => TargetSpec::Command(self.command.clone()),
        };
        RecordConfig {
            target,
            duration: self.duration.map(Duration::from_secs_f64),
            rate_hz: self.rate,
            blocking: self.blocking,
            subprocesses: self.subprocesses,
            keep_timeline: self.format.contains(&OutputFormat::Trace),
            progress: true,
            stall_ms: self.stall_ms,
            verify_flags: self.verify_flags,
            push,
        }
    }
}

pub fn run(args: RecordArgs) -> Result<i32> {
    // Everything that can be checked is checked before the target is touched.
    let conditions = args.fail_on.clone();
    let push = match args.push_config() {
        Ok(push) => push,
        Err(message) => {
            eprintln!("gilscope: {message} (see gilscope --help)");
            return Ok(exit_code::USAGE);
        }
    };
    if let Some(dir) = &args.output {
        output::prepare_dir(dir)?;
    }
    let config = args.config(push);
    let outcome = crate::record::record(&config)?;
    let pid = outcome.recording.pid;
    let dir = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("gilscope-{pid}")));
    let mut report = Report::new(&outcome.recording);
    report.push = outcome.push.clone();
    let written = output::write_all(&dir, &outcome.recording, &report, &args.format)?;
    let dir_name = dir.display().to_string();
    console::err(&summary::render(&report, Some((&dir_name, &written))));
    let failed = conditions::report_failures(&conditions, &report);
    if outcome.stop == StopReason::Failed {
        console::err(&format!(
            "gilscope: {} (the report covers what was sampled)\n",
            outcome.recording.stop_reason
        ));
        return Ok(exit_code::GENERAL);
    }
    if outcome.stop == StopReason::TargetExec {
        console::err(&format!(
            "gilscope: pid {pid} called exec(); gilscope does not follow it into the new \
             program yet (the report covers what ran before)\n"
        ));
    }
    if outcome.stop == StopReason::TargetExited && outcome.attached_by_pid {
        console::err(&format!(
            "gilscope: {} (the report covers what was sampled)\n",
            Error::ProcessExited { pid }
        ));
        return Ok(exit_code::PROCESS_EXITED);
    }
    Ok(if failed {
        exit_code::CONDITION_FAILED
    } else {
        exit_code::OK
    })
}
