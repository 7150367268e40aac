//! `gilscope diff`: compare two recordings.

use super::console;
use super::report::load;
use crate::diff::{Thresholds, compare};
use crate::error::exit_code;
use crate::output::diff_text::render;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: 0 no regression, 11 a regression beyond the thresholds, \
    1 a recording could not be read, 2 usage error. See docs/ci.md."
)]
pub struct DiffArgs {
    /// The baseline recording (directory, recording.json or report.json).
    pub base: PathBuf,
    /// The new recording (directory, recording.json or report.json).
    pub new: PathBuf,
    /// Fail if the share of samples with the GIL contended rises by more than this
    /// (absolute: 0.1 or 10% is ten percentage points; "off" to ignore).
    #[arg(long, value_name = "FRACTION", default_value = "0.1", value_parser = parse_limit)]
    pub max_contended_increase: Limit,
    /// Fail if the share of samples with the GIL held rises by more than this.
    #[arg(long, value_name = "FRACTION", default_value = "0.2", value_parser = parse_limit)]
    pub max_held_increase: Limit,
    /// Fail if any thread's share of samples waiting for the GIL rises by more than this.
    #[arg(long, value_name = "FRACTION", default_value = "0.1", value_parser = parse_limit)]
    pub max_wait_increase: Limit,
    /// Also fail if a thread's class changes (e.g. cpu_bound -> gil_bound).
    #[arg(long)]
    pub fail_on_class_change: bool,
    /// Print the diff as JSON (schema gilscope.diff/1) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A threshold, or none ("off").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit(pub Option<f64>);

fn parse_limit(text: &str) -> Result<Limit, String> {
    let text = text.trim();
    if matches!(text, "off" | "none") {
        return Ok(Limit(None));
    }
    let (number, scale) = match text.strip_suffix('%') {
        Some(number) => (number, 100.0),
        None => (text, 1.0),
    };
    match number.parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(Limit(Some(value / scale))),
        _ => Err(format!(
            "'{text}' is not a limit: give a fraction (0.1), a percentage (10%) or 'off'"
        )),
    }
}

pub fn run(args: DiffArgs) -> Result<i32> {
    let base = load(&args.base)?;
    let new = load(&args.new)?;
    let thresholds = Thresholds {
        max_contended_increase: args.max_contended_increase.0,
        max_held_increase: args.max_held_increase.0,
        max_wait_increase: args.max_wait_increase.0,
        fail_on_class_change: args.fail_on_class_change,
    };
    let mut diff = compare(&base.recording, &new.recording, &thresholds);
    diff.base.source = Some(args.base.display().to_string());
    diff.new.source = Some(args.new.display().to_string());
    let text = if args.json {
        serde_json::to_string_pretty(&diff)? + "\n"
    } else {
        render(&diff)
    };
    // A closed pipe (`| head`) is not an error; the exit code still counts.
    console::out(&text).map_err(|e| anyhow::Error::new(e).context("cannot write the diff"))?;
    if !base.recording.children.is_empty() || !new.recording.children.is_empty() {
        console::err("gilscope: note: child processes are not compared, only the main process\n");
    }
    for regression in &diff.regressions {
        console::err(&format!("gilscope: regression: {}\n", regression.message));
    }
    Ok(if diff.regressions.is_empty() {
        exit_code::OK
    } else {
        exit_code::REGRESSION
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_fractions_percentages_or_off() {
        assert_eq!(parse_limit("0.1"), Ok(Limit(Some(0.1))));
        assert_eq!(parse_limit("10%"), Ok(Limit(Some(0.1))));
        assert_eq!(parse_limit("0"), Ok(Limit(Some(0.0))));
        assert_eq!(parse_limit("off"), Ok(Limit(None)));
        for bad in ["", "-0.1", "ten", "nan", "inf", "%"] {
            assert!(parse_limit(bad).is_err(), "{bad}");
        }
    }
}
