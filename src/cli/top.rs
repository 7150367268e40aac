//! `gilscope top`: a live terminal view.

use crate::error::exit_code;
use crate::top::{TopConfig, TopEnd};
use anyhow::Result;
use clap::Args;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Process id of the Python program.
    #[arg(long, short)]
    pub pid: i32,
    /// Samples per second.
    #[arg(long, short, default_value_t = 100.0, value_parser = parse_positive)]
    pub rate: f64,
    /// Seconds of samples the figures cover.
    #[arg(long, short, default_value_t = 2.0, value_parser = parse_positive)]
    pub window: f64,
    /// Print a plain-text frame every second instead of drawing a screen (for CI logs and
    /// pipes; also the default when stdout is not a terminal), until the target exits or
    /// Ctrl-C.
    #[arg(long, short)]
    pub batch: bool,
}

fn parse_positive(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number"))?;
    if !(value.is_finite() && value > 0.0 && value <= super::record::MAX_RATE_HZ) {
        return Err(format!(
            "must be above 0 and at most {}",
            super::record::MAX_RATE_HZ
        ));
    }
    Ok(value)
}

pub fn run(args: TopArgs) -> Result<i32> {
    let config = TopConfig {
        pid: args.pid,
        rate_hz: args.rate,
        refresh: Duration::from_secs(1),
        window: Duration::from_secs_f64(args.window),
        batch: args.batch,
    };
    match crate::top::run(&config)? {
        TopEnd::Quit => Ok(exit_code::OK),
        TopEnd::TargetExited => {
            super::console::err(&format!(
                "gilscope: process {} exited; top stopped\n",
                args.pid
            ));
            Ok(exit_code::PROCESS_EXITED)
        }
        TopEnd::TargetExec { program } => {
            super::console::err(&format!(
                "gilscope: process {} called exec() and now runs {program}; top stopped \
                 (run gilscope top again to watch the new program)\n",
                args.pid
            ));
            Ok(exit_code::PROCESS_EXITED)
        }
    }
}
