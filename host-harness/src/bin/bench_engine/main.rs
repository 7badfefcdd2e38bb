//! `bench_engine`: the measurements behind `BENCHMARKS.md` (run them all
//! with `make bench`, which calls `scripts/bench.sh`).
//!
//! ```text
//! bench_engine engine           2. ns per Engine::decide, 10..10,000 endpoints
//! bench_engine failure          3. ejection and inventory/config change, 10,000 endpoints
//! bench_engine memory           4. native peak heap of one FilterRoot, 10,000 endpoints
//! bench_engine calls            5. host calls per request (simulated host's CallCounts)
//! bench_engine envoy            1. Envoy CPU/request and latency: native, no-op wasm, this filter
//! bench_engine envoy-memory     4. wasm linear memory and RSS in a real Envoy, 10 vs 10,000 endpoints
//! bench_engine serve N          the upstream: N loopback HTTP/1.1 listeners (a separate process)
//! ```
//!
//! Every result is printed on stdout as one tab-separated line
//! `ROW <bench> <what> <measured> <target> <verdict>`; progress goes to
//! stderr. `scripts/bench.sh` turns the rows into the table.
//!
//! The binary installs a counting global allocator. Counting is off unless
//! a benchmark turns it on, so timings are not taxed by it; while the
//! simulated host works on its own data (shared data, properties) the
//! allocations are not charged to the filter (see [`host_side`]).

mod alloc;
mod buffers;
mod calls;
mod envoy;
mod envoy_config;
mod envoy_memory;
mod failure;
mod fixtures;
mod host;
mod measure;
mod memory;
mod pick;
mod probe;
mod report;
mod upstream;

use std::path::PathBuf;
use std::process::ExitCode;

use crate::calls::*;
use crate::envoy::*;
use crate::envoy_memory::*;
use crate::failure::*;
use crate::memory::*;
use crate::pick::*;
use crate::probe::*;
use crate::report::*;
use crate::upstream::*;

fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let wasm = PathBuf::from(
        arg_value(&args, "--wasm").unwrap_or_else(|| "build/locality_failover.wasm".into()),
    );
    let noop = PathBuf::from(
        arg_value(&args, "--noop-wasm").unwrap_or_else(|| "build/noop_filter.wasm".into()),
    );
    let seconds: u32 = arg_value(&args, "--seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let repeats: usize = arg_value(&args, "--repeats")
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    match args.first().map(String::as_str) {
        Some("engine") => bench_engine(),
        Some("failure") => bench_failure(),
        Some("memory") => bench_memory(&wasm),
        Some("calls") => bench_calls(),
        Some("envoy") => {
            let only = arg_value(&args, "--concurrency").and_then(|c| c.parse().ok());
            let compare: Vec<PathBuf> = arg_value(&args, "--compare")
                .map(|c| {
                    c.split(',')
                        .filter(|p| !p.is_empty())
                        .map(PathBuf::from)
                        .collect()
                })
                .unwrap_or_default();
            let floor = arg_value(&args, "--floor").map(PathBuf::from);
            if let Err(e) = bench_envoy(
                &wasm,
                &noop,
                seconds,
                repeats,
                only,
                &compare,
                floor.as_deref(),
            ) {
                eprintln!("bench: envoy: {e}");
                row(
                    "1",
                    "Envoy benchmark",
                    &format!("failed: {}", e.lines().next().unwrap_or("")),
                    "",
                    "MISS",
                );
                return ExitCode::from(1);
            }
        }
        Some("envoy-probe") => {
            let probe = PathBuf::from(
                arg_value(&args, "--probe-wasm")
                    .unwrap_or_else(|| "build/probe_filter.wasm".into()),
            );
            let n = arg_value(&args, "--calls")
                .and_then(|s| s.parse().ok())
                .unwrap_or(20);
            if let Err(e) = bench_envoy_probe(&probe, seconds, repeats, n) {
                eprintln!("bench: envoy-probe: {e}");
                return ExitCode::from(1);
            }
        }
        Some("envoy-memory") => {
            if let Err(e) = bench_envoy_memory(&wasm) {
                eprintln!("bench: envoy-memory: {e}");
                row(
                    "4",
                    "Envoy memory benchmark",
                    &format!("failed: {}", e.lines().next().unwrap_or("")),
                    "",
                    "MISS",
                );
                return ExitCode::from(1);
            }
        }
        Some("serve") => return serve(args.get(1).and_then(|n| n.parse().ok()).unwrap_or(1)),
        _ => {
            eprintln!("usage: bench_engine engine|failure|memory|calls|envoy|envoy-memory|serve N [--wasm F] [--noop-wasm F] [--seconds S] [--repeats R]");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
