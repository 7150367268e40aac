//! `gilscope dump`.

use super::console;
use crate::dump::DumpConfig;
use crate::error::exit_code;
use crate::output::dump_text;
use anyhow::Result;
use clap::Args;

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

pub fn run(args: DumpArgs) -> Result<i32> {
    let config = DumpConfig {
        pid: args.pid,
        blocking: args.blocking,
    };
    let snapshot = crate::dump::run(&config)?;
    if args.json {
        console::out(&(serde_json::to_string_pretty(&snapshot)? + "\n"))?;
    } else {
        console::out(&dump_text::render(&snapshot))?;
    }
    Ok(exit_code::OK)
}
