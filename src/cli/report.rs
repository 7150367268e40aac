//! `gilscope report`: re-render a saved recording.

use anyhow::{Result, bail};
use clap::Args;

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A recording directory (or its report.json / recording.json).
    pub path: std::path::PathBuf,
}

pub fn run(_args: ReportArgs) -> Result<i32> {
    bail!("not implemented yet")
}
