//! `gilscope man` (hidden): the man page, generated from the same clap definitions as the
//! parser and `--help`.
//!
//! One page, gilscope(1), holds everything: the top-level options, then a section per
//! subcommand with its synopsis, options and examples, then the exit codes. One file is
//! easy to install from a pip environment, where there is no packager to place many.

use crate::error::exit_code;
use anyhow::Result;
use clap::{Args, Command, CommandFactory};
use clap_mangen::Man;
use std::io::{self, Write};

#[derive(Debug, Args)]
pub struct ManArgs {}

pub fn run(_args: ManArgs) -> Result<i32> {
    let page = render()?;
    io::stdout().lock().write_all(page.as_bytes())?;
    Ok(exit_code::OK)
}

/// The whole man page, as roff.
pub fn render() -> io::Result<String> {
    let mut top = super::Cli::command().disable_help_subcommand(true);
    top.build();
    let mut page = String::new();
    let man = Man::new(top.clone());
    page += &piece(|w| man.render_title(w))?;
    // roff-1 defines `\*(Aq` (an apostrophe) at the start of each piece; once is enough,
    // and after .TH, so the page starts with its header.
    page += APOSTROPHE_PREAMBLE;
    page += &piece(|w| man.render_name_section(w))?;
    page += &piece(|w| man.render_synopsis_section(w))?;
    page += &piece(|w| man.render_description_section(w))?;
    page += &piece(|w| man.render_options_section(w))?;
    for sub in top.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        page += &subcommand_section(sub)?;
    }
    if let Some(after) = top.get_after_help() {
        page += &preformatted(&after.to_string(), ".SH");
    }
    page += &piece(|w| man.render_version_section(w))?;
    Ok(page)
}

/// `.SH "GILSCOPE RECORD"`: what it does, its synopsis and options as subsections, then its
/// examples.
fn subcommand_section(sub: &Command) -> io::Result<String> {
    let name = sub.get_bin_name().unwrap_or_else(|| sub.get_name());
    let man = Man::new(sub.clone());
    let mut section = format!(".SH \"{}\"\n", escape(&name.to_uppercase()));
    section += &demote(&piece(|w| man.render_description_section(w))?);
    section += &demote(&piece(|w| man.render_synopsis_section(w))?);
    section += &demote(&piece(|w| man.render_options_section(w))?);
    if let Some(after) = sub.get_after_help() {
        section += &preformatted(&after.to_string(), ".SS");
    }
    Ok(section)
}

const APOSTROPHE_PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

/// What one of clap_mangen's section renderers writes, without the repeated preamble.
fn piece(render: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> io::Result<String> {
    let mut out = Vec::new();
    render(&mut out)?;
    let text = String::from_utf8(out).expect("clap_mangen writes UTF-8");
    Ok(text
        .strip_prefix(APOSTROPHE_PREAMBLE)
        .map(str::to_string)
        .unwrap_or(text))
}

/// Turns section headers into subsection headers, for a subcommand's part of the page.
fn demote(roff: &str) -> String {
    roff.lines()
        .map(|line| match line.strip_prefix(".SH ") {
            Some(title) => format!(".SS {title}\n"),
            None => format!("{line}\n"),
        })
        .collect()
}

/// A help text block ("Examples:" or "Exit codes:" and its lines) as a headed section whose
/// lines are kept as written (no filling), so commands and tables stay aligned.
fn preformatted(text: &str, header: &str) -> String {
    let mut lines = text.lines();
    let title = lines
        .next()
        .unwrap_or_default()
        .trim_end_matches(':')
        .to_uppercase();
    let title = if title == "EXIT CODES" {
        "EXIT STATUS".to_string()
    } else {
        title
    };
    let mut out = format!("{header} \"{}\"\n.nf\n", escape(&title));
    for line in lines {
        out += &escape(line);
        out.push('\n');
    }
    out += ".fi\n";
    out
}

/// Escapes text for a roff text line, so that what the page shows can be copied into a
/// shell: backslashes, hyphens (ASCII minus, not a typographic hyphen), quotes and
/// backticks (not curly quotes), and a leading `.` that would read as a request.
fn escape(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\e")
        .replace('-', "\\-")
        .replace('\'', "\\*(Aq")
        .replace('`', "\\(ga");
    if escaped.starts_with('.') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_guards_requests_and_backslashes() {
        assert_eq!(escape(".hidden"), "\\&.hidden");
        assert_eq!(escape("a\\b --pid"), "a\\eb \\-\\-pid");
        assert_eq!(escape("'x' `y`"), "\\*(Aqx\\*(Aq \\(gay\\(ga");
    }

    #[test]
    fn page_has_one_header_and_every_subcommand() {
        let page = render().unwrap();
        assert!(page.starts_with(".TH "), "{page}");
        assert_eq!(page.matches(".TH ").count(), 1);
        assert_eq!(
            page.matches(".ds Aq").count(),
            2,
            "preamble once (two lines)"
        );
        assert!(page.contains(".SH \"GILSCOPE RECORD\""));
        assert!(page.contains(".SH \"EXIT STATUS\""));
    }
}
