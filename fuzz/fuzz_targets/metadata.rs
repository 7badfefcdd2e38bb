#![no_main]
//! `cargo fuzz run metadata`: see `locality_failover_fuzz::drivers::metadata`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    locality_failover_fuzz::drivers::metadata::run(data);
});
