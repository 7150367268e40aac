//! The `gilscope` binary: parse arguments, run the library, map errors to exit codes.

use clap::Parser;
use gilscope::cli::Cli;
use gilscope::error::{OneLine, exit_code_of};

fn main() {
    let code = match Cli::parse().command.run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("gilscope: {}", OneLine(&err));
            exit_code_of(&err)
        }
    };
    std::process::exit(code);
}
