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
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if informational {
        err.exit();
    }
    eprintln!(
        "gilscope: {} (see gilscope --help)",
        one_line(&err.render().to_string())
    );
    std::process::exit(exit_code::USAGE);
}

/// clap's message folded into one line: everything before its usage block, e.g.
/// "the following required arguments were not provided: --pid <PID>".
fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more information"))
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let joined = lines.join(" ").replace(" tip: ", "; tip: ");
    let message = joined.strip_prefix("error: ").unwrap_or(&joined);
    if message.is_empty() {
        "invalid arguments".to_string()
    } else {
        message.to_string()
    }
}
