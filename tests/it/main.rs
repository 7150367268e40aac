//! The one integration-test binary: shared helpers in `support`, one module per area.

mod support;

mod advice;
mod allocations;
mod churn;
mod ci;
mod cli_misuse;
mod debug_offsets;
mod dump;
mod event_loop;
mod event_loop_offsets;
mod exec;
mod faults;
mod flags;
mod fleet;
mod formats;
mod images;
mod install;
mod offsets;
mod reads;
mod record;
mod report_html;
