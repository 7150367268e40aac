//! `gilscope completions`: shell completions.

use anyhow::{Result, bail};
use clap::Args;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish or powershell.
    pub shell: String,
}

pub fn run(_args: CompletionsArgs) -> Result<i32> {
    bail!("not implemented yet")
}
