//! One driver per fuzz target: `run(data)` decodes the input, exercises the
//! filter, and panics when an invariant breaks. The fuzz targets call them;
//! `fuzz-drivers/tests/regressions.rs` replays saved inputs through them.

pub mod config;
pub mod engine;
pub mod filter;
pub mod metadata;
