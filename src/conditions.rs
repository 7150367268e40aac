//! `--fail-on` conditions: small expressions over report.json figures that make a CI job
//! fail, e.g. `gil.contended>0.3` or `thread[worker-*].gil_wait>0.5`.

use crate::output::report_json::Report;
use anyhow::{Result, bail};

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub text: String,
}

impl Condition {
    pub fn parse(text: &str) -> Result<Condition> {
        bail!("--fail-on is not implemented yet (got '{text}')")
    }
}

/// Prints each condition that holds, with its value, on stderr; true if any held.
pub fn report_failures(conditions: &[Condition], _report: &Report) -> bool {
    !conditions.is_empty()
}
