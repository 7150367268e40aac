//! The target process as the kernel shows it: its mappings and binaries (ELF), and the
//! scheduler state of each thread. Nothing here knows about Python.

pub mod elf;
pub mod glibc;
pub mod kernel;
pub mod pause;
pub mod process;

pub use elf::ElfSymbols;
pub use kernel::{KernelState, KernelStateReader};
pub use process::{Mapping, Process};
