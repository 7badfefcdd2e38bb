#![no_main]
//! `cargo fuzz run filter`: see `locality_failover_fuzz::drivers::filter`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    locality_failover_fuzz::drivers::filter::run(data);
});
