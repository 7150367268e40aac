//! The `gilscope` binary: parse arguments, run the library, map errors to exit codes.

use anyhow::Result;
use clap::Parser;
use gilscope::cli::{Cli, Command, DumpConfig, RecordArgs};
use gilscope::error::{Error, OneLine, exit_code, exit_code_of};
use gilscope::output::{self, report_json::Report, summary};
use gilscope::record::{RecordConfig, StopReason, TargetSpec};
use std::path::PathBuf;

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Record(args) => run_record(args),
        Command::Dump(args) => run_dump(args.into()).map(|()| exit_code::OK),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("gilscope: {}", OneLine(&err));
            std::process::exit(exit_code_of(&err));
        }
    }
}

fn run_dump(config: DumpConfig) -> Result<()> {
    let snapshot = gilscope::dump::run(&config)?;
    if config.json {
        println!("{}", serde_json::to_string_pretty(&snapshot)?);
    } else {
        print!("{}", output::dump_text::render(&snapshot));
    }
    Ok(())
}

fn run_record(args: RecordArgs) -> Result<i32> {
    let (config, output_dir) = args.into_config();
    if let Some(dir) = &output_dir {
        output::prepare_dir(dir)?;
    }
    let outcome = gilscope::record::record(&config)?;
    let dir = output_dir.unwrap_or_else(|| default_output_dir(&config, outcome.recording.pid));
    let report = Report::new(&outcome.recording);
    output::write_all(&dir, &outcome.recording, &report)?;
    eprint!(
        "{}",
        summary::render(&report, Some(&dir.display().to_string()))
    );
    if outcome.stop == StopReason::TargetExited && outcome.attached_by_pid {
        let pid = outcome.recording.pid;
        eprintln!(
            "gilscope: {} (the report covers what was sampled)",
            Error::ProcessExited { pid }
        );
        return Ok(exit_code::PROCESS_EXITED);
    }
    Ok(exit_code::OK)
}

fn default_output_dir(config: &RecordConfig, pid: i32) -> PathBuf {
    match &config.target {
        TargetSpec::Pid(_) | TargetSpec::Command(_) => PathBuf::from(format!("gilscope-{pid}")),
    }
}
