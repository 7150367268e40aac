//! The command line: clap definitions, one file per subcommand, each turning its arguments
//! at once into the plain config struct the library runs on, so the rest of gilscope never
//! sees clap.

pub mod completions;
pub mod console;
pub mod diff;
pub mod dump;
pub mod examples;
pub mod man;
pub mod record;
pub mod report;
pub mod top;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "gilscope",
    version,
    about = "Tells whether the GIL is what slows a Python program down, and what to do about it",
    after_help = crate::error::EXIT_CODES_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sample a Python program's threads and GIL at a fixed rate; write flamegraphs, a JSON
    /// report and a summary.
    #[command(after_help = examples::RECORD)]
    Record(record::RecordArgs),
    /// Print every Python thread's GIL state and stack, once.
    #[command(after_help = examples::DUMP)]
    Dump(dump::DumpArgs),
    /// Re-render the summary, SVGs and report.md of a saved recording.
    #[command(after_help = examples::REPORT)]
    Report(report::ReportArgs),
    /// Compare two recordings; exit non-zero on a regression.
    #[command(after_help = examples::DIFF)]
    Diff(diff::DiffArgs),
    /// A live view of a process's threads and GIL, refreshed every second.
    #[command(after_help = examples::TOP)]
    Top(top::TopArgs),
    /// Print shell completions (bash, zsh, fish, powershell, elvish); `gilscope man` prints
    /// the man page.
    #[command(after_help = examples::COMPLETIONS)]
    Completions(completions::CompletionsArgs),
    /// Print the man page (roff), generated from these same definitions.
    #[command(hide = true, after_help = examples::MAN)]
    Man(man::ManArgs),
}

impl Command {
    /// Runs the subcommand; the result is the process exit code.
    pub fn run(self) -> Result<i32> {
        match self {
            Command::Record(args) => record::run(args),
            Command::Dump(args) => dump::run(args),
            Command::Report(args) => report::run(args),
            Command::Diff(args) => diff::run(args),
            Command::Top(args) => top::run(args),
            Command::Completions(args) => completions::run(args),
            Command::Man(args) => man::run(args),
        }
    }
}
