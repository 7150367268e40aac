//! Reading CPython's own structures: find the runtime, pick the layout for the version,
//! walk interpreters, threads, frames and the GIL.

pub mod attach;
pub mod code;
pub mod debug_offsets;
pub mod dict;
pub mod event_loop;
pub mod layout;
pub mod linetable;
pub mod loop_task;
pub mod names;
mod stacks;
pub mod strings;
pub mod tables;
mod threads;
pub mod version;
pub mod walker;

pub use layout::Layout;
pub use version::Version;
