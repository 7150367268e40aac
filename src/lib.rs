//! gilscope: reads a running CPython from outside and tells whether the GIL is what slows
//! it down. The pipeline, one module per stage:
//! attach ([`target`], [`python::attach`]) -> read ([`python`]) -> classify ([`classify`])
//! -> report ([`output`]).

pub mod advice;
pub mod classify;
pub mod cli;
pub mod conditions;
pub mod diff;
pub mod dump;
pub mod error;
pub mod mem;
pub mod output;
pub mod profile;
pub mod push;
pub mod python;
pub mod record;
pub mod sample;
pub mod snapshot;
pub mod target;
pub mod top;
