//! The one integration-test binary: shared helpers in `support`, one module per area.

mod support;

mod debug_offsets;
mod dump;
mod offsets;
