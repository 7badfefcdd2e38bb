#![no_main]
//! `cargo fuzz run engine`: see `locality_failover_fuzz::drivers::engine`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    locality_failover_fuzz::drivers::engine::run(data);
});
