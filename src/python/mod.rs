//! Reading CPython's own structures: find the runtime, pick the layout for the version,
//! walk interpreters, threads, frames and the GIL.

pub mod debug_offsets;
pub mod layout;
pub mod linetable;
pub mod tables;
pub mod version;

pub use layout::Layout;
pub use version::Version;
