//! The one integration-test binary: shared helpers in `support`, one module per area.

mod support;

mod advice;
mod ci;
mod debug_offsets;
mod dump;
mod formats;
mod images;
mod offsets;
mod record;
