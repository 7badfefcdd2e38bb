//! The fuzz drivers of the locality-failover filter: the input reader
//! ([`input`]), generators of plausible values ([`gen`]) and one driver per
//! cargo-fuzz target ([`drivers`]). `fuzz/fuzz_targets/*` call them under
//! libFuzzer; `tests/regressions.rs` replays the saved inputs through them.

pub mod drivers;
pub mod gen;
pub mod input;

/// The simulated Envoy host the `filter` driver runs the filter in.
pub use host_harness::sim;
