//! `gilscope top`: a live terminal view.

use anyhow::{Result, bail};
use clap::Args;

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Process id of the Python program.
    #[arg(long, short)]
    pub pid: i32,
}

pub fn run(_args: TopArgs) -> Result<i32> {
    bail!("not implemented yet")
}
