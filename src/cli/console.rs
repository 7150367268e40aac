//! Writing to stdout and stderr as a member of a pipeline: a reader that went away
//! (`gilscope record ... 2>&1 | head`) is not an error. Output to a closed pipe is dropped
//! and the command finishes its work: files written, exit code kept. (Rust's `print!`
//! macros panic on a closed pipe instead, and a panic whose message cannot be written
//! either ends in an abort.)

use std::io::{ErrorKind, Write};

/// Writes `text` to stdout; a closed pipe is not an error, other failures are.
pub fn out(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Writes `text` to stderr; failures are ignored (there is nowhere left to report them).
pub fn err(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.flush();
}
