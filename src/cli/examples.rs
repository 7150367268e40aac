//! Worked examples, shown at the end of each subcommand's `--help` (and in the man page).
//!
//! Every line that starts with `gilscope ` is a real command line: a test parses each one
//! with the clap definitions, so an example cannot drift from the options it uses.

pub const RECORD: &str = "\
Examples:
  Record a running program for 30 s; the outputs go to gilscope-1234/:
    gilscope record --pid 1234 --duration 30

  Start a script under gilscope and record it until it exits:
    gilscope record -- python app.py

  In CI: fail the job (exit code 10) if the GIL is contended more than 30% of the time;
  every output is still written, so the job can keep them as artifacts:
    gilscope record --duration 60 --fail-on 'gil.contended>0.3' -- python load_test.py

  Sample at 1000 Hz and also write a Perfetto trace:
    gilscope record --pid 1234 --duration 10 --rate 1000 --format trace

  Send a pprof profile with each sample's GIL state to a Pyroscope server every 10 s,
  until Ctrl-C:
    gilscope record --pid 1234 --push http://pyroscope:4040 --push-label env=prod

Exit codes: see gilscope --help.";

pub const DUMP: &str = "\
Examples:
  Print every Python thread's GIL state and stack, once:
    gilscope dump --pid 1234

  The same as one JSON document, for scripts:
    gilscope dump --pid 1234 --json

  Pause the process while reading it, for a consistent snapshot:
    gilscope dump --pid 1234 --blocking";

pub const REPORT: &str = "\
Examples:
  Re-render a recording's summary, flamegraphs and report.md:
    gilscope report gilscope-1234

  Write the outputs to another directory, with a speedscope profile too:
    gilscope report gilscope-1234 --output rerendered --format speedscope

  Check a saved recording in CI (exit code 10 if the condition holds):
    gilscope report gilscope-1234 --fail-on 'gil.contended>0.3'";

pub const DIFF: &str = "\
Examples:
  Compare a new recording with a baseline (exit code 11 on a regression):
    gilscope diff baseline gilscope-1234

  Allow the contended share to rise by 5 percentage points; print JSON:
    gilscope diff baseline gilscope-1234 --max-contended-increase 5% --json";

pub const TOP: &str = "\
Examples:
  Watch a process's threads and its GIL, refreshed every second:
    gilscope top --pid 1234";

pub const COMPLETIONS: &str = "\
Examples:
  bash, for this shell and for every new one:
    source <(gilscope completions bash)
    gilscope completions bash > ~/.local/share/bash-completion/completions/gilscope

  zsh (the directory must be on $fpath), fish, PowerShell:
    gilscope completions zsh > ~/.zfunc/_gilscope
    gilscope completions fish > ~/.config/fish/completions/gilscope.fish
    gilscope completions powershell | Out-String | Invoke-Expression

  The man page comes from the hidden `man` subcommand:
    gilscope man > ~/.local/share/man/man1/gilscope.1";

pub const MAN: &str = "\
Examples:
  Read the man page now:
    gilscope man | man -l -

  Install it, so that `man gilscope` finds it:
    gilscope man > ~/.local/share/man/man1/gilscope.1";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    const ALL: [&str; 7] = [RECORD, DUMP, REPORT, DIFF, TOP, COMPLETIONS, MAN];

    /// Splits a command line the way a POSIX shell would for these examples: words on
    /// whitespace, single quotes kept together; it stops at a pipe or a redirection.
    fn shell_words(line: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut word = String::new();
        let mut quoted = false;
        for c in line.chars() {
            match c {
                '\'' => quoted = !quoted,
                '|' | '>' if !quoted => break,
                c if c.is_whitespace() && !quoted => {
                    if !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                }
                c => word.push(c),
            }
        }
        assert!(!quoted, "unbalanced quote in example {line:?}");
        if !word.is_empty() {
            words.push(word);
        }
        words
    }

    #[test]
    fn every_example_command_parses() {
        let mut checked = 0;
        for text in ALL {
            for line in text.lines().map(str::trim) {
                if !line.starts_with("gilscope ") {
                    continue;
                }
                let words = shell_words(line);
                if let Err(err) = Cli::try_parse_from(&words) {
                    panic!("example {line:?} does not parse: {err}");
                }
                checked += 1;
            }
        }
        assert!(checked >= 15, "only {checked} example lines found");
    }

    #[test]
    fn shell_words_keeps_quotes_and_stops_at_redirection() {
        assert_eq!(
            shell_words("gilscope record --fail-on 'gil.contended>0.3' -- python app.py"),
            [
                "gilscope",
                "record",
                "--fail-on",
                "gil.contended>0.3",
                "--",
                "python",
                "app.py"
            ]
        );
        assert_eq!(
            shell_words("gilscope man > ~/gilscope.1"),
            ["gilscope", "man"]
        );
    }
}
