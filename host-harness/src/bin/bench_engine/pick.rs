//! 2. Engine pick cost: ns per `Engine::decide`, 10..10,000 endpoints.

use std::hint::black_box;
use std::time::Instant;

use crate::alloc::count_allocs;
use crate::fixtures::{client_labels, settings, synthetic_inventory};
use crate::report::{progress, row, verdict};
use locality_failover::engine::Engine;

pub(crate) fn bench_engine() {
    const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];
    // Many short runs, sizes interleaved, minimum kept: on a shared machine
    // the minimum is the run nobody else disturbed.
    const ROUNDS: usize = 150;
    const ITERS: u32 = 20_000;
    for lb in ["ROUND_ROBIN", "LEAST_REQUEST"] {
        let policy = settings(lb).policy;
        let mut engines: Vec<Engine> = SIZES
            .iter()
            .map(|n| Engine::new(policy.clone(), client_labels(), synthetic_inventory(*n), 7))
            .collect();
        // Warm up (caches, branch predictors, allocator).
        for engine in &mut engines {
            for _ in 0..ITERS {
                black_box(engine.decide(black_box(3)));
            }
        }
        let mut best = [f64::INFINITY; SIZES.len()];
        for _ in 0..ROUNDS {
            for (engine, b) in engines.iter_mut().zip(best.iter_mut()) {
                let t = Instant::now();
                for _ in 0..ITERS {
                    black_box(engine.decide(black_box(3)));
                }
                *b = b.min(t.elapsed().as_nanos() as f64 / f64::from(ITERS));
            }
        }
        let mut allocs = 0.0;
        for (engine, (n, ns)) in engines.iter_mut().zip(SIZES.iter().zip(best)) {
            let ((), a) = count_allocs(|| {
                for _ in 0..1000 {
                    black_box(engine.decide(black_box(3)));
                }
            });
            allocs = a.allocs as f64 / 1000.0;
            progress(&format!(
                "engine {lb} n={n}: {ns:.1} ns/decide, {allocs:.1} allocs/decide"
            ));
        }
        let per = SIZES
            .iter()
            .zip(best)
            .map(|(n, ns)| format!("{n}: {ns:.0}"))
            .collect::<Vec<_>>()
            .join(", ");
        row("2", &format!("Engine::decide ns, {lb} (n: ns, min of {ROUNDS} x {ITERS}; {allocs:.0} alloc/decide)"), &per, "", "");
        let small = best[0];
        let large = best[SIZES.len() - 1];
        let ratio = large / small;
        row(
            "2",
            &format!("decide cost 10,000 / 10, {lb}"),
            &format!("{ratio:.2}x"),
            "<= 1.5x",
            verdict(ratio <= 1.5),
        );
        row(
            "2",
            &format!("decide cost at 10,000, {lb}"),
            &format!("{large:.0} ns"),
            "< 200 ns",
            verdict(large < 200.0),
        );
    }
}
