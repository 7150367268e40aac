//! `gilscope completions`: shell completions, generated from the same clap definitions as
//! the parser.

use crate::error::exit_code;
use anyhow::Result;
use clap::builder::{PossibleValue, TypedValueParser};
use clap::error::ErrorKind;
use clap::{Args, CommandFactory, ValueEnum};
use clap_complete::Shell;
use std::ffi::OsStr;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to print completions for.
    #[arg(value_parser = ShellParser)]
    pub shell: Shell,
}

pub fn run(args: CompletionsArgs) -> Result<i32> {
    print!("{}", render(args.shell));
    Ok(exit_code::OK)
}

/// The completion script for `shell`.
pub fn render(shell: Shell) -> String {
    let mut command = super::Cli::command();
    let name = command.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    String::from_utf8(script).expect("clap_complete writes UTF-8")
}

/// Parses a shell name like clap's `ValueEnum` parser (same possible values in `--help` and
/// in the completions themselves), but names the supported shells in the error's first
/// line, which is the line a usage error prints.
#[derive(Clone, Debug)]
struct ShellParser;

impl TypedValueParser for ShellParser {
    type Value = Shell;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<Shell, clap::Error> {
        let text = value.to_string_lossy();
        Shell::from_str(&text, true).map_err(|_| {
            let names: Vec<_> = shells().map(|v| v.get_name().to_string()).collect();
            clap::Error::raw(
                ErrorKind::InvalidValue,
                format!("unknown shell '{text}': use one of {}\n", names.join(", ")),
            )
            .with_cmd(cmd)
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(shells()))
    }
}

fn shells() -> impl Iterator<Item = PossibleValue> {
    Shell::value_variants()
        .iter()
        .filter_map(ValueEnum::to_possible_value)
}
