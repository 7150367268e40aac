//! Writers: each turns a recording or snapshot into one output format.

pub mod collapsed;
pub mod diff_text;
pub mod dump_text;
pub mod flamegraph;
pub mod html;
pub mod markdown;
pub mod palette;
pub mod pprof;
pub mod report_json;
pub mod speedscope;
pub mod summary;
pub mod trace;

use crate::model::recording::Recording;
use crate::model::report::Report;
use anyhow::{Context, Result};
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
    /// `profile.pb.gz` for `go tool pprof`, Pyroscope and Parca.
    Pprof,
}

impl OutputFormat {
    pub fn parse(text: &str) -> Result<OutputFormat, String> {
        match text.trim() {
            "trace" => Ok(OutputFormat::Trace),
            "speedscope" => Ok(OutputFormat::Speedscope),
            "pprof" => Ok(OutputFormat::Pprof),
            other => Err(format!(
                "unknown format '{other}' (expected trace, speedscope or pprof)"
            )),
        }
    }
}

/// Writes every file `record` produces into `dir`; returns their names, in the order a
/// reader should open them.
pub fn write_all(
    dir: &Path,
    rec: &Recording,
    report: &Report,
    formats: &[OutputFormat],
) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    let mut write = |name: &str, body: &dyn Fn(&mut BufWriter<File>) -> Result<()>| {
        write_file(dir, name, body)?;
        written.push(name.to_string());
        anyhow::Ok(())
    };
    let graphs = flamegraph::standard_graphs(rec);
    for graph in &graphs {
        write(graph.file_name, &|w| flamegraph::render(graph, w))?;
    }
    write("stacks.txt", &|w| {
        Ok(w.write_all(collapsed::all_stacks(rec).as_bytes())?)
    })?;
    write("report.json", &|w| {
        Ok(serde_json::to_writer_pretty(&mut *w, report)?)
    })?;
    for format in formats {
        match format {
            OutputFormat::Trace => write("trace.json", &|w| trace::write(rec, w))?,
            OutputFormat::Speedscope => write("speedscope.json", &|w| speedscope::write(rec, w))?,
            OutputFormat::Pprof => write(pprof::FILE, &|w| pprof::write(rec, w))?,
        }
    }
    write(RECORDING_FILE, &|w| {
        Ok(serde_json::to_writer(&mut *w, rec)?)
    })?;
    // Last, since it links to the SVGs present.
    let linked = markdown::graphs_in(dir);
    write("report.md", &|w| {
        Ok(w.write_all(markdown::render(report, &linked).as_bytes())?)
    })?;
    write("report.html", &|w| html::write(rec, report, w))?;
    written.rotate_right(1);
    Ok(written)
}

fn write_file(
    dir: &Path,
    name: &str,
    write: &dyn Fn(&mut BufWriter<File>) -> Result<()>,
) -> Result<()> {
    let path = dir.join(name);
    let file = File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut out = BufWriter::new(file);
    write(&mut out)?;
    out.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
