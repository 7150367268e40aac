//! The interpreter and its code as reports name them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Build {
    /// The interpreter is linked into the executable.
    Static,
    /// The interpreter lives in libpython3.X.so.
    Shared,
}

/// What gilscope learned about the interpreter when it attached.
impl Build {
    pub fn name(self) -> &'static str {
        match self {
            Build::Static => "static",
            Build::Shared => "shared",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PythonInfo {
    pub version: String,
    pub build: Build,
    pub free_threaded: bool,
    /// "enabled", "disabled" (free-threaded, GIL off) or "transient" (free-threaded, GIL
    /// switched on for now, e.g. while importing an extension that needs it).
    pub gil: String,
    pub binary: String,
}

/// Whether the GIL is in force: always on a default build; a free-threaded build can run
/// without it, or switch it on for a while (e.g. while an extension that needs it loads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GilMode {
    Enabled,
    Disabled,
    Transient,
}

impl GilMode {
    pub fn name(self) -> &'static str {
        match self {
            GilMode::Enabled => "enabled",
            GilMode::Disabled => "disabled",
            GilMode::Transient => "transient",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameInfo {
    pub function: String,
    /// The qualified name (`Class.method`) where the interpreter records one (3.11+).
    pub qualname: Option<String>,
    pub file: String,
    pub line: u32,
}
