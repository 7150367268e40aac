//! The `gilscope` binary: parse arguments, run the library, map errors to exit codes.

use clap::Parser;
use clap::error::ErrorKind;
use gilscope::cli::{Cli, console};
use gilscope::error::{OneLine, exit_code, exit_code_of};

fn main() {
    one_line_panics();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => usage_error(err),
    };
    let code = match cli.command.run() {
        Ok(code) => code,
        Err(err) => {
            console::err(&format!("gilscope: {}\n", OneLine(&err)));
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
    console::err(&format!(
        "gilscope: {} (see gilscope --help)\n",
        one_line(&err.render().to_string())
    ));
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

/// A bug must still end in one line on stderr (exit code 101), not a backtrace. `top` installs
/// its own hook on top of this one to restore the terminal first.
fn one_line_panics() {
    std::panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        console::err(&format!(
            "gilscope: internal error{place}: {message} (please report this)\n"
        ));
    }));
}
