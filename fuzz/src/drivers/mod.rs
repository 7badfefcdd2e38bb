//! One driver per fuzz target: `run(data)` decodes the input, exercises the
//! filter, and panics when an invariant breaks. The fuzz targets call them;
//! `filter/tests/fuzz_regressions.rs` replays saved inputs through them.

pub mod config;
pub mod engine;
pub mod filter;
pub mod metadata;
