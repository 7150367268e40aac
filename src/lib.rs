//! gilscope: reads a running CPython from outside and tells whether the GIL is what slows
//! it down. The pipeline, one module per stage:
//! attach ([`process`], [`python::attach`]) -> read ([`python`]) -> sample and classify
//! ([`sample`], [`classify`]) -> aggregate ([`profile`]) -> advise ([`advice`]) -> write
//! ([`output`]). The data handed on between stages is in [`model`]; docs/ARCHITECTURE.md
//! draws the whole picture.

pub mod advice;
pub mod classify;
pub mod cli;
pub mod conditions;
pub mod diff;
pub mod dump;
pub mod error;
pub mod mem;
pub mod model;
pub mod output;
pub mod process;
pub mod profile;
pub mod push;
pub mod python;
pub mod record;
pub mod sample;
pub mod top;
