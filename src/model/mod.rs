//! The data the pipeline hands on, in one place: what a thread was doing, how the
//! interpreter and its code are named, the [`recording::Recording`] (counts, saved as
//! `recording.json`), the [`report::Report`] (`report.json`) and the [`snapshot::Snapshot`]
//! (`gilscope dump`). Plain data with serde: it depends on no other module of the crate,
//! and every stage after the sampler (profile, advice, output, conditions, diff, the
//! commands) depends on it.

pub mod event_loop;
pub mod python;
pub mod recording;
pub mod report;
pub mod snapshot;
pub mod state;
pub mod timeline;
