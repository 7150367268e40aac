//! The `gilscope` binary: parse arguments, run the library, map errors to exit codes.

use clap::Parser;
use clap::error::ErrorKind;
use gilscope::cli::Cli;
use gilscope::error::{OneLine, exit_code, exit_code_of};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => usage_error(err),
    };
    let code = match cli.command.run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("gilscope: {}", OneLine(&err));
            exit_code_of(&err)
        }
    };
    std::process::exit(code);
}

/// Help and version go out as clap renders them; a usage error becomes one line.
fn usage_error(err: clap::Error) -> ! {
    let informational = matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if informational {
        err.exit();
    }
    let text = err.render().to_string();
    let first = text.lines().next().unwrap_or("invalid arguments");
    let message = first.strip_prefix("error: ").unwrap_or(first);
    eprintln!("gilscope: {message} (see gilscope --help)");
    std::process::exit(exit_code::USAGE);
}
