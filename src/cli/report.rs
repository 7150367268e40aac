//! `gilscope report`: re-render a saved recording.

use super::console;
use crate::conditions::{self, Condition};
use crate::error::exit_code;
use crate::model::recording::{RECORDING_FORMAT, Recording};
use crate::model::report::Report;
use crate::output::{self, OutputFormat, RECORDING_FILE, summary};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: 0 success, 10 a --fail-on condition held (every output \
    is still written), 1 the recording could not be read (or a malformed --fail-on), \
    2 usage error. See docs/ci.md."
)]
pub struct ReportArgs {
    /// A recording directory, its recording.json, or its report.json (the recording.json
    /// beside it is read).
    pub path: PathBuf,
    /// Directory for the outputs (created if missing) [default: the recording's directory].
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Extra output formats, comma-separated: trace (Perfetto / chrome://tracing), speedscope.
    #[arg(long, value_delimiter = ',', value_parser = OutputFormat::parse)]
    pub format: Vec<OutputFormat>,
    /// Exit with code 10 if this condition holds, as with `record --fail-on` (repeatable).
    #[arg(long = "fail-on", value_name = "EXPR", value_parser = Condition::try_parse)]
    pub fail_on: Vec<Condition>,
}

pub fn run(args: ReportArgs) -> Result<i32> {
    let conditions = args.fail_on.clone();
    let loaded = load(&args.path)?;
    let dir = match &args.output {
        Some(dir) => {
            output::prepare_dir(dir)?;
            dir.clone()
        }
        None => loaded.dir.clone(),
    };
    let report = Report::new(&loaded.recording);
    if args.format.contains(&OutputFormat::Trace) && loaded.recording.timeline == Default::default()
    {
        console::err(
            "gilscope: this recording kept no timeline, so trace.json is empty; record with --format trace\n",
        );
    }
    let written = output::write_all(&dir, &loaded.recording, &report, &args.format)?;
    let dir_name = dir.display().to_string();
    console::err(&summary::render(&report, Some((&dir_name, &written))));
    let failed = conditions::report_failures(&conditions, &report);
    Ok(if failed {
        exit_code::CONDITION_FAILED
    } else {
        exit_code::OK
    })
}

/// A recording read back from disk.
#[derive(Debug)]
pub struct Loaded {
    pub recording: Recording,
    /// The recording.json it was read from.
    pub file: PathBuf,
    /// The directory holding it.
    pub dir: PathBuf,
}

/// Reads the recording at `path`: a directory holding recording.json, a recording.json, or
/// a report.json with its recording.json beside it. Unknown format versions are refused.
pub fn load(path: &Path) -> Result<Loaded> {
    let file = if path.is_dir() {
        let file = path.join(RECORDING_FILE);
        if !file.is_file() {
            bail!(
                "{} holds no {RECORDING_FILE}: give the directory `gilscope record` wrote",
                path.display()
            );
        }
        file
    } else {
        path.to_path_buf()
    };
    let value = read_json(&file)?;
    if value.get("format").is_none()
        && let Some(schema) = value.get("schema").and_then(|s| s.as_str())
        && schema.starts_with("gilscope.report/")
    {
        // A report.json: the figures alone cannot be re-rendered; its recording can.
        let beside = dir_of(&file).join(RECORDING_FILE);
        if !beside.is_file() {
            bail!(
                "{} is a report, and there is no {RECORDING_FILE} beside it to re-render from",
                file.display()
            );
        }
        return from_value(read_json(&beside)?, beside);
    }
    from_value(value, file)
}

fn from_value(value: serde_json::Value, file: PathBuf) -> Result<Loaded> {
    let format = match value.get("format") {
        Some(serde_json::Value::String(format)) => format.as_str(),
        _ => bail!(
            "{} is not a gilscope recording (it has no \"format\" field)",
            file.display()
        ),
    };
    if format != RECORDING_FORMAT {
        if format.starts_with("gilscope.recording/") {
            bail!(
                "{} is in format {format}, which this gilscope {} cannot read (it reads \
                 {RECORDING_FORMAT}): use the gilscope version that wrote it",
                file.display(),
                env!("CARGO_PKG_VERSION")
            );
        }
        bail!(
            "{} is not a gilscope recording (format {format:?})",
            file.display()
        );
    }
    let recording: Recording = serde_json::from_value(value).with_context(|| {
        format!(
            "{} is not a valid {RECORDING_FORMAT} recording",
            file.display()
        )
    })?;
    Ok(Loaded {
        recording,
        dir: dir_of(&file),
        file,
    })
}

fn read_json(file: &Path) -> Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))
}

fn dir_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
