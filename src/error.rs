//! The failures a caller must tell apart, and the exit code each one maps to.

use std::fmt;

/// Exit codes are a contract with scripts and CI jobs; docs/exit-codes.md lists them.
pub mod exit_code {
    pub const OK: i32 = 0;
    /// Anything not covered below (bad output directory, I/O errors, internal errors).
    pub const GENERAL: i32 = 1;
    /// Command-line usage error (clap's own code).
    pub const USAGE: i32 = 2;
    pub const NO_SUCH_PROCESS: i32 = 3;
    pub const PERMISSION_DENIED: i32 = 4;
    pub const NOT_PYTHON: i32 = 5;
    pub const UNSUPPORTED_VERSION: i32 = 6;
    pub const PROCESS_EXITED: i32 = 7;
    /// A `record --fail-on` condition held (every output was still written).
    pub const CONDITION_FAILED: i32 = 10;
    /// `diff` found a regression beyond its thresholds.
    pub const REGRESSION: i32 = 11;
}

/// The exit codes, for `--help`; docs/exit-codes.md says the same.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0   success
  1   other error (unwritable output directory, I/O error, ...)
  2   command-line usage error
  3   no such process
  4   permission denied (needs root, CAP_SYS_PTRACE or ptrace_scope 0)
  5   not a Python process
  6   unsupported Python version (3.8 to 3.15 are supported)
  7   the process exited (or, for dump and top, called exec()) while being read
      (record still writes what it sampled)
  10  record, report: a --fail-on condition held (every output is still written)
  11  diff: a regression beyond the thresholds";

/// Errors that change what the user must do next.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such process: {pid}")]
    NoSuchProcess { pid: i32 },
    #[error(
        "permission denied reading process {pid}: run as root, grant CAP_SYS_PTRACE \
         (sudo setcap cap_sys_ptrace+ep $(which gilscope)), set kernel.yama.ptrace_scope=0, \
         or in Docker use --cap-add SYS_PTRACE"
    )]
    PermissionDenied { pid: i32 },
    #[error("process {pid} is not a Python process: {why}")]
    NotPython { pid: i32, why: String },
    #[error("unsupported Python version {version}: gilscope supports CPython {supported}")]
    UnsupportedVersion {
        version: String,
        supported: &'static str,
    },
    #[error("process {pid} exited while being read")]
    ProcessExited { pid: i32 },
    #[error(
        "process {pid} called exec() while being read and now runs {program}; run the \
         command again to read the new program"
    )]
    ProcessExec { pid: i32, program: String },
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NoSuchProcess { .. } => exit_code::NO_SUCH_PROCESS,
            Error::PermissionDenied { .. } => exit_code::PERMISSION_DENIED,
            Error::NotPython { .. } => exit_code::NOT_PYTHON,
            Error::UnsupportedVersion { .. } => exit_code::UNSUPPORTED_VERSION,
            Error::ProcessExited { .. } | Error::ProcessExec { .. } => exit_code::PROCESS_EXITED,
        }
    }
}

/// Finds the exit code for any error chain: the first typed [`Error`] in it decides.
pub fn exit_code_of(err: &anyhow::Error) -> i32 {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<Error>())
        .map(Error::exit_code)
        .unwrap_or(exit_code::GENERAL)
}

/// A short display wrapper that prints an error chain on one line: "outer: inner: root".
pub struct OneLine<'a>(pub &'a anyhow::Error);

impl fmt::Display for OneLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for cause in self.0.chain() {
            if !first {
                f.write_str(": ")?;
            }
            write!(f, "{cause}")?;
            first = false;
        }
        Ok(())
    }
}
