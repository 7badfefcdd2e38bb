#![no_main]
//! `cargo fuzz run config`: see `locality_failover_fuzz::drivers::config`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    locality_failover_fuzz::drivers::config::run(data);
});
