//! The target process as the kernel shows it, through /proc, its ELF files and ptrace: its
//! mappings and binaries, the scheduler state of each thread, pausing it. Nothing here
//! knows about Python.

pub mod elf;
pub mod glibc;
pub mod kernel;
pub mod maps;
pub mod pause;
pub mod switches;

pub use elf::ElfSymbols;
pub use kernel::{KernelState, KernelStateReader};
pub use maps::{Mapping, Process};
