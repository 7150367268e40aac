//! `gilscope diff`: compare two recordings.

use anyhow::{Result, bail};
use clap::Args;

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The baseline recording (directory or JSON file).
    pub base: std::path::PathBuf,
    /// The new recording (directory or JSON file).
    pub new: std::path::PathBuf,
}

pub fn run(_args: DiffArgs) -> Result<i32> {
    bail!("not implemented yet")
}
