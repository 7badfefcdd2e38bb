//! Fuzzing support for the locality-failover filter: the drivers, input
//! reader and generators of the `fuzz-drivers` crate (one driver per
//! cargo-fuzz target, see `fuzz_targets/`), and the seed corpus.

pub use fuzz_drivers::{drivers, gen, input, sim};
pub mod seeds;

#[cfg(test)]
mod tests {
    use crate::drivers;
    use crate::drivers::engine::stats;

    fn inputs(n: usize, seed: u64) -> impl Iterator<Item = Vec<u8>> {
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        (0..n).map(move |_| {
            let len = (next() % 3000) as usize;
            (0..len)
                .map(|_| {
                    let r = next();
                    if r % 3 == 0 {
                        (r >> 8) as u8
                    } else {
                        ((r >> 8) % 7) as u8
                    }
                })
                .collect::<Vec<u8>>()
        })
    }

    /// Random inputs (small byte values, so choices land on the common
    /// branches) run clean and reach the states the invariants are about.
    #[test]
    fn drivers_run_and_reach_the_interesting_states() {
        for data in inputs(300, 1) {
            drivers::config::run(&data);
            drivers::metadata::run(&data);
            drivers::engine::run(&data);
        }
        for data in inputs(100, 2) {
            drivers::filter::run(&data);
        }
        let reached = [
            ("ejections", stats::get(&stats::EJECTIONS)),
            ("returns from ejection", stats::get(&stats::RETURNS)),
            ("panic-mode picks", stats::get(&stats::PANIC_PICKS)),
            ("picks below priority 0", stats::get(&stats::FAILOVER_PICKS)),
            (
                "refused inventories",
                stats::get(&stats::REFUSED_INVENTORIES),
            ),
        ];
        eprintln!("{reached:?}");
        for (what, n) in reached {
            assert!(n > 0, "the engine driver never reached {what}");
        }
    }
}
