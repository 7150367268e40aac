//! Reading CPython's own structures: find the runtime, pick the layout for the version,
//! walk interpreters, threads, frames and the GIL.

pub mod layout;
pub mod version;

pub use layout::Layout;
pub use version::Version;
