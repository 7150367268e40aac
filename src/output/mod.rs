//! Writers: each turns a recording or snapshot into one output format.

pub mod collapsed;
pub mod dump_text;
pub mod flamegraph;
pub mod markdown;
pub mod report_json;
pub mod speedscope;
pub mod summary;
pub mod trace;

use crate::profile::recording::Recording;
use anyhow::{Context, Result};
use report_json::Report;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// The recording kept for `gilscope report` and `gilscope diff`.
pub const RECORDING_FILE: &str = "recording.json";

/// Checks the output directory can be written before any sampling starts.
pub fn prepare_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output directory {}", dir.display()))?;
    let probe = dir.join(".gilscope-write-test");
    File::create(&probe)
        .with_context(|| format!("cannot write to output directory {}", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Formats written on request, beside the ones always written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// `trace.json`: Chrome trace events for ui.perfetto.dev and chrome://tracing.
    Trace,
    /// `speedscope.json` for speedscope.app.
    Speedscope,
}

impl OutputFormat {
    pub fn parse(text: &str) -> Result<OutputFormat, String> {
        match text.trim() {
            "trace" => Ok(OutputFormat::Trace),
            "speedscope" => Ok(OutputFormat::Speedscope),
            other => Err(format!("unknown format '{other}' (expected trace or speedscope)")),
        }
    }
}

/// Writes every file `record` produces into `dir`.
pub fn write_all(dir: &Path, rec: &Recording, report: &Report, formats: &[OutputFormat]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for format in formats {
        match format {
            OutputFormat::Trace => write_file(dir, "trace.json", |w| trace::write(rec, w))?,
            OutputFormat::Speedscope => {
                write_file(dir, "speedscope.json", |w| speedscope::write(rec, w))?
            }
        }
    }
    for graph in flamegraph::standard_graphs(rec) {
        write_file(dir, graph.file_name, |w| flamegraph::render(&graph, w))?;
    }
    write_file(dir, "stacks.txt", |w| {
        Ok(w.write_all(collapsed::all_stacks(rec).as_bytes())?)
    })?;
    write_file(dir, "report.json", |w| {
        Ok(serde_json::to_writer_pretty(&mut *w, report)?)
    })?;
    // After the SVGs, which it links to.
    write_file(dir, "report.md", |w| {
        let graphs = markdown::graphs_in(dir);
        Ok(w.write_all(markdown::render(report, &graphs).as_bytes())?)
    })?;
    write_file(dir, RECORDING_FILE, |w| {
        Ok(serde_json::to_writer(&mut *w, rec)?)
    })?;
    Ok(())
}

fn write_file(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<()>,
) -> Result<()> {
    let path = dir.join(name);
    let file = File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut out = BufWriter::new(file);
    write(&mut out)?;
    out.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
