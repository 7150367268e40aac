//! The command line: clap definitions, turned at once into plain config structs so the
//! rest of gilscope never sees clap.

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "gilscope",
    version,
    about = "Tells whether the GIL is what slows a Python program down"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sample a Python program's threads and GIL at a fixed rate; write flamegraphs, a JSON
    /// report and a summary.
    Record(RecordArgs),
    /// Print every Python thread's GIL state and stack, once.
    Dump(DumpArgs),
}

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
    #[arg(long, short, value_parser = parse_duration)]
    pub duration: Option<f64>,
    /// Samples per second.
    #[arg(long, short, default_value_t = 100.0, value_parser = parse_rate)]
    pub rate: f64,
    /// Directory for the outputs (created if missing) [default: gilscope-PID].
    #[arg(long, short)]
    pub output: Option<std::path::PathBuf>,
    /// Pause the target for each sample (consistent, but slows it down).
    #[arg(long)]
    pub blocking: bool,
    /// Also record child processes (multiprocessing workers, spawned interpreters).
    #[arg(long)]
    pub subprocesses: bool,
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
    /// The plain config `record` runs on, and where its outputs go (None: decided by pid).
    pub fn into_config(self) -> (crate::record::RecordConfig, Option<std::path::PathBuf>) {
        use crate::record::{RecordConfig, TargetSpec};
        let target = match self.pid {
            Some(pid) => TargetSpec::Pid(pid),
            None => TargetSpec::Command(self.command),
        };
        let config = RecordConfig {
            target,
            duration: self.duration.map(std::time::Duration::from_secs_f64),
            rate_hz: self.rate,
            blocking: self.blocking,
            subprocesses: self.subprocesses,
            progress: true,
        };
        (config, self.output)
    }
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Process id of the Python program.
    #[arg(long, short)]
    pub pid: i32,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Pause the target (ptrace) for a consistent snapshot; it resumes on every path.
    #[arg(long)]
    pub blocking: bool,
}

/// What `dump` needs to run.
#[derive(Debug, Clone)]
pub struct DumpConfig {
    pub pid: i32,
    pub json: bool,
    pub blocking: bool,
}

impl From<DumpArgs> for DumpConfig {
    fn from(a: DumpArgs) -> Self {
        DumpConfig {
            pid: a.pid,
            json: a.json,
            blocking: a.blocking,
        }
    }
}
